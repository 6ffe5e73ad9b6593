"""Which layers matter: per-layer importance and automatic layer selection.

``Probe.fit`` calls :func:`select_layers` when ``layers`` is a selection spec; the pooled
activations of every candidate layer come from one extraction and are passed in, so no
selection method runs the model again.

- ``"sweep"``, ``"sweep:N"``, ``"sweep:A-B"``: one probe per candidate layer (a
  :class:`~.sweep.SweepResult`), keep the layer with the best cross-validated score.
- ``"fast_auto"``: one probe over all candidate layers, keep the ``fast_auto_top_k``
  layers whose coefficient blocks weigh most (:func:`compute_layer_importance`).
- ``"auto"``: group lasso over ``auto_candidates`` (one group per layer); keep the layers
  whose coefficient group is not zero.

The group lasso is solved here with accelerated proximal gradient (FISTA with adaptive
restart) in numpy. skglm's group solvers reach the same optimum but JIT-compile with numba
on first use (14-40 s per process on a 2-core machine, measured), far more than solving
these problems takes (well under a second), so they are not used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

IMPORTANCE_METRICS = ("l2", "l1", "max_abs", "mean_abs")
LINEAR_CLASSIFIERS = ("logistic_regression", "ridge", "svm", "lda", "mass_mean", "sgd")


# ---------------------------------------------------------------------- importance
def _feature_layers(probe) -> list[int]:
    """Layers whose blocks make up the classifier's input, in concatenation order."""
    layers = getattr(probe, "layers_", None)
    n_blocks = int(getattr(probe, "n_feature_layers_", 1) or 1)
    if layers is not None and len(layers) == n_blocks:
        return [int(x) for x in layers]
    spec = getattr(probe, "layers", None)
    if isinstance(spec, list | tuple) and len(spec) == n_blocks and all(int(x) >= 0 for x in spec):
        return [int(x) for x in spec]
    return list(range(n_blocks))


def _input_space_coef(probe) -> np.ndarray:
    """Classifier coefficients as (n_outputs, n_features) over the normalized features.

    Coefficients are read after the layer normalizer (and standard scaling), so blocks of
    different raw magnitude compare fairly; a PCA step is mapped back through its
    components.
    """
    pipe = probe.pipeline_
    clf = pipe.named_steps["classifier"]
    try:
        coef = getattr(clf, "coef_", None)
    except AttributeError:  # e.g. SVC with a non-linear kernel
        coef = None
    if coef is None:
        name = probe.classifier if isinstance(probe.classifier, str) else type(clf).__name__
        raise TypeError(
            f"layer importance needs a linear classifier with coef_, but classifier={name!r} "
            f"({type(clf).__name__}) has none; use one of "
            f"{', '.join(map(repr, LINEAR_CLASSIFIERS))}"
        )
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    if "mass_mean_augment" in pipe.named_steps:
        coef = pipe.named_steps["mass_mean_augment"].fold_coef(coef)
    if "pca" in pipe.named_steps:
        coef = coef @ pipe.named_steps["pca"].components_
    return coef


