"""How a :class:`~.probe.Probe` is fitted: its fitting paths and cross-validation refits.

The paths: pooled (one row per prompt, or per token in memory), streamed every-token
(from the per-token store, :mod:`.token_linear`), labelled spans, and sequence probes,
from prompts or from precomputed activations. Each ``fit_*`` function takes the probe
(its parameters and public methods; it reads no learned state it is about to replace) and
returns ``{name: value}``: the learned attributes (ending in ``_``) and what the probe
keeps of its training data in memory (``train_data``, ``train_matrix``, ``train_groups``,
``token_fit``), which the probe's own methods then set (only ``fit`` writes learned
state). The ``*_cv_score`` functions return the score that ``cross_validate`` keeps as
``cv_score_``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..extraction.layers import is_selection_spec, resolve_layers
from ..inputs import check_labels, check_two_classes, parse_fit_args
from ..profiling import profile


def _prepared(probe, prompts) -> list[str]:
    """``prompts`` validated, and chat-formatted where the probe's ``chat_template`` says so
    (what the probe's own prompt preparation does)."""
    return probe.runtime.prepare(prompts, chat_template=probe.chat_template)


def as_matrix(X, n_layers_hint: int | None = None) -> tuple[np.ndarray, int]:
    """Activations as one (n_samples, d) float64 matrix, and the number of layer blocks.

    Raises
    ------
    ValueError
        Unless ``X`` is (n_samples, hidden) or (n_samples, n_layers, hidden).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 3:
        return X.reshape(X.shape[0], -1), X.shape[1]
    if X.ndim != 2:
        raise ValueError(
            f"activations must have shape (n_samples, hidden) or (n_samples, n_layers, hidden), "
            f"got {X.shape}"
        )
    return X, n_layers_hint or 1


def check_sequences(probe, X, mask=None):
    """Validated token sequences for a sequence classifier (a clear error otherwise)."""
    if isinstance(X, np.ndarray):
        bad = X.ndim != 3
    else:
        bad = any(np.ndim(x) != 2 for x in X)
    if bad:
        raise ValueError(
            f"classifier={probe.classifier!r} reads token sequences: give an (n, seq, d) "
            "array with an (n, seq) mask= or a list of (seq_i, d) arrays, got X of shape "
            f"{np.shape(X)} (pooled (n_samples, d) rows are for pooled classifiers)"
        )
    return X, mask


def _check_no_sample_weight(probe, sample_weight) -> None:
    if sample_weight is not None:
        raise ValueError(
            f"classifier={probe.classifier!r} does not take sample_weight; it weighs "
            "classes itself (classifier_kwargs={'class_weight': 'balanced' | None | dict})"
        )


def _check_compute_backend(probe) -> None:
    if probe.compute_backend != "sklearn":
        from .classifiers import check_compute_backend

        check_compute_backend(probe.compute_backend)


# ---------------------------------------------------------------------- prompts
def fit_prompts(probe, X, y, labels, remote, sample_weight) -> dict:
    """What :meth:`~.probe.Probe.fit` learns from prompts: the arguments checked, then
    the sequence-probe, streamed every-token or pooled fitting path."""
    prompts, labels = parse_fit_args(X, y, labels, probe.task)
    if probe.task == "classification":
        check_two_classes(labels)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (len(prompts),):
            raise ValueError(
                f"sample_weight has shape {sample_weight.shape}; it needs one weight per "
                f"training prompt ({len(prompts)},)"
            )
    _check_compute_backend(probe)
    from . import background
    from .token_probes import uses_sequence_probe

    if uses_sequence_probe(probe):
        _check_no_sample_weight(probe, sample_weight)
        words = background.document_words(probe, prompts, labels)
        if words is not None:
            texts, y = background.bag_training_set(prompts, labels, words, probe.random_state)
            state = fit_sequence(probe, texts, y, remote)
            return _with_background(state, prompts, labels, len(texts))
        return fit_sequence(probe, prompts, labels, remote)
    if streams_token_fit(probe, labels):
        return fit_token_stream(probe, prompts, labels, sample_weight, remote)
    return fit_pooled(probe, prompts, labels, sample_weight, remote)


def _with_background(state: dict, prompts, labels, n_texts: int) -> dict:
    """A fit on prompts plus background documents, described as a fit on the prompts:
    ``training_data`` (what ``cross_validate`` refits per fold, on the prompts alone) and
    ``n_train_`` are the prompts'; ``n_background_documents_`` counts the documents."""
    state.update(
        train_data=(prompts, labels),
        n_train_=len(prompts),
        n_background_documents_=n_texts - len(prompts),
    )
    return state


# ---------------------------------------------------------------------- defaults
#: Defaults of a probe trained on every token with ``classifier="logistic_regression"``
#: (``train_pooling="all"``, or a score aggregation such as ``rolling_max:16``), under the
#: user's own ``classifier_kwargs``. Each token is a training row: tens of strongly
#: correlated rows per prompt, so sklearn's ``C=1`` fits the training prompts' tokens
#: (and does not converge in 2,000 iterations); token counts differ by class, so the
#: classes are balanced. ``bench/token_defaults.py`` measured these against sklearn's
#: defaults on six StrongREJECT categories (README, "Token-level probes at defaults").
TOKEN_LOGISTIC_DEFAULTS = {"C": 5e-4, "class_weight": "balanced"}


def trains_token_logistic(probe) -> bool:
    """Whether ``probe`` trains an sklearn logistic regression on every token."""
    return (
        probe.train_pooling_ == "all"
        and probe.task == "classification"
        and isinstance(probe.classifier, str)
        and probe.classifier == "logistic_regression"
        and probe.compute_backend == "sklearn"
    )


def classifier_kwargs_of(probe) -> dict | None:
    """``probe.classifier_kwargs`` over the defaults of its kind of training
    (:data:`TOKEN_LOGISTIC_DEFAULTS` for an every-token logistic regression)."""
    if trains_token_logistic(probe):
        return {**TOKEN_LOGISTIC_DEFAULTS, **(probe.classifier_kwargs or {})}
    return probe.classifier_kwargs


def preprocessing_of(probe) -> str | None:
    """``probe.preprocessing`` with ``"auto"`` resolved: ``"standard"`` for an every-token
    logistic regression (one scale for every feature, so one ``C`` fits any layer and
    model), else None."""
    if probe.preprocessing == "auto":
        return "standard" if trains_token_logistic(probe) else None
    return probe.preprocessing


# ---------------------------------------------------------------------- pooled
def fit_matrix(
    probe, X: np.ndarray, y: np.ndarray, n_layers: int = 1, kept=None, sample_weight=None
) -> dict:
    """Fit the pipeline on ``X``; ``kept`` is what to keep as the training activations
    (default ``X``: a float32 original is kept instead of a float64 copy)."""
    from sklearn.pipeline import Pipeline

    from .classifiers import build_classifier, build_cuml_classifier, check_sample_weight
    from .features import build_steps

    steps = build_steps(
        n_layers,
        probe.normalize_layers,
        preprocessing_of(probe),
        probe.pca_components,
        len(X),
        probe.random_state,
        mass_mean_augment=probe.mass_mean_augment,
    )
    build = build_classifier
    if probe.compute_backend == "cuml" and isinstance(probe.classifier, str):
        build = build_cuml_classifier
    clf = build(probe.classifier, probe.task, probe.random_state, classifier_kwargs_of(probe))
    sample_weight = check_sample_weight(clf, sample_weight, len(X))
    fit_params = {} if sample_weight is None else {"classifier__sample_weight": sample_weight}
    pipe = Pipeline([*steps, ("classifier", clf)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        # sklearn 1.9 deprecates SVC(probability=True); it still works until 1.11.
        warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
        try:
            with profile("fit"):
                pipe.fit(X, y, **fit_params)
        except ValueError as exc:
            raise ValueError(f"fitting {type(clf).__name__} failed: {exc}") from None
    state = {
        "pipeline_": pipe,
        "n_features_in_": X.shape[1],
        "n_feature_layers_": n_layers,
        "train_matrix": (X if kept is None else kept, y),
        "train_groups": None,  # fit_pooled sets it for train_pooling="all"
    }
    if probe.task == "classification":
        state["classes_"] = np.asarray(pipe.classes_)
    return state


def fit_pooled(probe, prompts, labels, sample_weight, remote) -> dict:
    """Fit on the pooled activations of ``prompts`` (one row per prompt, or per token for
    an every-token probe fitted in memory), selecting layers where ``layers`` asks for it."""
    train_data = (prompts, labels)
    rt = probe.runtime
    local = probe.extraction_options()["executor"] == "local"
    if rt.uses_local_weights and probe.backend == "local" and local:
        # Load first, so fit_seconds_ measures fitting, not a one-off model load.
        rt.load()
    t0 = time.perf_counter()
    prepared = _prepared(probe, prompts)
    if probe.layers == "auto":
        from ..evaluation.layer_selection import auto_candidate_layers

        # group lasso chooses among auto_candidates only: extract nothing else
        candidates = auto_candidate_layers(probe.auto_candidates, probe.n_model_layers())
    else:
        candidates = resolve_layers(probe.layers, probe.n_model_layers())
    X_layers, labels, owner = rt.training_set(
        prepared,
        labels,
        candidates,
        probe.train_pooling_,
        roles=probe.score_roles,
        score_special_tokens=probe.score_special_tokens,
        remote=remote,
        return_owner=True,
        **probe.extraction_options(),
    )
    if sample_weight is not None:
        sample_weight = sample_weight[owner]  # per token for train_pooling="all"
    hits = rt.last_hits
    selection = None
    if is_selection_spec(probe.layers):
        from ..evaluation.layer_selection import select_layers

        selection = select_layers(probe, X_layers, labels, candidates)
        candidates, selected = selection.candidates, selection.selected
    else:
        selected = candidates
    from .features import concat_layers

    state = fit_matrix(
        probe,
        concat_layers(X_layers, selected),
        labels,
        n_layers=len(selected),
        sample_weight=sample_weight,
    )
    # which prompt each token came from (cross_validate keeps a prompt in one fold)
    state["train_groups"] = owner if probe.train_pooling_ == "all" else None
    if probe.train_pooling_ == "all":
        state["n_train_tokens_"] = len(labels)
    state["candidate_layers_"] = list(candidates)
    state["layers_"] = list(selected)
    if selection is not None:
        state["selected_layers_"] = list(selection.selected)
        state["selection_scores_"] = dict(selection.scores)
        if selection.sweep is not None:
            state["sweep_result_"] = selection.sweep
    state["n_train_"] = len(prompts)
    state["fit_seconds_"] = time.perf_counter() - t0
    state["train_cache_hits_"] = hits
    state["model_fingerprint_"] = rt.fingerprint
    state["trained_model_"] = rt.model_name
    # what dtype="auto" resolved to (shown by repr and the probe card)
    state["compute_dtype_"] = rt.compute_dtype
    state["train_data"] = train_data  # for push_to_hub(include_training_data=True)
    return state


def fit_activations(probe, X, y, layers, n_prompts, sample_weight) -> dict:
    """Fit a pooled classifier on precomputed activations (see
    :meth:`~.probe.Probe.fit_from_activations`)."""
    _check_compute_backend(probe)
    t0 = time.perf_counter()
    original = np.asarray(X)
    X, n_layers = as_matrix(X, None if layers is None else len(layers))
    y = check_labels(list(y), probe.task)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
    if len(X) == 0:
        raise ValueError("no training samples were given")
    if probe.task == "classification":
        check_two_classes(y)
    kept = original.reshape(len(original), -1) if original.dtype.kind == "f" else None
    state = fit_matrix(probe, X, y, n_layers, kept=kept, sample_weight=sample_weight)
    if layers is not None:
        state["layers_"] = [int(x) for x in layers]
    # Without model layers, the candidates are the blocks of X (0, 1, ...): what
    # layer importance reports on.
    state["candidate_layers_"] = (
        list(state["layers_"]) if layers is not None else list(range(n_layers))
    )
    state["n_train_"] = len(X) if n_prompts is None else int(n_prompts)
    state["fit_seconds_"] = time.perf_counter() - t0
    return state


# ---------------------------------------------------------------------- every token, streamed
def streams_token_fit(probe, labels=None) -> bool:
    """Whether ``fit`` trains this every-token probe from the per-token store, a chunk
    at a time (:mod:`.token_linear`): ``train_pooling="all"`` with a binary L2
    ``logistic_regression`` (classifier_kwargs among C, class_weight, max_iter, tol,
    fit_intercept), scaling by ``normalize_layers``/``preprocessing="standard"``
    only, fixed layers, local extraction. Other every-token probes fit in memory."""
    from .token_linear import streamable_kwargs

    return (
        probe.train_pooling_ == "all"
        and probe.task == "classification"
        and probe.classifier == "logistic_regression"
        and probe.compute_backend == "sklearn"
        and preprocessing_of(probe) in (None, "standard")
        and not probe.mass_mean_augment
        and not is_selection_spec(probe.layers)
        and probe.extraction_options()["executor"] == "local"
        and streamable_kwargs(probe.classifier_kwargs)
        and (labels is None or len(np.unique(labels)) == 2)
    )


def fit_token_stream(probe, prompts, labels, sample_weight, remote, spans=None) -> dict:
    """Fit ``train_pooling="all"`` from the per-token store without the token matrix:
    extraction writes the tokens to disk chunk by chunk (as for sequence probes), then
    the scalers and an L2 logistic regression are fitted over chunks of tokens
    (:func:`.token_linear.fit_token_logistic`: sklearn's objective and stopping rule).
    ``training_activations`` stays None; ``cross_validate`` refits per fold from the
    store. ``spans`` (:func:`fit_spans`): ``labels`` are the spans' and each token
    belongs to the span it lies in."""
    from .classifiers import build_classifier, check_sample_weight

    rt = probe.runtime
    if rt.uses_local_weights and probe.backend == "local":
        rt.load()
    t0 = time.perf_counter()
    labels = np.asarray(labels)
    clf = build_classifier(
        probe.classifier, probe.task, probe.random_state, classifier_kwargs_of(probe)
    )
    sample_weight = check_sample_weight(clf, sample_weight, len(labels))
    prepared = _prepared(probe, prompts)
    layers = resolve_layers(probe.layers, probe.n_model_layers())
    inputs = probe.token_inputs(prepared, layers, remote)
    owners = None if spans is None else _span_owners(prompts, prepared, inputs, spans)
    with profile("fit"):
        pipeline, fit = streamed_pipeline(
            probe, clf, inputs, np.arange(len(prepared)), labels, len(layers), sample_weight, owners
        )
    return {
        "pipeline_": pipeline,
        "classes_": np.asarray(clf.classes_),
        "n_features_in_": len(fit.mean),
        "n_feature_layers_": len(layers),
        "train_matrix": None,  # the point: the token matrix was never built
        "train_groups": None,
        # what the streamed fit trained on (cross_validate refits prompts, not spans)
        "token_fit": "prompts" if spans is None else "spans",
        "train_passes_": fit.passes,  # passes over the training tokens
        "candidate_layers_": list(layers),
        "layers_": list(layers),
        "n_train_": len(prompts),
        "n_train_tokens_": fit.n_tokens,
        "fit_seconds_": time.perf_counter() - t0,
        "train_cache_hits_": int(inputs.hits),
        "model_fingerprint_": rt.fingerprint,
        "trained_model_": rt.model_name,
        "compute_dtype_": rt.compute_dtype,
        # (span fits keep no (prompts, labels): cross_validate and hub uploads need them)
        "train_data": (prompts, labels) if spans is None else None,
    }


def fit_spans(probe, texts, spans, remote) -> dict:
    """Check labelled spans of ``texts`` and fit on their tokens (see
    :meth:`~.probe.Probe.fit_spans`) with :func:`fit_token_stream`."""
    from ..inputs import check_prompts
    from .span_data import check_spans

    texts = check_prompts(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("fit_spans takes texts as str (spans index their characters)")
    spans = check_spans(texts, spans)
    labels = np.asarray([lab for own in spans for (_, _, lab, _) in own])
    weights = np.asarray([w for own in spans for (*_, w) in own])
    check_two_classes(labels)
    if not streams_token_fit(probe, labels):
        raise ValueError(
            "fit_spans trains an every-token logistic probe from the per-token store: "
            "use Probe(train_pooling='all', classifier='logistic_regression') with two "
            "classes of span labels, classifier_kwargs among C, class_weight, max_iter, "
            "tol, fit_intercept, fixed layers, preprocessing None or 'standard'"
        )
    sample_weight = None if np.all(weights == 1.0) else weights
    return fit_token_stream(probe, texts, labels, sample_weight, remote, spans=spans)


def _span_owners(texts, prepared, inputs, spans) -> list[np.ndarray]:
    """Per prepared text, the span (global index) each token lies in, -1 outside."""
    from .span_data import span_owners

    owners, first = [], 0
    for text, full, piece, own in zip(texts, prepared, inputs.pieces(), spans):
        shift = full.find(text)
        if shift < 0:
            raise ValueError(
                "a text is not found verbatim in its chat-formatted form, so its spans "
                "cannot be placed; fit_spans with chat_template=False"
            )
        owners.append(span_owners(piece.offsets[: len(piece.tokens)], own, first, shift))
        first += len(own)
    return owners


def streamed_pipeline(probe, clf, inputs, idx, labels, n_layers, sample_weight=None, owners=None):
    """The fitted ``Pipeline`` (scaling steps, then ``clf``) of a streamed every-token
    fit on the prompts ``idx`` of ``inputs`` (``labels`` and ``sample_weight``: theirs,
    or with ``owners`` the spans'), and the :class:`~.token_linear.StreamedFit`."""
    from sklearn.pipeline import Pipeline

    from .features import build_steps
    from .token_linear import set_fitted_logistic

    steps = build_steps(
        n_layers,
        probe.normalize_layers,
        preprocessing_of(probe),
        probe.pca_components,
        len(idx),
        probe.random_state,
    )
    fit = _token_logistic(inputs, idx, labels, steps, sample_weight, clf, owners)
    set_fitted_logistic(clf, fit, np.unique(labels))
    return Pipeline([*steps, ("classifier", clf)]), fit


def _token_logistic(inputs, idx, labels, steps, sample_weight, clf, owners=None):
    """:func:`.token_linear.fit_token_logistic` on the prompts ``idx`` of ``inputs``
    with ``clf``'s parameters (fits ``steps``; see :func:`streamed_pipeline`)."""
    from sklearn.exceptions import ConvergenceWarning

    from .sequence_base import SubsetTokenSource
    from .token_linear import TokenBatches, fit_token_logistic

    source = SubsetTokenSource(inputs.source, idx)
    masks = [inputs.masks[i] for i in idx]
    if owners is None:
        batches = TokenBatches(source, masks)
    else:
        batches = TokenBatches(source, masks, owners=[owners[i] for i in idx], n_owners=len(labels))
    params = clf.get_params()
    fit = fit_token_logistic(
        batches,
        labels,
        steps,
        sample_weight=sample_weight,
        C=params["C"],
        class_weight=params["class_weight"],
        max_iter=params["max_iter"],
        tol=params["tol"],
        fit_intercept=params["fit_intercept"],
    )
    if not fit.converged:
        warnings.warn(
            f"the every-token logistic regression reached max_iter={params['max_iter']} "
            "before converging; raise classifier_kwargs={'max_iter': ...} or lower C",
            ConvergenceWarning,
            stacklevel=4,
        )
    return fit


# ---------------------------------------------------------------------- sequence probes
def fit_sequence(probe, prompts, labels, remote) -> dict:
    """Fit ``classifier="mil"|"attention"|"multimax"`` on every token of the prompts.

    Extraction writes the per-token activations to disk chunk by chunk, then training
    reads them back ``batch_size`` prompts at a time (:mod:`.token_store`).
    """
    from sklearn.pipeline import Pipeline

    from .token_probes import build_sequence_probe

    rt = probe.runtime
    if rt.uses_local_weights and probe.backend == "local":
        rt.load()
    t0 = time.perf_counter()
    prepared = _prepared(probe, prompts)
    layers = resolve_layers(probe.layers, probe.n_model_layers())
    inputs = probe.token_inputs(prepared, layers, remote)
    est = build_sequence_probe(probe)
    with profile("fit"):
        est.fit(inputs.source, labels)
    return {
        "pipeline_": Pipeline([("classifier", est)]),
        "classes_": np.asarray(est.classes_),
        "n_features_in_": int(est.n_features_in_),
        "n_feature_layers_": len(layers),
        "candidate_layers_": list(layers),
        "layers_": list(layers),
        "n_train_": len(prompts),
        "fit_seconds_": time.perf_counter() - t0,
        "train_cache_hits_": int(inputs.hits),
        "model_fingerprint_": rt.fingerprint,
        "trained_model_": rt.model_name,
        "compute_dtype_": rt.compute_dtype,
        "train_data": (prompts, labels),
    }


def fit_sequence_activations(probe, X, y, layers, n_prompts, sample_weight, mask) -> dict:
    """Fit a sequence classifier on precomputed token sequences (see
    :meth:`~.probe.Probe.fit_from_activations`)."""
    from sklearn.pipeline import Pipeline

    from .token_probes import build_sequence_probe

    _check_no_sample_weight(probe, sample_weight)
    t0 = time.perf_counter()
    X, mask = check_sequences(probe, X, mask)
    y = check_labels(list(y), probe.task)
    check_two_classes(y)
    est = build_sequence_probe(probe).fit(X, y, mask=mask)
    state = {
        "pipeline_": Pipeline([("classifier", est)]),
        "classes_": np.asarray(est.classes_),
        "n_features_in_": int(est.n_features_in_),
        "n_feature_layers_": 1 if layers is None else len(layers),
    }
    if layers is not None:
        state["layers_"] = [int(x) for x in layers]
    state["candidate_layers_"] = list(state["layers_"]) if layers is not None else [0]
    state["n_train_"] = len(y) if n_prompts is None else int(n_prompts)
    state["fit_seconds_"] = time.perf_counter() - t0
    return state


# ---------------------------------------------------------------------- cross-validation
def pooled_cv_score(probe, X, y, groups, cv: int) -> float:
    """Mean k-fold score (accuracy, R^2 for regression) of the probe's pipeline refitted
    on its training activations ``X, y``; ``groups`` (the prompt of each token of an
    every-token probe) keeps a prompt's tokens in one fold."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedGroupKFold, cross_val_score

    from ..inputs import stratified_folds

    if probe.task == "classification":
        splitter = stratified_folds(y, cv, probe.random_state)
        k = splitter.n_splits
    else:
        k = min(cv, len(y))
        splitter = KFold(k, shuffle=True, random_state=probe.random_state or 0)
    if groups is not None:
        # train_pooling="all": one sample per token; a prompt's tokens stay in one
        # fold, or the held-out score would be read off tokens of training prompts
        k = min(k, len(np.unique(groups)))
        if probe.task == "classification":
            splitter = StratifiedGroupKFold(k, shuffle=True, random_state=probe.random_state or 0)
        else:
            from sklearn.model_selection import GroupKFold

            splitter = GroupKFold(k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(clone(probe.pipeline_), X, y, cv=splitter, groups=groups)
    return float(np.mean(scores))


def token_cv_score(probe, cv: int) -> float:
    """Token-level accuracy of a streamed ``train_pooling="all"`` probe over k folds of
    its training prompts (a prompt's tokens stay in one fold): per fold, the scalers
    and classifier are refitted from the per-token store and the held-out prompts'
    tokens are scored a chunk at a time."""
    from sklearn.base import clone

    from ..inputs import stratified_folds
    from .sequence_base import SubsetTokenSource
    from .token_linear import TokenBatches

    prompts, labels = probe.training_data
    labels = np.asarray(labels)
    splitter = stratified_folds(labels, cv, probe.random_state, what="training prompts")
    inputs = probe.token_inputs(_prepared(probe, prompts), probe.layers_, None)
    scores = []
    for tr, te in splitter.split(labels, labels):
        pipe, _ = streamed_pipeline(
            probe, clone(probe.classifier_), inputs, tr, labels[tr], len(probe.layers_)
        )
        held = TokenBatches(SubsetTokenSource(inputs.source, te), [inputs.masks[i] for i in te])
        right = total = 0
        for X, owner in held:
            right += int((pipe.predict(X) == labels[te][owner]).sum())
            total += len(owner)
        scores.append(right / max(total, 1))
    return float(np.mean(scores))


def sequence_cv_score(probe, cv: int) -> float:
    """Stratified k-fold prompt-level accuracy of a sequence probe: the estimator is
    refitted per fold on the training prompts' tokens, read from the per-token store
    (no forward pass when they are still stored)."""
    from sklearn.base import clone

    from ..inputs import stratified_folds
    from .sequence_base import SubsetTokenSource

    train = probe.training_data
    if train is None:
        raise ValueError(
            "cross_validate needs the training prompts, which saved probes do not keep; "
            "refit this probe (its token activations are cached, so that is quick)"
        )
    prompts, labels = train
    labels = np.asarray(labels)
    splitter = stratified_folds(labels, cv, probe.random_state, what="training prompts")
    source = probe.token_inputs(_prepared(probe, prompts), probe.layers_, None).source
    scores = []
    for tr, te in splitter.split(labels, labels):
        est = clone(probe.classifier_).fit(SubsetTokenSource(source, tr), labels[tr])
        scores.append(float(np.mean(est.predict(SubsetTokenSource(source, te)) == labels[te])))
    return float(np.mean(scores))
