"""Language identification with lingua; the feed's declared language is only a prior.

Choices, measured with lingua 2.1 on 2 cores (tests/test_language_corpus.py, bench/extract.py;
40 Ukrainian texts of lang-uk/ner-uk, 180 Russian RIA articles, 41 fundus gold bodies de/en):

* **Language set**: the four targets plus neighbours that share a script or show up in
  European feeds (``DEFAULT_LANGUAGES``, 16). Kazakh is left out on purpose: lingua-rs has a
  letter rule under which a text holding both "і" and "щ" can only be Kazakh, so ordinary
  Ukrainian ("що", "щодо" next to "і") came out as Kazakh with confidence 1.0 on 8 of 195
  150-character chunks (the same rule was fixed in the Kotlin lingua, pemistahl/lingua#193).
  Serbian and Macedonian cost ~100 MB more in high-accuracy mode and helped nothing here.
* **Low-accuracy mode** (trigram models only): RSS +25-30 MB for the 16 languages against
  +460 MB in high-accuracy mode, per process. Both are 100% uk/ru/de/en on 500-character
  chunks; low accuracy is behind on fragments only (uk 99.3% at 120 characters, en 97.3% at
  60; high: 100%), and there the prior helps (below).
* **Prefix**: only the first ``PREFIX_CHARS`` characters are classified: uk 40/40 and ru
  180/180 articles whether 200 or 500 characters or the whole text are used, with no prior or
  a wrong one; ~1 ms instead of ~3.7 ms a text.
* **Too short to decide**: at 20-30 characters (word-cut chunks) lingua is right only 77-96%
  of the time, no better than a feed's declared language, so under ``MIN_DECISIVE_CHARS`` the
  prior wins. Word chunks of 40+ characters with a *wrong* prior: uk 98.5%, ru 99.0%,
  de 98.3%, en 96.0%; from 60 characters 99%+, from 150 characters 100%.
* **Margin**: on texts of 120+ characters lingua's relative confidences are nearly always 0 or
  1, so a small margin (0.1) only settles true ties in favour of the declared language. On
  shorter texts (headlines, teasers: the feed-text fallback) low-accuracy mode is less sure
  and sometimes wrong ("Ceasefire talks resumed in Istanbul on Monday." -> ro 0.74, en 0.26),
  so there the prior keeps the call unless the detector leads by ``SHORT_TEXT_PRIOR_MARGIN``.
  On 173 real headlines/leads (fundus, RIA, ner-uk) that lifted texts under 60 characters
  from 96.9% to 100% with a right prior and left a wrong prior at 96.9% (60+ chars: 100%).
* **Rounding**: lingua sums in hash-map order, so the last digits of a confidence vary between
  calls; four decimals make results reproducible (the process pool and inline agree).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from monitor.types import LanguageGuess

#: ISO 639-1 codes the detector chooses from: targets first, then likely neighbours
DEFAULT_LANGUAGES: tuple[str, ...] = (
    *("de", "en", "ru", "uk"),
    *("be", "bg", "pl", "cs", "sk", "ro", "tr", "fr", "es", "it", "pt", "nl"),
)
PREFIX_CHARS = 500
MIN_DECISIVE_CHARS = 40
PRIOR_MARGIN = 0.1
SHORT_TEXT_CHARS = 120
SHORT_TEXT_PRIOR_MARGIN = 0.5

# Codes feeds declare that are not ISO 639-1 but mean one of ours ("ua" is the country).
_ALIASES = {"ua": "uk", "ukr": "uk", "rus": "ru", "deu": "de", "ger": "de", "eng": "en"}
_TAG_SEPARATORS = re.compile(r"[-_\s]")


def normalize_language_tag(tag: str | None) -> str | None:
    """``"en-US"`` -> ``"en"``, ``"UA"`` -> ``"uk"``; None for anything else."""
    if not tag:
        return None
    primary = _TAG_SEPARATORS.split(tag.strip().lower(), maxsplit=1)[0]
    primary = _ALIASES.get(primary, primary)
    if len(primary) == 2 and primary.isascii() and primary.isalpha():
        return primary
    return None


def decide_language(
    confidences: Mapping[str, float], prior: str | None, text_length: int
) -> LanguageGuess:
    """Combine detector confidences (ISO 639-1 -> 0..1) with the declared language.

    The prior wins when the text is too short to judge or when its confidence is within
    ``PRIOR_MARGIN`` of the best (``SHORT_TEXT_PRIOR_MARGIN`` under ``SHORT_TEXT_CHARS``);
    otherwise the detector wins. Empty or undecidable text (no confidence above zero) gives
    ``LanguageGuess(None, 0.0)``.
    """
    declared = normalize_language_tag(prior)
    if text_length <= 0:
        return LanguageGuess(None, 0.0)
    if text_length < MIN_DECISIVE_CHARS:
        if declared is None:
            return LanguageGuess(None, 0.0)
        return LanguageGuess(declared, float(confidences.get(declared, 0.0)))
    best = max(confidences, key=confidences.__getitem__, default=None)
    if best is None or confidences[best] <= 0.0:
        return LanguageGuess(None, 0.0)
    best_confidence = float(confidences[best])
    declared_confidence = float(confidences.get(declared, 0.0)) if declared else 0.0
    margin = SHORT_TEXT_PRIOR_MARGIN if text_length < SHORT_TEXT_CHARS else PRIOR_MARGIN
    if declared is not None and declared_confidence >= best_confidence - margin:
        return LanguageGuess(declared, declared_confidence)
    return LanguageGuess(best, best_confidence)


def _to_lingua(code: str) -> Language:
    try:
        return Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
    except ValueError as e:
        raise ValueError(f"lingua does not know the language code {code!r}") from e


def _prefix(text: str, limit: int) -> str:
    """The first ``limit`` characters, cut at a space so no half word skews the n-grams."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


