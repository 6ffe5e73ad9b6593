"""Robustness report: one probe scored on transformed copies of a held-out set.

A clean held-out AUROC says little about a monitor that will read requests wrapped in
jailbreaks, hidden in long text or spelled oddly. :func:`robustness_report` applies
named transforms (:mod:`.transforms`) to a labelled held-out set, scores every copy
with the probe, and reports per transform the AUROC and the TPR at a fixed FPR (the
threshold set on that copy's own negatives, as :func:`..monitoring.calibration.calibrate` sets it),
each with a stratified bootstrap 95% interval, their drop against the clean set, the
TPR at the probe's calibrated threshold where there is one, and the worst examples
(positives scored lowest, negatives highest) with their per-token scores for
token-level probes.

Every copy is scored through the probe's own extraction, so its activations land in the
activation cache: a second run of the same report (same prompts, transforms and seed)
runs no forward pass. For probes that score tokens from a pooled-trained classifier
(``inference_pooling="rolling_max:16"`` and the like), the report turns on per-token
caching (:func:`.cache.set_cache_tokens`) for the duration of the run.

Every transformed prompt is checked against the model's context before anything is
extracted: a prompt that would be truncated raises, and nothing of that run is cached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .transforms import TRANSFORMS, apply_transform, check_transforms

__all__ = ["RobustnessReport", "WorstExample", "bootstrap_metrics", "robustness_report"]

SEQUENCE_KINDS = ("mil", "attention", "multimax")


@dataclass
class WorstExample:
    """A held-out example a transform hurt most.

    Attributes
    ----------
    transform : str
    index : int
        Position in the held-out set.
    label : object
        Its true label.
    positive : bool
        Whether ``label`` is the probe's positive class.
    score : float
        Positive-class score of the transformed prompt.
    clean_score : float
        Score of the same prompt untransformed.
    prompt : str or list of dict
        The transformed prompt.
    tokens : list of str or None
        Per-token pieces (token-level probes only).
    token_scores : ndarray or None
        Per-token scores matching ``tokens`` (NaN where unscored).
    """

    transform: str
    index: int
    label: object
    positive: bool
    score: float
    clean_score: float
    prompt: object
    tokens: list | None = None
    token_scores: np.ndarray | None = None

    @property
    def text(self) -> str:
        """The prompt as one string (chat turns as ``role: content`` lines)."""
        return prompt_text(self.prompt)


def prompt_text(prompt) -> str:
    """A prompt as one string: chat message lists as ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


