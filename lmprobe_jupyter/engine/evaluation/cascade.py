"""Probe -> judge cascades: the cheap probe decides, a costly judge reads only the band
where the probe is unsure.

:func:`cascade` (``Probe.cascade``) scores a *calibration* split with the probe and picks
the band of scores around the decision threshold (the calibrated ``threshold_``, else
0.5) that holds at most ``budget`` of it: the ``floor(budget * n)`` calibration prompts
whose score is closest to the threshold, in logit units. The band is fixed there, never
on the test set. On the *test* split, prompts inside the band go to the judge, any
callable ``text -> score`` (a bigger model's probe, an LLM grader); the share actually
routed is reported, as traffic may differ from the calibration split.

The combined score keeps the probe's ranking outside the band and the judge's inside:
a routed prompt's judge score is mapped, through the empirical distribution of the judge
scores of the calibration prompts in the band, onto the band's probe-score range. So the
combined score is one ranking, and AUROC / TPR at an FPR are read from it as for the
probe alone and the judge alone (judge on every test prompt), each with a stratified
bootstrap 95% interval. Compute: judge calls and seconds, probe seconds.

A judge that raises, or returns a non-number, NaN or infinity, stops the run with one
error naming the prompt; the probe is never modified.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["CascadeReport", "cascade"]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass
class CascadeReport:
    """Probe alone vs judge alone vs the cascade, on the test split.

    Attributes
    ----------
    budget : float
        The largest share of traffic the band may send to the judge (on calibration).
    threshold : float
    threshold_source : str
    band : (float, float)
        Probe-score interval routed to the judge (inclusive).
    calibration_routed : float
        Share of the calibration split inside the band (at most ``budget``).
    test_routed : float
        Share of the test split sent to the judge.
    rows : list of dict
        ``system`` ("probe", "judge", "cascade"), ``auroc`` (+ ``_lo``/``_hi``),
        ``tpr_at_fpr`` (+ ``tpr_lo``/``tpr_hi``), ``judge_calls``, ``judge_seconds``,
        ``probe_seconds``.
    fpr : float
    n_calibration, n_test : int
    scores : dict of str to ndarray
        Test scores of each system.
    """

    budget: float
    threshold: float
    threshold_source: str
    band: tuple
    calibration_routed: float
    test_routed: float
    rows: list
    fpr: float
    n_calibration: int
    n_test: int
    scores: dict

    def row(self, system: str) -> dict:
        """The row of ``system`` ("probe", "judge" or "cascade")."""
        for r in self.rows:
            if r["system"] == system:
                return r
        raise KeyError(f"no system {system!r}; systems: {[r['system'] for r in self.rows]}")

    def __repr__(self) -> str:
        parts = [
            f"{r['system']}: AUROC {r['auroc']:.3f}, TPR@{self.fpr:g} {r['tpr_at_fpr']:.3f}, "
            f"{r['judge_calls']} judge calls"
            for r in self.rows
        ]
        return (
            f"CascadeReport(budget {self.budget:g}, routed {self.test_routed:.1%} of "
            f"{self.n_test} test prompts; " + "; ".join(parts) + ")"
        )

    def _repr_html_(self) -> str:
        from ...presentation.errors import render_cascade

        return render_cascade(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ...presentation.errors import cascade_table
        from ...presentation.payload import repr_bundle

        columns, rows, title, note = cascade_table(self)
        return repr_bundle("table", rows=rows, columns=columns, title=title, note=note)


def _call_judge(judge, prompts, indices) -> tuple[np.ndarray, float]:
    from .error_analysis import prompt_text

    out = np.empty(len(indices))
    start = time.perf_counter()
    for k, i in enumerate(indices):
        text = prompts[i] if isinstance(prompts[i], str) else prompt_text(prompts[i])
        try:
            value = judge(text)
        except Exception as exc:
            raise ValueError(
                f"the judge raised {type(exc).__name__} on prompt #{i} ({text[:60]!r}): {exc}; "
                "nothing was reported and the probe is unchanged. Fix the judge (it must map "
                "a text to a finite number)"
            ) from exc
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"the judge returned {type(value).__name__} {value!r:.40} for prompt #{i}; it "
                "must return one finite number per text (higher: more positive)"
            ) from None
        if not math.isfinite(value):
            raise ValueError(
                f"the judge returned {value} for prompt #{i} ({text[:60]!r}); it must return "
                "a finite number per text. Nothing was reported; the probe is unchanged"
            )
        out[k] = value
    return out, time.perf_counter() - start


def _split(probe, data, name: str):
    from .error_analysis import check_labelled

    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError(
            f"{name} must be a (prompts, labels) tuple; give cascade(judge, "
            "calibration=(cal_prompts, cal_labels), test=(test_prompts, test_labels))"
        )
    prompts, y = check_labelled(probe, data[0], data[1], f"cascade {name}=")
    is_pos = y == probe.classes_[1]
    if is_pos.all() or not is_pos.any():
        raise ValueError(f"cascade {name}= needs prompts of both classes")
    return prompts, is_pos


def cascade(
    probe,
    judge,
    budget: float = 0.1,
    *,
    calibration=None,
    test=None,
    threshold: float | None = None,
    fpr: float = 0.01,
    judge_alone: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> CascadeReport:
    """Route the probe's uncertain band to ``judge``; compare on a held-out test split.

    Parameters
    ----------
    probe : Probe
        A fitted binary classification probe (never modified).
    judge : callable
        ``judge(text: str) -> float``, higher meaning more positive.
    budget : float, default 0.1
        At most this share of the calibration split falls in the band, in (0, 1].
    calibration, test : (prompts, labels)
        Disjoint labelled splits, held out from the probe's training: the band is chosen
        on ``calibration``, every metric is read on ``test``.
    threshold : float, optional
        Band centre (default: the calibrated ``threshold_``, else 0.5).
    fpr : float, default 0.01
    judge_alone : bool, default True
        Also run the judge on every test prompt (the "judge" row; costs ``n_test`` calls).
    n_bootstrap : int, default 1000
    seed : int, default 0

    Returns
    -------
    CascadeReport
    """
    from ..monitoring.calibration import current_threshold, prompt_scores
    from .error_analysis import check_binary, set_metrics

    check_binary(probe, "cascade")
    if not callable(judge):
        raise TypeError(f"judge must be a callable text -> score, got {type(judge).__name__}")
    if (
        isinstance(budget, bool)
        or not isinstance(budget, (int, float))
        or not 0 < float(budget) <= 1
    ):
        raise ValueError(f"budget={budget!r} must be a share of traffic in (0, 1], e.g. 0.1")
    if calibration is None or test is None:
        raise ValueError(
            "cascade needs calibration=(prompts, labels) to choose the band and "
            "test=(prompts, labels) to measure it (disjoint, both held out from training)"
        )
    cal_prompts, cal_pos = _split(probe, calibration, "calibration")
    test_prompts, test_pos = _split(probe, test, "test")
    shared = {p for p in cal_prompts if isinstance(p, str)} & {
        p for p in test_prompts if isinstance(p, str)
    }
    if shared:
        raise ValueError(
            f"{len(shared)} prompt(s) are in both calibration and test (e.g. "
            f"{next(iter(shared))[:60]!r}); the band must not be chosen on the test set"
        )
    source = (
        "given"
        if threshold is not None
        else ("calibrated" if getattr(probe, "threshold_", None) is not None else "default 0.5")
    )
    thr = current_threshold(probe, threshold)

    t0 = time.perf_counter()
    cal_s = prompt_scores(probe, cal_prompts)
    cal_probe_s = time.perf_counter() - t0
    dist = np.abs(_logit(cal_s) - _logit(thr))
    k = int(math.floor(float(budget) * len(cal_prompts) + 1e-9))
    if k == 0:
        raise ValueError(
            f"budget={budget} of {len(cal_prompts)} calibration prompts routes none; use a "
            f"larger calibration split (at least {math.ceil(1 / float(budget))}) or budget"
        )
    order = np.argsort(dist, kind="stable")
    width = float(dist[order[k - 1]])
    # Strictly inside the k-th distance, unless ties would still fit the budget.
    in_band = dist <= width
    if in_band.sum() > k:
        in_band = dist < width
    band_idx = np.flatnonzero(in_band)
    if band_idx.size:
        lo, hi = float(cal_s[band_idx].min()), float(cal_s[band_idx].max())
    else:
        lo = hi = float(thr)
    cal_judge, cal_judge_s = _call_judge(judge, cal_prompts, band_idx)
    ref = np.sort(cal_judge)

    t0 = time.perf_counter()
    test_s = prompt_scores(probe, test_prompts)
    probe_s = time.perf_counter() - t0
    routed = np.flatnonzero((test_s >= lo) & (test_s <= hi)) if band_idx.size else np.array([])
    routed = routed.astype(int)
    judged, routed_s = _call_judge(judge, test_prompts, routed)
    combined = test_s.copy()
    if routed.size:
        if ref.size > 1:
            cdf = (np.searchsorted(ref, judged, side="right") - 0.5) / ref.size
            cdf = np.clip(cdf, 0.0, 1.0)
        else:
            cdf = np.full(routed.size, 0.5)
        # Map into the band, keeping a strict order against the probe's scores outside it.
        eps = 1e-9 * max(1.0, hi - lo)
        combined[routed] = (lo + eps) + cdf * max(hi - lo - 2 * eps, 0.0)

    kw = {"fpr": fpr, "n_bootstrap": n_bootstrap, "seed": seed}
    rows = [
        {
            "system": "probe",
            **_metrics(set_metrics(test_s, test_pos, thr, **kw)),
            "judge_calls": 0,
            "judge_seconds": 0.0,
            "probe_seconds": probe_s,
        }
    ]
    scores = {"probe": test_s, "cascade": combined}
    if judge_alone:
        all_j, all_s = _call_judge(judge, test_prompts, list(range(len(test_prompts))))
        scores["judge"] = all_j
        rows.append(
            {
                "system": "judge",
                **_metrics(set_metrics(all_j, test_pos, float(np.median(all_j)), **kw)),
                "judge_calls": len(test_prompts),
                "judge_seconds": all_s,
                "probe_seconds": 0.0,
            }
        )
    rows.append(
        {
            "system": "cascade",
            **_metrics(set_metrics(combined, test_pos, thr, **kw)),
            "judge_calls": int(routed.size),
            "judge_seconds": routed_s,
            "probe_seconds": probe_s,
            "calibration_judge_calls": int(band_idx.size),
            "calibration_seconds": cal_probe_s + cal_judge_s,
        }
    )
    return CascadeReport(
        budget=float(budget),
        threshold=thr,
        threshold_source=source,
        band=(lo, hi),
        calibration_routed=band_idx.size / len(cal_prompts),
        test_routed=routed.size / len(test_prompts),
        rows=rows,
        fpr=fpr,
        n_calibration=len(cal_prompts),
        n_test=len(test_prompts),
        scores=scores,
    )


def _metrics(m: dict) -> dict:
    keys = ("auroc", "auroc_lo", "auroc_hi", "tpr_at_fpr", "tpr_lo", "tpr_hi")
    return {k: m[k] for k in keys}
