"""Error analysis of a binary probe: browse its mistakes, relabel, refit, compare.

:func:`error_analysis` (``Probe.errors``) scores a labelled set once and returns an
:class:`ErrorAnalysis`. Its rows are sorted by how wrong the probe is: false positives
and false negatives at the decision threshold first (the probe's calibrated
``threshold_`` when it has one, else 0.5; ``threshold_source`` says which), most wrong
first, then the correct rows, least confident first. Rows can be filtered (FP, FN, the
uncertain band), searched by text and grouped by a metadata column.

Relabeling and excluding only change the analysis' own label list (:attr:`labels`,
a plain list); the probe is never modified. :meth:`ErrorAnalysis.refit` fits a *copy*
of the probe on the corrected labels. Its activations come from the activation cache
(they were extracted when the probe was fitted and when this set was scored), so a refit
runs no forward pass; :attr:`RefitResult.forward_passes` counts them to prove it. The
copy carries the corrections in ``label_corrections_``, which ``Probe.save`` stores
with the probe.

Nearest training examples use cosine similarity on the probe layers' pooled
activations (the training pooling; ``"mean"`` for probes trained on every token), read
from the same cache. Per-token highlights are the probe's own per-token scores: real
per-token contributions for token-level probes; for probes trained on one pooled
vector per prompt they are the classifier applied to each token, off its training
distribution, and :attr:`ErrorAnalysis.highlight_note` says so.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ErrorAnalysis", "ErrorRow", "RefitResult", "error_analysis", "set_metrics"]

KINDS = ("fp", "fn", "wrong", "uncertain", "correct", "all")


def prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)


def set_metrics(
    scores, is_pos, threshold: float, *, fpr: float = 0.01, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """AUROC and TPR at ``fpr`` (bootstrap 95% intervals) plus the confusion matrix at
    ``threshold`` (flagged when the score is strictly above it).

    Parameters
    ----------
    scores : array-like of shape (n,)
    is_pos : array-like of bool, shape (n,)
    threshold : float

    Returns
    -------
    dict
        ``auroc``, ``auroc_lo``, ``auroc_hi``, ``tpr_at_fpr``, ``tpr_lo``, ``tpr_hi``,
        ``fpr`` and ``confusion`` (``tp``, ``fp``, ``tn``, ``fn``), ``n``.
    """
    from .robustness import bootstrap_metrics

    scores = np.asarray(scores, dtype=np.float64)
    is_pos = np.asarray(is_pos, dtype=bool)
    flagged = scores > threshold
    conf = {
        "tp": int(np.sum(flagged & is_pos)),
        "fp": int(np.sum(flagged & ~is_pos)),
        "tn": int(np.sum(~flagged & ~is_pos)),
        "fn": int(np.sum(~flagged & is_pos)),
    }
    if is_pos.all() or not is_pos.any():
        nan = float("nan")
        out = dict.fromkeys(("auroc", "auroc_lo", "auroc_hi", "tpr_at_fpr", "tpr_lo", "tpr_hi"))
        out = {k: nan for k in out}
    else:
        out = bootstrap_metrics(
            scores[is_pos], scores[~is_pos], fpr=fpr, n_bootstrap=n_bootstrap, seed=seed
        )
    return {**out, "fpr": fpr, "confusion": conf, "n": int(len(scores))}


@dataclass
class ErrorRow:
    """One example of an :class:`ErrorAnalysis`.

    Attributes
    ----------
    index : int
        Position in the analysed set.
    prompt : str or list of dict
    score : float
        The probe's positive-class score.
    label : object
        The current (possibly corrected) label.
    original_label : object
    kind : {"fp", "fn", "tp", "tn"}
        At the analysis threshold, against the current label.
    margin : float
        ``score - threshold`` (positive: flagged).
    uncertain : bool
        ``|margin| <= band``.
    excluded : bool
    metadata : dict
    """

    index: int
    prompt: object
    score: float
    label: object
    original_label: object
    kind: str
    margin: float
    uncertain: bool
    excluded: bool
    metadata: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The prompt as one string (chat turns as ``role: content`` lines)."""
        return prompt_text(self.prompt)

    @property
    def wrong(self) -> bool:
        """Whether the probe is on the wrong side of the threshold for this label."""
        return self.kind in ("fp", "fn")

    @property
    def relabeled(self) -> bool:
        return self.label != self.original_label


