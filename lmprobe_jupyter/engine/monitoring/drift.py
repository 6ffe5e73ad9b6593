"""Drift: does a calibrated threshold still hold on new traffic?

:meth:`Probe.calibrate` sets a threshold so that at most ``fpr`` of a benign set is
flagged. That guarantee holds for new prompts from the same distribution; when traffic
changes (new topics, another language, a product's new system prompt) the flagged
fraction of benign prompts can climb well past ``fpr`` without any harmful request.
:func:`drift` compares new prompts with the calibration set on three numbers:

- the flagged fraction at the calibrated threshold, against the calibrated ``fpr``
  (one-sided exact binomial test: is it higher than ``fpr`` allows?), with a Wilson 95%
  interval;
- the score distribution (two-sample Kolmogorov-Smirnov test);
- the activations the probe reads (its layers, mean-pooled, or its own activation-stage
  pooling): the distance between the two sets' mean vectors in calibration standard
  deviations (root-mean-square over dimensions), with a permutation p-value. (A
  per-prompt outlier share was tried first and missed the clearest shift: benign
  questions inside 64 words of news move the mean by 2.2 sd, yet long texts' mean-pooled
  vectors vary less, so none of them lay beyond the calibration set's 99th-percentile
  distance.)

The verdict is one line: the threshold **holds** (the flagged fraction is consistent
with ``fpr`` and nothing drifted), **holds, but inputs drifted** (scores or activations
moved, the flag rate did not yet), or **does not hold** (significantly more flagged than
calibrated). ``new`` prompts are assumed benign traffic of the kind the threshold was
calibrated on: harmful prompts among them raise the flag rate by design.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["DriftReport", "drift"]

#: Relabellings of the permutation test of the activations' mean shift.
N_PERMUTATIONS = 199


@dataclass
class DriftReport:
    """How new prompts compare with a probe's calibration set.

    Attributes
    ----------
    holds : bool
        Whether the calibrated threshold still holds (flag rate consistent with ``fpr``).
    drifted : bool
        Whether scores or activations moved significantly (at ``alpha``).
    verdict : str
        The one-line summary (also ``str(report)``).
    threshold, target_fpr : float
    n_new, n_flagged : int
    flag_rate : float
    flag_rate_ci : (float, float)
        Wilson 95% interval of ``flag_rate``.
    flag_p_value : float
        One-sided binomial p-value of ``n_flagged`` given ``target_fpr``.
    score_ks, score_ks_p : float
        Kolmogorov-Smirnov statistic and p-value, new vs calibration scores.
    score_median_new, score_median_reference : float
    mean_shift_sd : float
        Distance between the two sets' mean activations, in calibration SDs (RMS over
        dimensions).
    mean_shift_p : float
        Permutation p-value of ``mean_shift_sd`` (:data:`N_PERMUTATIONS` relabellings of
        the pooled prompts, seeded).
    alpha : float
    """

    holds: bool
    drifted: bool
    verdict: str
    threshold: float
    target_fpr: float
    n_new: int
    n_flagged: int
    flag_rate: float
    flag_rate_ci: tuple
    flag_p_value: float
    score_ks: float
    score_ks_p: float
    score_median_new: float
    score_median_reference: float
    mean_shift_sd: float
    mean_shift_p: float
    alpha: float = 0.05

    def __str__(self) -> str:
        return self.verdict

    def __repr__(self) -> str:
        return f"DriftReport({self.verdict})"

    def to_dict(self) -> dict:
        """Every number of the report as a plain dict."""
        from dataclasses import asdict

        return asdict(self)


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _activations(probe, prompts) -> np.ndarray:
    """The probe's layers pooled as it pools (mean for token-level poolings), side by side."""
    from ..extraction.pooling import extractor_pooling, pooling_stage

    rt = probe.runtime
    how = probe.inference_pooling_
    pooling = "mean"
    if isinstance(how, str) and pooling_stage(how, role="inference") == "activation":
        pooling = extractor_pooling(how)
    prepared = rt.prepare(prompts, chat_template=probe.chat_template)
    acts = rt.pooled(prepared, list(probe.layers_), pooling, roles=probe.score_roles)
    return np.concatenate([acts[layer] for layer in probe.layers_], axis=1).astype(np.float64)


def _mean_shift_test(A_ref: np.ndarray, A_new: np.ndarray) -> tuple[float, float]:
    """RMS standardized distance of the mean vectors and its permutation p-value."""
    sd = A_ref.std(0) + 1e-6

    def stat(a, b):
        return float(np.sqrt(np.mean(((a.mean(0) - b.mean(0)) / sd) ** 2)))

    observed = stat(A_new, A_ref)
    both, n_new = np.concatenate([A_new, A_ref]), len(A_new)
    rng = np.random.default_rng(0)
    count = 0
    for _ in range(N_PERMUTATIONS):
        idx = rng.permutation(len(both))
        count += stat(both[idx[:n_new]], both[idx[n_new:]]) >= observed - 1e-12
    return observed, (count + 1) / (N_PERMUTATIONS + 1)


