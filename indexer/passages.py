"""Pure splitting of an article into passages to embed: a lead, then body chunks.

* Passage 0 (the *lead*) is the title and the first paragraph: what the article is about. Its
  vector is the one used for near-duplicates and story clustering (``indexer.stories``), so it
  takes further paragraphs only while it is still short (a dateline or a one-line teaser is not a
  lede), never the whole budget.
* Body chunks pack whole paragraphs up to ``max_tokens``; a paragraph too long for one chunk is
  split at sentence boundaries, and a sentence too long for one chunk at word boundaries.
* Each body chunk starts with the last sentence(s) of the previous chunk (about
  ``overlap_tokens``), so a fact that straddles a boundary is whole in at least one passage.
* Tokens are counted with the embedder's own tokenizer (injected): a words-or-characters guess
  is off by ~2x between English and Cyrillic text, and a passage over the model's limit is
  silently truncated by the model.
* Each distinct word is tokenised once and a candidate's count is the sum of its words' counts
  (``_Tokens``): re-tokenising every candidate chunk as it grew cost 3.6x as long (43 vs 12 ms
  an article of ~1,300 tokens with the bundled model; the passages are identical). Every
  passage's sum is then checked against its real count; a tokenizer that does not count
  whitespace-separated text additively gets every candidate counted whole instead.

Whitespace is normalised (runs of spaces to one space, paragraphs joined by one newline); every
passage is a contiguous stretch of the article text and ``start`` is its character offset there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from indexer.types import Passage, PassageKind

CountTokens = Callable[[str], int]

#: the lead takes paragraphs after the first only while it is under this share of the budget
#: (64 tokens by default): a lede is one to three sentences, and a shorter first paragraph is a
#: dateline or a teaser, while more paragraphs would blur the vector that stands for the article
LEAD_MIN_SHARE = 0.25

_WORD = re.compile(r"\S+")
_LINE_BREAK = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
#: sentence-final punctuation, then closing quotes/brackets that belong to the same sentence
_SENTENCE_END = re.compile(r"[.!?…]+[»\"”“’')\]]*$")
_OPENERS = "«„“\"‘'(["
#: "U.S.", "e.g.", "z.B.", "a.m." - letters with inner dots are abbreviations
_DOTTED = re.compile(r"^(?:[^\W\d_]\.)+[^\W\d_]$")
#: words that end in a dot without ending the sentence when a capital follows (casefolded,
#: without the dot). Single letters ("z. B.", "т. е.", "В. Зеленський") are handled apart;
#: words that usually end a sentence when a capital follows are deliberately absent: "etc.",
#: "usw.", "тощо.", and the Cyrillic amounts ("2 млн руб. Это ...", "1,5 млрд грн. Це ...").
_ABBREVIATIONS = frozenset(
    {
        # de ("5 Mio. Euro": German nouns are capitalised, so the amounts stay)
        "bzw", "ca", "dr", "prof", "nr", "st", "vgl", "mio", "mrd", "jh", "inkl", "evtl", "ggf",
        "sog", "bspw", "str", "hr", "fr", "dipl", "ing", "bzgl", "zzgl", "hrsg", "tel",
        "jan", "feb", "febr", "mär", "apr", "jun", "jul", "aug", "sep", "sept", "okt", "nov", "dez",
        # en
        "mr", "mrs", "ms", "sen", "rep", "gov", "gen", "lt", "col", "maj", "capt", "sgt", "jr",
        "sr", "inc", "corp", "ltd", "co", "vs", "no", "mar", "oct", "dec", "approx", "dept",
        "fig", "mt", "pres", "rev", "ft",
        # ru
        "гг", "см", "др", "пр", "ул", "им", "проф", "акад", "стр", "ст", "кв", "обл", "ген",
        "ред", "англ", "нем", "укр", "напр", "букв", "янв", "февр", "апр", "авг", "сент", "окт",
        "нояб", "дек",
        # uk
        "ім", "вул", "рр", "див", "пл", "просп", "зв", "лют", "бер", "квіт", "трав", "черв",
        "лип", "серп", "вер", "жовт", "лист", "груд",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    start: int  # offset in the article text


@dataclass(frozen=True, slots=True)
class _Piece:
    """A sentence, or a cut of an over-long one, and the paragraph it belongs to."""

    paragraph: int
    words: tuple[_Word, ...]
    tokens: int  # of its own text


#: the packing unit: a whole paragraph, or one piece of a paragraph too long for a chunk
_Block = tuple[_Piece, ...]


def passage_budget(max_model_tokens: int) -> int:
    """The passage size (in model tokens) to use with a model of ``max_model_tokens``.

    Half the model window, at most 256: e5-style retrievers are trained on passages of roughly
    100-300 tokens, and a longer passage averages several facts into one vector (a query for one
    of them matches it weakly), while shorter ones multiply the vectors to store and search and
    lose the context a fact needs. The half leaves room for the overlap and the prefix, so no
    passage ever reaches the model's limit and is silently truncated.
    """
    if max_model_tokens < 64:
        raise ValueError(f"a model window of {max_model_tokens} tokens is too small to chunk for")
    return min(256, max_model_tokens // 2)


def split_passages(
    title: str,
    text: str,
    *,
    count_tokens: CountTokens,
    max_tokens: int = 256,
    overlap_tokens: int = 32,
) -> list[Passage]:
    """The lead (title + first paragraph) and the body chunks of an article, in order."""
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(
            f"need 0 <= overlap_tokens < max_tokens, got {overlap_tokens}, {max_tokens}"
        )
    summed = _split(title, text, _Tokens(count_tokens), max_tokens, overlap_tokens)
    # a sum that is not the real count: the counter is not additive, so the decisions taken on
    # the sums may be wrong - take them again on whole texts
    if all(count_tokens(passage.text) == tokens for passage, tokens in summed):
        return [passage for passage, _ in summed]
    exact = _split(title, text, _Tokens(count_tokens, exact=True), max_tokens, overlap_tokens)
    return [passage for passage, _ in exact]


def _split(
    title: str, text: str, tokens: _Tokens, max_tokens: int, overlap_tokens: int
) -> list[tuple[Passage, int]]:
    """The passages, each with its token count as ``tokens`` measured it."""
    title_words = _fit(tuple(_Word(w, 0) for w in title.split()), tokens, max_tokens)[0]
    paragraphs = _drop_title(_paragraphs(text), tuple(w.text for w in title_words))
    blocks = _blocks(paragraphs, tokens, max_tokens, max_tokens - overlap_tokens)
    heading = tokens.piece(-1, title_words)
    lead, taken = _lead(heading, blocks, tokens, max_tokens)
    passages: list[tuple[Passage, int]] = []
    if heading.words or lead:
        text0 = _lead_text(_render((heading,)), lead)
        passages.append((Passage(0, PassageKind.LEAD, text0, 0), tokens.lead(heading, lead)))
    for chunk in _body(blocks[taken:], lead, tokens, max_tokens, overlap_tokens):
        passage = Passage(len(passages), PassageKind.BODY, _render(chunk), _start(chunk))
        passages.append((passage, tokens.pieces(chunk)))
    return passages


class _Tokens:
    """Token counts for the splitter's decisions.

    Summed (the default): each distinct word is tokenised once, and a text's count is the sum
    of its words' counts minus the per-text overhead (special tokens, the model's prefix) for
    each join. That is exact for tokenizers that split at whitespace before anything else
    (SentencePiece as in XLM-R and e5, WordPiece, the word counters of the tests), whatever
    the whitespace. ``exact``: every text is tokenised whole, for any other counter.
    """

    def __init__(self, count: CountTokens, *, exact: bool = False) -> None:
        self.count = count
        self.exact = exact
        self._words: dict[str, int] = {}
        # what one join saves: count("a") + count("a") - count("a a") (4 for e5: <s>, </s>,
        # "▁passage", ":"; 0 for a plain word count)
        self._overhead = 0 if exact else 2 * count("a") - count("a a")

    def word(self, text: str) -> int:
        found = self._words.get(text)
        if found is None:
            found = self._words[text] = self.count(text)
        return found

    def words(self, words: Sequence[_Word]) -> int:
        if self.exact or not words:
            return self.count(" ".join(w.text for w in words))
        return self._joined([self.word(w.text) for w in words])

    def piece(self, paragraph: int, words: tuple[_Word, ...]) -> _Piece:
        return _Piece(paragraph, words, self.words(words))

    def pieces(self, pieces: Sequence[_Piece]) -> int:
        """Tokens of ``_render(pieces)``."""
        if self.exact or not pieces:
            return self.count(_render(pieces))
        return self._joined([p.tokens for p in pieces])

    def lead(self, heading: _Piece, pieces: Sequence[_Piece]) -> int:
        """Tokens of ``_lead_text(heading, pieces)``."""
        if self.exact:
            return self.count(_lead_text(_render((heading,)), pieces))
        if not pieces:
            return heading.tokens
        if not heading.words:
            return self.pieces(pieces)
        return self._joined([heading.tokens, self.pieces(pieces)])

    def _joined(self, counts: Sequence[int]) -> int:
        return sum(counts) - self._overhead * (len(counts) - 1)


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph, whitespace normalised (de/en/ru/uk conventions)."""
    words = tuple(_Word(m.group(), m.start()) for m in _WORD.finditer(paragraph))
    return [" ".join(w.text for w in s) for s in _sentences(words)]