@dataclass
class RefitResult:
    """What :meth:`ErrorAnalysis.refit` did.

    Attributes
    ----------
    probe : Probe
        The refitted copy (the original probe is unchanged).
    before, after : dict
        :func:`set_metrics` of the original and the refitted probe on the analysed set
        (corrected labels, excluded rows left out).
    changed : list of int
        Indices whose side of the threshold changed.
    before_scores, after_scores : ndarray
    n_train : int
        Prompts the copy was fitted on.
    in_sample : bool
        Whether analysed examples were in the refit's training set (then ``after`` is
        measured on data it was trained on; pass ``holdout=`` for honest numbers).
    holdout_before, holdout_after : dict or None
        The same metrics on ``holdout=`` when given.
    forward_passes : int
        Model forward passes the refit and re-scoring ran (0: all from the cache).
    cache_hits : int
        Prompts the refit's training extraction served from the cache.
    seconds : float
    """

    probe: object
    before: dict
    after: dict
    changed: list
    before_scores: np.ndarray
    after_scores: np.ndarray
    n_train: int
    in_sample: bool
    holdout_before: dict | None
    holdout_after: dict | None
    forward_passes: int
    cache_hits: int
    seconds: float

    def summary(self) -> dict:
        """A JSON-ready summary (what the widget shows)."""

        def small(m):
            if m is None:
                return None
            return _jsonable({k: (float(v) if isinstance(v, float) else v) for k, v in m.items()})

        return {
            "before": small(self.before),
            "after": small(self.after),
            "holdout_before": small(self.holdout_before),
            "holdout_after": small(self.holdout_after),
            "changed": [int(i) for i in self.changed],
            "n_train": int(self.n_train),
            "in_sample": bool(self.in_sample),
            "forward_passes": int(self.forward_passes),
            "cache_hits": int(self.cache_hits),
            "seconds": float(self.seconds),
        }


def _forward_calls() -> int:
    from ..extraction.extractor import Extractor

    return int(Extractor.forward_calls)


def check_binary(probe, what: str) -> None:
    probe.check_fitted()
    if probe.task != "classification" or len(probe.classes_) != 2:
        raise ValueError(
            f"{what} needs a binary classification probe (false positives and negatives need "
            "a positive and a negative class)"
        )


def check_labelled(probe, prompts, labels, what: str):
    from ..inputs import check_scoring_data

    if prompts is None or isinstance(prompts, str):
        raise TypeError(f"{what}: prompts must be a list of prompts, not {type(prompts).__name__}")
    if labels is None or isinstance(labels, str):
        raise TypeError(f"{what}: labels must be a list with one label per prompt")
    if hasattr(prompts, "__len__") and hasattr(labels, "__len__") and len(prompts) != len(labels):
        raise ValueError(
            f"{what}: got {len(prompts)} prompts but {len(labels)} labels; give exactly one "
            "label per prompt"
        )
    prompts, y = check_scoring_data(prompts, labels, probe.task, probe.classes_, what=what)
    return list(prompts), y


