"""Layer sweeps: one independent probe per layer, all from a single extraction.

A sweep runs the model once over the training prompts, capturing the pooled activation
of every requested layer (``n_prompts x n_layers x hidden`` floats, never full
sequences), then fits one small probe per layer on those arrays. Scoring a sweep on new
prompts likewise extracts every layer in one pass and hands each probe its own slice.
Each per-layer probe is a complete :class:`~.probe.Probe`: ``result.probes[16]
.predict(prompts)`` works, and hits the activation cache for prompts already seen.

Sequence probes (``classifier="mil"|"attention"|"multimax"``) read every token, so their
sweep extracts per-token activations of every swept layer in one pass per chunk of
:data:`TOKEN_CHUNK` prompts, through ``runtime.token_source`` (the path a single
probe's ``fit`` takes, so each layer's probe equals one fitted on that layer alone), and
keeps only the tokens the probes may use (not the attention sink, special tokens or
tokens outside ``score_roles``). Those are held for the per-layer fits and for
cross-validation: ``n_scored_tokens x hidden x n_layers`` float32 values (4 bytes each;
about 0.5 GB for 200 prompts of 40 tokens over all 30 SmolLM2 layers). Scoring new
prompts reads one chunk at a time.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..extraction.layers import is_selection_spec, is_sweep_spec, resolve_layers, validate_spec
from ..inputs import check_scoring_data, check_two_classes, parse_fit_args
from ..probes.scoring import compute_metrics, prompt_outputs, restrict, score_value, token_rows

__all__ = ["SweepResult", "sweep_layers"]

#: Prompts per per-token extraction of a sequence-probe sweep: the full-sequence
#: activations of every swept layer are held for one chunk at a time.
TOKEN_CHUNK = 128


#: Up to this many matrix entries per layer, per-layer fits run with one BLAS/OpenMP thread:
#: for small matrices thread start-up costs more than it saves, and on a busy machine
#: oversubscribed threads made logistic-regression fits 10x slower (measured).
SMALL_FIT_ENTRIES = 4_000_000


def small_fit_threads(n_entries: int):
    """Context limiting BLAS/OpenMP to one thread for small fits (no-op for large ones)."""
    from contextlib import nullcontext

    if n_entries > SMALL_FIT_ENTRIES:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def build_sweep(cls, params: dict, X_layers: dict, y, layers, runtime=None, n_prompts=None):
    """Fit one probe per layer on precomputed pooled activations.

    Parameters
    ----------
    cls : type
        The probe class (``Probe`` or a subclass).
    params : dict
        Constructor parameters shared by every per-layer probe (``layers`` is replaced).
    X_layers : dict of int to ndarray of shape (n_samples, hidden)
    y : ndarray of shape (n_samples,)
    layers : list of int
    runtime : ModelRuntime, optional
        Runtime the per-layer probes share (one model, one set of extractors).
    n_prompts : int, optional
        Number of training prompts (defaults to ``n_samples``).

    Returns
    -------
    SweepResult
    """
    layers = [int(x) for x in layers]
    y = np.asarray(y)
    iterator = _layer_iterator(params, layers)
    probes, train = {}, {}
    with small_fit_threads(X_layers[layers[0]].size):
        for layer in iterator:
            p = cls(**{**params, "layers": layer})
            if runtime is not None:
                p.runtime = runtime
            X = X_layers[layer]
            # fit_from_activations keeps the float32 pooled array (shared with the sweep) as
            # the training activations, not a float64 copy: only cross-validation reads it.
            p.fit_from_activations(X, y, layers=[layer], n_prompts=n_prompts)
            train[layer] = p.score_from_activations(X, y)
            probes[layer] = p
    return SweepResult(probes, train_scores=train)


def sequence_token_sets(runtime, prompts, layers, probe, remote=None) -> dict[int, list]:
    """Per-token activations of every layer, only at the tokens ``probe`` may score.

    Parameters
    ----------
    runtime : ModelRuntime
    prompts : list
        Prepared prompts.
    layers : list of int
    probe : Probe
        Whose ``score_roles`` and ``score_special_tokens`` say which tokens count.
    remote : bool, optional

    Returns
    -------
    dict of int to list of ndarray of shape (n_scored_i, hidden)
        One array per prompt, in order. A sequence probe ignores unscored tokens, so
        dropping them changes no score and saves their memory.
    """
    layers = [int(x) for x in layers]
    out: dict[int, list] = {layer: [] for layer in layers}
    prompts = list(prompts)
    for s in range(0, len(prompts), TOKEN_CHUNK):
        part = prompts[s : s + TOKEN_CHUNK]
        # The per-token store a single probe's fit reads (float16 on disk), so each
        # layer's probe sees the very numbers it would see fitted alone.
        got = runtime.token_source(
            part,
            layers,
            roles=probe.score_roles,
            remote=remote,
            score_special_tokens=probe.score_special_tokens,
        )
        for a, k in got.source.take(range(len(part))):
            k = np.asarray(k, dtype=bool)
            width = a.shape[1] // len(layers)
            for j, layer in enumerate(layers):
                out[layer].append(np.ascontiguousarray(a[k, j * width : (j + 1) * width]))
        del got
    return out


def _layer_iterator(params: dict, layers: list[int]):
    """``layers``, behind a "fitting probes" progress bar when there are several."""
    from ..extraction.extractor import progress_enabled

    if progress_enabled(params.get("progress")) and len(layers) > 1:
        from ..progress import progress_bar

        return progress_bar(layers, desc="fitting probes", unit="layer")
    return layers


def build_sequence_sweep(
    cls, params: dict, tokens: dict, y, layers, runtime=None, n_prompts=None
) -> SweepResult:
    """Fit one sequence probe per layer on per-token activations.

    Parameters
    ----------
    cls : type
    params : dict
        Constructor parameters (``classifier`` one of "mil", "attention", "multimax").
    tokens : dict of int to list of ndarray of shape (seq_i, hidden)
        From :func:`sequence_token_sets` (every token is used).
    y : ndarray of shape (n_prompts,)
    layers : list of int
    runtime : ModelRuntime, optional
    n_prompts : int, optional

    Returns
    -------
    SweepResult
        Keeps ``tokens`` for :meth:`SweepResult.cross_validate`.
    """
    layers = [int(x) for x in layers]
    y = np.asarray(y)
    iterator = _layer_iterator(params, layers)
    probes, train = {}, {}
    for layer in iterator:
        p = cls(**{**params, "layers": layer})
        if runtime is not None:
            p.runtime = runtime
        p.fit_from_activations(tokens[layer], y, layers=[layer], n_prompts=n_prompts)
        train[layer] = p.score_from_activations(tokens[layer], y)
        probes[layer] = p
    return SweepResult(probes, train_scores=train, train_tokens=(tokens, y))


def sweep_layers(
    cls=None,
    model=None,
    positive_prompts=None,
    negative_prompts=None,
    *,
    prompts=None,
    labels=None,
    layers="all",
    cv: int | bool | None = None,
    test_prompts=None,
    test_labels=None,
    remote: bool | None = None,
    executor: str = "local",
    num_workers: int | None = None,
    **probe_kwargs,
):
    """Train an independent probe on each layer from one pass over the prompts.

    Parameters
    ----------
    cls : type, optional
        Probe class (default :class:`~.probe.Probe`).
    model : str, optional
        Model ID or path (default: the bundled SmolLM2).
    positive_prompts, negative_prompts : list of str
        Contrastive training prompts; or give ``prompts`` and ``labels``.
    prompts : list of str, optional
    labels : array-like of shape (n_samples,), optional
    layers : "all", list of int, int, or "sweep", "sweep:N", "sweep:A-B", "middle", "last"
        Layers to sweep.
    cv : int or bool, optional
        Also compute stratified ``cv``-fold cross-validated scores on the training
        prompts (``True`` = 5 folds), so a sweep curve needs no held-out data.
    test_prompts, test_labels : optional
        Held-out data scored right away (``result.test_scores``).
    remote : bool, optional
        Override the probe's ``remote`` for the extraction.
    executor : {"local", "ray"}, default "local"
        Where the extraction (training and ``test_prompts``) runs: this process, or
        ``num_workers`` Ray workers (see :mod:`.distributed`).
    num_workers : int, optional
        Ray workers (default: one per GPU of the cluster, else one per CPU).
    **probe_kwargs
        Any other :class:`~.probe.Probe` parameter (``classifier``, ``pooling``, ...).

    Returns
    -------
    SweepResult
    """
    if cls is None:
        raise TypeError(
            "sweep_layers needs the probe class; call Probe.sweep_layers(...) or "
            "lmprobe_jupyter.sweep_layers(...)"
        )
    from ..extraction.distributed import check_executor

    validate_spec(layers)
    check_executor(executor, num_workers)
    if is_selection_spec(layers) and not is_sweep_spec(layers):
        raise ValueError(
            f"layers={layers!r} selects layers inside one probe; a sweep takes 'all', a list "
            "of ints, 'sweep', 'sweep:N' or 'sweep:A-B'"
        )
    if cv is True:
        cv = 5
    if cv is not None and cv is not False:
        if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
            raise ValueError(f"cv={cv!r} must be None or an int >= 2 (number of folds)")
    base = cls(model=model, layers="all", **probe_kwargs).validate_params()
    runtime = base.runtime
    candidates = resolve_layers(layers, runtime.n_layers)

    contrastive = positive_prompts is not None or negative_prompts is not None
    if contrastive and (prompts is not None or labels is not None):
        raise TypeError("give either positive_prompts/negative_prompts or prompts/labels, not both")
    if contrastive:
        if positive_prompts is None or negative_prompts is None:
            raise TypeError("give both positive_prompts and negative_prompts")
        train_prompts, y = parse_fit_args(positive_prompts, negative_prompts, task=base.task)
    else:
        if prompts is None or labels is None:
            raise TypeError(
                "sweep_layers needs training data: positive_prompts and negative_prompts, "
                "or prompts and labels"
            )
        train_prompts, y = parse_fit_args(prompts, np.asarray(labels), task=base.task)
    if base.task == "classification":
        check_two_classes(y)
    if (test_prompts is None) != (test_labels is None):
        raise TypeError("give both test_prompts and test_labels, or neither")

    prepared = runtime.prepare(train_prompts, chat_template=base.chat_template)
    from ..probes.token_probes import uses_sequence_probe

    if uses_sequence_probe(base):
        if executor != "local":
            raise ValueError(
                f"executor={executor!r} distributes pooled extraction; a sweep of "
                f"classifier={base.classifier!r} reads per-token activations, which run with "
                "executor='local'"
            )
        tokens = sequence_token_sets(runtime, prepared, candidates, base, remote=remote)
        result = build_sequence_sweep(
            cls, base.get_params(), tokens, y, candidates, runtime=runtime, n_prompts=len(prepared)
        )
        if cv:
            result.cross_validate(cv)
        if test_prompts is not None:
            result.score(test_prompts, test_labels, remote=remote)
        return result
    X_layers, y = runtime.training_set(
        prepared,
        y,
        candidates,
        base.train_pooling_,
        roles=base.score_roles,
        score_special_tokens=base.score_special_tokens,
        remote=remote,
        executor=executor,
        num_workers=num_workers,
    )
    result = build_sweep(
        cls, base.get_params(), X_layers, y, candidates, runtime=runtime, n_prompts=len(prepared)
    )
    if cv:
        result.cross_validate(cv)
    if test_prompts is not None:
        result.score(
            test_prompts, test_labels, remote=remote, executor=executor, num_workers=num_workers
        )
    return result


class SweepResult:
    """Per-layer probes of a layer sweep and their scores.

    Attributes
    ----------
    probes : dict of int to Probe
        One fitted probe per swept layer.
    layers : list of int
        The swept layers, ascending.
    train_scores : dict of int to float
        Training accuracy (R^2 for regression) per layer.
    cv_scores : dict of int to float or None
        Cross-validated scores, once computed (``cv=`` or :meth:`cross_validate`).
    test_scores : dict of int to float or None
        Scores of the last :meth:`score` call (or of ``test_prompts``).
    metric : str
        ``"accuracy"`` or ``"r2"``.
    selected_layer : int or None
        The layer picked by hand: clicking a layer in :meth:`show`'s widget sets it
        (so does assigning it). ``selected_probe`` is that layer's probe.
    """

    def __init__(self, probes: dict, train_scores: dict | None = None, train_tokens=None) -> None:
        if not probes:
            raise ValueError("a sweep needs at least one layer")
        # (tokens per layer, labels) of a sequence-probe sweep, for cross-validation
        self._train_tokens = train_tokens
        self.probes = dict(sorted(probes.items()))
        self.train_scores = dict(train_scores or {})
        self.cv_scores: dict | None = None
        self.test_scores: dict | None = None
        first = next(iter(self.probes.values()))
        self.task = first.task
        self.metric = "r2" if self.task == "regression" else "accuracy"
        self._selected_layer: int | None = None

    @property
    def train_tokens(self) -> tuple[dict, np.ndarray] | None:
        """A sequence-probe sweep's training data: ({layer: list of (n_scored_i, hidden)
        arrays}, labels), the scored tokens only; None for a pooled sweep."""
        return self._train_tokens

    @property
    def selected_layer(self) -> int | None:
        """The layer picked by hand (a click on the sweep widget), or None."""
        return self._selected_layer

    @selected_layer.setter
    def selected_layer(self, layer: int | None) -> None:
        if layer is not None and int(layer) not in self.probes:
            raise ValueError(
                f"selected_layer={layer!r} is not one of the swept layers {self.layers}"
            )
        self._selected_layer = None if layer is None else int(layer)

    @property
    def selected_probe(self):
        """The probe of :attr:`selected_layer` (None while no layer is selected)."""
        return None if self._selected_layer is None else self.probes[self._selected_layer]

    # ------------------------------------------------------------------ basics
    @property
    def layers(self) -> list[int]:
        return list(self.probes)

    def __getitem__(self, layer: int):
        try:
            return self.probes[int(layer)]
        except KeyError:
            raise KeyError(f"layer {layer} was not swept; swept layers: {self.layers}") from None

    def __len__(self) -> int:
        return len(self.probes)

    def __iter__(self):
        return iter(self.probes)

    def __repr__(self) -> str:
        ls = self.layers
        span = f"{ls[0]}..{ls[-1]}" if len(ls) > 2 else ", ".join(map(str, ls))
        best, by = self.best_choice()
        tail = f", best_layer={best} (by {by})" if best is not None else ""
        return f"SweepResult({len(ls)} layers [{span}], metric={self.metric!r}{tail})"

    # ------------------------------------------------------------------ scoring
    def _outputs(
        self, prompts, remote=None, executor: str = "local", num_workers: int | None = None
    ) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """Prompt-level (predictions, probabilities) of every layer's probe, one extraction.

        Scored exactly as each probe's own :meth:`Probe.prompt_outputs` (same
        :mod:`.scoring` functions, same ``score_roles`` restriction), from one forward pass.
        """
        from ..extraction.pooling import is_token_level
        from ..probes.token_probes import uses_sequence_probe

        first = next(iter(self.probes.values()))
        prepared = first.runtime.prepare(prompts, chat_template=first.chat_template)
        if uses_sequence_probe(first):
            if executor != "local":
                raise ValueError(
                    f"executor={executor!r} distributes pooled extraction; sequence probes "
                    "read per-token activations, which run with executor='local'"
                )
            proba: dict[int, list] = {layer: [] for layer in self.layers}
            for s in range(0, len(prepared), TOKEN_CHUNK):
                tokens = sequence_token_sets(
                    first.runtime, prepared[s : s + TOKEN_CHUNK], self.layers, first, remote
                )
                for layer, p in self.probes.items():
                    proba[layer].append(p.predict_proba_from_activations(tokens[layer]))
            return {
                layer: prompt_outputs(p, proba=np.concatenate(proba[layer]))
                for layer, p in self.probes.items()
            }
        if is_token_level(first.inference_pooling_):
            toks, keep = first.runtime.token_features(
                prepared,
                self.layers,
                roles=first.score_roles,
                remote=remote,
                executor=executor,
                score_special_tokens=first.score_special_tokens,
            )
            return {
                layer: prompt_outputs(p, rows=restrict(token_rows(p, toks), keep))
                for layer, p in self.probes.items()
            }
        feats = first.runtime.pooled(
            prepared,
            self.layers,
            first.inference_pooling_,
            roles=first.score_roles,
            remote=remote,
            executor=executor,
            num_workers=num_workers,
        )
        return {layer: prompt_outputs(p, features=feats[layer]) for layer, p in self.probes.items()}

    def _labels(self, prompts, labels) -> np.ndarray:
        return check_scoring_data(prompts, labels, self.task)[1]

    def score(
        self,
        prompts,
        labels,
        *,
        remote: bool | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ) -> dict[int, float]:
        """Accuracy (R^2 for regression) of every layer's probe on ``prompts``.

        All layers come from one extraction (on Ray workers with ``executor="ray"``). The
        scores are kept as ``test_scores``.

        Returns
        -------
        dict of int to float
        """
        y = self._labels(prompts, labels)
        scores = {
            layer: score_value(y, pred, self.task)
            for layer, (pred, _) in self._outputs(prompts, remote, executor, num_workers).items()
        }
        self.test_scores = scores
        return scores

    def evaluate(self, prompts, labels, *, remote: bool | None = None) -> dict[int, dict]:
        """All metrics of :meth:`Probe.evaluate` for every layer, from one extraction."""
        y = self._labels(prompts, labels)
        out = {}
        for layer, (pred, proba) in self._outputs(prompts, remote).items():
            classes = getattr(self.probes[layer], "classes_", None)
            out[layer] = compute_metrics(y, pred, proba, self.task, classes)
        self.test_scores = {
            layer: m["r2" if self.task == "regression" else "accuracy"] for layer, m in out.items()
        }
        return out

    def cross_validate(self, cv: int = 5) -> dict[int, float]:
        """Stratified ``cv``-fold scores per layer on the training activations (same folds).

        Sequence probes are refitted per fold on the sweep's per-token activations."""
        if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
            raise ValueError(f"cv={cv!r} must be an int >= 2 (number of folds)")
        first = next(iter(self.probes.values()))
        from ..probes.token_probes import uses_sequence_probe

        if uses_sequence_probe(first):
            self.cv_scores = self._sequence_cv(cv)
            return self.cv_scores
        with small_fit_threads(first.training_activations[0].size):
            self.cv_scores = {layer: p.cross_validate(cv) for layer, p in self.probes.items()}
        return self.cv_scores

    def _sequence_cv(self, cv: int) -> dict[int, float]:
        """Fold accuracies of sequence probes refitted on the kept per-token activations."""
        from sklearn.base import clone

        from ..inputs import stratified_folds

        if self._train_tokens is None:
            raise ValueError(
                "cross_validate of a sequence-probe sweep needs its training tokens, which "
                "this result does not hold; rerun sweep_layers(..., cv=5), or score held-out "
                "prompts with result.score(prompts, labels)"
            )
        tokens, y = self._train_tokens
        y = np.asarray(y)
        first = next(iter(self.probes.values()))
        splitter = stratified_folds(y, cv, first.random_state)
        folds = list(splitter.split(np.zeros(len(y)), y))
        out = {}
        for layer, p in self.probes.items():
            X = tokens[layer]
            accs = []
            for train, test in folds:
                est = clone(p.classifier_).fit([X[i] for i in train], y[train])
                accs.append(float(np.mean(est.predict([X[i] for i in test]) == y[test])))
            out[layer] = float(np.mean(accs))
        return out

    # ------------------------------------------------------------------ best layer
    @staticmethod
    def _argmax(scores: dict) -> int | None:
        finite = [(s, -layer) for layer, s in scores.items() if s is not None and np.isfinite(s)]
        return -max(finite)[1] if finite else None

    def best_choice(self) -> tuple[int | None, str | None]:
        """The layer the views mark as best and the score it was chosen by.

        ``(layer, "cv")`` from the cross-validated scores when there are any (the
        shallower layer on ties), else ``(layer, "test")`` from the test scores, else
        ``(None, None)``. Test scores are shown beside a CV choice, never used for it:
        picking the layer on the test set overstates the result on that same test set.
        """
        for scores, by in ((self.cv_scores, "cv"), (self.test_scores, "test")):
            if scores:
                best = self._argmax(scores)
                if best is not None:
                    return best, by
        return None, None

    def best_layer(self, prompts=None, labels=None, *, remote: bool | None = None) -> int:
        """The layer whose probe scores highest (the shallowest one on ties).

        Without arguments: by cross-validated score on the training data (5-fold,
        computed now if needed), never by a test score, which would overstate the
        result on that test set. With ``prompts`` and ``labels`` (the reference's
        ``best_layer(test_prompts, test_labels)``): by the score on those, kept as
        ``test_scores``. Training accuracy is used only when no layer has a finite CV
        score (with a warning): most layers fit the training set perfectly.
        """
        if (prompts is None) != (labels is None):
            raise TypeError("give both prompts and labels, or neither")
        if prompts is not None:
            best = self._argmax(self.score(prompts, labels, remote=remote))
        else:
            if not self.cv_scores:
                self.cross_validate(5)
            best = self._argmax(self.cv_scores)
        if best is None:
            warnings.warn(
                "no layer has a finite held-out or cross-validated score (too few examples "
                "per class?); choosing by training score",
                stacklevel=2,
            )
            best = self._argmax(self.train_scores)
        if best is None:
            raise ValueError("no layer of this sweep has a finite score")
        return int(best)

    # ------------------------------------------------------------------ views
    def to_frame(self):
        """A pandas DataFrame: one row per layer, columns ``layer``, ``train``, and
        ``cv`` / ``test`` where computed."""
        import pandas as pd

        data = {"layer": self.layers, "train": [self.train_scores.get(x) for x in self.layers]}
        if self.cv_scores:
            data["cv"] = [self.cv_scores.get(x) for x in self.layers]
        if self.test_scores:
            data["test"] = [self.test_scores.get(x) for x in self.layers]
        frame = pd.DataFrame(data)
        frame.attrs["metric"] = self.metric
        return frame

    def plot(self, ax=None):
        """Score per layer (train, cross-validated, test) with the best layer marked.

        Returns
        -------
        matplotlib.figure.Figure
        """
        from ..plotting import new_axes

        ax = new_axes(ax, figsize=(7.0, 3.4))
        xs = self.layers
        series = [
            ("train", self.train_scores, {"color": "#9aa7b8", "linestyle": "--"}),
            ("cv", self.cv_scores, {"color": "#1f77b4"}),
            ("test", self.test_scores, {"color": "#d62728"}),
        ]
        for name, scores, style in series:
            if scores:
                ys = [scores.get(x, np.nan) for x in xs]
                ax.plot(xs, ys, marker="o", markersize=3, label=name, **style)
        best, by = self.best_choice()
        if best is not None:
            ax.axvline(best, color="#2ca02c", alpha=0.6, linewidth=1)
            ax.annotate(
                f"best by {'CV' if by == 'cv' else 'test'}: {best}",
                (best, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
            )
        if self.task == "classification":
            ax.axhline(0.5, color="#cccccc", linewidth=0.8, zorder=0)
        ax.set_xlabel("layer")
        ax.set_ylabel(self.metric)
        ax.set_title("Layer sweep")
        # beside the axes, never over the curves; integer layer ticks that do not crowd
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.figure.tight_layout()
        return ax.figure

    def show(self, prompts=None, labels=None):
        """Sweep-curve widget (needs the ``jupyter`` extra); scores ``prompts`` if given.

        The widget's "train" curve is the cross-validated score when available (computed
        5-fold if there is no test score at all), else the training score. The best layer
        is :meth:`best_choice`'s, labelled with the score it was chosen by. Clicking a
        layer sets this result's :attr:`selected_layer` (and so ``selected_probe``).
        """
        from .. import display

        if prompts is not None or labels is not None:
            self.score(prompts, labels)
        if not self.cv_scores and not self.test_scores:
            self.cross_validate(5)
        train = self.cv_scores or self.train_scores
        xs = self.layers
        best, by = self.best_choice()

        def on_select(layer: int | None) -> None:
            self.selected_layer = layer

        return display.widget(
            "sweep",
            xs,
            [train.get(x) for x in xs],
            [self.test_scores.get(x) for x in xs] if self.test_scores else None,
            best_layer=best,
            metric=self.metric,
            best_by=by,
            selected_layer=self.selected_layer,
            on_select=on_select,
        )

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ...presentation.payload import repr_bundle

        train, test = self.cv_scores or self.train_scores, self.test_scores
        best, by = self.best_choice()
        return repr_bundle(
            "sweep",
            layers=list(self.layers),
            train_scores=[train.get(x) for x in self.layers] if train else None,
            test_scores=[test.get(x) for x in self.layers] if test else None,
            best_layer=best,
            best_by=by,
            selected_layer=self.selected_layer,
            metric=self.metric,
        )

    def _repr_html_(self) -> str:
        from ...presentation import render_sweep_table

        cols = [("train", self.train_scores), ("cv", self.cv_scores), ("test", self.test_scores)]
        best, by = self.best_choice()
        return render_sweep_table(self.layers, [c for c in cols if c[1]], best, self.metric, by)