# -- reading the text -------------------------------------------------------------------------


def _paragraphs(text: str) -> list[tuple[_Word, ...]]:
    """Words with their offsets, grouped into paragraphs (any line break ends a paragraph:
    extracted article text has one paragraph per line)."""
    paragraphs: list[tuple[_Word, ...]] = []
    current: list[_Word] = []
    end = 0
    for match in _WORD.finditer(text):
        if current and _LINE_BREAK.search(text, end, match.start()):
            paragraphs.append(tuple(current))
            current = []
        current.append(_Word(match.group(), match.start()))
        end = match.end()
    if current:
        paragraphs.append(tuple(current))
    return paragraphs


def _drop_title(
    paragraphs: list[tuple[_Word, ...]], title: tuple[str, ...]
) -> list[tuple[_Word, ...]]:
    """Without the headline when the text repeats it at its start (many extractors and feeds
    do), so that the lead does not say it twice."""
    if not title or not paragraphs or len(paragraphs[0]) < len(title):
        return paragraphs
    first = paragraphs[0]
    if any(_key(a.text) != _key(b) for a, b in zip(first, title, strict=False)):
        return paragraphs
    rest = first[len(title) :]
    while rest and _key(rest[0].text) == "":  # a separator after the headline: "—", ":", "|"
        rest = rest[1:]
    return ([rest] if rest else []) + paragraphs[1:]


