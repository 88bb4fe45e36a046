"""The names in a topic's name, and whether an article names them, across scripts (pure).

A topic's name often says what sets it apart from its neighbours: "Abu Dhabi peace talks" beside
"Donbas withdrawal terms". An article that names Abu Dhabi while reporting the territory argued
over there is a report of the talks as much as of the territory, but the model rates its
passages closer to the territory's description, and the topics' competition
(``alerts.matching.match_topics``) took it from the talks. So a name that only one topic names
keeps that topic's claim on the articles that name it (``MatchPolicy.named_claims``).

Names are told by their capitals: a word of the topic's name that the name or the description
also writes capitalised where no sentence starts ("held in Abu Dhabi"), with the capitalised
words just before it. Consecutive such words make one name. The first word of "Security
guarantees for Ukraine" is not a name: the description writes it capitalised only where a
sentence starts. (A German name and description
capitalise every noun, so there a noun can count as a name: it then keeps its topic's claim on
the articles that use it, which are mostly that topic's anyway.)

Names change script: "Abu Dhabi" is "Абу-Даби" in Russian and "Абу-Дабі" in Ukrainian,
"Donbas" is "Донбасс" / "Донбас". Both sides are transliterated to Latin (``anyascii``) and
folded to a rough phonetic key - no ``h`` after a consonant (``dh``/``d``, ``kh``/``h``), ``y``
and ``j`` as ``i``, ``ts``/``tz``/``z`` as ``c``, no doubled letters - and a word of the article
names a word of the name when it starts with its key (inflections: "Донбасса", "Donbass-Region");
keys of up to three letters must match whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from anyascii import anyascii

from alerts.types import Topic

#: a name: one or more words, each a sequence of keys
Name = tuple[str, ...]

_WORD = re.compile(r"[^\W\d_]+(?:['’ʼ][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"[.!?]\s*$")
_APOSTROPHES = str.maketrans("", "", "'’ʼ`")
#: a short key matches whole only ("Abu" must not find "abuse")
_SHORT_KEY = 3


def word_key(word: str) -> str:
    """The folded Latin key of one word (module docstring)."""
    key = anyascii(word).translate(_APOSTROPHES).lower()
    key = re.sub(r"[^a-z]", "", key)
    key = re.sub(r"(?<=[b-df-hj-np-tv-z])h", "", key)
    key = re.sub(r"ts|tz|z", "c", key.replace("y", "i").replace("j", "i"))
    return re.sub(r"(.)\1+", r"\1", key)


def text_keys(text: str) -> list[str]:
    """The keys of ``text``'s words, in order (after transliteration: hyphens split words)."""
    latin = anyascii(text).translate(_APOSTROPHES)  # a soft sign comes out as an apostrophe
    return [k for k in (word_key(w) for w in re.split(r"[^A-Za-z]+", latin)) if k]


def names_in(keys: Sequence[str], names: Iterable[Name]) -> list[Name]:
    """The ``names`` that occur in a text of these ``keys`` (``text_keys``)."""
    return [name for name in names if _occurs(name, keys)]


def _occurs(name: Name, keys: Sequence[str]) -> bool:
    width = len(name)
    return any(
        all(_names_word(keys[at + j], part) for j, part in enumerate(name))
        for at in range(len(keys) - width + 1)
    )


def _names_word(key: str, part: str) -> bool:
    return key == part if len(part) <= _SHORT_KEY else key.startswith(part)


def topic_names(name: str, description: str) -> list[Name]:
    """The names in a topic's ``name``: runs of its words that the name or the description also
    capitalises where no sentence starts, each with the capitalised words just before it
    ("Abu" of "Abu Dhabi peace talks", which opens the name)."""
    capitalised = {word for word in _mid_sentence_words(name) if word[0].isupper()}
    capitalised |= {word for word in _mid_sentence_words(description) if word[0].isupper()}
    words = [m.group() for m in _WORD.finditer(name)]
    flags = [word in capitalised for word in words]
    for at in range(len(words) - 2, -1, -1):
        flags[at] = flags[at] or (flags[at + 1] and words[at][0].isupper())
    names: list[Name] = []
    run: list[str] = []
    for word, flag in zip([*words, ""], [*flags, False], strict=True):
        if flag:
            run.append(word)
        elif run:
            names.append(_name_key(run))
            run = []
    return [n for n in names if n]


def _name_key(words: Sequence[str]) -> Name:
    return tuple(text_keys(" ".join(words)))


def _mid_sentence_words(text: str) -> list[str]:
    """The words of ``text`` that do not start a sentence."""
    words = []
    for match in _WORD.finditer(text):
        before = text[: match.start()].rstrip()
        if before and not _SENTENCE_END.search(before):
            words.append(match.group())
    return words


@lru_cache(maxsize=256)
def distinctive_names(name: str, description: str, others: tuple[str, ...]) -> tuple[Name, ...]:
    """The names in a topic's name (``topic_names``) that none of ``others`` - the other topics'
    names and descriptions - names: what sets this topic apart from them."""
    taken = [text_keys(text) for text in others]
    return tuple(
        n for n in topic_names(name, description) if not any(names_in(keys, [n]) for keys in taken)
    )


def distinctive_names_among(topic: Topic, topics: Sequence[Topic]) -> tuple[Name, ...]:
    """``distinctive_names`` of ``topic`` against the other ``topics``."""
    others = tuple(text for t in topics if t.id != topic.id for text in (t.name, t.description))
    return distinctive_names(topic.name, topic.description, others)


def name_as_written(name: str, found: Name) -> str:
    """The part of the topic's ``name`` that is the ``found`` name, as written there."""
    words = list(_WORD.finditer(name))
    for at in range(len(words) - len(found) + 1):
        span = words[at : at + len(found)]
        if _name_key([w.group() for w in span]) == found:
            return name[span[0].start() : span[-1].end()]
    return " ".join(found)
