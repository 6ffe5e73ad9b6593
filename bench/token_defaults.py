"""The product's token-level probes at their defaults, on the shift benchmark.

What a user gets from ``Probe(pooling="rolling_max:16")``, ``Probe(classifier="attention")``
and ``Probe(classifier="multimax")`` with nothing else set (the bundled SmolLM2-135M,
``layers="middle"``, ``dtype="auto"``), fitted and scored through the product's own
extraction, cache and inference (``fit``, ``predict_proba``, ``token_scores``): no
bench-side reimplementation. The pooled probes ``Probe()`` (last token) and
``Probe(pooling="mean")`` are the reference on plain prompts ("within 0.01 of the best
pooled probe").

Data and conditions as in ``bench/token_probes.py`` (same seed, so the same embedded
texts): the 313 StrongREJECT prompts, one category against the other five, tested
(a) plain, (b) embedded at a random sentence boundary of 300-700 tokens of Markov prose
over a Gutenberg novel, (c) as the user turn of the chat template after a system
prompt. 5-fold cross-fitting per category (every prompt scored once, by probes that
never saw it); AUROC and TPR at 1% FPR with 95% bootstrap CIs (stratified, 1,000
resamples); localization = share of positive embedded texts whose top-scoring token lies
inside the request.

The per-token activations are extracted once (the product's activation cache, keyed by
text and layer, with ``set_cache_tokens(True)``) and shared by every category, fold and
configuration.

    python bench/token_defaults.py [--configs rolling attention multimax] [--folds 5]
        [--categories ...] [--limit N] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LMPROBE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from token_probes import (  # noqa: E402
    embed_in_prose,
    in_chat,
    load_prose,
    load_strongreject,
    metrics_with_ci,
)

#: The configurations measured: what each constructor call gives at its defaults.
CONFIGS = {
    "rolling": dict(pooling="rolling_max:16"),
    "attention": dict(classifier="attention"),
    "multimax": dict(classifier="multimax"),
    "last_token": dict(),
    "mean": dict(pooling="mean"),
}
TOKEN_CONFIGS = ("rolling", "attention", "multimax")
#: Pooled references are scored on plain prompts and in chat only (embedded texts would
#: need a second, pooled extraction of 150,000 tokens for a row the shift ruins anyway:
#: see the shift benchmark's table).
POOLED_CONDITIONS = ("plain", "chat")


def token_char_spans(tokens: list[str], text: str) -> list[tuple[int, int]] | None:
    """Character span of each token piece in ``text`` (pieces are exact substrings, in
    order); None when they do not tile the text."""
    spans, at = [], 0
    for t in tokens:
        j = text.find(t, at) if t else at
        if j < 0:
            return None
        spans.append((j, j + len(t)))
        at = j + len(t)
    return spans


def top_token_inside(ts, span) -> bool | None:
    """Whether the top-scoring token of one ``TokenScores`` lies inside ``span``."""
    s = np.asarray(ts.scores, dtype=np.float64)
    if not np.any(~np.isnan(s)):
        return None
    spans = token_char_spans(ts.tokens, ts.text)
    if spans is None:
        return None
    a, b = spans[int(np.nanargmax(s))]
    return a < span[1] and b > span[0]


def run(args) -> dict:
    from sklearn.model_selection import StratifiedKFold

    from lmprobe_jupyter import Probe, set_cache_tokens

    set_cache_tokens(True)  # per-token activations of the test texts: extracted once
    rows = load_strongreject()
    if args.limit:
        rng0 = np.random.default_rng(args.seed)
        rows = [rows[i] for i in sorted(rng0.permutation(len(rows))[: args.limit])]
    prompts = [r["prompt"] for r in rows]
    tok = Probe(pooling="rolling_max:16").runtime.tokenizer
    rng = np.random.default_rng(args.seed)
    emb_texts, emb_spans = embed_in_prose(prompts, load_prose(), tok, rng)
    chat_texts, _ = in_chat(prompts, tok)
    texts = {"plain": prompts, "embedded": emb_texts, "chat": chat_texts}
    cats = args.categories or sorted({r["category"] for r in rows})
    report = {"n_prompts": len(rows), "folds": args.folds, "categories": {}, "configs": {}}
    t_start = time.perf_counter()
    for name in args.configs:
        report["configs"][name] = CONFIGS[name]
    for cat in cats:
        y = np.asarray([int(r["category"] == cat) for r in rows])
        folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(y, y))
        out = {}
        for name in args.configs:
            conds = texts if name in TOKEN_CONFIGS else {c: texts[c] for c in POOLED_CONDITIONS}
            scores = {c: np.zeros(len(y)) for c in conds}
            inside: list[bool] = []
            fit_s = 0.0
            for tr, te in folds:
                probe = Probe(**CONFIGS[name])
                t0 = time.perf_counter()
                probe.fit([prompts[i] for i in tr], y[tr].tolist())
                fit_s += time.perf_counter() - t0
                for c, tx in conds.items():
                    scores[c][te] = probe.predict_proba([tx[i] for i in te])[:, 1]
                if name in TOKEN_CONFIGS:
                    pos = [i for i in te if y[i] == 1]
                    for i, ts in zip(pos, probe.token_scores([emb_texts[i] for i in pos])):
                        hit = top_token_inside(ts, emb_spans[i])
                        if hit is not None:
                            inside.append(hit)
            brng = np.random.default_rng(args.seed)
            entry = {"fit_s": round(fit_s, 2)}
            for c in conds:
                (auc, tpr1, tpr5) = metrics_with_ci(y, scores[c], brng, args.n_boot)
                entry[c] = {"auroc": auc, "tpr@1%": tpr1, "tpr@5%": tpr5}
            if inside:
                entry["localization"] = float(np.mean(inside))
            out[name] = entry
            print(
                f"{cat[:24]:24s} {name:10s} "
                + " ".join(f"{c}={entry[c]['auroc'][0]:.3f}" for c in conds)
                + (f" loc={entry['localization']:.2f}" if inside else "")
                + f" fit={fit_s:.1f}s  [{time.perf_counter() - t_start:.0f}s]",
                file=sys.stderr,
                flush=True,
            )
        report["categories"][cat] = out
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report


def print_table(report: dict) -> None:
    """Markdown: per configuration, per category plain / embedded / chat AUROC."""
    cats = list(report["categories"])
    for name in report["configs"]:
        print(f"\n`{name}`: {report['configs'][name]}\n")
        print("| category | plain AUROC | embedded AUROC | embedded TPR@1% | chat AUROC | loc |")
        print("|---|---|---|---|---|---|")
        emb, pl = [], []
        for cat in cats:
            e = report["categories"][cat][name]

            def f(c, m="auroc", e=e):
                if c not in e:
                    return "-"
                v, lo, hi = e[c][m]
                return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"

            if "embedded" in e:
                emb.append(e["embedded"]["auroc"][0])
            pl.append(e["plain"]["auroc"][0])
            loc = e.get("localization")
            print(
                f"| {cat} | {f('plain')} | {f('embedded')} | {f('embedded', 'tpr@1%')} | "
                f"{f('chat')} | {'-' if loc is None else f'{loc:.2f}'} |"
            )
        mean_emb = f"{np.mean(emb):.3f}" if emb else "-"
        print(f"| mean | {np.mean(pl):.3f} | {mean_emb} | | | |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--categories", nargs="+")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print_table(report)


if __name__ == "__main__":
    main()
