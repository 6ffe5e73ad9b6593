"""Ray extraction: 1 and 2 workers against the single-process path, on the same prompts.

Cold pooled extraction (cache off) of N prompts of mixed length (tens to hundreds of
tokens), every worker and the single process on one torch thread. For each Ray run it
reports the wall time of the call, its start-up (until the first chunk arrives: the fixed
cost of a call: starting the actor pool, each worker importing torch and loading the
model), the workers' own extraction time per prompt (the same code as the single
process), and the rest: the overhead per prompt of going through Ray (task round trips,
serializing pooled vectors, the driver's cache writes).

    python bench/ray_extraction.py [--n 96] [--batch-size 8] [--chunk-size 32]
        [--workers 1 2] [--layers 6 15] [--address ray://head:10001]

Without ``--address`` (or ``$RAY_ADDRESS``) a local Ray instance starts for the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LMPROBE_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extraction import make_prompts  # noqa: E402 - the same prompt mix as bench/extraction


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 15])
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--address", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from lmprobe_jupyter.engine.extraction.distributed import RayExtractor, ray_session
    from lmprobe_jupyter.engine.extraction.extractor import Extractor
    from lmprobe_jupyter.engine.extraction.models import DEFAULT_MODEL, load_model

    torch.set_num_threads(1)
    prompts = make_prompts(args.n)
    loaded = load_model(DEFAULT_MODEL, device="cpu", dtype="float32")
    tokens = sum(len(x) for x in loaded.tokenizer(prompts)["input_ids"])
    local = Extractor(loaded, batch_size=args.batch_size, use_cache=False, progress=False)
    local.pooled(prompts[:4], args.layers, args.pooling)  # warm-up
    t0 = time.perf_counter()
    ref = local.pooled(prompts, args.layers, args.pooling)
    t_single = time.perf_counter() - t0
    per_single = t_single / args.n
    print(
        f"{args.n} prompts, {tokens} tokens, layers {args.layers}, pooling {args.pooling!r}, "
        f"batch {args.batch_size}, chunk {args.chunk_size}; 1 torch thread per process"
    )
    print(f"single process: {t_single:7.2f} s  {args.n / t_single:6.2f} prompts/s")

    cpus = max(os.cpu_count() or 1, max(args.workers))
    with ray_session(args.address, num_cpus=cpus):
        for w in args.workers:
            ext = RayExtractor(
                DEFAULT_MODEL,
                device="cpu",
                dtype="float32",
                num_workers=w,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                use_cache=False,
                progress=False,
                tokenizer=loaded.tokenizer,
            )
            got = ext.pooled(prompts, args.layers, args.pooling)
            for layer in args.layers:
                np.testing.assert_allclose(got[layer], ref[layer], atol=1e-5)
            sec = ext.last_seconds
            # What w workers would take with no overhead beyond their start-up.
            ideal = sec["startup"] + sec["extract"] / w
            overhead = (sec["wall"] - ideal) / args.n
            print(
                f"ray {w} worker(s): {sec['wall']:7.2f} s  {args.n / sec['wall']:6.2f} prompts/s; "
                f"start-up {sec['startup']:6.2f} s; extraction {sec['extract'] / args.n * 1e3:6.1f} "
                f"ms/prompt/worker (single: {per_single * 1e3:6.1f}); overhead "
                f"{overhead * 1e3:+6.1f} ms/prompt; after start-up "
                f"{args.n / (sec['wall'] - sec['startup']):6.2f} prompts/s"
            )
    print("results equal the single-process path (atol 1e-5)")

    # The driver's share of the work: one cache write per chunk per layer.
    import tempfile

    from lmprobe_jupyter.engine.cache.store import ActivationCache

    with tempfile.TemporaryDirectory() as tmp:
        cache = ActivationCache(tmp)
        t0 = time.perf_counter()
        for start in range(0, args.n, args.chunk_size):
            part = prompts[start : start + args.chunk_size]
            for layer in args.layers:
                vecs = list(ref[layer][start : start + args.chunk_size])
                cache.store(loaded.key, part, layer, args.pooling, vecs)
        t_store = time.perf_counter() - t0
        cache.close()
    print(
        f"driver cache writes: {t_store:6.3f} s for {args.n} prompts x {len(args.layers)} "
        f"layers = {args.n / t_store:8.0f} prompts/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
