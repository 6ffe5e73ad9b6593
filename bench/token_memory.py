"""Peak memory of training sequence probes and every-token probes from the per-token store.

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
  tokens in memory (the path used before the store, and still with the cache off);
- ``train all n=N``: the every-token logistic probe of the shift benchmark
  (``train_pooling="all"``, layers ``--all-layers``, ``preprocessing="standard"``),
  fitted from the store a chunk at a time (:mod:`lmprobe_jupyter.engine.probes.token_linear`);
- ``train all, store read per pass``: the same with nothing held between passes
  (``token_linear.RESIDENT_BYTES = 0``, what happens past that budget);
- ``fit all in RAM``: the same probe fitted the way it was before (and still is for
  classifiers the streamed fit does not take): the token matrix built in memory and
  sklearn's pipeline fitted on it (extraction included; forced here with
  ``classifier_kwargs={"solver": "lbfgs"}``, which the streamed fit does not take).

Compared with the bytes all ``(n, seq, hidden)`` take: as a list of float32 arrays, and
padded to the longest prompt.

    python bench/token_memory.py [--sizes 32,64,128] [--layer 12] [--epochs 10] [--seed 0]
        [--all-layers 8,12,16,24]
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


def all_layers(args) -> list[int]:
    return [int(x) for x in args.all_layers.split(",")]


def make_probe(kind: str, args):
    from lmprobe_jupyter import Probe

    if kind in ("all", "all-in-ram"):
        kw = {"C": 2e-4, "class_weight": "balanced"}
        if kind == "all-in-ram":
            kw["solver"] = "lbfgs"  # not taken by the streamed fit: the in-memory path
        return Probe(
            layers=all_layers(args),
            train_pooling="all",
            inference_pooling="rolling_max:16",
            preprocessing="standard",
            classifier_kwargs=kw,
            device="cpu",
            dtype="float32",
            progress=False,
        )

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

    from lmprobe_jupyter.engine.cache import settings as cache_mod

    torch.set_num_threads(args.threads)
    cache_mod.set_cache_backend(args.store)
    kind, n = args.phase.split(":")
    n = int(n)
    base = {"extract": "mil", "in-ram": "mil", "extract-all": "all", "all-reread": "all"}
    base = base.get(kind, kind)
    if kind == "all-reread":
        from lmprobe_jupyter.engine.probes import token_linear

        token_linear.RESIDENT_BYTES = 0  # nothing held between passes: each reads the store
    probe = make_probe(base, args)
    rt = probe.runtime.load()
    texts, y = build_prompts(n, rt.tokenizer, args.seed)
    if kind == "in-ram":
        cache_mod.set_cache_enabled(False)
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        if kind in ("extract", "extract-all"):
            layers = [args.layer] if kind == "extract" else all_layers(args)
            rt.token_source(rt.prepare(texts), layers)
        else:
            probe.fit(texts, labels=y)
    out = {"peak_mib": mem.mib, "base_mib": mem.base / MIB, "seconds": time.perf_counter() - t0}
    if kind not in ("extract", "in-ram", "extract-all", "all-in-ram"):  # from the store
        out["hits"] = probe.train_cache_hits_
    if kind == "all-reread":
        out["passes"] = probe.train_passes_
    if kind in ("all", "all-in-ram", "all-reread"):
        out["streamed"] = probe.training_activations is None
        out["n_layers"] = len(all_layers(args))
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
    if not args.skip_all:
        plan += [("extract-all", big)] + [("all", n) for n in sizes] + [("all-reread", big)]
        if not args.skip_in_ram:
            plan += [("all-in-ram", big)]
    common = [
        f"--all-layers={args.all_layers}",
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
            if kind in ("mil", "attention", "all", "all-reread") and r["hits"] != n:
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
        "extract-all": "extract all-layers to store",
        "all": "train all (streamed, store)",
        "all-reread": "train all, store read per pass",
        "all-in-ram": "fit all in RAM (sklearn)",
    }
    head = f"{'phase':<30} {'n':>4} {'tokens':>7} {'all f32':>8} {'padded':>8} {'peak':>7} {'s':>6}"
    print("peak: RSS above the level after the model load (MiB); all f32: every prompt's")
    print("(seq, hidden) float32 (MiB); padded: (n, longest, hidden) float32 (MiB)")
    print(head)
    for r in rows:
        width = hidden * (len(all_layers(args)) if "all" in r["phase"] else 1)
        allf = r["tokens"] * width * 4 / MIB
        pad = r["n"] * r["longest"] * width * 4 / MIB
        print(
            f"{names[r['phase']]:<30} {r['n']:>4} {r['tokens']:>7} {allf:>8.1f} {pad:>8.1f} "
            f"{r['peak_mib']:>7.1f} {r['seconds']:>6.1f}"
        )
    ext = rows[0]
    print(f"store on disk: {ext['disk_mib']:.1f} MiB (float16) for {ext['n']} prompts")
    if any("all" in r["phase"] for r in rows):
        print(
            f"'all' rows: layers {args.all_layers} side by side (width {hidden} x "
            f"{len(all_layers(args))}); all f32 / padded use that width"
        )
    for r in rows:
        if "passes" in r:
            print(f"{r['phase']} n={r['n']}: {r['passes']} passes over the tokens")
    for r in rows:
        if "streamed" in r and r["streamed"] != (r["phase"] != "all-in-ram"):
            raise SystemExit(f"{r['phase']} n={r['n']} did not take the path it measures")


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
    ap.add_argument("--skip-in-ram", action="store_true", help="skip the in-memory fits")
    ap.add_argument("--skip-all", action="store_true", help="skip the every-token probe")
    ap.add_argument(
        "--all-layers", default="8,12,16,24", help="layers of the every-token probe rows"
    )
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
