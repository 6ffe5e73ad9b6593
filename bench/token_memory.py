"""Peak memory of training sequence probes from the per-token store.

``Probe(classifier="mil" | "attention")`` reads every token of every prompt. The engine
writes per-token activations to disk while extracting (float16, in chunks) and training
reads them back ``batch_size`` prompts at a time (:mod:`lmprobe_jupyter.engine.
token_store`), so training's peak memory should stay flat as the prompt count grows,
while all ``(n, seq, hidden)`` grows with it.

Prompts: StrongREJECT requests embedded in 300-700 tokens of benign prose (shipped data,
the helpers of ``bench/token_probes.py``), labelled three categories against the
other three. The
bundled SmolLM2-135M-Instruct, float32, one layer.

Phases, each in a fresh process, measured as peak RSS above the level after the model
load (sampled every 5 ms):

- ``extract``: the first fit's extraction into the store (one chunk in RAM at a time);
- ``train <kind> n=N``: a fit on the first N prompts once they are in the store (no
  forward pass): the estimator's reads and training only;
- ``in-RAM fit``: the same fit with the activation cache off, which holds every prompt's
  tokens in memory (the path used before the store, and still with the cache off).

Compared with the bytes all ``(n, seq, hidden)`` take: as a list of float32 arrays, and
padded to the longest prompt.

    python bench/token_memory.py [--sizes 32,64,128] [--layer 12] [--epochs 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from token_probes import PeakRSS, embed_in_prose, load_prose, load_strongreject  # noqa: E402

MIB = 2**20


def build_prompts(n: int, tokenizer, seed: int):
    """``n`` embedded requests, labels alternating: the first three categories (sorted)
    against the other three, so every prefix of the list holds both classes."""
    rows = load_strongreject()
    rng = np.random.default_rng(seed)
    first = set(sorted({r["category"] for r in rows})[:3])
    pos = [r for r in rows if r["category"] in first]
    neg = [r for r in rows if r["category"] not in first]
    pos, neg = (list(rng.permutation(np.asarray(g, dtype=object))) for g in (pos, neg))
    if n > 2 * min(len(pos), len(neg)):
        raise SystemExit(f"--sizes: at most {2 * min(len(pos), len(neg))} prompts")
    rows = [g[i // 2] for i, g in zip(range(n), [pos, neg] * n)]
    texts, _ = embed_in_prose([r["prompt"] for r in rows], load_prose(), tokenizer, rng)
    return texts, np.asarray([i % 2 == 0 for i in range(n)], dtype=int)


def make_probe(kind: str, args):
    from lmprobe_jupyter import Probe

    kwargs = {
        "max_epochs": args.epochs,
        "batch_size": args.batch_size,
        "validation_fraction": args.validation_fraction,
        "random_state": 0,
    }
    if kind == "attention":
        kwargs["n_heads"] = 4
    return Probe(
        layers=[args.layer],
        classifier=kind,
        classifier_kwargs=kwargs,
        device="cpu",
        dtype="float32",
        progress=False,
    )


def phase(args) -> dict:
    """One phase in this process (a fresh one per phase: the allocator keeps what an
    earlier phase freed, which would hide a later phase's growth)."""
    import torch

    from lmprobe_jupyter.engine import cache as cache_mod

    torch.set_num_threads(args.threads)
    cache_mod.set_cache_backend(args.store)
    kind, n = args.phase.split(":")
    n = int(n)
    probe = make_probe("mil" if kind in ("extract", "in-ram") else kind, args)
    rt = probe.runtime.load()
    texts, y = build_prompts(n, rt.tokenizer, args.seed)
    if kind == "in-ram":
        cache_mod.set_cache_enabled(False)
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        if kind == "extract":
            rt.token_source(rt.prepare(texts), [args.layer])
        else:
            probe.fit(texts, labels=y)
    out = {"peak_mib": mem.mib, "base_mib": mem.base / MIB, "seconds": time.perf_counter() - t0}
    if kind not in ("extract", "in-ram"):
        out["hits"] = probe.train_cache_hits_
    lengths = [len(x) for x in rt.tokenizer(texts)["input_ids"]]
    out.update(tokens=sum(lengths), longest=max(lengths), shortest=min(lengths))
    out["hidden"] = rt.loaded.hidden_size
    return out


def run(args) -> list[dict]:
    import json
    import subprocess

    sizes = sorted(int(s) for s in args.sizes.split(","))
    big = sizes[-1]
    plan = [("extract", big)]
    plan += [(kind, n) for kind in ("mil", "attention") for n in sizes]
    if not args.skip_in_ram:
        plan += [("in-ram", big)]
    common = [
        f"--layer={args.layer}",
        f"--epochs={args.epochs}",
        f"--batch-size={args.batch_size}",
        f"--threads={args.threads}",
        f"--seed={args.seed}",
        f"--validation-fraction={args.validation_fraction}",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as store:
        for kind, n in plan:
            cmd = [sys.executable, __file__, f"--phase={kind}:{n}", f"--store={store}", *common]
            print("running", kind, n, file=sys.stderr)
            got = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(got.stdout.strip().splitlines()[-1])
            if kind == "extract":
                r["disk_mib"] = sum(f.stat().st_size for f in Path(store).rglob("*.safetensors"))
                r["disk_mib"] /= MIB
            if kind in ("mil", "attention") and r["hits"] != n:
                raise SystemExit(f"{kind} n={n} ran the model: {r['hits']} store hits of {n}")
            rows.append({"phase": kind, "n": n, **r})
    print_table(rows, args)
    return rows


def print_table(rows, args) -> None:
    hidden = rows[0]["hidden"]
    print(
        f"\nSmolLM2-135M-Instruct float32, layer {args.layer}, hidden {hidden}, batch_size "
        f"{args.batch_size}, {args.epochs} epochs, validation_fraction "
        f"{args.validation_fraction}, torch threads {args.threads}"
    )
    names = {
        "extract": "extract to the store",
        "mil": "train mil (from store)",
        "attention": "train attention (from store)",
        "in-ram": "fit mil, cache off (in RAM)",
    }
    head = f"{'phase':<30} {'n':>4} {'tokens':>7} {'all f32':>8} {'padded':>8} {'peak':>7} {'s':>6}"
    print("peak: RSS above the level after the model load (MiB); all f32: every prompt's")
    print("(seq, hidden) float32 (MiB); padded: (n, longest, hidden) float32 (MiB)")
    print(head)
    for r in rows:
        allf = r["tokens"] * hidden * 4 / MIB
        pad = r["n"] * r["longest"] * hidden * 4 / MIB
        print(
            f"{names[r['phase']]:<30} {r['n']:>4} {r['tokens']:>7} {allf:>8.1f} {pad:>8.1f} "
            f"{r['peak_mib']:>7.1f} {r['seconds']:>6.1f}"
        )
    ext = rows[0]
    print(f"store on disk: {ext['disk_mib']:.1f} MiB (float16) for {ext['n']} prompts")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64,128", help="prompt counts to train on")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="the estimators' held-out fold (kept in memory by their fit)",
    )
    ap.add_argument("--skip-in-ram", action="store_true", help="skip the cache-off fit")
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: one phase per process
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase:
        import json

        print(json.dumps(phase(args)))
    else:
        run(args)


if __name__ == "__main__":
    main()
