"""Keyword checks for topics' ``include`` / ``exclude`` lists (pure).

A keyword matches at the start of a word, case-insensitively, so one stem covers inflections:
``Donbas`` finds "Donbass" and "Donbas-Region", ``Донбас`` finds "Донбасу" and "Донбасса".
Multi-word phrases match with any whitespace or hyphen between the words. ``ё`` counts as
``е`` (Russian texts use both). A keyword written with a trailing ``$`` must end the word:
``UAE$`` does not match "UAEs". Users list a keyword in each language they want, since names
change script between Latin and Cyrillic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache


def normalise(text: str) -> str:
    return text.casefold().replace("ё", "е")


@dataclass(frozen=True, slots=True)
class Keyword:
    text: str  # as the user wrote it
    pattern: re.Pattern[str]


@lru_cache(maxsize=4096)
def compile_keyword(text: str) -> Keyword:
    whole_word = text.endswith("$")
    words = normalise(text.rstrip("$")).split()
    if not words:
        raise ValueError("a keyword must not be empty")
    body = r"[\s\-]+".join(re.escape(w) for w in words)
    end = r"(?!\w)" if whole_word else ""
    return Keyword(text, re.compile(rf"(?<!\w){body}{end}"))


def found(keywords: Iterable[str], text: str) -> tuple[str, ...]:
    """The keywords that occur in ``text``, in the order given."""
    keywords = tuple(keywords)
    if not keywords:
        return ()
    haystack = normalise(text)
    return tuple(k for k in keywords if compile_keyword(k).pattern.search(haystack))
