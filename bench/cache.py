"""Activation-cache benchmark: warm predict time, bytes per entry, cold-vs-warm ratio.

Usage::

    .venv/bin/python bench/cache.py                 # bundled SmolLM2, 1,000 prompts, layer 15
    .venv/bin/python bench/cache.py --n 200 --layers 10 20

Reports

- raw cache: ``store`` and ``lookup`` time for N pooled vectors (hidden 576) per storage
  dtype, and bytes on disk per cached prompt per layer;
- end to end: ``Probe.predict`` on N prompts with an empty cache (extraction) and with the
  cache warm, and their ratio. The target for the warm path is < 50 ms for 1,000 prompts.

Everything goes to a temporary cache directory; the user's cache is not touched.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LMPROBE_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LMPROBE_MODELS_DIR", str(Path.home() / ".cache" / "lmprobe" / "models"))

from lmprobe_jupyter.engine.cache import settings as C  # noqa: E402
from lmprobe_jupyter.engine.cache._shard import DTYPES  # noqa: E402
from lmprobe_jupyter.engine.cache.store import ActivationCache  # noqa: E402

ADJ = ["great", "awful", "fine", "slow", "broken", "lovely", "cheap", "solid", "noisy", "odd"]
NOUN = ["phone", "chair", "lamp", "book", "kettle", "bike", "desk", "camera", "watch", "shoe"]
VERB = ["arrived late", "works well", "stopped working", "looks nice", "feels cheap"]


def prompts(n: int, tag: str) -> list[str]:
    rng = np.random.default_rng(zlib.crc32(tag.encode()))
    out = []
    for i in range(n):
        a, b = rng.choice(ADJ, 2)
        out.append(
            f"Review {tag}-{i}: the {a} {rng.choice(NOUN)} {rng.choice(VERB)}, and support was {b}."
        )
    return out


def timed(fn, repeat: int = 7) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_raw(n: int, hidden: int, root: Path) -> list[tuple[str, str]]:
    rows = []
    ps = prompts(n, "raw")
    arrays = list(np.random.default_rng(0).standard_normal((n, hidden)).astype(np.float32))
    for dtype in ("float32", "float16", "bfloat16"):
        c = ActivationCache(root / dtype, dtype=dtype)
        t = time.perf_counter()
        c.store("bench@0", ps, 0, "last_token", arrays)
        store = time.perf_counter() - t
        lookup = timed(lambda c=c: c.lookup("bench@0", ps, 0, "last_token"))
        per = c.info().bytes / n
        rows.append(
            (
                f"raw cache, {dtype}",
                f"store {store * 1e3:6.1f} ms | lookup {lookup * 1e3:5.1f} ms | "
                f"{per:,.0f} B/prompt/layer (data {hidden * (4 if dtype == 'float32' else 2)})",
            )
        )
    return rows


def bench_probe(model: str, n: int, layers: list[int], dtype: str) -> list[tuple[str, str]]:
    from lmprobe_jupyter.engine.extraction.extractor import Extractor
    from lmprobe_jupyter.engine.probes.probe import Probe

    C.set_cache_dtype(dtype)
    pos = [f"I love this, the {x} is wonderful." for x in NOUN]
    neg = [f"I hate this, the {x} is terrible." for x in NOUN]
    probe = Probe(model=model, layers=layers, device="cpu", random_state=0, progress=False)
    t = time.perf_counter()
    probe.fit(pos, neg)
    fit_s = time.perf_counter() - t
    test = prompts(n, "predict")
    calls = Extractor.forward_calls
    t = time.perf_counter()
    cold_pred = probe.predict(test)
    cold = time.perf_counter() - t
    cold_calls = Extractor.forward_calls - calls
    calls = Extractor.forward_calls
    warm = timed(lambda: probe.predict(test))
    assert Extractor.forward_calls == calls, "warm predict ran the model"
    # float32 entries are exact; half-precision entries may flip a borderline prediction
    agree = float(np.mean(probe.predict(test) == cold_pred))
    if dtype == "float32":
        assert agree == 1.0, agree
    refit = timed(lambda: Probe(**probe.get_params()).fit(pos, neg), repeat=3)
    info = C.cache_info()
    per = info.bytes / max(info.entries, 1)
    return [
        ("model", f"{model} ({probe.n_model_layers()} layers), probe layers {probe.layers_}"),
        ("first fit (load + extract 20)", f"{fit_s:8.2f} s"),
        (f"predict {n}, cold", f"{cold:8.2f} s  ({cold_calls} forward calls)"),
        (f"predict {n}, warm", f"{warm * 1e3:8.1f} ms  (0 forward calls; target < 50 ms)"),
        ("cold / warm", f"{cold / warm:8.0f}x  (warm = cold predictions: {agree:.1%})"),
        ("refit on cached prompts", f"{refit * 1e3:8.1f} ms"),
        (f"bytes per prompt per layer ({dtype})", f"{per:8,.0f} B (on disk, incl. headers)"),
        ("cache", f"{info.entries:,} entries in {info.shards} shard files"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--n", type=int, default=1000, help="prompts to predict")
    ap.add_argument("--layers", type=int, nargs="+", default=[15])
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--raw-only", action="store_true", help="skip the model-based part")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lmprobe-bench-cache-") as tmp:
        rows = bench_raw(args.n, 576, Path(tmp) / "raw")
        if not args.raw_only:
            C.set_cache_backend(Path(tmp) / "probe")
            rows += bench_probe(args.model, args.n, args.layers, args.dtype)
        C.reset_cache()
    width = max(len(k) for k, _ in rows)
    print(f"activation cache benchmark ({os.cpu_count()} CPUs, N={args.n})")
    print("-" * (width + 60))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
