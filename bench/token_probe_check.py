"""Does ``Probe`` reproduce the best row of ``bench/token_probes.py``?

The benchmark fits its every-token probe on cached activations (fast refits). This
script fits the product's configuration on the same training prompts (fold 1 of the
benchmark's 5-fold split) through ``Probe.fit`` (its own extraction) and compares, on the
fold's held-out prompts, plain and embedded in prose:

- the token logits of both (correlation, max abs difference), and
- the AUROC of the probe's ``predict_proba`` (``rolling_max:16`` over per-token
  *probabilities*, what the product aggregates) with the benchmark's score
  (``rolling_max:16`` over per-token *logits*).

    python bench/token_probe_check.py [--background DRAW]

``--background DRAW``: the same for the benchmark's context + background documents row
of that draw: ``Probe.fit_spans`` on the very documents and weighted spans the
benchmark trains fold 1 on (context documents of the other folds' prompts, background
documents of the training prompts), against ``BackgroundAugmentedMethod`` on the cached
activations.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import token_probes as tp  # noqa: E402

PRODUCT = dict(
    layers=list(tp.BEST_LAYERS),
    train_pooling="all",
    inference_pooling="rolling_max:16",
    preprocessing="standard",
    classifier_kwargs={"C": 2e-4, "class_weight": "balanced", "max_iter": 3000},
    dtype="float32",
    chat_template=False,
)


def training_documents(prompts, y, folds, draw, tag):
    """Fold 1's training documents of the context + background row of ``draw``: texts
    and weighted spans (labels from ``y``), and the benchmark's cached extractions."""
    ctx_texts, ctx_spans = tp.fold_context_documents(prompts, folds, draw)
    bg_texts, bg_spans = tp.prompt_background_documents(prompts, draw)
    train = set(int(i) for i in folds[0][0])
    texts, spans = [], []
    for t, own in zip(ctx_texts + bg_texts, ctx_spans + bg_spans):
        owners = {int(who) for _, _, who, *_ in own} - {tp.BACKGROUND_OWNER}
        if owners <= train:  # documents made only of fold 1's training prompts
            texts.append(t)
            spans.append(
                [
                    (a, b, 0, tp.BACKGROUND_WEIGHT)
                    if who == tp.BACKGROUND_OWNER
                    else (a, b, int(y[who]))
                    for a, b, who, *_ in own
                ]
            )

    def cached(kind, docs):
        return tp.document_condition(dict(np.load(tp.document_path(kind, tag, docs))))

    return texts, spans, cached("docs", ctx_texts), cached("bg-docs", bg_texts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--background", type=int, default=None, metavar="DRAW")
    args = ap.parse_args(argv)
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.engine.extraction.models import DEFAULT_MODEL, load_model
    from lmprobe_jupyter.engine.extraction.windows import aggregate_rows

    rows = tp.load_strongreject()
    prompts = [r["prompt"] for r in rows]
    y = np.asarray([int(r["category"] == tp.DEFAULT_CATEGORY) for r in rows])
    lm = load_model(DEFAULT_MODEL)
    emb_texts, _ = tp.embed_in_prose(
        prompts, tp.load_prose(), lm.tokenizer, np.random.default_rng(0)
    )
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y))
    tr, te = folds[0]
    layers = sorted(set(tp.EXTRACT_LAYERS + [12] + list(tp.BEST_LAYERS)))
    tag = hashlib.sha256(
        json.dumps([lm.key, layers, 0, prompts, tp.SYSTEM_PROMPT]).encode()
    ).hexdigest()[:12]

    t0 = time.perf_counter()
    with tp.PeakRSS() as mem:
        if args.background is None:
            probe = Probe(**PRODUCT).fit([prompts[i] for i in tr], y[tr].tolist())
            what = "Probe.fit"
        else:
            docs_in, spans_in, docs, bg = training_documents(
                prompts, y, folds, args.background, tag
            )
            probe = Probe(**PRODUCT).fit_spans(docs_in, spans_in)
            what = f"Probe.fit_spans, {len(docs_in)} documents, {probe.n_train_tokens_} tokens"
        fit_s = time.perf_counter() - t0

    # the benchmark's method on its cached activations, same fold
    out = {
        f"fit_s ({what}, with extraction)": round(fit_s, 1),
        "fit peak RSS above the start, MiB (extraction included)": round(mem.mib),
    }
    for cond, texts in (("plain", prompts), ("embedded", emb_texts)):
        data = dict(np.load(tp.bench_cache() / f"{cond}-{tag}.npz"))
        c = tp.MultiLayerCondition(data, tp.BEST_LAYERS)
        if cond == "plain" and args.background is None:
            bench = tp.TokenLinearMethod("rolling_max:16", C=2e-4, layers=tp.BEST_LAYERS)
            bench.fit(c, tr, y[tr], 0)
        elif cond == "plain":
            bench = tp.BackgroundAugmentedMethod(
                "rolling_max:16", C=2e-4, layers=tp.BEST_LAYERS, draw=args.background
            )
            bench.docs, bench.background = docs, bg
            bench.fit(c, tr, y[tr], 0)
        rows_b = bench.token_scores(c, te)
        sub = [texts[i] for i in te]
        p = probe.predict_proba(sub)[:, 1]
        ts = probe.token_scores(sub)
        with np.errstate(divide="ignore"):  # a probability of exactly 0 or 1: +-inf
            lo = [np.log(t.scores) - np.log1p(-t.scores) for t in ts]
        a = np.concatenate([r[~np.isnan(r)] for r in rows_b])
        b = np.concatenate([r[~np.isnan(r)] for r in lo])
        ok = np.isfinite(b)  # the logit is recoverable from the probability
        out[cond] = {
            "n_tokens": int(len(a)),
            "logit corr": round(float(np.corrcoef(a[ok], b[ok])[0, 1]), 5),
            "max |logit diff|": round(float(np.abs(a[ok] - b[ok]).max()), 4),
            "saturated probabilities (logit not recoverable)": int((~ok).sum()),
            "smallest |bench logit| there": round(float(np.abs(a[~ok]).min()), 1)
            if (~ok).any()
            else None,
            "AUROC Probe.predict_proba": round(float(roc_auc_score(y[te], p)), 4),
            "AUROC bench (rolling_max:16 of logits)": round(
                float(roc_auc_score(y[te], aggregate_rows(rows_b, "rolling_max:16"))), 4
            ),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