def _block_norms(coef: np.ndarray, n_blocks: int, metric: str) -> np.ndarray:
    k, d = coef.shape
    if d % n_blocks:
        raise ValueError(f"{d} coefficients cannot split into {n_blocks} equal layer blocks")
    blocks = np.abs(coef).reshape(k, n_blocks, d // n_blocks)
    if metric == "l2":
        return np.sqrt((blocks**2).sum(axis=(0, 2)))
    if metric == "l1":
        return blocks.sum(axis=(0, 2))
    if metric == "max_abs":
        return blocks.max(axis=(0, 2))
    return blocks.mean(axis=(0, 2))


def compute_layer_importance(probe, metric: str = "l2") -> np.ndarray:
    """Importance of each candidate layer of a fitted multi-layer probe.

    The classifier's coefficient vector (over the normalized features) is split into one
    block per layer and each block is reduced to one number by ``metric``; the result is
    normalized to sum to 1. Layers the probe considered but dropped during selection
    (``fast_auto``, ``auto``, ``sweep``) get importance 0.

    Parameters
    ----------
    probe : Probe
        Fitted on several layers (e.g. ``layers="all"`` or a list).
    metric : {"l2", "l1", "max_abs", "mean_abs"}
        Norm of each layer's coefficient block.

    Returns
    -------
    ndarray of shape (len(importance_layers(probe)),)
        Aligned with :func:`importance_layers` (the probe's ``candidate_layers_``).
    """
    if metric not in IMPORTANCE_METRICS:
        raise ValueError(
            f"metric={metric!r} is not one of {', '.join(map(repr, IMPORTANCE_METRICS))}"
        )
    probe.check_fitted()
    layers = _feature_layers(probe)
    candidates = importance_layers(probe)
    if len(candidates) < 2:
        raise ValueError(
            f"layer importance compares layers, but this probe reads a single layer "
            f"(layers_={layers}); fit it with several layers, e.g. layers='all' or [10, 15, 20]"
        )
    norms = _block_norms(_input_space_coef(probe), len(layers), metric)
    by_layer = dict(zip(layers, norms))
    out = np.array([by_layer.get(c, 0.0) for c in candidates], dtype=np.float64)
    total = out.sum()
    if not np.isfinite(total) or total <= 0:
        warnings.warn(
            "all classifier coefficients are zero; returning uniform layer importances",
            stacklevel=2,
        )
        out = np.where(np.isin(candidates, layers), 1.0, 0.0)
        total = out.sum()
    return out / total


def importance_layers(probe) -> list[int]:
    """The layers :func:`compute_layer_importance` reports on: the probe's candidate
    layers (those it considered), or the layers it reads when it has no candidates."""
    layers = _feature_layers(probe)
    candidates = [int(x) for x in (getattr(probe, "candidate_layers_", None) or layers)]
    return candidates if set(layers) <= set(candidates) else layers


def plot_layer_importance(probe, metric: str = "l2", ax=None):
    """Bar chart of :func:`compute_layer_importance`; selected layers are highlighted.

    Parameters
    ----------
    probe : Probe
    metric : str
        See :func:`compute_layer_importance`.
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..plotting import new_axes

    importances = compute_layer_importance(probe, metric=metric)
    layers = importance_layers(probe)
    ax = new_axes(ax, figsize=(max(4.0, 0.22 * len(layers) + 2.0), 3.2))
    used = set(getattr(probe, "layers_", layers))
    colors = ["#d62728" if layer in used else "#9aa7b8" for layer in layers]
    ax.bar(layers, importances, color=colors, width=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"importance ({metric})")
    ax.set_title("Layer importance")
    ax.set_ylim(0, max(float(importances.max()) * 1.12, 1e-9))
    return ax.figure


# ---------------------------------------------------------------------- selection
@dataclass
class LayerSelection:
    """What a layer-selection method chose (``Probe.fit`` stores it as learned state).

    Attributes
    ----------
    selected : list of int
        The layers kept, ascending.
    scores : dict of int to float
        The score each candidate got in the choice.
    candidates : list of int
        The layers considered.
    sweep : SweepResult or None
        The per-layer probes of a ``"sweep"`` selection.
    """

    selected: list[int]
    scores: dict = field(default_factory=dict)
    candidates: list[int] = field(default_factory=list)
    sweep: object = None


def select_layers(probe, X_layers: dict, labels: np.ndarray, candidates: list[int]):
    """Choose the layers a probe keeps, from pooled activations of its candidate layers.

    Parameters
    ----------
    probe : Probe
        Its ``layers`` is a selection spec; ``fast_auto_top_k``, ``auto_candidates`` and
        ``auto_alpha`` are read from it (nothing is written to it).
    X_layers : dict of int to ndarray of shape (n_samples, hidden)
    labels : ndarray of shape (n_samples,)
    candidates : list of int

    Returns
    -------
    LayerSelection
    """
    from ..extraction.layers import is_sweep_spec

    spec = probe.layers
    if is_sweep_spec(spec):
        sel = _select_sweep(probe, X_layers, labels, candidates)
    elif spec == "fast_auto":
        sel = _select_fast_auto(probe, X_layers, labels, candidates)
    elif spec == "auto":
        sel = _select_group_lasso(probe, X_layers, labels, candidates)
    else:
        raise ValueError(
            f"layers={spec!r} is not a selection spec; expected 'auto', 'fast_auto', "
            "'sweep', 'sweep:N' or 'sweep:A-B'"
        )
    sel.selected = sorted(int(x) for x in sel.selected)
    sel.candidates = [int(x) for x in (sel.candidates or candidates)]
    return sel


def _select_sweep(probe, X_layers, labels, candidates) -> LayerSelection:
    from .sweep import build_sweep

    result = build_sweep(
        type(probe), probe.get_params(), X_layers, labels, candidates, runtime=probe.runtime
    )
    result.cross_validate(cv=5)
    return LayerSelection([result.best_layer()], dict(result.cv_scores), sweep=result)


def _select_fast_auto(probe, X_layers, labels, candidates) -> LayerSelection:
    from ..probes.features import concat_layers

    k = probe.fast_auto_top_k
    if k > len(candidates):
        warnings.warn(
            f"fast_auto_top_k={k} is more than the {len(candidates)} candidate layers; "
            "keeping all of them",
            stacklevel=4,
        )
        k = len(candidates)
    if len(candidates) < 2:
        return LayerSelection(list(candidates), {int(candidates[0]): 1.0})
    from .sweep import small_fit_threads

    full = type(probe)(**{**probe.get_params(), "layers": list(candidates)})
    X = concat_layers(X_layers, candidates)
    with small_fit_threads(X.size):
        full.fit_from_activations(X, labels, layers=list(candidates))
    importances = compute_layer_importance(full, metric="l2")
    scores = {int(c): float(v) for c, v in zip(candidates, importances)}
    # Stable sort: among equal importances the shallower layer wins.
    order = sorted(range(len(candidates)), key=lambda i: (-importances[i], candidates[i]))
    return LayerSelection([candidates[i] for i in order[:k]], scores)


def validate_selection_params(probe) -> None:
    """Check ``auto_alpha`` and ``auto_candidates`` before any extraction runs."""
    alpha = probe.auto_alpha
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"auto_alpha={alpha!r} must be a positive number")
    cands = probe.auto_candidates
    if cands is None:
        return
    if isinstance(cands, str | bytes) or not hasattr(cands, "__iter__"):
        raise TypeError(
            f"auto_candidates={cands!r} must be a list of fractions in [0, 1] or layer "
            "indices, or None"
        )
    for c in cands:
        if isinstance(c, bool):
            raise TypeError(f"auto_candidates holds {c!r}; give fractions or layer indices")
        if isinstance(c, int | np.integer):
            continue
        if not (isinstance(c, float | np.floating) and 0.0 <= float(c) <= 1.0):
            raise ValueError(
                f"auto_candidates holds {c!r}; use fractions in [0, 1] (0.5 = middle layer) "
                "or layer indices"
            )


def auto_candidate_layers(auto_candidates, n_layers: int) -> list[int]:
    """Resolve ``auto_candidates`` to layer indices.

    Floats in [0, 1] are fractional depths: ``f -> round(f * (n_layers - 1))`` (halves
    round up); ints are layer indices (negative counts from the end). ``None`` means
    every layer.
    """
    from ..extraction.layers import check_index

    if auto_candidates is None:
        return list(range(n_layers))
    if isinstance(auto_candidates, str | bytes) or not hasattr(auto_candidates, "__iter__"):
        raise TypeError(
            f"auto_candidates={auto_candidates!r} must be a list of fractions in [0, 1] "
            "or layer indices, or None"
        )
    out: list[int] = []
    for c in auto_candidates:
        if isinstance(c, bool):
            raise TypeError(f"auto_candidates holds {c!r}; give fractions or layer indices")
        if isinstance(c, int | np.integer):
            layer = check_index(int(c), n_layers)
        elif isinstance(c, float | np.floating) and 0.0 <= float(c) <= 1.0:
            layer = int(np.floor(float(c) * (n_layers - 1) + 0.5))
        else:
            raise ValueError(
                f"auto_candidates holds {c!r}; use fractions in [0, 1] (0.5 = middle layer) "
                f"or layer indices in 0..{n_layers - 1}"
            )
        if layer not in out:
            out.append(layer)
    if not out:
        raise ValueError("auto_candidates is empty; give at least one layer or fraction")
    return sorted(out)


def _select_group_lasso(probe, X_layers, labels, candidates) -> LayerSelection:
    from ..probes.features import concat_layers

    validate_selection_params(probe)
    alpha = probe.auto_alpha
    n_model_layers = probe.n_model_layers() if probe.auto_candidates is not None else None
    groups = (
        auto_candidate_layers(probe.auto_candidates, n_model_layers)
        if n_model_layers is not None
        else sorted(candidates)
    )
    missing = [g for g in groups if g not in X_layers]
    if missing:
        raise ValueError(f"no activations were extracted for auto_candidates layers {missing}")
    X = concat_layers(X_layers, groups)
    from .group_lasso import GroupLasso
    from .sweep import small_fit_threads

    with small_fit_threads(X.size):
        gl = GroupLasso(alpha=float(alpha), n_groups=len(groups), task=probe.task).fit(X, labels)
    norms = gl.group_norms_
    scores = {int(g): float(v) for g, v in zip(groups, norms)}
    selected = [g for g, v in zip(groups, norms) if v > 0]
    if not selected:
        best = groups[int(np.argmax(gl.entry_scores_))]
        warnings.warn(
            f"group lasso with auto_alpha={alpha} zeroed every candidate layer {groups}; "
            f"keeping layer {best}, the first to enter as alpha decreases (alpha_max="
            f"{gl.alpha_max_:.3g}); lower auto_alpha to keep more layers",
            stacklevel=4,
        )
        selected = [best]
    chosen_from = list(groups) if probe.auto_candidates is not None else list(candidates)
    return LayerSelection(selected, scores, chosen_from)