def drift(probe, prompts, reference=None, *, alpha: float = 0.05) -> DriftReport:
    """Compare new prompts' scores and activations with the calibration set.

    Parameters
    ----------
    probe : Probe
        A calibrated binary probe (:meth:`Probe.calibrate`).
    prompts : list of str or chat message lists
        New traffic, assumed benign (what the threshold was calibrated for).
    reference : list of str or chat message lists, optional
        The benign prompts the threshold was calibrated on (their activations are
        cached, so this costs no forward pass). A set that does not reproduce the
        calibrated threshold gets a warning. None: the calibration set itself, its scores
        as saved with the threshold and, for the activation test, its prompts as
        remembered by the probe object that was calibrated (a probe loaded from disk has
        the scores only: the activations are then not compared, and the verdict says so).
    alpha : float, default 0.05
        Significance level of the three tests.

    Returns
    -------
    DriftReport

    Raises
    ------
    ValueError
        The probe is not calibrated, or a set is empty.
    """
    from scipy import stats

    from ..inputs import check_prompts
    from .calibration import prompt_scores

    probe.check_fitted()
    threshold = getattr(probe, "threshold_", None)
    cal = getattr(probe, "calibration_", None) or {}
    if threshold is None or "fpr" not in cal:
        raise ValueError(
            "drift compares new prompts with a calibrated threshold, and this probe has "
            "none; call probe.calibrate(benign_prompts) first"
        )
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha={alpha!r} must be strictly between 0 and 1")
    prompts = check_prompts(prompts, "prompts")
    if not prompts:
        raise ValueError("drift got no prompts; pass at least one prompt")
    fpr, threshold = float(cal["fpr"]), float(threshold)
    remembered = getattr(probe, "calibration_prompts_", None)
    if reference is not None:
        reference = check_prompts(reference, "reference")
        if not reference:
            raise ValueError("drift got no reference; pass at least one prompt")
        ref = prompt_scores(probe, reference)
    elif cal.get("scores"):
        ref = np.asarray(cal["scores"], dtype=np.float64)
        reference = remembered
    elif remembered:
        reference = remembered
        ref = prompt_scores(probe, reference)
    else:
        raise ValueError(
            "this probe's calibration saved no benign scores (it was calibrated by an older "
            "version); pass reference=<the prompts given to calibrate>"
        )
    new = prompt_scores(probe, prompts)
    m = int(math.floor(fpr * len(ref) + 1e-9))
    again = float(np.sort(ref)[::-1][min(m, len(ref) - 1)])
    if len(ref) != cal.get("n_benign", len(ref)) or not math.isclose(
        again, threshold, rel_tol=1e-4, abs_tol=1e-6
    ):
        warnings.warn(
            f"reference ({len(ref)} prompts) does not reproduce the calibrated threshold "
            f"{threshold:.4g} (it gives {again:.4g}); pass the prompts given to calibrate",
            UserWarning,
            stacklevel=3,
        )
    n, k = len(new), int(np.sum(new > threshold))
    flag_p = float(stats.binom.sf(k - 1, n, fpr)) if k else 1.0
    ks = stats.ks_2samp(new, ref)

    if reference:
        A_ref, A_new = _activations(probe, reference), _activations(probe, prompts)
        shift, shift_p = _mean_shift_test(A_ref, A_new)
        acts = f"activations' mean shift {shift:.2f} sd (p={shift_p:.2g})"
    else:  # a reloaded probe: scores saved, prompts not
        shift = shift_p = math.nan
        acts = "activations not compared (pass reference= the calibration prompts)"
    holds = flag_p >= alpha
    drifted = ks.pvalue < alpha or shift_p < alpha
    lo, hi = _wilson(k, n)
    status = "does NOT hold" if not holds else ("holds, but inputs drifted" if drifted else "holds")
    verdict = (
        f"threshold {threshold:.3g} {status}: {k}/{n} new prompts flagged ({k / n:.1%}, 95% CI "
        f"{lo:.1%}-{hi:.1%}) vs {fpr:.1%} calibrated (p={flag_p:.2g}); scores KS "
        f"{ks.statistic:.2f} (p={ks.pvalue:.2g}); {acts}"
    )
    return DriftReport(
        holds=bool(holds),
        drifted=bool(drifted),
        verdict=verdict,
        threshold=threshold,
        target_fpr=fpr,
        n_new=n,
        n_flagged=k,
        flag_rate=k / n,
        flag_rate_ci=(lo, hi),
        flag_p_value=flag_p,
        score_ks=float(ks.statistic),
        score_ks_p=float(ks.pvalue),
        score_median_new=float(np.median(new)),
        score_median_reference=float(np.median(ref)),
        mean_shift_sd=shift,
        mean_shift_p=shift_p,
        alpha=float(alpha),
    )