def _check_metadata(metadata, n: int) -> dict:
    if metadata is None:
        return {}
    if isinstance(metadata, dict):
        cols = {str(k): list(v) for k, v in metadata.items()}
    elif hasattr(metadata, "to_dict") and hasattr(metadata, "columns"):  # a DataFrame
        cols = {str(c): list(metadata[c]) for c in metadata.columns}
    elif isinstance(metadata, (list, tuple)) and all(isinstance(m, dict) for m in metadata):
        keys = list(dict.fromkeys(k for m in metadata for k in m))
        cols = {str(k): [m.get(k) for m in metadata] for k in keys}
    else:
        raise TypeError(
            "metadata must be a dict of columns ({'source': [...]}), a list of dicts (one per "
            f"prompt) or a DataFrame, got {type(metadata).__name__}"
        )
    bad = {k: len(v) for k, v in cols.items() if len(v) != n}
    if bad:
        k, m = next(iter(bad.items()))
        raise ValueError(f"metadata column {k!r} has {m} values for {n} prompts; give one each")
    return cols


class ErrorAnalysis:
    """The mistakes of a binary probe on a labelled set (see the module docstring).

    Build it with :meth:`Probe.errors` / :func:`error_analysis`.

    Attributes
    ----------
    prompts : list
    scores : ndarray of shape (n,)
        Positive-class scores of the probe.
    threshold : float
    threshold_source : {"calibrated", "default 0.5", "given"}
    band : float
        Half-width of the uncertain band around the threshold.
    metadata : dict of str to list
    refits : list of RefitResult
        Every refit so far, latest last.
    """

    def __init__(
        self,
        probe,
        prompts,
        labels,
        *,
        metadata=None,
        train=None,
        threshold: float | None = None,
        band: float = 0.1,
        fpr: float = 0.01,
        n_bootstrap: int = 1000,
        seed: int = 0,
        n_highlight: int = 10,
    ) -> None:
        from ..monitoring.calibration import current_threshold, prompt_scores

        check_binary(probe, "errors")
        prompts, y = check_labelled(probe, prompts, labels, "errors")
        if not isinstance(band, (int, float)) or isinstance(band, bool) or not 0 <= band < 1:
            raise ValueError(f"band={band!r} must be a number in [0, 1)")
        self.probe = probe
        self.prompts = prompts
        self.original_labels = y.tolist()
        self._labels = list(self.original_labels)
        self._excluded: set[int] = set()
        self.metadata = _check_metadata(metadata, len(prompts))
        if threshold is not None:
            self.threshold_source = "given"
        elif getattr(probe, "threshold_", None) is not None:
            self.threshold_source = "calibrated"
        else:
            self.threshold_source = "default 0.5"
        self.threshold = current_threshold(probe, threshold)
        self.band = float(band)
        self.fpr, self.n_bootstrap, self.seed = fpr, n_bootstrap, seed
        self.positive = probe.classes_[1].item() if hasattr(probe.classes_[1], "item") else None
        if self.positive is None:
            self.positive = probe.classes_[1]
        self.classes = [c.item() if hasattr(c, "item") else c for c in probe.classes_]
        self.scores = prompt_scores(probe, prompts)
        self._train = self._check_train(train)
        self._highlights: dict[int, object] = {}
        self._neighbours = None
        self.refits: list[RefitResult] = []
        if isinstance(n_highlight, bool) or not isinstance(n_highlight, int) or n_highlight < 0:
            raise ValueError(f"n_highlight={n_highlight!r} must be an int >= 0")
        if n_highlight:
            # Computed here, not when rendering: a repr must not run the model.
            self.highlights([r.index for r in self.rows()[:n_highlight]])

    @property
    def computed_highlights(self) -> dict:
        """``{index: TokenScores}`` of the examples whose highlights were computed."""
        return dict(self._highlights)

    def _check_train(self, train):
        if train is None:
            data = self.probe.training_data
            return None if data is None else (list(data[0]), np.asarray(data[1]).tolist())
        if not (isinstance(train, tuple) and len(train) == 2):
            raise TypeError("train must be a (prompts, labels) tuple")
        prompts, y = check_labelled(self.probe, train[0], train[1], "errors train=")
        return prompts, y.tolist()

    # ------------------------------------------------------------------ state
    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def labels(self) -> list:
        """The corrected labels, one per prompt (a plain list; excluded rows included)."""
        return list(self._labels)

    @property
    def excluded(self) -> list[int]:
        """Indices left out of metrics and refits."""
        return sorted(self._excluded)

    @property
    def corrections(self) -> dict:
        """What changed: ``{"relabeled": [{index, prompt, old, new}], "excluded": [...]}``."""
        rel = [
            {"index": i, "prompt": prompt_text(self.prompts[i]), "old": o, "new": n}
            for i, (o, n) in enumerate(zip(self.original_labels, self._labels))
            if o != n
        ]
        exc = [{"index": i, "prompt": prompt_text(self.prompts[i])} for i in self.excluded]
        return {"relabeled": rel, "excluded": exc}

    def _check_index(self, index) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"example index must be an int, got {type(index).__name__}")
        if not 0 <= int(index) < len(self.prompts):
            raise IndexError(
                f"example index {index} is out of range; this analysis has {len(self.prompts)} "
                f"examples (0 to {len(self.prompts) - 1})"
            )
        return int(index)

    def relabel(self, index: int, label) -> ErrorAnalysis:
        """Set example ``index``'s label to ``label`` (one of the probe's classes)."""
        i = self._check_index(index)
        if label not in self.classes:
            raise ValueError(f"label {label!r} is not one of the probe's classes {self.classes!r}")
        self._labels[i] = label
        return self

    def flip(self, index: int) -> ErrorAnalysis:
        """Give example ``index`` the other class's label."""
        i = self._check_index(index)
        a, b = self.classes
        return self.relabel(i, b if self._labels[i] == a else a)

    def exclude(self, index: int, excluded: bool = True) -> ErrorAnalysis:
        """Leave example ``index`` out of metrics and refits (``excluded=False`` undoes)."""
        i = self._check_index(index)
        (self._excluded.add if excluded else self._excluded.discard)(i)
        return self

    def reset(self) -> ErrorAnalysis:
        """Undo every relabel and exclusion."""
        self._labels = list(self.original_labels)
        self._excluded.clear()
        return self

    # ------------------------------------------------------------------ rows
    def _is_pos(self, labels=None) -> np.ndarray:
        labels = self._labels if labels is None else labels
        return np.array([lab == self.positive for lab in labels], dtype=bool)

    def row(self, index: int, scores=None) -> ErrorRow:
        i = self._check_index(index)
        s = float((self.scores if scores is None else scores)[i])
        pos = self._labels[i] == self.positive
        flagged = s > self.threshold
        kind = ("tp" if pos else "fp") if flagged else ("fn" if pos else "tn")
        margin = s - self.threshold
        return ErrorRow(
            index=i,
            prompt=self.prompts[i],
            score=s,
            label=self._labels[i],
            original_label=self.original_labels[i],
            kind=kind,
            margin=margin,
            uncertain=abs(margin) <= self.band,
            excluded=i in self._excluded,
            metadata={k: v[i] for k, v in self.metadata.items()},
        )

    def rows(
        self,
        kind: str = "all",
        search: str | None = None,
        *,
        include_excluded: bool = True,
        **where,
    ) -> list[ErrorRow]:
        """Rows sorted by how wrong: mistakes first (largest margin first), then the rest,
        least confident first.

        Parameters
        ----------
        kind : {"all", "wrong", "fp", "fn", "uncertain", "correct"}
        search : str, optional
            Case-insensitive substring of the prompt text.
        include_excluded : bool, default True
        **where
            Metadata equality filters, e.g. ``source="forum"``.
        """
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {', '.join(map(repr, KINDS))}")
        unknown = sorted(set(where) - set(self.metadata))
        if unknown:
            raise ValueError(
                f"no metadata column {unknown[0]!r}; columns: {sorted(self.metadata) or 'none'}"
            )
        needle = search.lower() if search else None
        out = []
        for i in range(len(self.prompts)):
            r = self.row(i)
            if kind in ("fp", "fn") and r.kind != kind:
                continue
            if kind == "wrong" and not r.wrong:
                continue
            if kind == "correct" and r.wrong:
                continue
            if kind == "uncertain" and not r.uncertain:
                continue
            if not include_excluded and r.excluded:
                continue
            if needle and needle not in r.text.lower():
                continue
            if any(r.metadata.get(k) != v for k, v in where.items()):
                continue
            out.append(r)
        out.sort(key=lambda r: (0, -abs(r.margin)) if r.wrong else (1, abs(r.margin)))
        return out

    def group_by(self, column: str) -> list[dict]:
        """Per value of metadata ``column``: n, FP, FN, error rate (excluded rows left out)."""
        if column not in self.metadata:
            raise ValueError(
                f"no metadata column {column!r}; columns: {sorted(self.metadata) or 'none'} "
                "(pass metadata= to errors())"
            )
        groups: dict = {}
        for r in self.rows(include_excluded=False):
            g = groups.setdefault(r.metadata[column], {"value": r.metadata[column], "n": 0})
            g["n"] += 1
            g[r.kind] = g.get(r.kind, 0) + 1
        out = []
        for g in groups.values():
            fp, fn = g.get("fp", 0), g.get("fn", 0)
            out.append(
                {
                    "value": g["value"],
                    "n": g["n"],
                    "fp": fp,
                    "fn": fn,
                    "error_rate": (fp + fn) / g["n"],
                }
            )
        return sorted(out, key=lambda g: -g["error_rate"])

    def metrics(self, scores=None) -> dict:
        """:func:`set_metrics` on the current labels (excluded rows left out)."""
        keep = np.array([i not in self._excluded for i in range(len(self.prompts))], dtype=bool)
        s = self.scores if scores is None else np.asarray(scores)
        return set_metrics(
            s[keep],
            self._is_pos()[keep],
            self.threshold,
            fpr=self.fpr,
            n_bootstrap=self.n_bootstrap,
            seed=self.seed,
        )

    # ------------------------------------------------------------------ highlights
    @property
    def token_level(self) -> bool:
        """Whether the probe's per-token scores are real per-token contributions."""
        from .robustness import is_token_level_probe

        return is_token_level_probe(self.probe)

    @property
    def highlight_note(self) -> str:
        """What the highlights mean for this probe (shown under them)."""
        if self.token_level:
            return self.probe.token_level_note() or (
                "Per-token scores of a probe trained on every token; the prompt's score "
                "aggregates them."
            )
        return (
            "Pooled probe: the decision reads one pooled vector per prompt, so no token "
            "'caused' it. The colours apply the same classifier to each token's activation "
            "(off its training distribution): a hint of where the signal sits, not an "
            "attribution. " + self.probe.token_level_note()
        )

    def highlights(self, indices) -> list:
        """Per-token scores (``TokenScores``) of the given examples, computed once each."""
        idx = [self._check_index(i) for i in indices]
        todo = [i for i in dict.fromkeys(idx) if i not in self._highlights]
        if todo:
            got = self.probe.token_scores([self.prompts[i] for i in todo])
            self._highlights.update(zip(todo, got))
        return [self._highlights[i] for i in idx]

    # ------------------------------------------------------------------ neighbours
    def _pooled(self, prompts) -> np.ndarray:
        from ..extraction.pooling import is_token_level

        probe = self.probe
        how = probe.train_pooling_
        if not isinstance(how, str) or how == "all" or is_token_level(how):
            how = "mean"
        rt = probe.runtime
        prepared = rt.prepare(prompts, chat_template=probe.chat_template)
        acts = rt.pooled(prepared, list(probe.layers_), how, roles=probe.score_roles)
        X = np.concatenate([acts[layer] for layer in probe.layers_], axis=1)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(norms > 0, norms, 1.0)

    def nearest_training(self, index: int, k: int = 5) -> list[dict]:
        """The ``k`` training examples closest to example ``index`` (cosine similarity on
        the probe layers' pooled activations, from the cache).

        Returns
        -------
        list of dict
            ``index`` (in the training set), ``prompt``, ``label``, ``similarity``.
        """
        i = self._check_index(index)
        if self._train is None:
            raise ValueError(
                "this probe keeps no training prompts (loaded from disk, or fitted from "
                "activations); pass train=(prompts, labels) to errors()"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be a positive int")
        if self._neighbours is None:
            self._neighbours = (self._pooled(self.prompts), self._pooled(self._train[0]))
        Q, T = self._neighbours
        sims = T @ Q[i]
        order = np.argsort(-sims, kind="stable")[:k]
        return [
            {
                "index": int(j),
                "prompt": prompt_text(self._train[0][j]),
                "label": self._train[1][j],
                "similarity": float(sims[j]),
            }
            for j in order
        ]

    # ------------------------------------------------------------------ refit
    def _training_set(self, include_examples: bool):
        prompts: list = []
        labels: list = []
        seen: dict = {}
        mine = {_key(p): i for i, p in enumerate(self.prompts)}
        if self._train is not None:
            for p, lab in zip(*self._train):
                key = _key(p)
                j = mine.get(key)
                if j is not None:
                    if j in self._excluded:
                        continue
                    lab = self._labels[j]  # the correction wins
                seen[key] = len(prompts)
                prompts.append(p)
                labels.append(lab)
        in_sample = any(_key(p) in seen for p in self.prompts)
        if include_examples:
            for i, p in enumerate(self.prompts):
                if i in self._excluded or _key(p) in seen:
                    continue
                seen[_key(p)] = len(prompts)
                prompts.append(p)
                labels.append(self._labels[i])
                in_sample = True
        return prompts, labels, in_sample

    def refit(self, *, include_examples: bool = True, holdout=None) -> RefitResult:
        """Fit a copy of the probe on the corrected labels and compare it with the original.

        Parameters
        ----------
        include_examples : bool, default True
            Train on the analysed examples too (corrected, excluded ones left out), on top
            of the probe's training set (where a prompt is in both, its corrected label
            wins). False: only the training set, with corrections to prompts it shares.
        holdout : (prompts, labels), optional
            A set neither trained on nor relabeled, scored by both probes.

        Returns
        -------
        RefitResult
        """
        prompts, labels, in_sample = self._training_set(include_examples)
        if len(set(labels)) < 2:
            raise ValueError(
                f"the corrected training set has only the label {labels[0]!r} ({len(labels)} "
                "prompts); a refit needs both classes: undo some relabels or exclusions"
                if labels
                else "the corrected training set is empty: undo some exclusions"
            )
        if holdout is not None:
            if not (isinstance(holdout, tuple) and len(holdout) == 2):
                raise TypeError("holdout must be a (prompts, labels) tuple")
            h_prompts, h_y = check_labelled(self.probe, holdout[0], holdout[1], "refit holdout=")
        from ..monitoring.calibration import prompt_scores

        start, calls = time.perf_counter(), _forward_calls()
        # A fresh probe with the same parameters sharing the runtime (loaded weights,
        # extractor, cache): fit never touches the original's learned state.
        new = type(self.probe)(**copy.deepcopy(self.probe.get_params()))
        new.runtime = self.probe.runtime
        new.fit(prompts, labels=labels)
        hits = int(new.last_cache_hits_) if getattr(new, "layers_", None) is not None else 0
        after_scores = prompt_scores(new, self.prompts)
        hb = ha = None
        if holdout is not None:
            hpos = np.array([lab == self.positive for lab in h_y.tolist()])
            kw = {"fpr": self.fpr, "n_bootstrap": self.n_bootstrap, "seed": self.seed}
            hb = set_metrics(prompt_scores(self.probe, h_prompts), hpos, self.threshold, **kw)
            ha = set_metrics(prompt_scores(new, h_prompts), hpos, self.threshold, **kw)
        new.label_corrections_ = {
            **self.corrections,
            "n_examples": len(self.prompts),
            "n_train": len(prompts),
            "include_examples": bool(include_examples),
            "threshold": float(self.threshold),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        side_before = self.scores > self.threshold
        side_after = after_scores > self.threshold
        changed = [int(i) for i in np.flatnonzero(side_before != side_after)]
        result = RefitResult(
            probe=new,
            before=self.metrics(),
            after=self.metrics(after_scores),
            changed=changed,
            before_scores=self.scores.copy(),
            after_scores=after_scores,
            n_train=len(prompts),
            in_sample=in_sample,
            holdout_before=hb,
            holdout_after=ha,
            forward_passes=_forward_calls() - calls,
            cache_hits=hits,
            seconds=time.perf_counter() - start,
        )
        self.refits.append(result)
        return result

    # ------------------------------------------------------------------ display
    def to_props(self, max_rows: int = 200) -> dict:
        """A JSON-ready summary for the widget: rows (no activations), metrics, refits."""
        rows = self.rows()[:max_rows]
        return {
            "threshold": float(self.threshold),
            "threshold_source": self.threshold_source,
            "band": self.band,
            "classes": [str(c) for c in self.classes],
            "positive": str(self.positive),
            "columns": sorted(self.metadata),
            "rows": [
                {
                    "index": r.index,
                    "text": r.text,
                    "score": r.score,
                    "label": str(r.label),
                    "original_label": str(r.original_label),
                    "kind": r.kind,
                    "uncertain": r.uncertain,
                    "excluded": r.excluded,
                    "metadata": {k: str(v) for k, v in r.metadata.items()},
                }
                for r in rows
            ],
            "n": len(self.prompts),
            "metrics": _jsonable(self.metrics()),
            "refit": self.refits[-1].summary() if self.refits else None,
            "highlight_note": self.highlight_note,
        }

    def __repr__(self) -> str:
        m = self.metrics(self.scores)["confusion"]
        return (
            f"ErrorAnalysis({len(self.prompts)} examples, threshold {self.threshold:.3g} "
            f"({self.threshold_source}), FP {m['fp']}, FN {m['fn']}, "
            f"{len(self.corrections['relabeled'])} relabeled, {len(self._excluded)} excluded)"
        )

    def _repr_html_(self) -> str:
        from ...presentation.errors import render_errors

        return render_errors(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ...presentation.payload import repr_bundle

        return repr_bundle(
            "errors", props=self.to_props(max_rows=50), highlights=self.computed_highlights
        )


def _key(prompt) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


def _jsonable(m: dict) -> dict:
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in m.items()}


def error_analysis(probe, prompts, labels, **kwargs) -> ErrorAnalysis:
    """The :class:`ErrorAnalysis` of ``probe`` on labelled ``prompts``.

    Parameters
    ----------
    probe : Probe
        A fitted binary classification probe (unchanged by anything done here).
    prompts : list of str or chat message lists
    labels : array-like of shape (n_prompts,)
    metadata : dict of columns, list of dicts or DataFrame, optional
    train : (prompts, labels), optional
        Training set for neighbours and refits (default: ``probe.training_data``).
    threshold : float, optional
        Default: the calibrated ``threshold_``, else 0.5.
    band : float, default 0.1
        Half-width of the uncertain band around the threshold.
    fpr, n_bootstrap, seed
        For TPR@FPR and its bootstrap interval.
    n_highlight : int, default 10
        Per-token highlights computed up front for this many top rows (one token-level
        extraction each); others on demand with :meth:`ErrorAnalysis.highlights`.
    """
    return ErrorAnalysis(probe, prompts, labels, **kwargs)
