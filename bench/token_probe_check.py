"""Does ``Probe`` reproduce the best row of ``bench/token_probes.py``?

The benchmark fits its every-token probe on cached activations (fast refits). This
script fits the product's configuration on the same training prompts (fold 1 of the
benchmark's 5-fold split) through ``Probe.fit`` (its own extraction) and compares, on the
fold's held-out prompts, plain and embedded in prose:

- the token logits of both (correlation, max abs difference), and
- the AUROC of the probe's ``predict_proba`` (``rolling_max:16`` over per-token
  *probabilities*, what the product aggregates) with the benchmark's score
  (``rolling_max:16`` over per-token *logits*).

    python bench/token_probe_check.py
"""

from __future__ import annotations

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


def main():
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.engine.models import DEFAULT_MODEL, load_model
    from lmprobe_jupyter.engine.windows import aggregate_rows

    rows = tp.load_strongreject()
    prompts = [r["prompt"] for r in rows]
    y = np.asarray([int(r["category"] == tp.DEFAULT_CATEGORY) for r in rows])
    lm = load_model(DEFAULT_MODEL)
    emb_texts, _ = tp.embed_in_prose(
        prompts, tp.load_prose(), lm.tokenizer, np.random.default_rng(0)
    )
    tr, te = next(iter(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)))

    t0 = time.perf_counter()
    probe = Probe(**PRODUCT).fit([prompts[i] for i in tr], y[tr].tolist())
    fit_s = time.perf_counter() - t0

    # the benchmark's method on its cached activations, same fold
    layers = sorted(set(tp.EXTRACT_LAYERS + [12] + list(tp.BEST_LAYERS)))
    import hashlib
    import json

    tag = hashlib.sha256(
        json.dumps([lm.key, layers, 0, prompts, tp.SYSTEM_PROMPT]).encode()
    ).hexdigest()[:12]
    out = {"fit_s (Probe.fit, with extraction)": round(fit_s, 1)}
    for cond, texts in (("plain", prompts), ("embedded", emb_texts)):
        data = dict(np.load(tp.bench_cache() / f"{cond}-{tag}.npz"))
        c = tp.MultiLayerCondition(data, tp.BEST_LAYERS)
        if cond == "plain":
            bench = tp.TokenLinearMethod("rolling_max:16", C=2e-4, layers=tp.BEST_LAYERS)
            bench.fit(c, tr, y[tr], 0)
        rows_b = bench.token_scores(c, te)
        sub = [texts[i] for i in te]
        p = probe.predict_proba(sub)[:, 1]
        ts = probe.token_scores(sub)
        lo = [np.log(t.scores / (1 - t.scores)) for t in ts]
        a = np.concatenate([r[~np.isnan(r)] for r in rows_b])
        b = np.concatenate([r[~np.isnan(r)] for r in lo])
        out[cond] = {
            "n_tokens": int(len(a)),
            "logit corr": round(float(np.corrcoef(a, b)[0, 1]), 5),
            "max |logit diff|": round(float(np.abs(a - b).max()), 4),
            "AUROC Probe.predict_proba": round(float(roc_auc_score(y[te], p)), 4),
            "AUROC bench (rolling_max:16 of logits)": round(
                float(roc_auc_score(y[te], aggregate_rows(rows_b, "rolling_max:16"))), 4
            ),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