def _key(word: str) -> str:
    return "".join(ch for ch in word.casefold() if ch.isalnum())


def _sentences(words: tuple[_Word, ...]) -> list[tuple[_Word, ...]]:
    sentences: list[tuple[_Word, ...]] = []
    begin = 0
    for i in range(len(words) - 1):
        previous = words[i - 1].text if i else ""
        if _ends_sentence(previous, words[i].text, words[i + 1].text):
            sentences.append(words[begin : i + 1])
            begin = i + 1
    if begin < len(words):
        sentences.append(words[begin:])
    return sentences


def _ends_sentence(previous: str, word: str, following: str) -> bool:
    end = _SENTENCE_END.search(word)
    if end is None:
        return False
    first = following[0]
    if not (first.isupper() or first.isdigit() or first in _OPENERS):
        return False  # "ca. zehn", "млн. рублей", "«Когда?» — спросил он"
    if end.group() != ".":  # "!", "?", "...", or a closing quote: the sentence is over
        return True
    return not _abbreviation(previous, word[:-1].lstrip(_OPENERS))


def _abbreviation(previous: str, stem: str) -> bool:
    if len(stem) == 1 and stem.isalpha():
        # initials and "z. B.", "т. е.", but "и т. д." / "і т. п." end sentences
        return not (stem.casefold() in "дп" and previous.casefold() == "т.")
    if stem.isdigit():
        return len(stem) <= 2  # German ordinals: "am 24. Februar"; years end sentences
    return bool(_DOTTED.match(stem)) or stem.casefold() in _ABBREVIATIONS


# -- cutting into blocks ----------------------------------------------------------------------


def _blocks(
    paragraphs: Sequence[tuple[_Word, ...]], tokens: _Tokens, max_tokens: int, cut_tokens: int
) -> list[_Block]:
    """Whole paragraphs where they fit a chunk, else their sentences, else word cuts (of
    ``cut_tokens``, which leaves room for the overlap in front of each)."""
    blocks: list[_Block] = []
    for index, words in enumerate(paragraphs):
        sentences = tuple(tokens.piece(index, s) for s in _sentences(words))
        if tokens.pieces(sentences) <= max_tokens:
            blocks.append(sentences)
            continue
        for sentence in sentences:
            if sentence.tokens <= max_tokens:
                blocks.append((sentence,))
            else:
                cuts = _fit(sentence.words, tokens, cut_tokens)
                blocks.extend((tokens.piece(index, c),) for c in cuts)
    return blocks