@dataclass
class RobustnessReport:
    """Per-transform quality of one probe on one held-out set.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per transform, ``clean`` first: ``transform``, ``family``, ``n``,
        ``auroc``, ``auroc_lo``, ``auroc_hi``, ``tpr_at_fpr``, ``tpr_lo``, ``tpr_hi``,
        ``auroc_drop``, ``tpr_drop`` (clean minus transformed, so positive is worse) and,
        for a calibrated probe, ``tpr_at_threshold`` and ``fpr_at_threshold``.
    scores : dict of str to ndarray
        Positive-class score of every held-out prompt per transform.
    labels : ndarray
        The held-out labels; ``is_positive`` their positive-class mask.
    worst : list of WorstExample
        ``n_worst`` per transform (not for ``clean``).
    fpr : float
        FPR at which ``tpr_at_fpr`` is read.
    threshold : float or None
        The probe's calibrated threshold, if any.
    seed, n_bootstrap : int
    seconds : float
        Wall time of the run.
    cache_hits, cache_lookups : int
        Activation-cache hits and lookups of this run (a warm rerun: all hits).
    """

    table: object
    scores: dict
    labels: np.ndarray
    is_positive: np.ndarray
    worst: list = field(default_factory=list)
    fpr: float = 0.01
    threshold: float | None = None
    seed: int = 0
    n_bootstrap: int = 1000
    seconds: float = 0.0
    cache_hits: int = 0
    cache_lookups: int = 0
    token_level: bool = False

    @property
    def transforms(self) -> list[str]:
        """The transforms reported, without ``clean``."""
        return [t for t in self.table["transform"] if t != "clean"]

    def row(self, transform: str) -> dict:
        """The table row of ``transform`` as a dict."""
        rows = self.table[self.table["transform"] == transform]
        if rows.empty:
            raise KeyError(f"{transform!r} is not in this report; it has {self.transforms}")
        return rows.iloc[0].to_dict()

    def weakest(self, k: int | None = None, *, min_drop: float = 0.02) -> list[str]:
        """Transforms whose AUROC dropped by more than ``min_drop``, worst first.

        The transforms to train with (:func:`.transforms.augment`); ``k`` caps the list.
        """
        t = self.table[self.table["transform"] != "clean"]
        t = t[t["auroc_drop"] > min_drop].sort_values("auroc_drop", ascending=False)
        names = list(t["transform"])
        return names if k is None else names[:k]

    def summary(self) -> str:
        """One line per transform: AUROC with CI and its drop."""
        lines = [
            f"robustness on {len(self.labels)} prompts ({int(self.is_positive.sum())} positive), "
            f"TPR at {self.fpr:.0%} FPR, 95% bootstrap CIs ({self.n_bootstrap} resamples)"
        ]
        for r in self.table.to_dict("records"):
            drop = "" if r["transform"] == "clean" else f"  drop {r['auroc_drop']:+.3f}"
            lines.append(
                f"  {r['transform']:<17} AUROC {r['auroc']:.3f} [{r['auroc_lo']:.3f}, "
                f"{r['auroc_hi']:.3f}]  TPR {r['tpr_at_fpr']:.2f} [{r['tpr_lo']:.2f}, "
                f"{r['tpr_hi']:.2f}]{drop}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from ...presentation.robustness import render_robustness_report

        return render_robustness_report(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ...presentation.payload import repr_bundle

        return repr_bundle(
            "robustness",
            rows=self.table.to_dict("records"),
            worst=self.worst,
            fpr=self.fpr,
            n_positive=int(self.is_positive.sum()),
            n_bootstrap=self.n_bootstrap,
        )


# ---------------------------------------------------------------------- metrics
def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUROC, ties counted 1/2."""
    neg = np.sort(neg)
    lo = np.searchsorted(neg, pos, side="left")
    hi = np.searchsorted(neg, pos, side="right")
    return float((lo + 0.5 * (hi - lo)).sum() / (len(pos) * len(neg)))


def _tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    """TPR at the threshold :func:`..monitoring.calibration.calibrate` would set on ``neg``: the
    ``floor(fpr * n) + 1``-th highest negative score, flagged when strictly above."""
    m = int(np.floor(fpr * len(neg) + 1e-9))
    thr = np.sort(neg)[::-1][min(m, len(neg) - 1)]
    return float(np.mean(pos > thr))


def bootstrap_metrics(
    pos, neg, *, fpr: float = 0.01, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """AUROC and TPR at ``fpr`` with stratified percentile-bootstrap 95% intervals.

    Positives and negatives are resampled separately (every resample has both).

    Returns
    -------
    dict
        ``auroc``, ``auroc_lo``, ``auroc_hi``, ``tpr_at_fpr``, ``tpr_lo``, ``tpr_hi``.
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    out = {"auroc": _auroc(pos, neg), "tpr_at_fpr": _tpr_at_fpr(pos, neg, fpr)}
    if n_bootstrap <= 0:
        return {**out, "auroc_lo": np.nan, "auroc_hi": np.nan, "tpr_lo": np.nan, "tpr_hi": np.nan}
    rng = np.random.default_rng(seed)
    pi = rng.integers(0, len(pos), size=(n_bootstrap, len(pos)))
    ni = rng.integers(0, len(neg), size=(n_bootstrap, len(neg)))
    aucs = np.empty(n_bootstrap)
    tprs = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        p, n = pos[pi[b]], neg[ni[b]]
        aucs[b] = _auroc(p, n)
        tprs[b] = _tpr_at_fpr(p, n, fpr)
    out["auroc_lo"], out["auroc_hi"] = (float(x) for x in np.percentile(aucs, [2.5, 97.5]))
    out["tpr_lo"], out["tpr_hi"] = (float(x) for x in np.percentile(tprs, [2.5, 97.5]))
    return out


# ---------------------------------------------------------------------- the report
def is_token_level_probe(probe) -> bool:
    """Whether ``probe`` gives meaningful per-token scores (highlights for the worst
    examples): sequence classifiers, every-token training, score-stage inference."""
    from ..extraction.pooling import is_token_level

    if isinstance(probe.classifier, str) and probe.classifier in SEQUENCE_KINDS:
        return True
    return probe.train_pooling_ == "all" or is_token_level(probe.inference_pooling_)


def check_fits_context(probe, named_prompts: dict) -> None:
    """Raise if any prompt would not fit the model's context (before any extraction).

    Raises
    ------
    ValueError
        Naming the transform, the prompt, its token count, the limit and the fix.
    """
    rt = probe.runtime
    if probe.dataset is not None:
        return
    limit = rt.max_length
    for name, prompts in named_prompts.items():
        prepared = rt.prepare(prompts, chat_template=probe.chat_template)
        lengths = [len(x) for x in rt.tokenizer(prepared, add_special_tokens=True)["input_ids"]]
        over = [(i, n) for i, n in enumerate(lengths) if n > limit]
        if over:
            i, n = over[0]
            raise ValueError(
                f"transform {name!r}: {len(over)} prompt(s) exceed the model's context of "
                f"{limit} tokens (first: #{i}, {n} tokens); scores would read truncated "
                "text, so nothing was scored or cached. Use shorter prompts or a shorter "
                "context transform (e.g. 'embed_256' instead of 'embed_1024')"
            )


def _check_set(probe, prompts, labels):
    from ..inputs import check_scoring_data

    probe.check_fitted()
    if probe.task != "classification" or len(probe.classes_) != 2:
        raise ValueError(
            "robustness_report needs a binary classification probe (AUROC and TPR at an FPR "
            "need a positive and a negative class)"
        )
    if prompts is None or (hasattr(prompts, "__len__") and len(prompts) == 0):
        raise ValueError(
            "robustness_report got an empty held-out set; pass prompts with labels of both "
            "classes (held out from training)"
        )
    prompts, y = check_scoring_data(
        prompts, labels, probe.task, probe.classes_, what="robustness_report"
    )
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(
            f"robustness_report transforms plain-text prompts; prompt #{bad[0]} is a "
            f"{type(prompts[bad[0]]).__name__}"
        )
    is_pos = y == probe.classes_[1]
    if is_pos.all() or not is_pos.any():
        only = (probe.classes_[1] if is_pos.all() else probe.classes_[0]).tolist()
        raise ValueError(
            f"robustness_report needs both classes in the held-out set, but every label is "
            f"{only!r}; add held-out prompts of the other class"
        )
    return list(prompts), y, is_pos


def robustness_report(
    probe,
    prompts,
    labels,
    transforms=None,
    *,
    seed: int = 0,
    fpr: float = 0.01,
    n_bootstrap: int = 1000,
    n_worst: int = 2,
    progress: bool | None = None,
) -> RobustnessReport:
    """Score ``probe`` on transformed copies of a labelled held-out set.

    Parameters
    ----------
    probe : Probe
        A fitted binary classification probe.
    prompts : list of str
        Held-out prompts (not the training ones), both classes.
    labels : list
        One label per prompt, from the probe's classes.
    transforms : list of str, str or None
        Names from :data:`.transforms.TRANSFORMS` (a comma-separated string works;
        ``"all"`` for every one). None: :data:`.transforms.DEFAULT_TRANSFORMS`.
    seed : int, default 0
        Seed of the transforms and of the bootstrap.
    fpr : float, default 0.01
        FPR at which the TPR is read.
    n_bootstrap : int, default 1000
        Bootstrap resamples for the 95% intervals (0: none).
    n_worst : int, default 2
        Worst examples kept per transform.
    progress : bool, optional
        A bar over the transforms (default: the probe's ``progress`` setting).

    Returns
    -------
    RobustnessReport

    Raises
    ------
    ValueError
        Unknown transform name (the message lists the known ones); an empty or one-class
        set; a transformed prompt longer than the model's context (nothing is cached).
    """
    import pandas as pd

    from ..cache.settings import get_cache, set_cache_tokens, tokens_cached
    from ..extraction.extractor import progress_enabled
    from ..progress import progress_bar

    names = check_transforms(transforms)
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr={fpr!r} must be a number strictly between 0 and 1")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be a non-negative int")
    prompts, y, is_pos = _check_set(probe, prompts, labels)
    names = ["clean"] + [n for n in names if n != "clean"]
    copies = {n: apply_transform(n, prompts, seed=seed) for n in names}
    check_fits_context(probe, copies)

    t0 = time.perf_counter()
    cache = get_cache()
    hits0, misses0 = cache.hits, cache.misses
    token_level = is_token_level_probe(probe)
    tokens_before = tokens_cached()
    show = progress_enabled(probe.progress if progress is None else progress)
    steps = progress_bar(names, desc="robustness", unit="transform") if show else names
    scores: dict[str, np.ndarray] = {}
    try:
        if token_level:
            set_cache_tokens(True)  # so that a rerun reads per-token activations back
        for name in steps:
            _, proba = probe.prompt_outputs(copies[name])
            scores[name] = np.asarray(proba, dtype=np.float64)[:, 1]
        worst = _worst_examples(probe, copies, scores, y, is_pos, n_worst, token_level)
    finally:
        set_cache_tokens(tokens_before)

    threshold = getattr(probe, "threshold_", None)
    rows = []
    for k, name in enumerate(names):
        s = scores[name]
        row = {
            "transform": name,
            "family": TRANSFORMS[name].family,
            "n": len(s),
            **bootstrap_metrics(
                s[is_pos], s[~is_pos], fpr=fpr, n_bootstrap=n_bootstrap, seed=seed + k
            ),
        }
        if threshold is not None:
            row["tpr_at_threshold"] = float(np.mean(s[is_pos] > threshold))
            row["fpr_at_threshold"] = float(np.mean(s[~is_pos] > threshold))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["auroc_drop"] = table["auroc"].iloc[0] - table["auroc"]
    table["tpr_drop"] = table["tpr_at_fpr"].iloc[0] - table["tpr_at_fpr"]
    return RobustnessReport(
        table=table,
        scores=scores,
        labels=y,
        is_positive=is_pos,
        worst=worst,
        fpr=float(fpr),
        threshold=None if threshold is None else float(threshold),
        seed=int(seed),
        n_bootstrap=n_bootstrap,
        seconds=time.perf_counter() - t0,
        cache_hits=cache.hits - hits0,
        cache_lookups=cache.hits + cache.misses - hits0 - misses0,
        token_level=token_level,
    )


def _worst_examples(probe, copies, scores, y, is_pos, n_worst, token_level) -> list:
    """Per transform, the ``n_worst`` prompts furthest on the wrong side: positives by
    lowest score, negatives by highest, ranked by how far they moved from clean."""
    out = []
    clean = scores["clean"]
    for name, s in scores.items():
        if name == "clean" or n_worst <= 0:
            continue
        wrongness = np.where(is_pos, 1.0 - s, s)
        order = np.argsort(-wrongness, kind="stable")[:n_worst]
        for i in order:
            out.append(
                WorstExample(
                    name,
                    int(i),
                    y[i].item() if hasattr(y[i], "item") else y[i],
                    bool(is_pos[i]),
                    float(s[i]),
                    float(clean[i]),
                    copies[name][i],
                )
            )
    if token_level and out:
        rows = probe.token_scores([w.prompt for w in out])
        for w, r in zip(out, rows):
            w.tokens, w.token_scores = list(r.tokens), np.asarray(r.scores, dtype=np.float64)
    return out