class LanguageIdentifier:
    """Lingua detector over a fixed language set, built on first use (thread-safe)."""

    def __init__(
        self,
        languages: Iterable[str] = DEFAULT_LANGUAGES,
        *,
        prefix_chars: int = PREFIX_CHARS,
        high_accuracy: bool = False,
    ) -> None:
        self._languages = tuple(_to_lingua(code) for code in languages)
        if len(self._languages) < 2:
            raise ValueError("a language detector needs at least two languages")
        self._prefix_chars = prefix_chars
        self._high_accuracy = high_accuracy
        self._detector: LanguageDetector | None = None
        self._lock = threading.Lock()

    def _build(self) -> LanguageDetector:
        # Preloading puts the model cost (time and RSS) at warm-up instead of on whichever
        # article happens to be the first in a script.
        builder = LanguageDetectorBuilder.from_languages(*self._languages)
        builder = builder.with_preloaded_language_models()
        if not self._high_accuracy:
            builder = builder.with_low_accuracy_mode()
        return builder.build()

    def _get_detector(self) -> LanguageDetector:
        detector = self._detector
        if detector is None:
            with self._lock:
                if self._detector is None:
                    self._detector = self._build()
                detector = self._detector
        return detector

    def warm_up(self) -> None:
        """Build the detector now (worker initialisers call this)."""
        self._get_detector()

    def confidences(self, text: str) -> dict[str, float]:
        """Lingua's confidence per ISO 639-1 code for the prefix of ``text``."""
        sample = _prefix(text, self._prefix_chars)
        values = self._get_detector().compute_language_confidence_values(sample)
        return {v.language.iso_code_639_1.name.lower(): round(v.value, 4) for v in values}

    def identify(self, text: str, prior: str | None = None) -> LanguageGuess:
        stripped = text.strip()
        if not stripped:
            return LanguageGuess(None, 0.0)
        return decide_language(self.confidences(stripped), prior, len(stripped))


_default: LanguageIdentifier | None = None
_default_lock = threading.Lock()


def get_identifier() -> LanguageIdentifier:
    """The process-wide identifier with the default settings (models are shared, not copied)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = LanguageIdentifier()
    return _default
