"""``Probe``: a classifier (or regressor) on a language model's residual-stream activations.

Follows the scikit-learn estimator contract: ``__init__`` only stores its arguments, all
validation and work happen in ``fit``, learned state ends in ``_``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..extraction.layers import is_selection_spec, resolve_layers, validate_spec
from ..extraction.profiling import profile, profiled
from ..inputs import (
    check_cv,
    check_labels,
    check_scoring_data,
    check_two_classes,
    parse_fit_args,
)
from .pooling import extractor_pooling, is_token_level, pooling_stage, resolve_poolings
from .scoring import compute_metrics

TASKS = ("classification", "regression")
BACKENDS = ("local", "nnsight")


def _per_call_options(method):
    """Run ``method`` with its ``batch_size`` / ``max_retries`` / ``executor`` /
    ``num_workers`` keywords applied to every extraction it does (see
    :meth:`Probe._call_options`)."""

    import inspect

    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        # bound, so that positional values count too (warmup(prompts, 16))
        try:
            given = signature.bind_partial(self, *args, **kwargs).arguments
        except TypeError:
            given = kwargs  # the method itself reports the bad call
        with self._call_options(
            given.get("batch_size"),
            given.get("max_retries"),
            given.get("executor", "local"),
            given.get("num_workers"),
        ):
            return method(self, *args, **kwargs)

    return wrapper


class NotFittedError(ValueError, AttributeError):
    """Raised when a probe is used before ``fit``."""


@dataclass
class TokenScores:
    """Per-token scores of one text: ``tokens[i]`` is the exact text piece scored ``scores[i]``."""

    text: str
    tokens: list[str]
    scores: np.ndarray

    @property
    def max_score(self) -> float:
        """The highest score over scored tokens (NaN tokens, e.g. the sink, skipped)."""
        s = np.asarray(self.scores, dtype=np.float64)
        return float(np.nanmax(s)) if np.any(~np.isnan(s)) else float("nan")


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


class Probe:
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
    preprocessing : {"standard", "pca", "standard+pca"} or None
    pca_components : int or None
    classifier_kwargs : dict or None
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
        preprocessing: str | None = None,
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

    def _empty_output(self, kind: str):
        """What ``predict``/``predict_proba`` return for no prompts: empty, correctly typed."""
        if self.inference_pooling_ == "all":
            return np.ma.masked_array(np.zeros((0, 0)), mask=np.zeros((0, 0), bool))
        if kind == "proba":
            return np.zeros((0, len(self.classes_)), dtype=np.float64)
        if self.task == "regression":
            return np.zeros(0, dtype=np.float64)
        return np.empty(0, dtype=self.classes_.dtype)

    # ------------------------------------------------------------------ model access
    @property
    def runtime(self):
        """The :class:`~.runtime.ModelRuntime` this probe reads its model through.

        Built from the probe's parameters on first use (no weights load until an
        extraction needs them) and rebuilt when those parameters change. Probes may
        share one (a sweep's per-layer probes do): assign it.
        """
        from ..extraction.runtime import ModelRuntime

        rt = self.__dict__.get("_runtime")
        params = self.get_params()
        if rt is None or not rt.serves(params):
            rt = ModelRuntime.from_params(params)
            self._runtime = rt
        return rt

    @runtime.setter
    def runtime(self, runtime) -> None:
        if not runtime.serves(self.get_params()):
            raise ValueError(
                f"{runtime!r} runs {runtime.config()}, which differs from this probe's "
                "model parameters; give the probe the same model, backend, device and dtype"
            )
        self._runtime = runtime

    @property
    def model_name(self) -> str | None:
        """The model this probe reads (the bundled default when none was given)."""
        return self.runtime.model_name

    @property
    def dataset_info_(self) -> dict | None:
        """The activation dataset's description (``dataset=`` probes only)."""
        return self.runtime.dataset_info

    @property
    def last_cache_hits_(self) -> int:
        """Prompts the last pooled extraction served from the activation cache."""
        return self.runtime.last_hits

    def n_model_layers(self) -> int:
        """Number of decoder layers of the probed model (or dataset)."""
        return self.runtime.n_layers

    def check_model_identity(self, stacklevel: int = 2) -> bool:
        """Warn (once per runtime) if the weights read now are not the ones trained on.

        Returns
        -------
        bool
            True when the weights match the training model's fingerprint (or it is unknown).
        """
        trained = self.__dict__.get("model_fingerprint_")
        rt = self.runtime
        if not trained:
            return True
        current = rt.fingerprint
        if current == trained:
            return True
        if self.__dict__.get("_identity_warned") is not rt:
            self._identity_warned = rt
            trained_on = self.__dict__.get("trained_model_") or "an unrecorded model"
            warnings.warn(
                f"this probe was trained on {trained_on!r} (weights fingerprint {trained}), "
                f"but it now reads {rt.model_name!r} (fingerprint {current}); its scores may "
                "be meaningless on these weights",
                stacklevel=stacklevel + 1,
            )
        return False

    def _prepare_prompts(self, prompts, chat_template: bool | None = None) -> list[str]:
        """Validate prompts and apply the chat template where asked for."""
        use_chat = self.chat_template if chat_template is None else chat_template
        return self.runtime.prepare(prompts, chat_template=use_chat)

    @contextlib.contextmanager
    def _call_options(self, batch_size=None, max_retries=None, executor="local", num_workers=None):
        """Per-call ``batch_size`` / ``max_retries`` / ``executor`` / ``num_workers`` for
        every extraction inside the block."""
        from ..extraction.distributed import check_executor
        from ..extraction.retry import validate_max_retries

        check_executor(executor, num_workers)
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        validate_max_retries(max_retries)
        before = self.__dict__.get("_call_opts")
        self._call_opts = {
            "batch_size": batch_size,
            "max_retries": max_retries,
            "executor": executor,
            "num_workers": num_workers,
        }
        try:
            yield
        finally:
            if before is None:
                self.__dict__.pop("_call_opts", None)
            else:
                self._call_opts = before

    def _extraction_options(self, batch_size=None) -> dict:
        """``batch_size`` and ``max_retries`` for an extraction: this call's, else the
        probe's; and where it runs (``executor``, ``num_workers``: this call's)."""
        opts = self.__dict__.get("_call_opts") or {}
        retries = opts.get("max_retries")
        return {
            "batch_size": batch_size or opts.get("batch_size"),
            "max_retries": self.max_retries if retries is None else retries,
            "executor": opts.get("executor", "local"),
            "num_workers": opts.get("num_workers"),
        }

    def _features(self, prompts, pooling, layers=None, remote=None, batch_size=None) -> dict:
        """Pooled activations of already-prepared prompts: {layer: (n, hidden)}."""
        layers = list(self.layers_ if layers is None else layers)
        return self.runtime.pooled(
            prompts,
            layers,
            pooling,
            roles=self.score_roles,
            remote=remote,
            **self._extraction_options(batch_size),
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
            return self._fit_prompts(X, y, labels, remote, sample_weight)

    def _fit_prompts(self, X, y, labels, remote, sample_weight) -> Probe:
        prompts, labels = parse_fit_args(X, y, labels, self.task)
        if self.task == "classification":
            check_two_classes(labels)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (len(prompts),):
                raise ValueError(
                    f"sample_weight has shape {sample_weight.shape}; it needs one weight per "
                    f"training prompt ({len(prompts)},)"
                )
        if self.compute_backend != "sklearn":
            from .classifiers import check_compute_backend

            check_compute_backend(self.compute_backend)
        if self._is_sequence():
            if sample_weight is not None:
                raise ValueError(
                    f"classifier={self.classifier!r} does not take sample_weight; it weighs "
                    "classes itself (classifier_kwargs={'class_weight': 'balanced' | None | dict})"
                )
            return self._fit_sequence(prompts, labels, remote)
        if self._streams_token_fit(labels):
            return self._fit_token_stream(prompts, labels, sample_weight, remote)
        train_data = (prompts, labels)
        rt = self.runtime
        local = self._extraction_options()["executor"] == "local"
        if rt.uses_local_weights and self.backend == "local" and local:
            # Load first, so fit_seconds_ measures fitting, not a one-off model load.
            rt.load()
        t0 = time.perf_counter()
        prepared = self._prepare_prompts(prompts)
        if self.layers == "auto":
            from ..evaluation.layer_selection import auto_candidate_layers

            # group lasso chooses among auto_candidates only: extract nothing else
            candidates = auto_candidate_layers(self.auto_candidates, self.n_model_layers())
        else:
            candidates = resolve_layers(self.layers, self.n_model_layers())
        X_layers, labels, owner = rt.training_set(
            prepared,
            labels,
            candidates,
            self.train_pooling_,
            roles=self.score_roles,
            score_special_tokens=self.score_special_tokens,
            remote=remote,
            return_owner=True,
            **self._extraction_options(),
        )
        if sample_weight is not None:
            sample_weight = sample_weight[owner]  # per token for train_pooling="all"
        hits = rt.last_hits
        selection = None
        if is_selection_spec(self.layers):
            from ..evaluation.layer_selection import select_layers

            selection = select_layers(self, X_layers, labels, candidates)
            candidates, selected = selection.candidates, selection.selected
        else:
            selected = candidates
        from .features import concat_layers

        self._fit_matrix(
            concat_layers(X_layers, selected),
            labels,
            n_layers=len(selected),
            sample_weight=sample_weight,
        )
        # which prompt each token came from (cross_validate keeps a prompt in one fold)
        self._train_groups = owner if self.train_pooling_ == "all" else None
        if self.train_pooling_ == "all":
            self.n_train_tokens_ = len(labels)
        self.candidate_layers_ = list(candidates)
        self.layers_ = list(selected)
        if selection is not None:
            self.selected_layers_ = list(selection.selected)
            self.selection_scores_ = dict(selection.scores)
            if selection.sweep is not None:
                self.sweep_result_ = selection.sweep
        self.n_train_ = len(prompts)
        self.fit_seconds_ = time.perf_counter() - t0
        self.train_cache_hits_ = hits
        self.model_fingerprint_ = rt.fingerprint
        self.trained_model_ = rt.model_name
        # what dtype="auto" resolved to (shown by repr and the probe card)
        self.compute_dtype_ = rt.compute_dtype
        self._train_data = train_data  # for push_to_hub(include_training_data=True)
        return self

    def _is_sequence(self) -> bool:
        from .token_probes import uses_sequence_probe

        return uses_sequence_probe(self)

    def _forget_token_fit(self) -> None:
        """Drop what an earlier streamed every-token fit left (a refit another way must not
        be cross-validated, or described, as one)."""
        for name in ("_token_fit", "train_passes_", "n_train_tokens_"):
            self.__dict__.pop(name, None)

    def _streams_token_fit(self, labels=None) -> bool:
        """Whether ``fit`` trains this every-token probe from the per-token store, a chunk
        at a time (:mod:`.token_linear`): ``train_pooling="all"`` with a binary L2
        ``logistic_regression`` (classifier_kwargs among C, class_weight, max_iter, tol,
        fit_intercept), scaling by ``normalize_layers``/``preprocessing="standard"``
        only, fixed layers, local extraction. Other every-token probes fit in memory."""
        from .token_linear import streamable_kwargs

        return (
            self.train_pooling_ == "all"
            and self.task == "classification"
            and self.classifier == "logistic_regression"
            and self.compute_backend == "sklearn"
            and self.preprocessing in (None, "standard")
            and not self.mass_mean_augment
            and not is_selection_spec(self.layers)
            and self._extraction_options()["executor"] == "local"
            and streamable_kwargs(self.classifier_kwargs)
            and (labels is None or len(np.unique(labels)) == 2)
        )

    @_per_call_options
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
        from ..inputs import check_prompts
        from .span_data import check_spans

        self._validate_params()
        texts = check_prompts(texts)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("fit_spans takes texts as str (spans index their characters)")
        spans = check_spans(texts, spans)
        labels = np.asarray([lab for own in spans for (_, _, lab, _) in own])
        weights = np.asarray([w for own in spans for (*_, w) in own])
        check_two_classes(labels)
        if not self._streams_token_fit(labels):
            raise ValueError(
                "fit_spans trains an every-token logistic probe from the per-token store: "
                "use Probe(train_pooling='all', classifier='logistic_regression') with two "
                "classes of span labels, classifier_kwargs among C, class_weight, max_iter, "
                "tol, fit_intercept, fixed layers, preprocessing None or 'standard'"
            )
        sample_weight = None if np.all(weights == 1.0) else weights
        return self._fit_token_stream(texts, labels, sample_weight, remote, spans=spans)

    def _span_owners(self, texts, prepared, inputs, spans) -> list[np.ndarray]:
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

    def _fit_token_stream(self, prompts, labels, sample_weight, remote, spans=None) -> Probe:
        """Fit ``train_pooling="all"`` from the per-token store without the token matrix:
        extraction writes the tokens to disk chunk by chunk (as for sequence probes), then
        the scalers and an L2 logistic regression are fitted over chunks of tokens
        (:func:`.token_linear.fit_token_logistic`: sklearn's objective and stopping rule).
        ``training_activations`` stays None; ``cross_validate`` refits per fold from the
        store. ``spans`` (:meth:`fit_spans`): ``labels`` are the spans' and each token
        belongs to the span it lies in."""
        from .classifiers import build_classifier, check_sample_weight

        rt = self.runtime
        if rt.uses_local_weights and self.backend == "local":
            rt.load()
        t0 = time.perf_counter()
        labels = np.asarray(labels)
        clf = build_classifier(
            self.classifier, self.task, self.random_state, self.classifier_kwargs
        )
        sample_weight = check_sample_weight(clf, sample_weight, len(labels))
        prepared = self._prepare_prompts(prompts)
        layers = resolve_layers(self.layers, self.n_model_layers())
        inputs = self._sequence_inputs(prepared, layers, remote)
        owners = None if spans is None else self._span_owners(prompts, prepared, inputs, spans)
        with profile("fit"):
            self.pipeline_, fit = self._streamed_pipeline(
                clf, inputs, np.arange(len(prepared)), labels, len(layers), sample_weight, owners
            )
        self.classes_ = np.asarray(clf.classes_)
        self.n_features_in_ = len(fit.mean)
        self.n_feature_layers_ = len(layers)
        self._train_matrix = None  # the point: the token matrix was never built
        self._train_groups = None
        # what the streamed fit trained on (cross_validate refits prompts, not spans)
        self._token_fit = "prompts" if spans is None else "spans"
        self.train_passes_ = fit.passes  # passes over the training tokens
        self.candidate_layers_ = list(layers)
        self.layers_ = list(layers)
        self.n_train_ = len(prompts)
        self.n_train_tokens_ = fit.n_tokens
        self.fit_seconds_ = time.perf_counter() - t0
        self.train_cache_hits_ = int(inputs.hits)
        self.model_fingerprint_ = rt.fingerprint
        self.trained_model_ = rt.model_name
        self.compute_dtype_ = rt.compute_dtype
        # (span fits keep no (prompts, labels): cross_validate and hub uploads need them)
        self._train_data = (prompts, labels) if spans is None else None
        return self

    def _streamed_pipeline(
        self, clf, inputs, idx, labels, n_layers, sample_weight=None, owners=None
    ):
        """The fitted ``Pipeline`` (scaling steps, then ``clf``) of a streamed every-token
        fit on the prompts ``idx`` of ``inputs`` (``labels`` and ``sample_weight``: theirs,
        or with ``owners`` the spans'), and the :class:`~.token_linear.StreamedFit`."""
        from sklearn.pipeline import Pipeline

        from .features import build_steps
        from .token_linear import set_fitted_logistic

        steps = build_steps(
            n_layers,
            self.normalize_layers,
            self.preprocessing,
            self.pca_components,
            len(idx),
            self.random_state,
        )
        fit = self._token_logistic(inputs, idx, labels, steps, sample_weight, clf, owners)
        set_fitted_logistic(clf, fit, np.unique(labels))
        return Pipeline([*steps, ("classifier", clf)]), fit

    def _token_logistic(self, inputs, idx, labels, steps, sample_weight, clf, owners=None):
        """:func:`.token_linear.fit_token_logistic` on the prompts ``idx`` of ``inputs``
        with ``clf``'s parameters (fits ``steps``; see :meth:`_streamed_pipeline`)."""
        from sklearn.exceptions import ConvergenceWarning

        from .sequence_probes import SubsetTokenSource
        from .token_linear import TokenBatches, fit_token_logistic

        source = SubsetTokenSource(inputs.source, idx)
        masks = [inputs.masks[i] for i in idx]
        if owners is None:
            batches = TokenBatches(source, masks)
        else:
            batches = TokenBatches(
                source, masks, owners=[owners[i] for i in idx], n_owners=len(labels)
            )
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

    def _sequence_inputs(self, prepared, layers, remote):
        """Per-token inputs of prepared prompts (:class:`~.token_store.StoredTokens`): a
        token source reading the per-token store one minibatch at a time, its masks, and
        the token pieces."""
        return self.runtime.token_source(
            prepared,
            list(layers),
            roles=self.score_roles,
            remote=remote,
            score_special_tokens=self.score_special_tokens,
            **self._extraction_options(),
        )

    def _fit_sequence(self, prompts, labels, remote) -> Probe:
        """Fit ``classifier="mil"|"attention"|"multimax"`` on every token of the prompts.

        Extraction writes the per-token activations to disk chunk by chunk, then training
        reads them back ``batch_size`` prompts at a time (:mod:`.token_store`).
        """
        self._forget_token_fit()
        from sklearn.pipeline import Pipeline

        from .token_probes import build_sequence_probe

        rt = self.runtime
        if rt.uses_local_weights and self.backend == "local":
            rt.load()
        t0 = time.perf_counter()
        prepared = self._prepare_prompts(prompts)
        layers = resolve_layers(self.layers, self.n_model_layers())
        inputs = self._sequence_inputs(prepared, layers, remote)
        est = build_sequence_probe(self)
        with profile("fit"):
            est.fit(inputs.source, labels)
        self.pipeline_ = Pipeline([("classifier", est)])
        self.classes_ = np.asarray(est.classes_)
        self.n_features_in_ = int(est.n_features_in_)
        self.n_feature_layers_ = len(layers)
        self.candidate_layers_ = list(layers)
        self.layers_ = list(layers)
        self.n_train_ = len(prompts)
        self.fit_seconds_ = time.perf_counter() - t0
        self.train_cache_hits_ = int(inputs.hits)
        self.model_fingerprint_ = rt.fingerprint
        self.trained_model_ = rt.model_name
        self.compute_dtype_ = rt.compute_dtype
        self._train_data = (prompts, labels)
        return self

    def _sequence_outputs(self, prompts, remote):
        """Prompt logits (n,) and per-token contributions (NaN where unscored) of a
        sequence probe, with the scored-token masks and the prompts' token pieces (a
        lazy list of TokenActs without activations)."""
        self._check_reads_prompts()
        self.check_model_identity(stacklevel=5)
        from ..cache.token_store import LazyTokenActs

        inputs = self._sequence_inputs(prompts, self.layers_, remote)
        est = self.classifier_
        rows = est.token_scores(inputs.source)
        z = est.decision_function(inputs.source)
        return z, rows, inputs.masks, LazyTokenActs(inputs.pieces)

    def _sequence_proba(self, prompts, remote) -> np.ndarray:
        z = self._sequence_outputs(prompts, remote)[0]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return np.column_stack([1.0 - p, p])

    def _fit_matrix(
        self, X: np.ndarray, y: np.ndarray, n_layers: int = 1, kept=None, sample_weight=None
    ) -> None:
        """Fit the pipeline on ``X``; ``kept`` is what to keep as the training activations
        (default ``X``: a float32 original is kept instead of a float64 copy)."""
        from sklearn.pipeline import Pipeline

        from .classifiers import build_classifier, build_cuml_classifier, check_sample_weight
        from .features import build_steps

        steps = build_steps(
            n_layers,
            self.normalize_layers,
            self.preprocessing,
            self.pca_components,
            len(X),
            self.random_state,
            mass_mean_augment=self.mass_mean_augment,
        )
        build = build_classifier
        if self.compute_backend == "cuml" and isinstance(self.classifier, str):
            build = build_cuml_classifier
        clf = build(self.classifier, self.task, self.random_state, self.classifier_kwargs)
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
        self.pipeline_ = pipe
        self.n_features_in_ = X.shape[1]
        self.n_feature_layers_ = n_layers
        self._train_matrix = (X if kept is None else kept, y)
        self._train_groups = None  # _fit_prompts sets it for train_pooling="all"
        self._forget_token_fit()
        if self.task == "classification":
            self.classes_ = np.asarray(pipe.classes_)

    @property
    def classifier_(self):
        self._check_fitted()
        return self.pipeline_.named_steps["classifier"]

    # ------------------------------------------------------------------ activations API
    def _as_matrix(self, X, n_layers_hint: int | None = None) -> tuple[np.ndarray, int]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 3:
            return X.reshape(X.shape[0], -1), X.shape[1]
        if X.ndim != 2:
            raise ValueError(
                f"activations must have shape (n_samples, hidden) or (n_samples, n_layers, hidden), "
                f"got {X.shape}"
            )
        return X, n_layers_hint or 1

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
            return self._fit_sequence_activations(X, y, layers, n_prompts, sample_weight, mask)
        if mask is not None:
            raise ValueError(
                f"mask= is for token sequences (classifier='attention'|'multimax'|'mil'); "
                f"classifier={self.classifier!r} fits one row per sample"
            )
        if self.compute_backend != "sklearn":
            from .classifiers import check_compute_backend

            check_compute_backend(self.compute_backend)
        t0 = time.perf_counter()
        original = np.asarray(X)
        X, n_layers = self._as_matrix(X, None if layers is None else len(layers))
        y = check_labels(list(y), self.task)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
        if len(X) == 0:
            raise ValueError("no training samples were given")
        if self.task == "classification":
            check_two_classes(y)
        kept = original.reshape(len(original), -1) if original.dtype.kind == "f" else None
        self._fit_matrix(X, y, n_layers, kept=kept, sample_weight=sample_weight)
        if layers is not None:
            self.layers_ = [int(x) for x in layers]
        # Without model layers, the candidates are the blocks of X (0, 1, ...): what
        # layer importance reports on.
        self.candidate_layers_ = list(self.layers_) if layers is not None else list(range(n_layers))
        self.n_train_ = len(X) if n_prompts is None else int(n_prompts)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _check_sequences(self, X, mask=None):
        """Validated token sequences for a sequence classifier (a clear error otherwise)."""
        if isinstance(X, np.ndarray):
            bad = X.ndim != 3
        else:
            bad = any(np.ndim(x) != 2 for x in X)
        if bad:
            raise ValueError(
                f"classifier={self.classifier!r} reads token sequences: give an (n, seq, d) "
                "array with an (n, seq) mask= or a list of (seq_i, d) arrays, got X of shape "
                f"{np.shape(X)} (pooled (n_samples, d) rows are for pooled classifiers)"
            )
        return X, mask

    def _fit_sequence_activations(self, X, y, layers, n_prompts, sample_weight, mask) -> Probe:
        from sklearn.pipeline import Pipeline

        from .token_probes import build_sequence_probe

        if sample_weight is not None:
            raise ValueError(
                f"classifier={self.classifier!r} does not take sample_weight; it weighs "
                "classes itself (classifier_kwargs={'class_weight': 'balanced' | None | dict})"
            )
        t0 = time.perf_counter()
        X, mask = self._check_sequences(X, mask)
        y = check_labels(list(y), self.task)
        check_two_classes(y)
        est = build_sequence_probe(self).fit(X, y, mask=mask)
        self.pipeline_ = Pipeline([("classifier", est)])
        self.classes_ = np.asarray(est.classes_)
        self.n_features_in_ = int(est.n_features_in_)
        self.n_feature_layers_ = 1 if layers is None else len(layers)
        if layers is not None:
            self.layers_ = [int(x) for x in layers]
        self.candidate_layers_ = list(self.layers_) if layers is not None else [0]
        self.n_train_ = len(y) if n_prompts is None else int(n_prompts)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _check_matrix(self, X) -> np.ndarray:
        self._check_fitted()
        X, _ = self._as_matrix(X)
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
            return self.classifier_.predict(*self._check_sequences(X, mask))
        X = self._check_matrix(X)
        return self.pipeline_.predict(X)

    def predict_proba_from_activations(self, X, *, mask=None) -> np.ndarray:
        """Class probabilities (n, k) from precomputed activations (see
        :meth:`predict_from_activations`)."""
        from .classifiers import classifier_proba

        self._check_fitted()
        if self._is_sequence():
            return self.classifier_.predict_proba(*self._check_sequences(X, mask))
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

    # ------------------------------------------------------------------ inference
    def _pooled_matrix(self, prompts, pooling, remote=None, batch_size=None) -> np.ndarray:
        from .features import concat_layers

        self.check_model_identity(stacklevel=4)
        acts = self._features(prompts, pooling, self.layers_, remote, batch_size)
        return concat_layers(acts, self.layers_)

    def token_outputs(self, prompts, *, remote: bool | None = None, mode: str = "proba"):
        """Per-token outputs of prepared prompts and the tokens the probe may score.

        Returns
        -------
        rows : list of ndarray
            Per prompt, see :func:`~.scoring.token_rows`.
        keep : list of bool ndarray, or None
            With ``score_roles``: per prompt, the tokens of those roles (else None).
        """
        from .scoring import token_rows

        self._check_reads_prompts()
        if self._is_sequence():
            # Per-token contributions to the prompt logit (see token_scores).
            _, rows, masks, _ = self._sequence_outputs(prompts, remote)
            return rows, masks
        self.check_model_identity(stacklevel=4)
        rows, keeps = [None] * len(prompts), [None] * len(prompts)
        for idx, toks, keep in self._token_chunks(prompts, remote):
            for i, r, k in zip(idx, token_rows(self, toks, mode), keep or [None] * len(idx)):
                rows[i], keeps[i] = r, k
        return rows, (None if all(k is None for k in keeps) else keeps)

    def _token_chunks(self, prompts, remote):
        """Per-token activations of prepared prompts with their scored-token masks, a chunk
        at a time (:meth:`.ModelRuntime.token_feature_chunks`): scoring many long prompts
        holds one chunk's per-token activations, not all of them. Yields ``(indices,
        toks, keep)``."""
        return self.runtime.token_feature_chunks(
            prompts,
            list(self.layers_),
            roles=self.score_roles,
            remote=remote,
            score_special_tokens=self.score_special_tokens,
            **self._extraction_options(),
        )

    def _reduced_rows(self, prompts, remote) -> list[np.ndarray]:
        """Per-token outputs restricted to the tokens the probe may score."""
        from .scoring import restrict

        return restrict(*self.token_outputs(prompts, remote=remote))

    @_per_call_options
    def predict_proba(
        self,
        prompts,
        *,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ):
        """Class probabilities.

        ``batch_size`` and ``max_retries`` override the probe's values for this call;
        ``executor``/``num_workers`` as for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_prompts, n_classes), or for ``inference_pooling="all"`` a masked
        array of shape (n_prompts, seq_len) holding the positive-class probability of every
        token (padded positions masked; (n_prompts, seq_len, n_classes) for multi-class).
        """
        from .scoring import pad_tokens, reduced_proba

        self._check_reads_prompts()
        if self.task == "regression":
            raise ValueError("predict_proba is not defined for task='regression'; use predict")
        prepared = self._prepare_prompts(prompts)
        if not prepared:
            return self._empty_output("proba")
        how = self.inference_pooling_
        if how == "all":
            return pad_tokens(*self.token_outputs(prepared, remote=remote))
        if self._is_sequence():
            return self._sequence_proba(prepared, remote)
        if is_token_level(how):
            return reduced_proba(self._reduced_rows(prepared, remote), how)
        from .classifiers import classifier_proba

        return classifier_proba(
            self.pipeline_, self._pooled_matrix(prepared, how, remote, batch_size)
        )

    @_per_call_options
    def predict(
        self,
        prompts,
        *,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ):
        """Predicted labels (or values for regression); per token for ``inference_pooling="all"``.

        ``executor``/``num_workers`` as for :meth:`fit`.
        """
        from .scoring import pad_tokens, prompt_outputs

        self._check_reads_prompts()
        prepared = self._prepare_prompts(prompts)
        if not prepared:
            return self._empty_output("predict")
        how = self.inference_pooling_
        if self._is_sequence():  # prompt-level labels, also for inference_pooling="all"
            return prompt_outputs(self, proba=self._sequence_proba(prepared, remote))[0]
        if how == "all":
            mode = "proba" if self.task == "regression" else "predict"
            return pad_tokens(*self.token_outputs(prepared, remote=remote, mode=mode))
        if is_token_level(how):
            return prompt_outputs(self, rows=self._reduced_rows(prepared, remote))[0]
        return self.pipeline_.predict(self._pooled_matrix(prepared, how, remote, batch_size))

    def prompt_outputs(self, prompts, *, remote: bool | None = None):
        """Prompt-level (n,) predictions and (n, k) probabilities (None for regression).

        ``inference_pooling="all"`` is scored as "max" (a prompt is positive if any token
        is). What ``score``, ``evaluate``, ``calibrate`` and the battery read.
        """
        from .scoring import prompt_outputs

        self._check_reads_prompts()
        how = self.inference_pooling_
        prepared = self._prepare_prompts(prompts)
        if self._is_sequence():
            return prompt_outputs(self, proba=self._sequence_proba(prepared, remote))
        if is_token_level(how):
            return prompt_outputs(self, rows=self._reduced_rows(prepared, remote))
        return prompt_outputs(self, features=self._pooled_matrix(prepared, how, remote))

    @_per_call_options
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

    @_per_call_options
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
        from ..monitoring.live import evaluate_extra

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
            return self._sequence_cross_validate(cv)
        token_fit = self.__dict__.get("_token_fit")
        if token_fit == "spans":
            raise ValueError(
                "cross_validate splits training prompts, and a fit_spans probe has labelled "
                "spans instead: hold out some texts (or prompts) and use evaluate"
            )
        if token_fit and self.training_data is not None:
            return self._token_cross_validate(cv)
        from sklearn.base import clone
        from sklearn.model_selection import KFold, StratifiedGroupKFold, cross_val_score

        from ..inputs import stratified_folds

        if self.training_activations is None:
            raise ValueError(
                "cross_validate needs the training activations, which saved probes do not keep; "
                "refit this probe (its activations are cached, so that is quick)"
            )
        X, y = self.training_activations
        if self.task == "classification":
            splitter = stratified_folds(y, cv, self.random_state)
            k = splitter.n_splits
        else:
            k = min(cv, len(y))
            splitter = KFold(k, shuffle=True, random_state=self.random_state or 0)
        groups = self.__dict__.get("_train_groups")
        if groups is not None:
            # train_pooling="all": one sample per token; a prompt's tokens stay in one
            # fold, or the held-out score would be read off tokens of training prompts
            k = min(k, len(np.unique(groups)))
            if self.task == "classification":
                splitter = StratifiedGroupKFold(
                    k, shuffle=True, random_state=self.random_state or 0
                )
            else:
                from sklearn.model_selection import GroupKFold

                splitter = GroupKFold(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = cross_val_score(clone(self.pipeline_), X, y, cv=splitter, groups=groups)
        self.cv_score_ = float(np.mean(scores))
        return self.cv_score_

    def _token_cross_validate(self, cv: int) -> float:
        """Token-level accuracy of a streamed ``train_pooling="all"`` probe over k folds of
        its training prompts (a prompt's tokens stay in one fold): per fold, the scalers
        and classifier are refitted from the per-token store and the held-out prompts'
        tokens are scored a chunk at a time."""
        from sklearn.base import clone

        from ..inputs import stratified_folds
        from .sequence_probes import SubsetTokenSource
        from .token_linear import TokenBatches

        prompts, labels = self.training_data
        labels = np.asarray(labels)
        splitter = stratified_folds(labels, cv, self.random_state, what="training prompts")
        inputs = self._sequence_inputs(self._prepare_prompts(prompts), self.layers_, None)
        scores = []
        for tr, te in splitter.split(labels, labels):
            pipe, _ = self._streamed_pipeline(
                clone(self.classifier_), inputs, tr, labels[tr], len(self.layers_)
            )
            held = TokenBatches(SubsetTokenSource(inputs.source, te), [inputs.masks[i] for i in te])
            right = total = 0
            for X, owner in held:
                right += int((pipe.predict(X) == labels[te][owner]).sum())
                total += len(owner)
            scores.append(right / max(total, 1))
        self.cv_score_ = float(np.mean(scores))
        return self.cv_score_

    def _sequence_cross_validate(self, cv: int) -> float:
        """Stratified k-fold prompt-level accuracy of a sequence probe: the estimator is
        refitted per fold on the training prompts' tokens, read from the per-token store
        (no forward pass when they are still stored)."""
        from sklearn.base import clone

        from ..inputs import stratified_folds
        from .sequence_probes import SubsetTokenSource

        train = self.__dict__.get("_train_data")
        if train is None:
            raise ValueError(
                "cross_validate needs the training prompts, which saved probes do not keep; "
                "refit this probe (its token activations are cached, so that is quick)"
            )
        prompts, labels = train
        labels = np.asarray(labels)
        splitter = stratified_folds(labels, cv, self.random_state, what="training prompts")
        source = self._sequence_inputs(self._prepare_prompts(prompts), self.layers_, None).source
        scores = []
        for tr, te in splitter.split(labels, labels):
            est = clone(self.classifier_).fit(SubsetTokenSource(source, tr), labels[tr])
            scores.append(float(np.mean(est.predict(SubsetTokenSource(source, te)) == labels[te])))
        self.cv_score_ = float(np.mean(scores))
        return self.cv_score_

    @_per_call_options
    def warmup(
        self,
        prompts,
        batch_size: int | None = None,
        *,
        remote: bool | None = None,
        max_retries: int | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ) -> Probe:
        """Extract and cache activations for ``prompts`` so later calls hit the cache.

        With ``executor="ray"`` the extraction runs on ``num_workers`` Ray workers and
        lands in this process's activation cache (see :mod:`.distributed`): point it at
        S3 (``set_cache_backend("s3://...")``) and every machine's later calls hit it.

        Returns the probe (for chaining); what the call did is ``warmup_stats_``
        (a :class:`~.activation_store.WarmupStats`: cache hits, vectors extracted, time).
        """
        from ..cache.activation_store import WarmupStats

        self._validate_params()
        prepared = self._prepare_prompts(prompts)
        layers = getattr(self, "layers_", None) or resolve_layers(
            self.layers, self.n_model_layers()
        )
        t0 = time.perf_counter()
        hits = extracted = 0
        poolings = []
        if self._is_sequence() or self._streams_token_fit():
            # sequence probes and streamed train_pooling="all" fits read every token:
            # fill the per-token store they train from
            with self._call_options(batch_size, max_retries, executor, num_workers):
                got = self._sequence_inputs(prepared, layers, remote)
            hits, extracted = int(got.hits), int(got.extracted)
            poolings.append("tokens")
        wanted = set()
        if not self._is_sequence():
            if pooling_stage(self.train_pooling_, role="train") == "activation":
                wanted.add(extractor_pooling(self.train_pooling_))
            if not is_token_level(self.inference_pooling_):
                wanted.add(extractor_pooling(self.inference_pooling_))
        for pooling in sorted(wanted, key=str):
            self._features(prepared, pooling, layers, remote, batch_size)
            hits += self.last_cache_hits_
            extracted += len(prepared) - self.last_cache_hits_
        self.warmup_stats_ = WarmupStats(
            n_prompts=len(prepared),
            layers=[int(x) for x in layers],
            poolings=poolings + sorted(map(str, wanted)),
            cache_hits=hits,
            extracted=extracted,
            seconds=time.perf_counter() - t0,
        )
        return self

    # ------------------------------------------------------------------ tokens
    def token_scores(self, texts, *, remote: bool | None = None) -> list[TokenScores]:
        """Per-token positive-class scores for each text (for highlights and monitoring).

        For ``classifier="attention"|"multimax"|"mil"`` the scores are each token's
        contribution to the prompt's logit (NaN at unscored tokens), not probabilities:
        attention ``sum_h alpha_{t,h} v_{t,h}``, multimax ``beta_h max_t s_{t,h}`` at each
        head's arg-max token; their sum plus ``classifier_.params_["b"]`` is the prompt
        logit (``predict_proba[:, 1]`` is its sigmoid). MIL: per-token logits whose
        ``rolling_max:K`` is the prompt logit. See :mod:`.sequence_probes`.
        """
        from .scoring import token_rows

        self._check_reads_prompts()
        if isinstance(texts, str):
            texts = [texts]
        prepared = self._prepare_prompts(texts)
        if not prepared:
            return []
        if self._is_sequence():
            _, rows, _, toks = self._sequence_outputs(prepared, remote)
            return [TokenScores(t.text, t.tokens, r) for t, r in zip(toks, rows)]
        self.check_model_identity(stacklevel=3)
        from ..extraction.token_masks import mask_scores

        out = [None] * len(prepared)
        for idx, toks, keep in self._token_chunks(prepared, remote):
            rows = token_rows(self, toks, mode="score")
            if keep is not None:
                rows = [mask_scores(r, k[: len(r)]) for r, k in zip(rows, keep)]
            for i, t, r in zip(idx, toks, rows):
                out[i] = TokenScores(t.text, t.tokens, r)
        return out

    def token_level_note(self) -> str:
        """What a highlight legend should say about this probe's per-token scores.

        A probe fitted on one pooled vector per prompt and applied to each token is off
        its training distribution; the note says so and names a token-level probe. Empty
        for probes trained on every token.
        """
        self._check_fitted()
        if self._is_sequence():
            how = (
                f"their rolling_max:{self.classifier_.window} is"
                if self.classifier_.kind == "mil"
                else "they sum (plus an intercept) to"
            )
            return (
                f"Scores are each token's contribution to the {self.classifier_.kind} "
                f"probe's prompt logit: {how} the prompt's logit (above 0: positive). "
                "Grey tokens (the first position, special tokens) are not scored."
            )
        train = self.train_pooling_
        if train == "all":
            return ""
        what = train if isinstance(train, str) else "a custom pooling"
        return (
            f"This probe was trained on {what} vectors, one per prompt, so its per-token "
            "scores are off its training distribution. For token-level use train on every "
            "token: Probe(train_pooling='all', inference_pooling='rolling_max:16'). "
            "Grey tokens (the first position, special tokens) are not scored."
        )

    def show_tokens(self, texts, threshold: float | None = None):
        """Per-token highlight widget (needs the ``jupyter`` extra).

        ``threshold`` defaults to 0.5 (probabilities), 0 for sequence probes (whose token
        scores are logit contributions, see :meth:`token_scores`; their colour scale is
        symmetric around 0, to the largest contribution shown).
        """
        from .. import display

        rows = self.token_scores(texts)
        scale = {}
        if self._is_sequence():
            finite = [np.abs(r.scores[~np.isnan(r.scores)]) for r in rows]
            top = max((float(f.max()) for f in finite if f.size), default=1.0) or 1.0
            scale = {"vmin": -top, "vmax": top}
        if threshold is None:
            threshold = 0.0 if self._is_sequence() else 0.5
        return display.widget(
            "tokens", rows, threshold=threshold, note=self.token_level_note(), **scale
        )

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
        from ..monitoring.live import calibrate

        self.threshold_, self.calibration_ = calibrate(self, benign_prompts, fpr=fpr, **kwargs)
        # in memory only (prompts are not saved with a probe): drift()'s activation test
        self.calibration_prompts_ = list(benign_prompts)
        return self

    def flag(self, prompts, **kwargs) -> np.ndarray:
        """Boolean per prompt: is its score over the calibrated threshold?"""
        from ..monitoring.live import flag

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
