"""Mean passage directions per language, estimated from a sample of stored vectors.

Multilingual models rate text in the query's own language higher, whatever it says. Search
and topic matching remove that bias by comparing a query with each language's mean direction
(``cos(q, m_lang)``) and subtracting it; this module estimates the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from indexer.types import SearchFilter, Vector

if TYPE_CHECKING:
    from indexer.store import VectorStore

#: stored vectors sampled per language, and the least that makes an estimate
LANGUAGE_SAMPLE = 2000
MIN_LANGUAGE_SAMPLE = 20


def language_means(
    vectors: VectorStore,
    collection: str,
    languages: Sequence[str],
    *,
    sample: int = LANGUAGE_SAMPLE,
    min_sample: int = MIN_LANGUAGE_SAMPLE,
) -> dict[str, Vector]:
    """Each language's mean vector; empty when fewer than two languages have enough vectors
    (with one language there is no bias between languages to remove)."""
    means: dict[str, Vector] = {}
    for lang in languages:
        rows = vectors.sample_vectors(collection, SearchFilter(languages=(lang,)), sample)
        if len(rows) >= min_sample:
            means[lang] = np.mean(np.stack(rows), axis=0).astype(np.float32)
    return means if len(means) >= 2 else {}


def overall_mean(means: dict[str, Vector]) -> Vector | None:
    """The languages' means averaged with equal weight: what coverage in general looks like."""
    if not means:
        return None
    mean = np.mean(np.stack(list(means.values())), axis=0).astype(np.float32)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm else None
