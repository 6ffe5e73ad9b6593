"""Scoring: per-token rows, their reductions, prompt-level outputs and metrics.

One implementation used by :class:`~.probe.Probe`, :class:`~.sweep.SweepResult` and the
monitor, so a rule (which tokens a probe may score, how ``max`` reduces them, what
``score`` means for regression) cannot drift between copies.

Functions take a *fitted* probe and read only its public learned state: ``pipeline_``,
``layers_``, ``classes_`` and ``task``.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "compute_metrics",
    "pad_tokens",
    "prompt_outputs",
    "reduce_rows",
    "restrict",
    "score_value",
    "token_rows",
]


def token_matrix(acts: dict, layers) -> np.ndarray:
    """Per-token features of one prompt: its layers' activations side by side, (seq, d)."""
    return np.concatenate([acts[layer] for layer in layers], axis=1)


def token_rows(probe, toks, mode: str = "proba") -> list[np.ndarray]:
    """Per-token outputs of a fitted probe, one array per prompt.

    Parameters
    ----------
    probe : fitted Probe
    toks : list of TokenActs (or objects with ``acts``: {layer: (seq, hidden)})
    mode : {"proba", "predict", "score"}
        ``"proba"``: (seq,) positive-class probability for binary classification,
        (seq, k) for multi-class, predictions for regression. ``"predict"``: labels.
        ``"score"``: always (seq,) (multi-class: the top class probability).
    """
    from .classifiers import classifier_proba

    out = []
    for t in toks:
        X = token_matrix(t.acts, probe.layers_)
        if probe.task == "regression" or mode == "predict":
            out.append(np.asarray(probe.pipeline_.predict(X)))
            continue
        p = classifier_proba(probe.pipeline_, X)
        if p.shape[1] == 2:
            out.append(p[:, 1])
        else:
            out.append(p.max(1) if mode == "score" else p)
    return out


def restrict(rows: list[np.ndarray], keep) -> list[np.ndarray]:
    """Only the tokens a probe may score (``keep`` per prompt; None keeps all)."""
    return rows if keep is None else [r[k[: len(r)]] for r, k in zip(rows, keep)]


def pad_tokens(rows: list[np.ndarray], keep=None) -> np.ma.MaskedArray:
    """Stack ragged per-token outputs into a masked (batch, seq_len[, k]) array; padding
    (and tokens outside ``keep``, when given) is masked."""
    width = max((len(r) for r in rows), default=0)
    tail = rows[0].shape[1:] if rows else ()
    numeric = all(np.asarray(r).dtype.kind in "biuf" for r in rows)
    data = np.zeros((len(rows), width, *tail), dtype=np.float64 if numeric else object)
    mask = np.ones_like(data, dtype=bool)
    for i, r in enumerate(rows):
        data[i, : len(r)] = r
        mask[i, : len(r)] = (
            False if keep is None else ~keep[i][: len(r)].reshape(-1, *([1] * len(tail)))
        )
    return np.ma.MaskedArray(data, mask=mask)


def reduce_rows(rows: list[np.ndarray], how: str) -> np.ndarray:
    """Reduce each prompt's per-token values over its tokens with a score-stage pooling
    (``"max"``, ``"min"``, ``"score:mean"``, ... see :func:`.pooling.reduce_token_scores`).

    Returns
    -------
    ndarray of shape (n_prompts,) or (n_prompts, k)
    """
    from ..extraction.pooling import pooling_stage, reduce_token_scores

    if how == "all" or pooling_stage(how) != "score":
        raise ValueError(
            f"how={how!r} is not a score-stage pooling ('max', 'min', 'score:NAME', ...)"
        )
    return np.array([reduce_token_scores(how, r) for r in rows])


def reduced_proba(rows: list[np.ndarray], how: str) -> np.ndarray:
    """Per-token class probabilities reduced to prompt-level (n, k) probabilities."""
    red = reduce_rows(rows, how)
    if red.ndim == 1:
        return np.column_stack([1 - red, red])
    return red / red.sum(1, keepdims=True)


def prompt_reduction(how) -> str:
    """How token-level inference becomes a prompt score: ``"all"`` is scored as ``"max"``
    (a prompt is positive if any of its tokens is); a score-stage pooling as itself."""
    return "max" if how == "all" else how


def prompt_outputs(probe, *, features: np.ndarray | None = None, rows=None, proba=None):
    """Prompt-level (n,) predictions and (n, k) probabilities (None for regression).

    Give either pooled ``features`` of shape (n, d), or per-token ``rows`` (from
    :func:`token_rows` with ``mode="proba"``, already :func:`restrict`-ed), which are
    reduced as :func:`prompt_reduction` of the probe's ``inference_pooling_`` says, or
    prompt-level class probabilities ``proba`` of shape (n, k) (a sequence probe's).
    """
    from .classifiers import classifier_proba

    if sum(x is not None for x in (features, rows, proba)) != 1:
        raise TypeError("give exactly one of features=, rows= or proba=")
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
    elif rows is not None:
        how = prompt_reduction(probe.inference_pooling_)
        if probe.task == "regression":
            return reduce_rows(rows, how), None
        proba = reduced_proba(rows, how)
    else:
        if probe.task == "regression":
            return probe.pipeline_.predict(features), None
        proba = classifier_proba(probe.pipeline_, features)
    return probe.classes_[proba.argmax(1)], proba


def score_value(y, pred, task: str) -> float:
    """Accuracy (classification) or R^2 (regression)."""
    if task == "regression":
        from sklearn.metrics import r2_score

        return float(r2_score(y, pred))
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


def compute_metrics(y, pred, proba, task: str, classes=None) -> dict:
    """accuracy/f1/precision/recall/auroc for classification, r2/mse/mae for regression."""
    from sklearn import metrics as M

    if task == "regression":
        pred = np.asarray(pred, dtype=np.float64)
        return {
            "r2": float(M.r2_score(y, pred)),
            "mse": float(M.mean_squared_error(y, pred)),
            "mae": float(M.mean_absolute_error(y, pred)),
        }
    classes = np.asarray(classes) if classes is not None else np.unique(np.concatenate([y, pred]))
    binary = len(classes) == 2
    avg = "binary" if binary else "macro"
    kw = {"pos_label": classes[1]} if binary else {}
    out = {
        "accuracy": float(M.accuracy_score(y, pred)),
        "f1": float(M.f1_score(y, pred, average=avg, zero_division=0, **kw)),
        "precision": float(M.precision_score(y, pred, average=avg, zero_division=0, **kw)),
        "recall": float(M.recall_score(y, pred, average=avg, zero_division=0, **kw)),
    }
    auroc = float("nan")
    if proba is not None and len(np.unique(y)) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if binary:
                auroc = float(M.roc_auc_score(y == classes[1], proba[:, 1]))
            elif set(np.unique(y)) <= set(classes):
                auroc = float(M.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    out["auroc"] = auroc
    out["n"] = len(y)
    return out
