"""Which calibrated thresholds a vector space gets, by the model that made it (pure).

Scores and similarity thresholds are in a model's own units: multilingual-e5-small compresses
its cosines into the upper range (unrelated news near 0.8), EmbeddingGemma-300M spreads them
(unrelated news near 0.3). The matching policy (``alerts.matching.policy_for``) and the story
thresholds (``indexer.stories.story_policy_for``) were calibrated on this project's fixtures for
two models; any other model gets the bundled model's story thresholds and a generic matching
policy, and its topics want a ``threshold`` checked with ``newsmon topics test``.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

#: the bundled multilingual-e5-small (``indexer.embed.BundledEmbedder``)
BUNDLED = "bundled"
#: EmbeddingGemma-300M through the sentence-transformers backend, recognised by the last part
#: of its hub name or local path (``google/embeddinggemma-300m``, ``/models/embeddinggemma-300m``)
EMBEDDINGGEMMA = "embeddinggemma-300m"


def model_family(model_id: str) -> str | None:
    """``BUNDLED``, ``EMBEDDINGGEMMA`` or None (nothing calibrated) for an embedder's
    ``model_id`` (``bundled:...`` or ``st:<name or path>``)."""
    if model_id.startswith("bundled:"):
        return BUNDLED
    if model_id.startswith("st:"):
        name = model_id.removeprefix("st:")
        # a local path may be written either way on Windows; a hub name is POSIX-like
        last = PureWindowsPath(name).name if "\\" in name else PurePosixPath(name).name
        if last.lower() == EMBEDDINGGEMMA:
            return EMBEDDINGGEMMA
    return None
