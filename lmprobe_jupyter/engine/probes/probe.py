"""``Probe``: a classifier (or regressor) on a language model's residual-stream activations.

Follows the scikit-learn estimator contract: ``__init__`` only stores its arguments, all
validation and work happen in ``fit``, learned state ends in ``_``. This module holds the
parameters, their validation, the learned state and the methods that set it (``fit`` and
its variants, ``cross_validate``, ``evaluate``, ``calibrate``); the fitting paths are
functions in :mod:`.fitting`, and model access and inference (``predict``, token scores)
come from the base class :class:`~.inference.ProbeInference`.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..extraction.layers import validate_spec
from ..extraction.pooling import resolve_poolings
from ..inputs import check_cv, check_labels, check_scoring_data
from ..profiling import profiled
from . import fitting
from .inference import ProbeInference, per_call_options
from .scoring import compute_metrics

TASKS = ("classification", "regression")
BACKENDS = ("local", "nnsight")


class NotFittedError(ValueError, AttributeError):
    """Raised when a probe is used before ``fit``."""


#: Learned attributes a saved probe keeps (see :meth:`Probe.learned_state`). ``fit`` sets
#: most of them; ``calibrate`` sets the threshold, ``evaluate`` the metrics,
#: ``cross_validate`` the cv score; loaders restore them.
PERSISTED_STATE = (
    "pipeline_",
    "classes_",
    "n_features_in_",
    "n_feature_layers_",
    "layers_",
    "candidate_layers_",
    "selected_layers_",
    "selection_scores_",
    "n_train_",
    "fit_seconds_",
    "train_cache_hits_",
    "model_fingerprint_",
    "trained_model_",
    "compute_dtype_",
    "threshold_",
    "calibration_",
    "metrics_",
    "cv_score_",
    "class_labels_",
    "hub_repo_id_",
    "label_corrections_",
)


class Probe(ProbeInference):
    """A linear probe on language-model activations.

    Parameters
    ----------
    model : str or None
        Hub ID or local path. ``None`` means the bundled SmolLM2-135M-Instruct (unless
        ``dataset`` is given, or only ``*_from_activations`` is used).
    dataset : str or None
        Activation dataset repo ID to read activations from instead of running a model.
    layers : int, list of int or str, default "middle"
        ``16``, ``-1``, ``[14, 15, 16]``, ``"middle"``, ``"last"``, ``"all"``, ``"auto"``,
        ``"fast_auto"``, ``"sweep"``, ``"sweep:N"``, ``"sweep:A-B"``.
    pooling, train_pooling, inference_pooling : str or callable
        ``"last_token"``, ``"mean"``, ``"first_token"``, ``"all"``, ``"max"``, ``"min"`` or
        a callable ``f(Tensor[seq, hidden]) -> Tensor[hidden]``. Explicit train/inference
        values override ``pooling``. A stage prefix says where the reduction happens:
        ``"activation:NAME"`` pools activations before the classifier
        (``activation:max`` is the element-wise max over tokens), ``"score:NAME"``
        classifies every token and reduces the scores (``score:mean`` is the mean
        per-token probability; trained on every token); see :mod:`.pooling`.
        Trained on every token (``train_pooling="all"``) with the default
        ``logistic_regression``, the probe fits from the per-token store a chunk of
        tokens at a time, never holding the token matrix (:mod:`.token_linear`).
    classifier : str or sklearn estimator, default "logistic_regression"
    task : {"classification", "regression"}
    device : str, default "auto"
    remote : bool, default False
        nnsight remote execution on NDIF (``backend="nnsight"``).
    random_state : int or None
    batch_size : int, default 8
    backend : {"local", "nnsight"}
    dtype : {"auto", "float32", "float16", "bfloat16"} or None, default "auto"
        ``"auto"``: bfloat16 where the device runs it natively (CUDA, AMX/AVX512-BF16 CPUs), else float32; ``"float32"`` for exact reference numbers.
    normalize_layers : bool or "per_layer", default True
    preprocessing : {"auto", "standard", "pca", "standard+pca"} or None, default "auto"
        ``"auto"``: ``"standard"`` for a probe trained on every token with the
        ``logistic_regression`` classifier (``train_pooling="all"``, or a score aggregation
        such as ``pooling="rolling_max:16"``), else None. See ``classifier_kwargs``.
    pca_components : int or None
    classifier_kwargs : dict or None
        Keyword arguments of the classifier. A probe trained on every token with the
        ``logistic_regression`` classifier uses ``C=5e-4`` and ``class_weight="balanced"``
        unless these set them (:data:`.fitting.TOKEN_LOGISTIC_DEFAULTS`: every token of a prompt is a
        training row, so the rows are many and alike; measured in ``bench/token_defaults.py``).
    fast_auto_top_k : int, default 3
    auto_candidates : list of float or int, or None
    auto_alpha : float, default 0.01
    chat_template : bool, default False
        Format each prompt as a user turn with the tokenizer's chat template.
    score_roles : tuple of str or None
        Pool only over tokens of these chat roles (e.g. ``("user",)``).
    progress : bool or None
        Progress bars (None: on unless ``LMPROBE_PROGRESS=0``).
    mass_mean_augment : bool, default False
        Append one feature after preprocessing: the projection on the mass-mean direction
        (positive-class mean minus negative-class mean, unit length, learned at fit); the
        classifier sees ``d + 1`` features. Binary classification only.
    max_retries : int or None
        Retries of a failed remote (nnsight) extraction batch, with exponential backoff
        (1 s, doubling, capped at 30 s), then the last error is raised. Also a per-call
        keyword of ``fit``, ``warmup``, ``predict``, ``predict_proba``, ``score``,
        ``evaluate``.
    compute_backend : {"sklearn", "cuml"}, default "sklearn"
        Where the classifier trains. ``"cuml"`` (RAPIDS, NVIDIA GPU) offers
        ``logistic_regression`` and ``svm`` (``ridge`` for regression).
    score_special_tokens : bool, default False
        Token-level scores (``token_scores``, highlights, score-stage inference poolings
        such as ``"all"``, ``"max"``, ``"rolling_max:K"``, ``"ema:A"``) leave out
        position 0 (the attention sink, whose activations are 5-170x the norm of other
        tokens' on SmolLM2) and special tokens (BOS/EOS, chat-template control tokens):
        NaN in ``token_scores``, masked in ``"all"`` arrays, skipped by every reduction.
        True scores them too (also in the live ``monitor``). Training with
        ``train_pooling="all"`` (and sequence probes) uses the same tokens.
    background : {"auto", None}, default "auto"
        ``"auto"``: an attention probe (``classifier="attention"``) of two classes is
        also trained on its training prompts placed inside ordinary
        text (Python's documentation, shipped with CPython), each document labelled as
        its prompt: the probe learns to find the request in long text
        (:mod:`.background`; measured in ``bench/token_defaults.py``). It extracts ~450
        more tokens per training prompt (at most 512 prompts); ``n_background_documents_``
        says how many a fit used. None: train on the prompts alone. Other probes ignore
        it (every-token logistic probes: ``fit_spans`` with ``background_documents``).
    """

    def __init__(
        self,
        model: str | None = None,
        dataset: str | None = None,
        layers="middle",
        pooling="last_token",
        train_pooling=None,
        inference_pooling=None,
        classifier="logistic_regression",
        task: str = "classification",
        device: str = "auto",
        remote: bool = False,
        random_state: int | None = None,
        batch_size: int = 8,
        backend: str = "local",
        dtype: str | None = "auto",
        normalize_layers=True,
        preprocessing: str | None = "auto",
        pca_components: int | None = None,
        classifier_kwargs: dict | None = None,
        fast_auto_top_k: int = 3,
        auto_candidates=None,
        auto_alpha: float = 0.01,
        chat_template: bool = False,
        score_roles=None,
        progress: bool | None = None,
        mass_mean_augment: bool = False,
        max_retries: int | None = None,
        compute_backend: str = "sklearn",
        score_special_tokens: bool = False,
        background: str | None = "auto",
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.layers = layers
        self.pooling = pooling
        self.train_pooling = train_pooling
        self.inference_pooling = inference_pooling
        self.classifier = classifier
        self.task = task
        self.device = device
        self.remote = remote
        self.random_state = random_state
        self.batch_size = batch_size
        self.backend = backend
        self.dtype = dtype
        self.normalize_layers = normalize_layers
        self.preprocessing = preprocessing
        self.pca_components = pca_components
        self.classifier_kwargs = classifier_kwargs
        self.fast_auto_top_k = fast_auto_top_k
        self.auto_candidates = auto_candidates
        self.auto_alpha = auto_alpha
        self.chat_template = chat_template
        self.score_roles = score_roles
        self.progress = progress
        self.mass_mean_augment = mass_mean_augment
        self.max_retries = max_retries
        self.compute_backend = compute_backend
        self.score_special_tokens = score_special_tokens
        self.background = background

    # ------------------------------------------------------------------ sklearn API
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the constructor parameters (what ``get_params`` returns)."""
        return cls._param_names()

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> Probe:
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValueError(
                    f"{k!r} is not a Probe parameter; valid: {', '.join(sorted(valid))}"
                )
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        defaults = {
            k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()
        }
        shown = [
            f"{k}={v!r}" for k, v in self.get_params().items() if k in defaults and v != defaults[k]
        ]
        ran = self.__dict__.get("compute_dtype_")
        if ran and ran != self.dtype:
            shown.append(f"compute_dtype_={ran!r}")  # what dtype="auto" ran in
        return f"{type(self).__name__}({', '.join(shown)})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_runtime", None)
        state.pop("_identity_warned", None)
        state.pop("_call_opts", None)
        return state

    # ------------------------------------------------------------------ learned state
    def learned_state(self) -> dict:
        """The learned attributes a saved probe keeps (:data:`PERSISTED_STATE`), as set."""
        return {k: self.__dict__[k] for k in PERSISTED_STATE if k in self.__dict__}

    def restore_state(self, state: dict) -> Probe:
        """Restore attributes from :meth:`learned_state` (what loaders call).

        Raises
        ------
        ValueError
            For a name that is not one of :data:`PERSISTED_STATE`.
        """
        unknown = sorted(set(state) - set(PERSISTED_STATE))
        if unknown:
            raise ValueError(
                f"{unknown} are not learned attributes of a Probe; known: "
                f"{', '.join(PERSISTED_STATE)}"
            )
        self.__dict__.update(state)
        return self

    @property
    def training_data(self) -> tuple[list, np.ndarray] | None:
        """``(prompts, labels)`` of the last ``fit`` from prompts (None otherwise)."""
        return self.__dict__.get("_train_data")

    @property
    def training_activations(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(X, y)`` the classifier was fitted on (None for loaded probes)."""
        return self.__dict__.get("_train_matrix")

    def without_training_data(self) -> Probe:
        """A shallow copy that keeps no training prompts or activations (for sharing)."""
        import copy

        out = copy.copy(self)
        out.__dict__.pop("_train_data", None)
        out.__dict__.pop("_train_matrix", None)
        out.__dict__.pop("_train_groups", None)
        out.__dict__.pop("_runtime", None)
        return out

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> None:
        from .classifiers import CLASSIFIERS
        from .features import validate_normalize, validate_preprocessing

        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not one of {', '.join(map(repr, TASKS))}")
        if self.backend not in BACKENDS:
            raise ValueError(
                f"backend={self.backend!r} is not one of {', '.join(map(repr, BACKENDS))}"
            )
        if self.remote and self.backend != "nnsight":
            raise ValueError(
                "remote=True needs backend='nnsight' (NDIF runs models through nnsight)"
            )
        from .token_probes import SEQUENCE_CLASSIFIERS, check_sequence_options, mil_window

        if isinstance(self.classifier, str) and self.classifier in SEQUENCE_CLASSIFIERS:
            check_sequence_options(self)
        elif mil_window(self) is not None:  # train_pooling="rolling_max:K": MILProbe
            check_sequence_options(self)
        elif isinstance(self.classifier, str) and self.classifier not in CLASSIFIERS:
            allowed = ", ".join(map(repr, (*CLASSIFIERS, *SEQUENCE_CLASSIFIERS)))
            raise ValueError(
                f"classifier={self.classifier!r} is not one of {allowed} "
                "(or pass an sklearn estimator)"
            )
        if (
            not isinstance(self.batch_size, int)
            or isinstance(self.batch_size, bool)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive int")
        from ..extraction.retry import validate_max_retries
        from .classifiers import COMPUTE_BACKENDS

        validate_max_retries(self.max_retries)
        if self.compute_backend not in COMPUTE_BACKENDS:
            raise ValueError(
                f"compute_backend={self.compute_backend!r} is not one of "
                f"{', '.join(map(repr, COMPUTE_BACKENDS))}"
            )
        if not isinstance(self.mass_mean_augment, bool):
            raise ValueError(f"mass_mean_augment={self.mass_mean_augment!r} must be True or False")
        if self.mass_mean_augment and self.task == "regression":
            raise ValueError(
                "mass_mean_augment=True needs two classes (a mass-mean direction); "
                "it is not defined for task='regression'"
            )
        validate_spec(self.layers)
        validate_normalize(self.normalize_layers)
        validate_preprocessing(self.preprocessing, self.pca_components)
        resolve_poolings(self.pooling, self.train_pooling, self.inference_pooling)
        from .background import validate_background

        validate_background(self.background)
        if not isinstance(self.fast_auto_top_k, int) or self.fast_auto_top_k < 1:
            raise ValueError(f"fast_auto_top_k={self.fast_auto_top_k!r} must be a positive int")
        if self.layers == "auto":
            from ..evaluation.layer_selection import validate_selection_params

            validate_selection_params(self)
        if self.model is not None and self.dataset is not None:
            raise ValueError("give either model= or dataset=, not both")

    def validate_params(self) -> Probe:
        """Check every parameter now (``fit`` does it too); returns ``self``."""
        self._validate_params()
        return self

    @property
    def train_pooling_(self):
        return resolve_poolings(self.pooling, self.train_pooling, self.inference_pooling)[0]

    @property
    def inference_pooling_(self):
        return resolve_poolings(self.pooling, self.train_pooling, self.inference_pooling)[1]

    def _check_fitted(self) -> None:
        if not hasattr(self, "pipeline_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(positive, negative) "
                "or fit(prompts, labels) first"
            )

    def check_fitted(self) -> Probe:
        """Raise :class:`NotFittedError` unless fitted; returns ``self``."""
        self._check_fitted()
        return self

    def _check_reads_prompts(self) -> None:
        """Fitted, and knows which model layers to read (not true of every probe fitted
        from activations)."""
        self._check_fitted()
        if getattr(self, "layers_", None) is None:
            raise ValueError(
                "this probe was fitted from activations without layers=, so it does not know "
                "which model layers its features came from and cannot read prompts; use "
                "predict_from_activations(X), or refit with "
                "fit_from_activations(X, y, layers=[...]) naming the layers X holds"
            )

    # ------------------------------------------------------------------ fit
    @profiled("Probe.fit")
    def fit(
        self,
        X,
        y=None,
        *,
        labels=None,
        remote: bool | None = None,
        batch_size: int | None = None,
        sample_weight=None,
        max_retries: int | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ) -> Probe:
        """Fit on contrastive prompts or on prompts with labels.

        Parameters
        ----------
        X : list of str
            Positive prompts (with ``y`` a list of negative prompts) or all prompts
            (with ``y`` their labels: ints/strings, or floats for regression).
        y : list of str, or array-like of shape (n_samples,)
        labels : array-like of shape (n_samples,), optional
            Labels by keyword (needed for string class labels given as a list).
        remote : bool, optional
            Override ``remote`` for this call.
        batch_size : int, optional
            Prompts per forward pass for this call.
        sample_weight : array-like of shape (n_samples,), optional
            One weight per training prompt, passed to the classifier's ``fit`` (with
            ``train_pooling="all"`` every token carries its prompt's weight). Layer
            selection (``auto``, ``fast_auto``, sweeps) does not use it.
        max_retries : int, optional
            Override ``max_retries`` for this call.
        executor : {"local", "ray"}, default "local"
            Where extraction runs: this process, or ``num_workers`` Ray workers (see
            :mod:`.distributed`; same activations, same cache entries, no weights loaded
            here). The same keywords work on ``predict``, ``predict_proba``, ``warmup``
            and ``Probe.sweep_layers``.
        num_workers : int, optional
            Ray workers (default: one per GPU of the cluster, else one per CPU).
        """
        self._validate_params()
        with self._call_options(batch_size, max_retries, executor, num_workers):
            state = fitting.fit_prompts(self, X, y, labels, remote, sample_weight)
            self._forget_token_fit()
            return self._learn(state)

    def _forget_token_fit(self) -> None:
        """Drop what an earlier streamed every-token fit left (a refit another way must not
        be cross-validated, or described, as one)."""
        for name in ("_token_fit", "train_passes_", "n_train_tokens_", "n_background_documents_"):
            self.__dict__.pop(name, None)

    def _learn(self, state: dict) -> Probe:
        """Set what a fitting function of :mod:`.fitting` returns: learned attributes (by
        name) and the training data kept in memory (``train_data``, ``train_matrix``,
        ``train_groups``: which prompt each token row came from, ``token_fit``)."""
        kept = {
            "train_data": "_train_data",
            "train_matrix": "_train_matrix",
            "train_groups": "_train_groups",
            "token_fit": "_token_fit",
        }
        for name, value in state.items():
            setattr(self, kept.get(name, name), value)
        return self

    @per_call_options
    def fit_spans(
        self,
        texts,
        spans,
        *,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
    ) -> Probe:
        """Fit an every-token probe on labelled character spans of ``texts``.

        Each token inside a span is trained on with that span's label; tokens outside
        every span are not trained on (they still give the tokens in spans their
        context). :func:`.span_data.context_documents` builds such texts from plain
        training prompts (several per document, each prompt's span labelled): the probe
        then sees requests after other text and at later positions, which is what keeps
        it firing on a request embedded in a long document (``bench/token_probes.py``);
        :func:`.span_data.background_documents` places each prompt in ordinary text and
        labels that text negative at a small weight (a span's optional fourth element).

        Needs ``train_pooling="all"`` (or a base pooling that trains on every token) and
        the probe :meth:`fit` trains from the per-token store: binary span labels,
        ``classifier="logistic_regression"``. With ``chat_template=True`` each text is
        formatted as a user turn and its spans are shifted to where the text sits in it.

        Parameters
        ----------
        texts : list of str
        spans : list of list of (start, end, label) or (start, end, label, weight)
            Per text, character spans ``texts[i][start:end]`` (not overlapping), their
            labels and optionally weights (> 0, default 1: each token of the span carries
            it, as a ``sample_weight`` in :meth:`fit`; class weights apply on top).
        remote, batch_size, max_retries
            As for :meth:`fit`.
        """
        self._validate_params()
        return self._learn(fitting.fit_spans(self, texts, spans, remote))

    @property
    def classifier_(self):
        self._check_fitted()
        return self.pipeline_.named_steps["classifier"]

    # ------------------------------------------------------------------ activations API
    def fit_from_activations(
        self, X, y, *, layers=None, n_prompts: int | None = None, sample_weight=None, mask=None
    ) -> Probe:
        """Fit on precomputed activations.

        Parameters
        ----------
        X : array-like of shape (n_samples, d) or (n_samples, n_layers, d)
            For ``classifier="attention"|"multimax"|"mil"``: token sequences, an
            ``(n, seq, d)`` array (with ``mask``) or a list of ``(seq_i, d)`` arrays
            (``d``: the layers' hidden sizes side by side per token).
        y : array-like of shape (n_samples,)
        layers : list of int, optional
            The model layers ``X``'s blocks come from, in order (so the probe can then
            predict from prompts: its ``layers_``).
        n_prompts : int, optional
            Number of prompts behind the samples (``n_train_``; default ``n_samples``).
        sample_weight : array-like of shape (n_samples,), optional
            Passed to the classifier's ``fit``.
        mask : bool array-like of shape (n, seq) or list of (seq_i,), optional
            Sequence classifiers only: True at the tokens the probe may use (default all).
        """
        self._validate_params()
        if self._is_sequence():
            return self._learn(
                fitting.fit_sequence_activations(self, X, y, layers, n_prompts, sample_weight, mask)
            )
        if mask is not None:
            raise ValueError(
                f"mask= is for token sequences (classifier='attention'|'multimax'|'mil'); "
                f"classifier={self.classifier!r} fits one row per sample"
            )
        state = fitting.fit_activations(self, X, y, layers, n_prompts, sample_weight)
        self._forget_token_fit()
        return self._learn(state)

    def _check_matrix(self, X) -> np.ndarray:
        self._check_fitted()
        X, _ = fitting.as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"activations have {X.shape[1]} features but the probe was fitted on "
                f"{self.n_features_in_}"
            )
        return X

    def predict_from_activations(self, X, *, mask=None) -> np.ndarray:
        """Predictions from precomputed activations (token sequences + ``mask`` for
        sequence classifiers, as for :meth:`fit_from_activations`)."""
        self._forget_token_fit()
        self._check_fitted()
        if self._is_sequence():
            return self.classifier_.predict(*fitting.check_sequences(self, X, mask))
        X = self._check_matrix(X)
        return self.pipeline_.predict(X)

    def predict_proba_from_activations(self, X, *, mask=None) -> np.ndarray:
        """Class probabilities (n, k) from precomputed activations (see
        :meth:`predict_from_activations`)."""
        from .classifiers import classifier_proba

        self._check_fitted()
        if self._is_sequence():
            return self.classifier_.predict_proba(*fitting.check_sequences(self, X, mask))
        X = self._check_matrix(X)
        if self.task == "regression":
            raise ValueError("predict_proba is not defined for task='regression'; use predict")
        return classifier_proba(self.pipeline_, X)

    def score_from_activations(self, X, y, *, mask=None) -> float:
        """Accuracy (classification) or R^2 (regression) on precomputed activations."""
        self._check_fitted()
        if self._is_sequence():
            pred = self.predict_from_activations(X, mask=mask)
            return float(np.mean(pred == check_labels(list(y), self.task)))
        X = self._check_matrix(X)
        return float(self.pipeline_.score(X, check_labels(list(y), self.task)))

    # ------------------------------------------------------------------ scoring
    @per_call_options
    def score(
        self,
        prompts,
        labels,
        *,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
    ) -> float:
        """Accuracy (classification) or R^2 (regression)."""
        from .scoring import score_value

        self._check_fitted()
        prompts, y = check_scoring_data(
            prompts, labels, self.task, getattr(self, "classes_", None), what="score"
        )
        pred, _ = self.prompt_outputs(prompts, remote=remote)
        return score_value(y, pred, self.task)

    @per_call_options
    def evaluate(
        self,
        prompts,
        labels,
        *,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
        **kwargs,
    ) -> dict:
        """Several metrics at once.

        Classification: accuracy, f1, precision, recall, auroc (macro one-vs-rest for more
        than two classes; NaN if the labels hold one class). Regression: r2, mse, mae.
        After :meth:`calibrate`: also the threshold, the observed FPR, TPR at the
        calibrated FPR and bootstrap 95% intervals (``n_bootstrap=1000``,
        ``random_state=``); see :func:`.monitoring.evaluate_extra`. The result is kept
        as ``metrics_`` (saved with the probe, shown on hub model cards).
        """
        from ..monitoring.calibration import evaluate_extra

        self._check_fitted()
        prompts, y = check_scoring_data(
            prompts, labels, self.task, getattr(self, "classes_", None), what="evaluate"
        )
        pred, proba = self.prompt_outputs(prompts, remote=remote)
        metrics = compute_metrics(y, pred, proba, self.task, getattr(self, "classes_", None))
        metrics.update(evaluate_extra(self, y, pred, proba, **kwargs))
        # The latest evaluation travels with the probe (saved files, hub model cards).
        self.metrics_ = dict(metrics)
        return metrics

    def cross_validate(self, cv: int = 5) -> float:
        """Stratified k-fold accuracy (R^2 for regression) on the training activations.

        Raises
        ------
        ValueError
            ``cv`` is not an int >= 2, or a class has fewer than 2 training examples.
        """
        self._check_fitted()
        cv = check_cv(cv)
        if self._is_sequence():
            self.cv_score_ = fitting.sequence_cv_score(self, cv)
            return self.cv_score_
        token_fit = self.__dict__.get("_token_fit")
        if token_fit == "spans":
            raise ValueError(
                "cross_validate splits training prompts, and a fit_spans probe has labelled "
                "spans instead: hold out some texts (or prompts) and use evaluate"
            )
        if token_fit and self.training_data is not None:
            self.cv_score_ = fitting.token_cv_score(self, cv)
            return self.cv_score_
        if self.training_activations is None:
            raise ValueError(
                "cross_validate needs the training activations, which saved probes do not keep; "
                "refit this probe (its activations are cached, so that is quick)"
            )
        X, y = self.training_activations
        groups = self.__dict__.get("_train_groups")
        self.cv_score_ = fitting.pooled_cv_score(self, X, y, groups, cv)
        return self.cv_score_

    # ------------------------------------------------------------------ layer analysis
    @classmethod
    def sweep_layers(cls, model=None, positive_prompts=None, negative_prompts=None, **kwargs):
        """Train one probe per layer from a single extraction; see :mod:`.sweep`."""
        from ..evaluation.sweep import sweep_layers

        return sweep_layers(cls, model, positive_prompts, negative_prompts, **kwargs)

    def errors(self, prompts, labels, **kwargs):
        """Browse, relabel and refit this probe's mistakes; see :mod:`.error_analysis`."""
        from ..evaluation.error_analysis import error_analysis

        return error_analysis(self, prompts, labels, **kwargs)

    def cascade(self, judge, budget: float = 0.1, **kwargs):
        """Route the uncertain band to ``judge`` (text -> score); see :mod:`.cascade`."""
        from ..evaluation.cascade import cascade

        return cascade(self, judge, budget=budget, **kwargs)

    def compute_layer_importance(self, metric: str = "l2") -> np.ndarray:
        """Per-layer importance of a multi-layer probe, normalized to sum to 1."""
        from ..evaluation.layer_selection import compute_layer_importance

        return compute_layer_importance(self, metric=metric)

    def plot_layer_importance(self, metric: str = "l2", ax=None):
        """Bar chart of :meth:`compute_layer_importance` (needs the ``plot`` extra)."""
        from ..evaluation.layer_selection import plot_layer_importance

        return plot_layer_importance(self, metric=metric, ax=ax)

    # ------------------------------------------------------------------ monitoring
    def robustness_report(self, prompts, labels, transforms=None, **kwargs):
        """AUROC and TPR@FPR on transformed copies of a held-out set; see :mod:`.robustness`."""
        from ..evaluation.robustness import robustness_report

        return robustness_report(self, prompts, labels, transforms, **kwargs)

    def drift(self, prompts, reference=None, **kwargs):
        """Whether the calibrated threshold still holds on new prompts; see :mod:`.drift`.

        ``reference`` defaults to the calibration set: its scores are saved with the
        threshold, its prompts remembered for the activation test while this probe object
        lives.
        """
        from ..monitoring.drift import drift

        return drift(self, prompts, reference, **kwargs)

    def calibrate(self, benign_prompts, fpr: float = 0.01, **kwargs) -> Probe:
        """Set the decision threshold so at most ``fpr`` of benign prompts are flagged."""
        from ..monitoring.calibration import calibrate

        self.threshold_, self.calibration_ = calibrate(self, benign_prompts, fpr=fpr, **kwargs)
        # in memory only (prompts are not saved with a probe): drift()'s activation test
        self.calibration_prompts_ = list(benign_prompts)
        return self

    def flag(self, prompts, **kwargs) -> np.ndarray:
        """Boolean per prompt: is its score over the calibrated threshold?"""
        from ..monitoring.calibration import flag

        return flag(self, prompts, **kwargs)

    def monitor(self, prompt, **kwargs):
        """Generate from ``prompt`` while scoring every new token; see :mod:`.monitoring`."""
        from ..monitoring.live import monitor

        return monitor(self, prompt, **kwargs)

    # ------------------------------------------------------------------ sharing
    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload this probe and a model card to the HuggingFace Hub; returns the URL."""
        from ..sharing.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_hub(cls, repo_id: str, **kwargs) -> Probe:
        """Download a probe pushed with :meth:`push_to_hub`."""
        from ..sharing.hub import from_hub

        return from_hub(repo_id, probe_cls=cls, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, overwrite: bool = False) -> None:
        """Save to ``path`` (safe format; a ``.pkl`` path uses pickle).

        Saving over an earlier save replaces only the probe's own files; a folder holding
        other data is refused unless ``overwrite=True`` (see :func:`.serialization.save_probe`).
        """
        from ..sharing.serialization import save_probe

        save_probe(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, *, trust_classifier: bool = False, **overrides) -> Probe:
        """Load a probe saved with :meth:`save`.

        Every pickle (a ``.pkl`` path, or a folder whose ``probe.json`` names one) needs
        ``trust_classifier=True``: unpickling runs code from the file. ``overrides`` may
        change runtime parameters (``device=``, ``batch_size=``), never what the classifier
        was fitted on (``layers``, ``pooling``, ``classifier``, ...).
        """
        from ..sharing.serialization import load_probe

        return load_probe(path, trust_classifier=trust_classifier, probe_cls=cls, **overrides)


LinearProbe = Probe


def sweep_layers(model=None, positive_prompts=None, negative_prompts=None, *, cls=None, **kwargs):
    """Train one probe per layer from a single extraction (see :meth:`Probe.sweep_layers`).

    ``cls`` is the probe class (default :class:`Probe`).
    """
    return (cls or Probe).sweep_layers(model, positive_prompts, negative_prompts, **kwargs)
