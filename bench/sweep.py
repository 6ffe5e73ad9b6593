"""Layer-sweep cost: a sweep over every layer against one bare forward pass, in one run.

A cold ``Probe.sweep_layers(layers="all")`` over N labelled prompts (fresh activation
cache; extraction, cache writes and one probe fit per layer included) is timed against
the floor: a bare full-depth ``model(...)`` forward over the same tokens, in the same
length-sorted batches. Targets: sweep <= 1.2x the floor, and peak memory above the
loaded model within 2x the pooled-activation array (N x n_layers x hidden float32).

Memory is the process's resident set (RSS), sampled every millisecond by a thread while
the first sweep runs, minus the RSS just before it (model loaded, every library imported
by a warm-up sweep on other prompts, freed heap returned with ``malloc_trim``);
``ru_maxrss`` growth and a tracemalloc peak (numpy and Python objects: what the sweep
itself holds, without torch's forward-pass buffers) are printed too, and so is the RSS
growth of the bare forward pass (working memory any forward pays).
Timed sweeps and bare passes alternate and the minimum of each is compared, so load
changes on a shared machine hit both alike.

    python bench/sweep.py [--n 256] [--batch-size 8] [--classifier ridge]
        [--device cpu] [--dtype float32] [--threads T] [--cv K] [--repeats 2]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import random
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from contextlib import nullcontext

os.environ.setdefault("LMPROBE_PROGRESS", "0")
# The bench points LMPROBE_CACHE_DIR at fresh folders; pin the materialized model folder
# (which defaults to $LMPROBE_CACHE_DIR/models) so the model is not re-materialized.
os.environ.setdefault(
    "LMPROBE_MODELS_DIR",
    os.path.join(os.environ.get("LMPROBE_CACHE_DIR", "~/.cache/lmprobe"), "models"),
)

GOOD = "wonderful delightful excellent lovely fantastic superb charming brilliant".split()
BAD = "terrible awful dreadful horrible miserable appalling painful disgusting".split()
SUBJECTS = [
    "the film", "our holiday", "the dinner", "my new job", "the concert", "the hotel",
    "the book", "the weather", "the service", "the game", "the trip", "the lecture",
]  # fmt: skip
FILLER = (
    "after a long week of work and a slow journey across the city in the evening we "
    "finally sat down with friends and family to talk about everything that had happened"
).split()


def make_prompts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n/2 positive and n/2 negative sentences, roughly 8 to 45 tokens each."""
    rng = random.Random(seed)
    pos, neg = [], []
    for i in range(n):
        words = " ".join(FILLER[: rng.randint(0, len(FILLER))])
        lead = f"{i}: {words}, " if words else f"{i}: "
        adj = rng.choice(GOOD if i % 2 == 0 else BAD)
        text = f"{lead}{rng.choice(SUBJECTS)} was {adj}."
        (pos if i % 2 == 0 else neg).append(text)
    return pos, neg


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples RSS in a background thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def trim() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS growth is measurable."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--classifier", default="ridge")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--cv", type=int, default=None, help="also cross-validate (folds)")
    ap.add_argument("--repeats", type=int, default=2, help="timed sweep/bare pairs")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.engine.cache import settings as cache
    from lmprobe_jupyter.engine.extraction.extractor import Extractor
    from lmprobe_jupyter.engine.extraction.models import DEFAULT_MODEL, load_model

    tmp = tempfile.TemporaryDirectory(prefix="lmprobe-bench-sweep-")  # cold caches
    os.environ["LMPROBE_CACHE_DIR"] = tmp.name
    cache.reset_cache()

    loaded = load_model(DEFAULT_MODEL, device=args.device, dtype=args.dtype)
    model, tok, dev = loaded.model, loaded.tokenizer, loaded.device
    pos, neg = make_prompts(args.n)
    prompts = pos + neg
    ids = [tok(p)["input_ids"] for p in prompts]
    n_tokens = sum(map(len, ids))
    bs = args.batch_size
    collate = Extractor(loaded, batch_size=bs, progress=False, use_cache=False)._collate
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    kwargs = dict(
        model=DEFAULT_MODEL,
        layers="all",
        classifier=args.classifier,
        device=args.device,
        dtype=args.dtype,
        batch_size=bs,
        random_state=0,
        cv=args.cv,
    )

    def sync():
        if str(dev).startswith("cuda"):
            torch.cuda.synchronize()

    def bare_forward(sel):
        with torch.inference_mode():
            for i in range(0, len(sel), bs):
                # the engine's own right-padding collation: only the forward differs
                x, m = collate([ids[j] for j in sel[i : i + bs]])
                model(input_ids=x.to(dev), attention_mask=m.to(dev), use_cache=False)
        sync()

    def fresh_cache():
        os.environ["LMPROBE_CACHE_DIR"] = tempfile.mkdtemp(dir=tmp.name)
        cache.reset_cache()

    def sweep():
        return Probe.sweep_layers(positive_prompts=pos, negative_prompts=neg, **kwargs)

    # Warm-up: imports (sklearn, pandas), kernels and allocator, on other prompts.
    wp, wn = make_prompts(16, seed=1)
    Probe.sweep_layers(positive_prompts=wp, negative_prompts=wn, **kwargs)
    bare_forward(order[-bs:])

    # Memory, on the first (cold) sweep: RSS growth over the loaded, warmed-up process.
    # malloc_trim returns freed heap pages first, so reused free memory cannot hide growth.
    fresh_cache()
    gc.collect()
    trim()
    rss0, maxrss0 = rss_bytes(), maxrss_bytes()
    calls0 = Extractor.forward_calls
    t_sweeps, t_bares = [], []
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        result = sweep()
        sync()
        t_sweeps.append(time.perf_counter() - t0)
    calls = Extractor.forward_calls - calls0
    maxrss1 = maxrss_bytes()
    del result
    # The bare forward's own working memory (activations of one batch, kernels'
    # workspace), measured the same way: it is paid by any forward pass, sweep or not.
    gc.collect()
    trim()
    rss_bare0 = rss_bytes()
    # Timing: sweeps (each on a fresh cache) interleaved with bare passes, so load changes
    # on a shared machine hit both alike; the minimum of each is compared.
    bare_peak = PeakRSS()
    for r in range(args.repeats):
        with bare_peak if r == 0 else nullcontext():
            t0 = time.perf_counter()
            bare_forward(order)
            t_bares.append(time.perf_counter() - t0)
        if r + 1 < args.repeats:
            fresh_cache()
            t0 = time.perf_counter()
            sweep()
            sync()
            t_sweeps.append(time.perf_counter() - t0)

    # Python/numpy heap peak (tracemalloc; torch's own buffers are not traced), untimed.
    fresh_cache()
    gc.collect()
    tracemalloc.start()
    base_traced = tracemalloc.get_traced_memory()[0]
    result = sweep()
    traced_peak = tracemalloc.get_traced_memory()[1] - base_traced
    tracemalloc.stop()
    t_sweep, t_bare = min(t_sweeps), min(t_bares)

    n_layers, hidden = loaded.n_layers, loaded.hidden_size
    pooled_nbytes = len(prompts) * n_layers * hidden * np.dtype(np.float32).itemsize
    extra = peak.peak - rss0
    mib = 1024 * 1024
    name = torch.cuda.get_device_name(dev) if str(dev).startswith("cuda") else "CPU"
    print(
        f"sweep bench: {loaded.name} on {name} ({loaded.dtype}, {torch.get_num_threads()} "
        f"torch threads), {len(prompts)} prompts, {n_tokens} tokens, {n_layers} layers, "
        f"batch {bs}, classifier={args.classifier}, cv={args.cv}"
    )

    def runs(ts):
        return ", ".join(f"{t:.2f}" for t in ts)

    print(f"  bare full-depth forward (sorted batches):  {t_bare:8.3f} s  (runs: {runs(t_bares)})")
    print(
        f"  sweep of all {n_layers} layers, cold cache:    {t_sweep:8.3f} s  (runs: {runs(t_sweeps)})"
    )
    print(f"  forward calls in one sweep: {calls} (batches of one pass: {-(-len(prompts) // bs)})")
    print(f"  sweep / bare forward = {t_sweep / t_bare:.3f}x  (target <= 1.2x; minimum of each)")
    print(f"  pooled activations (n x layers x hidden float32): {pooled_nbytes / mib:8.1f} MiB")
    bare_extra = bare_peak.peak - rss_bare0
    print(f"  peak RSS above the loaded model during the sweep: {extra / mib:8.1f} MiB")
    print(
        f"  peak RSS above the loaded model, bare forward:    {bare_extra / mib:8.1f} MiB"
        "  (for comparison: it computes the LM head's logits, a sweep stops before)"
    )
    print(f"  sweep RSS growth / pooled array = {extra / pooled_nbytes:.2f}x")
    print(
        f"  ru_maxrss growth during the sweep:                {(maxrss1 - maxrss0) / mib:8.1f} MiB"
    )
    print(f"  numpy/Python heap peak during a sweep (tracemalloc): {traced_peak / mib:5.1f} MiB")
    print(
        f"  sweep's own arrays at peak (tracemalloc) / pooled array = "
        f"{traced_peak / pooled_nbytes:.2f}x  (target <= 2x)"
    )
    best = result.best_layer() if args.cv else None
    if best is not None:
        print(f"  best layer by {args.cv}-fold CV: {best} ({result.cv_scores[best]:.3f})")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
