"""Calibration: decision thresholds with a known false-positive rate, and prompt scores.

A probe deployed next to a chatbot needs, beyond ``predict``:

- a decision threshold with a known false-positive rate on benign traffic
  (:func:`calibrate`, then :func:`flag`), and metrics at that threshold with bootstrap
  confidence intervals (:func:`evaluate_extra`, merged into ``Probe.evaluate``);
- every part of a long input read: a prompt longer than the model's context is scored
  in overlapping windows and keeps its highest window's score (:func:`prompt_scores`,
  ``long_inputs="windows"``), so benign padding placed before a request cannot push the
  request past the context and out of sight.

Scores of the model's own output while it is written: :mod:`.live`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "LONG_INPUTS",
    "calibrate",
    "current_threshold",
    "evaluate_extra",
    "flag",
    "prompt_scores",
    "window_spans",
]

LONG_INPUTS = ("windows", "truncate")


# ---------------------------------------------------------------------- prompt-level scores


def prompt_scores(
    probe, prompts, *, remote: bool | None = None, long_inputs: str = "windows"
) -> np.ndarray:
    """One score per prompt: the positive-class probability (binary classification) or
    the prediction (regression), as ``Probe.evaluate`` sees it.

    Parameters
    ----------
    probe : Probe
    prompts : list of str or chat message lists
    remote : bool, optional
    long_inputs : {"windows", "truncate"}, default "windows"
        A text prompt longer than the model's context is scored in overlapping windows
        (:func:`window_spans`: half-overlapping, the last one ending at the text's end)
        and its score is the highest window's, with a warning saying so. "truncate"
        reads only the first ``max_length`` tokens (what ``predict`` does), so text past
        them is never seen. Chat message lists and ``dataset=`` probes are never split.

    Returns
    -------
    ndarray of shape (n_prompts,), float64
    """
    from ..inputs import check_prompts

    probe.check_fitted()
    prompts = check_prompts(prompts, "prompts")
    if not prompts:
        raise ValueError("no prompts were given")
    if long_inputs not in LONG_INPUTS:
        raise ValueError(
            f"long_inputs={long_inputs!r} is not one of {', '.join(map(repr, LONG_INPUTS))}"
        )
    if probe.task == "classification" and len(probe.classes_) != 2:
        raise ValueError(
            f"calibrated thresholds need a binary probe; this one has {len(probe.classes_)} "
            f"classes ({', '.join(map(repr, probe.classes_.tolist()))})"
        )
    owner, pieces = list(range(len(prompts))), list(prompts)
    if long_inputs == "windows" and probe.dataset is None:
        owner, pieces = _split_long(probe, prompts)
    pred, proba = probe.prompt_outputs(pieces, remote=remote)
    scores = np.asarray(pred if probe.task == "regression" else proba[:, 1], dtype=np.float64)
    out = np.full(len(prompts), -np.inf)
    np.maximum.at(out, np.asarray(owner), scores)
    return out


def _window_size(probe) -> int:
    """Tokens of raw text that fit the context with the prompt's own additions (special
    tokens, chat template), less 8 of slack for re-tokenization at window edges."""
    rt = probe.runtime
    tok = rt.tokenizer
    wrapped = rt.prepare(["x"], chat_template=probe.chat_template)[0]
    overhead = len(tok(wrapped, add_special_tokens=True)["input_ids"]) - len(
        tok("x", add_special_tokens=False)["input_ids"]
    )
    return max(8, rt.max_length - overhead - 8)


def window_spans(tokenizer, text: str, size: int, fits: int | None = None) -> list[tuple[int, int]]:
    """Character spans of windows of at most ``size`` tokens covering ``text``.

    Consecutive windows overlap by half (stride ``size // 2``), so any passage of up to
    ``size // 2`` tokens lies whole inside one window; the last window ends at the end
    of ``text``. A text of at most ``fits`` tokens (default ``size``) is one window.

    Returns
    -------
    list of (start, end) character offsets into ``text``
    """
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    n = len(offsets)
    if n <= (size if fits is None else fits):
        return [(0, len(text))]
    stride = max(1, size // 2)
    starts = list(range(0, n - size, stride)) + [n - size]
    return [
        (0 if s == 0 else offsets[s][0], len(text) if s + size == n else offsets[s + size - 1][1])
        for s in starts
    ]


def _split_long(probe, prompts) -> tuple[list[int], list]:
    """(owner index, text) pieces: text prompts over the context become their windows."""
    rt = probe.runtime
    size = _window_size(probe)
    owner, pieces, split = [], [], []
    for i, p in enumerate(prompts):
        spans = (
            window_spans(rt.tokenizer, p, size, fits=size + 8)
            if isinstance(p, str)
            else [(0, len(p))]
        )
        if len(spans) > 1:
            split.append((i, len(spans)))
        for a, b in spans:
            owner.append(i)
            pieces.append(p if not isinstance(p, str) else p[a:b])
    if split:
        i, k = split[0]
        warnings.warn(
            f"{len(split)} prompt(s) exceed the model's context of {rt.max_length} tokens "
            f"(first: #{i}); each was scored in overlapping windows of {size} tokens "
            f"(#{i}: {k} windows) and keeps its highest window's score, so text anywhere in "
            "it counts (long_inputs='truncate' reads only the first tokens)",
            UserWarning,
            stacklevel=4,
        )
    return owner, pieces


def current_threshold(probe, threshold: float | None = None) -> float:
    """``threshold`` if given, else the calibrated ``probe.threshold_``, else 0.5."""
    if threshold is None:
        threshold = getattr(probe, "threshold_", None)
    if threshold is None:
        return 0.5
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"threshold={threshold!r} must be a number") from None
    if math.isnan(value):
        raise ValueError("threshold=nan is not a usable threshold")
    return value


# ---------------------------------------------------------------------- calibration


def calibrate(
    probe,
    benign_prompts,
    fpr: float = 0.01,
    *,
    remote: bool | None = None,
    long_inputs: str = "windows",
):
    """The threshold at which at most ``fpr`` of ``benign_prompts`` is flagged.

    ``Probe.calibrate`` stores the result as ``threshold_`` and ``calibration_``.

    With the benign scores sorted from high to low, ``s_1 >= s_2 >= ... >= s_n`` and
    ``m = floor(fpr * n)``, the threshold is ``s_(m+1)``: a prompt is flagged when its
    score is strictly greater, so at most ``m`` benign prompts (fewer with ties) are
    flagged. This is the conservative ``1 - fpr`` quantile; on fresh benign prompts from
    the same distribution the expected flagged fraction is at most about ``fpr``.

    Parameters
    ----------
    probe : Probe
        A fitted binary classification (or regression) probe.
    benign_prompts : list of str or chat message lists
        Held-out prompts that should *not* be flagged (not the training prompts).
    fpr : float, default 0.01
        Target false-positive rate, in (0, 1).
    remote : bool, optional
        Override ``probe.remote`` for the scoring pass.
    long_inputs : {"windows", "truncate"}, default "windows"
        How prompts longer than the context are scored (see :func:`prompt_scores`).

    Returns
    -------
    threshold : float
    calibration : dict
        ``fpr``, ``n_benign``, ``n_flagged``, ``threshold``, and ``scores`` (the benign
        prompts' scores, which :func:`.drift.drift` compares new traffic with).

    Warns
    -----
    UserWarning
        When ``fpr * n < 1``: too few benign prompts to resolve ``fpr``, so the
        threshold is the highest benign score.
    """
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr={fpr!r} must be a number strictly between 0 and 1")
    fpr = float(fpr)
    scores = prompt_scores(probe, benign_prompts, remote=remote, long_inputs=long_inputs)
    n = len(scores)
    m = int(math.floor(fpr * n + 1e-9))
    if m == 0:
        warnings.warn(
            f"calibrating fpr={fpr} on {n} benign prompts: at least {math.ceil(1 / fpr)} are "
            "needed to resolve that rate, so the threshold is the highest benign score",
            UserWarning,
            stacklevel=3,
        )
    threshold = float(np.sort(scores)[::-1][m])
    calibration = {
        "fpr": fpr,
        "n_benign": int(n),
        "n_flagged": int(np.sum(scores > threshold)),
        "threshold": threshold,
        # the benign score distribution, so that probe.drift(new_prompts) can compare new
        # traffic with it after a reload, without the calibration prompts
        "scores": [float(x) for x in np.asarray(scores, dtype=np.float64)],
    }
    return threshold, calibration


def flag(
    probe,
    prompts,
    *,
    threshold: float | None = None,
    remote: bool | None = None,
    long_inputs: str = "windows",
) -> np.ndarray:
    """Which prompts score over the threshold.

    Parameters
    ----------
    probe : Probe
        A fitted binary classification (or regression) probe.
    prompts : list of str or chat message lists
    threshold : float, optional
        Overrides the threshold. By default the calibrated ``probe.threshold_`` is used;
        an uncalibrated probe uses 0.5, the plain ``predict`` cut-off, which has no
        false-positive guarantee: call :func:`calibrate` first for one.
    remote : bool, optional
    long_inputs : {"windows", "truncate"}, default "windows"
        A prompt longer than the context is flagged if any window of it scores over the
        threshold (see :func:`prompt_scores`).

    Returns
    -------
    ndarray of bool, shape (n_prompts,)
        True where the score is strictly greater than the threshold.
    """
    thr = current_threshold(probe, threshold)
    return prompt_scores(probe, prompts, remote=remote, long_inputs=long_inputs) > thr


# ---------------------------------------------------------------------- evaluate extras


def _bootstrap_counts(rng, n: int, n_boot: int) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _bootstrap(pos, neg, threshold, n_boot, rng, chunk: int = 200):
    """Stratified bootstrap of TPR at ``threshold`` and AUROC (Mann-Whitney, ties 1/2)."""
    neg_sorted = np.sort(neg)
    order = np.argsort(neg, kind="stable")
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    over = (pos > threshold).astype(np.float64) if threshold is not None else None
    tprs, aucs = [], []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        wp = _bootstrap_counts(rng, len(pos), b)
        wn = _bootstrap_counts(rng, len(neg), b)[:, order]
        cum = np.concatenate([np.zeros((b, 1)), np.cumsum(wn, axis=1)], axis=1)
        below = cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])
        aucs.append((wp * below).sum(1) / (len(pos) * len(neg)))
        if over is not None:
            tprs.append(wp @ over / len(pos))
    auc = np.concatenate(aucs)
    tpr = np.concatenate(tprs) if tprs else None
    return tpr, auc


def _interval(values, level: float = 0.95) -> tuple[float, float]:
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [a, 100.0 - a])
    return float(lo), float(hi)


def evaluate_extra(
    probe,
    y,
    pred,
    proba,
    *,
    n_bootstrap: int | None = None,
    random_state: int | None = None,
    **unknown,
) -> dict:
    """Metrics at the calibrated threshold, merged into ``Probe.evaluate``'s result.

    For a calibrated binary probe: ``threshold``, ``target_fpr`` (the rate it was
    calibrated for), ``fpr`` (the flagged fraction of this set's negatives),
    ``tpr_at_fpr`` (the flagged fraction of its positives), and 95% percentile
    bootstrap intervals ``tpr_at_fpr_ci`` and ``auroc_ci`` from ``n_bootstrap``
    stratified resamples (positives and negatives resampled separately, so every
    resample has both classes; default 1000). An uncalibrated probe gets only
    ``auroc_ci``, and only when ``n_bootstrap`` is given. Regression and multi-class
    probes get nothing extra.

    Parameters
    ----------
    y, pred, proba
        Labels, predictions and (n, 2) probabilities computed by ``Probe.evaluate``.
    n_bootstrap : int, optional
        Number of bootstrap resamples (0 turns the intervals off).
    random_state : int, optional
        Seed of the resampling (default: ``probe.random_state``, else 0).
    """
    if unknown:
        raise TypeError(
            f"evaluate() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            "valid: 'n_bootstrap', 'random_state'"
        )
    if n_bootstrap is not None and (
        isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0
    ):
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be a non-negative int")
    classes = getattr(probe, "classes_", None)
    if probe.task != "classification" or proba is None or classes is None or len(classes) != 2:
        return {}
    threshold = getattr(probe, "threshold_", None)
    if threshold is None and not n_bootstrap:
        return {}
    y = np.asarray(y)
    scores = np.asarray(proba, dtype=np.float64)[:, 1]
    is_pos = y == classes[1]
    pos, neg = scores[is_pos], scores[~is_pos]
    out: dict = {}
    if threshold is not None:
        threshold = float(threshold)
        cal = getattr(probe, "calibration_", None) or {}
        out["threshold"] = threshold
        out["target_fpr"] = float(cal["fpr"]) if "fpr" in cal else float("nan")
        out["fpr"] = float(np.mean(neg > threshold)) if len(neg) else float("nan")
        out["tpr_at_fpr"] = float(np.mean(pos > threshold)) if len(pos) else float("nan")
    n_boot = 1000 if n_bootstrap is None else n_bootstrap
    if n_boot > 0:
        nan2 = (float("nan"), float("nan"))
        if len(pos) and len(neg):
            seed = random_state if random_state is not None else (probe.random_state or 0)
            tpr, auc = _bootstrap(pos, neg, threshold, n_boot, np.random.default_rng(seed))
            out["auroc_ci"] = _interval(auc)
            if threshold is not None:
                out["tpr_at_fpr_ci"] = _interval(tpr)
        else:
            out["auroc_ci"] = nan2
            if threshold is not None:
                out["tpr_at_fpr_ci"] = (
                    _interval(np.full(1, out["tpr_at_fpr"])) if len(pos) else nan2
                )
        out["n_bootstrap"] = n_boot
    return out