def _fit(words: tuple[_Word, ...], tokens: _Tokens, limit: int) -> list[tuple[_Word, ...]]:
    """Consecutive runs of words, each within ``limit`` tokens (greedy, at word boundaries)."""
    runs: list[tuple[_Word, ...]] = []
    run: list[_Word] = []
    for word in (part for w in words for part in _split_word(w, tokens, limit)):
        if run and tokens.words((*run, word)) > limit:
            runs.append(tuple(run))
            run = []
        run.append(word)
    if run:
        runs.append(tuple(run))
    return runs or [()]


def _split_word(word: _Word, tokens: _Tokens, limit: int) -> list[_Word]:
    """A "word" too long for a chunk (a URL, a base64 blob) cut into the longest character runs
    that fit (binary search: a few tokenizer calls a run)."""
    if tokens.word(word.text) <= limit:
        return [word]
    parts: list[_Word] = []
    begin = 0
    while begin < len(word.text):
        low, high = begin + 1, len(word.text)  # text[begin:low] always goes, even if too long
        while low < high:
            middle = (low + high + 1) // 2
            if tokens.count(word.text[begin:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        parts.append(_Word(word.text[begin:low], word.start + begin))
        begin = low
    return parts


# -- packing ----------------------------------------------------------------------------------


def _lead(
    heading: _Piece, blocks: Sequence[_Block], tokens: _Tokens, max_tokens: int
) -> tuple[list[_Piece], int]:
    """The pieces of the lead and how many blocks they took: the first paragraph (as much of it
    as fits), then following paragraphs only while the lead is still short."""
    pieces: list[_Piece] = []
    taken = 0
    for block in blocks:
        later_paragraph = taken > 0 and block[0].paragraph != blocks[0][0].paragraph
        if later_paragraph and tokens.lead(heading, pieces) >= max_tokens * LEAD_MIN_SHARE:
            break
        if tokens.lead(heading, [*pieces, *block]) > max_tokens:
            break
        pieces.extend(block)
        taken += 1
    return pieces, taken


def _body(
    blocks: Sequence[_Block],
    previous: list[_Piece],
    tokens: _Tokens,
    max_tokens: int,
    overlap_tokens: int,
) -> list[list[_Piece]]:
    chunks: list[list[_Piece]] = []
    i = 0
    while i < len(blocks):
        chunk = _overlap(previous, tokens, overlap_tokens)
        while chunk and tokens.pieces([*chunk, *blocks[i]]) > max_tokens:
            chunk = chunk[1:]  # the new text always goes in; the overlap gives way
        chunk.extend(blocks[i])
        i += 1
        while i < len(blocks) and tokens.pieces([*chunk, *blocks[i]]) <= max_tokens:
            chunk.extend(blocks[i])
            i += 1
        chunks.append(chunk)
        previous = chunk
    return chunks


def _overlap(previous: Sequence[_Piece], tokens: _Tokens, overlap_tokens: int) -> list[_Piece]:
    """The last whole sentences of the previous chunk within ``overlap_tokens``; when even the
    last sentence is longer, its last words (a fragment still carries the boundary's context)."""
    if overlap_tokens == 0 or not previous:
        return []
    tail: list[_Piece] = []
    for piece in reversed(previous):
        if tokens.pieces([piece, *tail]) > overlap_tokens:
            break
        tail.insert(0, piece)
    if tail:
        return tail
    last = previous[-1]
    words: tuple[_Word, ...] = ()
    for word in reversed(last.words):
        if tokens.words((word, *words)) > overlap_tokens:
            break
        words = (word, *words)
    return [tokens.piece(last.paragraph, words)] if words else []


def _render(pieces: Sequence[_Piece]) -> str:
    parts: list[str] = []
    for i, piece in enumerate(pieces):
        if i:
            parts.append(" " if piece.paragraph == pieces[i - 1].paragraph else "\n")
        parts.append(" ".join(w.text for w in piece.words))
    return "".join(parts)


def _lead_text(title: str, pieces: Sequence[_Piece]) -> str:
    body = _render(pieces)
    return f"{title}\n\n{body}" if title and body else title or body


def _start(chunk: Sequence[_Piece]) -> int:
    return chunk[0].words[0].start
