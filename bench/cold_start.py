"""Cold start: a fresh process imports lmprobe_jupyter, builds a Probe, fits it on four
prompts and predicts one, on a warm disk (the bundled model already materialized, the OS
file cache warm) and an empty activation cache.

Each phase is timed inside a child process (so nothing is imported beforehand); the run is
repeated and the median reported. Also printed: the share of the time spent in
``import torch`` + ``import transformers`` alone (a floor no library code can cut).

    python bench/cold_start.py [--repeats 3] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import lmprobe_jupyter
from lmprobe_jupyter import Probe
t1 = time.perf_counter()
p = Probe(layers=[15], dtype=sys.argv[1], random_state=0, progress=False)
t2 = time.perf_counter()
p.fit(["I love it", "What a great day"], ["I hate it", "What a terrible day"])
t3 = time.perf_counter()
p.predict(["So happy today"])
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "Probe()": t2 - t1, "fit(4)": t3 - t2, "predict(1)": t4 - t3,
                  "total": t4 - t0, "dtype": p.runtime.loaded.dtype_name}))
"""

FLOOR = r"""
import json, time
t0 = time.perf_counter()
import torch, transformers  # noqa: F401
from transformers import AutoModelForCausalLM  # noqa: F401
print(json.dumps({"torch+transformers": time.perf_counter() - t0}))
"""


def run(code: str, *args: str) -> dict:
    env = {**os.environ, "LMPROBE_PROGRESS": "0"}
    with tempfile.TemporaryDirectory() as d:
        env["LMPROBE_CACHE_DIR"] = d  # an empty activation cache every time
        out = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args(argv)
    run(CHILD, args.dtype)  # warm the disk cache and materialize the model once
    runs = [run(CHILD, args.dtype) for _ in range(args.repeats)]
    floors = [run(FLOOR)["torch+transformers"] for _ in range(args.repeats)]
    print(f"cold start (median of {args.repeats}, dtype {runs[0]['dtype']}):")
    for k in ("import", "Probe()", "fit(4)", "predict(1)", "total"):
        print(f"  {k:12s} {statistics.median(r[k] for r in runs):7.3f} s")
    floor = statistics.median(floors)
    total = statistics.median(r["total"] for r in runs)
    print(f"  import torch + transformers alone: {floor:.3f} s ({floor / total:.0%} of the total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
