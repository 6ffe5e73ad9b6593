"""``Probe``: a classifier (or regressor) on a language model's residual-stream activations.

Follows the scikit-learn estimator contract: ``__init__`` only stores its arguments, all
validation and work happen in ``fit``, learned state ends in ``_``.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .layers import is_selection_spec, resolve_layers, validate_spec
from .pooling import TOKEN_LEVEL_INFERENCE, resolve_poolings

TASKS = ("classification", "regression")
BACKENDS = ("local", "nnsight")


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
        return float(np.max(self.scores)) if len(self.scores) else float("nan")


def _is_message_list(p) -> bool:
    return isinstance(p, list | tuple) and len(p) > 0 and all(isinstance(m, dict) for m in p)


def check_prompts(prompts, what: str = "prompts", allow_messages: bool = True) -> list:
    """Validate a list of prompts: strings (or chat message lists), non-empty."""
    if isinstance(prompts, str):
        raise TypeError(
            f"{what} must be a list of strings, not a single string; wrap it: [{what!s}]"
        )
    if prompts is None or not isinstance(prompts, Sequence | np.ndarray):
        raise TypeError(f"{what} must be a list of strings, got {type(prompts).__name__}")
    out = list(prompts)
    for i, p in enumerate(out):
        if allow_messages and _is_message_list(p):
            for m in p:
                if "role" not in m or "content" not in m:
                    raise ValueError(f"{what}[{i}] has a message without 'role' and 'content' keys")
            continue
        if not isinstance(p, str):
            raise TypeError(
                f"{what}[{i}] is a {type(p).__name__} ({p!r:.40}); every prompt must be a str"
            )
        if not p.strip():
            raise ValueError(f"{what}[{i}] is an empty string; remove it or give it some text")
    return out


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
        values override ``pooling``.
    classifier : str or sklearn estimator, default "logistic_regression"
    task : {"classification", "regression"}
    device : str, default "auto"
    remote : bool, default False
        nnsight remote execution on NDIF (``backend="nnsight"``).
    random_state : int or None
    batch_size : int, default 8
    backend : {"local", "nnsight"}
    dtype : {"float32", "float16", "bfloat16"} or None
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
        dtype: str | None = None,
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

    # ------------------------------------------------------------------ sklearn API
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

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
        self._drop_runtime()
        return self

    def __repr__(self) -> str:
        defaults = {
            k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()
        }
        shown = [
            f"{k}={v!r}" for k, v in self.get_params().items() if k in defaults and v != defaults[k]
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_loaded_model", "_ext_cache"):
            state.pop(k, None)
        return state

    def _drop_runtime(self) -> None:
        self.__dict__.pop("_loaded_model", None)
        self.__dict__.pop("_ext_cache", None)

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
        if isinstance(self.classifier, str) and self.classifier not in CLASSIFIERS:
            raise ValueError(
                f"classifier={self.classifier!r} is not one of {', '.join(map(repr, CLASSIFIERS))} "
                "(or pass an sklearn estimator)"
            )
        if (
            not isinstance(self.batch_size, int)
            or isinstance(self.batch_size, bool)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive int")
        validate_spec(self.layers)
        validate_normalize(self.normalize_layers)
        validate_preprocessing(self.preprocessing, self.pca_components)
        resolve_poolings(self.pooling, self.train_pooling, self.inference_pooling)
        if not isinstance(self.fast_auto_top_k, int) or self.fast_auto_top_k < 1:
            raise ValueError(f"fast_auto_top_k={self.fast_auto_top_k!r} must be a positive int")
        if self.layers == "auto":
            from .layer_selection import validate_selection_params

            validate_selection_params(self)
        if self.model is not None and self.dataset is not None:
            raise ValueError("give either model= or dataset=, not both")

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

    # ------------------------------------------------------------------ model access
    @property
    def model_name(self) -> str | None:
        """The model this probe reads (the bundled default when none was given)."""
        if self.dataset is not None:
            info = getattr(self, "dataset_info_", None)
            return self.model or (info or {}).get("model_name")
        from .models import DEFAULT_MODEL

        return self.model or DEFAULT_MODEL

    def _loaded(self):
        """The loaded model (lazy, memoised per process)."""
        lm = self.__dict__.get("_loaded_model")
        if lm is None:
            from .models import load_model

            lm = load_model(self.model_name, device=self.device, dtype=self.dtype)
            trained_on = getattr(self, "model_fingerprint_", None)
            if trained_on and trained_on != lm.fingerprint:
                warnings.warn(
                    f"this probe was trained on {self.model_name!r} with weights fingerprint "
                    f"{trained_on}, but the loaded weights have fingerprint {lm.fingerprint}; "
                    "its scores may be meaningless on these weights",
                    stacklevel=3,
                )
            self.model_fingerprint_ = lm.fingerprint
            self._loaded_model = lm
        return lm

    def _tokenizer(self):
        """The model's tokenizer, without loading weights where the backend has none
        locally (nnsight remote execution keeps only the config and tokenizer here)."""
        if self.backend == "nnsight" and self.dataset is None:
            return self._extractor().loaded.tokenizer
        return self._loaded().tokenizer

    def _extractor(self, remote: bool | None = None, batch_size: int | None = None):
        """The extraction backend for this probe (transformers, nnsight or a dataset)."""
        remote = self.remote if remote is None else remote
        bs = batch_size or self.batch_size
        key = (remote, bs)
        cache = self.__dict__.setdefault("_ext_cache", {})
        if key in cache:
            return cache[key]
        if self.dataset is not None:
            from .datasets import DatasetExtractor

            ext = DatasetExtractor(self.dataset, progress=self.progress)
            self.dataset_info_ = ext.info
        elif self.backend == "nnsight":
            from .nnsight_backend import NNsightExtractor

            ext = NNsightExtractor(
                self.model_name,
                remote=remote,
                device=self.device,
                dtype=self.dtype,
                batch_size=bs,
                progress=self.progress,
            )
        else:
            from .extraction import Extractor

            ext = Extractor(self._loaded(), batch_size=bs, progress=self.progress)
        cache[key] = ext
        return ext

    def n_model_layers(self) -> int:
        """Number of decoder layers of the probed model (or dataset)."""
        if self.dataset is not None:
            return self._extractor().n_layers
        loaded = self.__dict__.get("_loaded_model")
        if loaded is not None:
            return loaded.n_layers
        if self.backend == "nnsight":
            return self._extractor().n_layers
        from .models import model_n_layers

        return model_n_layers(self.model_name)

    def _prepare_prompts(self, prompts, chat_template: bool | None = None) -> list[str]:
        """Validate prompts and apply the chat template where asked for."""
        prompts = check_prompts(prompts)
        use_chat = self.chat_template if chat_template is None else chat_template
        if not use_chat and not any(_is_message_list(p) for p in prompts):
            return prompts
        from .chat import format_chat

        return [format_chat(self, p, force=use_chat) for p in prompts]

    def _features(self, prompts, pooling, layers=None, remote=None, batch_size=None) -> dict:
        """Pooled activations of already-prepared prompts: {layer: (n, hidden)}."""
        ext = self._extractor(remote, batch_size)
        layers = list(self.layers_ if layers is None else layers)
        if self.score_roles is None:
            acts = ext.pooled(prompts, layers, pooling)
        else:
            from .chat import role_masked_pooled

            acts = role_masked_pooled(self, ext, prompts, layers, pooling)
        self.last_cache_hits_ = getattr(ext, "last_hits", 0)
        return acts

    def _token_features(self, prompts, layers=None, remote=None) -> list:
        ext = self._extractor(remote)
        return ext.per_token(prompts, list(self.layers_ if layers is None else layers))

    # ------------------------------------------------------------------ fit
    def _parse_fit_args(self, X, y, labels=None):
        """Accept fit(positive, negative) or fit(prompts, labels).

        A plain list of strings as the second argument means negative prompts; string class
        labels go through ``labels=`` or a numpy array.
        """
        if labels is not None:
            if y is not None:
                raise TypeError("give either a second positional argument or labels=, not both")
            y = np.asarray(labels)
        if y is None:
            raise TypeError(
                "fit() needs two arguments: fit(positive_prompts, negative_prompts) or "
                "fit(prompts, labels)"
            )
        if isinstance(y, str):
            raise TypeError("the second argument must be a list (negative prompts or labels)")
        y_list = list(y)
        contrastive = (
            not isinstance(y, np.ndarray)
            and len(y_list) > 0
            and all(isinstance(v, str) or _is_message_list(v) for v in y_list)
        )
        if contrastive:
            if self.task == "regression":
                raise ValueError("task='regression' needs fit(prompts, labels) with float labels")
            pos = check_prompts(X, "positive_prompts")
            neg = check_prompts(y_list, "negative_prompts")
            if not pos:
                raise ValueError("positive_prompts is empty; give at least one positive example")
            return pos + neg, np.array([1] * len(pos) + [0] * len(neg))
        prompts = check_prompts(X, "prompts")
        if len(prompts) != len(y_list):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(y_list)} labels; they must be the same length"
            )
        if not prompts:
            raise ValueError("no training prompts were given")
        return prompts, self._check_labels(y_list)

    def _check_labels(self, y) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {y.shape}")
        if self.task == "regression":
            try:
                return y.astype(np.float64)
            except (TypeError, ValueError):
                raise TypeError("task='regression' needs numeric (float) labels") from None
        if y.dtype.kind == "f":
            if not np.all(np.mod(y, 1) == 0):
                raise ValueError(
                    "classification labels must be class ids (ints or strings), got floats; "
                    "for continuous targets use task='regression'"
                )
            y = y.astype(np.int64)
        return y

    def fit(self, X, y=None, *, labels=None, remote: bool | None = None) -> Probe:
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
        """
        self._validate_params()
        prompts, labels = self._parse_fit_args(X, y, labels)
        self._train_data_ = (prompts, labels)  # for push_to_hub(include_training_data=True)
        if self.task == "classification" and len(np.unique(labels)) < 2:
            raise ValueError(
                f"training data has only one class ({np.unique(labels)[0]!r}); a probe needs "
                "examples of at least two classes"
            )
        if self.dataset is None and self.backend == "local":
            # Load first, so fit_seconds_ measures fitting, not a one-off model load.
            self._loaded()
        t0 = time.perf_counter()
        prepared = self._prepare_prompts(prompts)
        if self.layers == "auto":
            from .layer_selection import auto_candidate_layers

            # group lasso chooses among auto_candidates only: extract nothing else
            candidates = auto_candidate_layers(self.auto_candidates, self.n_model_layers())
        else:
            candidates = resolve_layers(self.layers, self.n_model_layers())
        train_pool = self.train_pooling_
        if train_pool == "all":
            X_layers, labels = self._token_training_set(prepared, labels, candidates, remote)
        else:
            X_layers = self._features(prepared, train_pool, candidates, remote)
        if is_selection_spec(self.layers):
            from .layer_selection import select_layers

            selected = select_layers(self, X_layers, labels, candidates)
        else:
            selected = candidates
        self.candidate_layers_ = list(candidates)
        self.layers_ = list(selected)
        from .features import concat_layers

        self._fit_matrix(concat_layers(X_layers, self.layers_), labels, n_layers=len(self.layers_))
        self.n_train_ = len(prompts)
        self.fit_seconds_ = time.perf_counter() - t0
        self.train_cache_hits_ = getattr(self, "last_cache_hits_", 0)
        return self

    def _role_keep(self, prompts) -> list[np.ndarray] | None:
        """Per prompt, the tokens ``score_roles`` lets a probe read (None: all of them)."""
        if self.score_roles is None:
            return None
        from .chat import role_token_masks

        return role_token_masks(self, prompts)

    def _token_training_set(self, prompts, labels, layers, remote):
        """train_pooling='all': every token of a prompt (of ``score_roles``, if set) is a
        training sample with its prompt's label."""
        toks = self._token_features(prompts, layers, remote)
        keep = self._role_keep(prompts) or [np.ones(len(t.tokens), bool) for t in toks]
        per_layer = {
            layer: np.concatenate([t.acts[layer][k] for t, k in zip(toks, keep)])
            for layer in layers
        }
        reps = np.concatenate([[labels[i]] * int(k.sum()) for i, k in enumerate(keep)])
        return per_layer, np.asarray(reps, dtype=labels.dtype)

    def _fit_matrix(self, X: np.ndarray, y: np.ndarray, n_layers: int = 1) -> None:
        from sklearn.pipeline import Pipeline

        from .classifiers import build_classifier
        from .features import build_steps

        steps = build_steps(
            n_layers,
            self.normalize_layers,
            self.preprocessing,
            self.pca_components,
            len(X),
            self.random_state,
        )
        clf = build_classifier(
            self.classifier, self.task, self.random_state, self.classifier_kwargs
        )
        pipe = Pipeline([*steps, ("classifier", clf)])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            # sklearn 1.9 deprecates SVC(probability=True); it still works until 1.11.
            warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
            try:
                pipe.fit(X, y)
            except ValueError as exc:
                raise ValueError(f"fitting {type(clf).__name__} failed: {exc}") from None
        self.pipeline_ = pipe
        self.n_features_in_ = X.shape[1]
        self.n_feature_layers_ = n_layers
        self._X_train_ = X
        self._y_train_ = y
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

    def fit_from_activations(self, X, y) -> Probe:
        """Fit on precomputed activations of shape (n_samples, d) or (n_samples, n_layers, d)."""
        self._validate_params()
        t0 = time.perf_counter()
        X, n_layers = self._as_matrix(X)
        y = self._check_labels(list(y))
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
        if len(X) == 0:
            raise ValueError("no training samples were given")
        if self.task == "classification" and len(np.unique(y)) < 2:
            raise ValueError("training data has only one class; a probe needs at least two")
        self._fit_matrix(X, y, n_layers)
        self.n_train_ = len(X)
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

    def predict_from_activations(self, X) -> np.ndarray:
        return self.pipeline_.predict(self._check_matrix(X))

    def predict_proba_from_activations(self, X) -> np.ndarray:
        from .classifiers import classifier_proba

        X = self._check_matrix(X)
        if self.task == "regression":
            raise ValueError("predict_proba is not defined for task='regression'; use predict")
        return classifier_proba(self.pipeline_, X)

    def score_from_activations(self, X, y) -> float:
        """Accuracy (classification) or R^2 (regression) on precomputed activations."""
        return float(self.pipeline_.score(self._check_matrix(X), self._check_labels(list(y))))

    # ------------------------------------------------------------------ inference
    def _pooled_matrix(self, prompts, pooling, remote=None, batch_size=None) -> np.ndarray:
        from .features import concat_layers

        acts = self._features(prompts, pooling, self.layers_, remote, batch_size)
        return concat_layers(acts, self.layers_)

    def _token_outputs(self, prompts, remote=None, mode: str = "proba"):
        """Per-token outputs of prepared prompts (see :meth:`_token_rows`) and, with
        ``score_roles``, per prompt the tokens those roles cover (else None)."""
        rows = self._token_rows(self._token_features(prompts, self.layers_, remote), mode)
        return rows, self._role_keep(prompts)

    def _reducible_rows(self, prompts, remote) -> list[np.ndarray]:
        """Per-token outputs restricted to ``score_roles`` tokens, for max/min reductions."""
        rows, keep = self._token_outputs(prompts, remote)
        return rows if keep is None else [r[k] for r, k in zip(rows, keep)]

    def _token_rows(self, toks, mode: str = "proba") -> list[np.ndarray]:
        """Per-token outputs per prompt.

        ``mode="proba"``: (seq,) positive-class probability for binary classification,
        (seq, k) for multi-class, predictions for regression. ``"predict"``: labels.
        ``"score"``: always (seq,) (multi-class: the top class probability).
        """
        from .classifiers import classifier_proba

        out = []
        for t in toks:
            X = np.concatenate([t.acts[layer] for layer in self.layers_], axis=1)
            if self.task == "regression" or mode == "predict":
                out.append(np.asarray(self.pipeline_.predict(X)))
                continue
            p = classifier_proba(self.pipeline_, X)
            if p.shape[1] == 2:
                out.append(p[:, 1])
            else:
                out.append(p.max(1) if mode == "score" else p)
        return out

    @staticmethod
    def _pad_tokens(rows: list[np.ndarray], keep=None) -> np.ma.MaskedArray:
        """Stack ragged per-token outputs into a masked (batch, seq_len[, k]) array; padding
        (and tokens outside ``keep``, when given) is masked."""
        width = max((len(r) for r in rows), default=0)
        tail = rows[0].shape[1:] if rows else ()
        numeric = all(np.asarray(r).dtype.kind in "biuf" for r in rows)
        data = np.zeros((len(rows), width, *tail), dtype=np.float64 if numeric else object)
        mask = np.ones_like(data, dtype=bool)
        for i, r in enumerate(rows):
            data[i, : len(r)] = r
            mask[i, : len(r)] = (
                False if keep is None else ~keep[i][: len(r)].reshape(-1, *([1] * len(tail)))
            )
        return np.ma.MaskedArray(data, mask=mask)

    def _reduced_proba(self, prompts, remote, how: str | None = None) -> np.ndarray:
        """inference_pooling max/min: reduce per-token class scores to (n, k)."""
        how = how or self.inference_pooling_
        rows = self._reducible_rows(prompts, remote)
        if rows[0].ndim == 1:
            p = np.array([r.max() if how == "max" else r.min() for r in rows])
            return np.column_stack([1 - p, p])
        red = np.array([r.max(0) if how == "max" else r.min(0) for r in rows])
        return red / red.sum(1, keepdims=True)

    def predict_proba(self, prompts, *, remote: bool | None = None, batch_size: int | None = None):
        """Class probabilities.

        Returns
        -------
        ndarray of shape (n_prompts, n_classes), or for ``inference_pooling="all"`` a masked
        array of shape (n_prompts, seq_len) holding the positive-class probability of every
        token (padded positions masked; (n_prompts, seq_len, n_classes) for multi-class).
        """
        self._check_fitted()
        if self.task == "regression":
            raise ValueError("predict_proba is not defined for task='regression'; use predict")
        prepared = self._prepare_prompts(prompts)
        how = self.inference_pooling_
        if how == "all":
            return self._pad_tokens(*self._token_outputs(prepared, remote))
        if how in ("max", "min"):
            return self._reduced_proba(prepared, remote)
        from .classifiers import classifier_proba

        return classifier_proba(
            self.pipeline_, self._pooled_matrix(prepared, how, remote, batch_size)
        )

    def predict(self, prompts, *, remote: bool | None = None, batch_size: int | None = None):
        """Predicted labels (or values for regression); per token for ``inference_pooling="all"``."""
        self._check_fitted()
        prepared = self._prepare_prompts(prompts)
        how = self.inference_pooling_
        if how in TOKEN_LEVEL_INFERENCE:
            if how == "all":
                mode = "proba" if self.task == "regression" else "predict"
                rows, keep = self._token_outputs(prepared, remote, mode=mode)
                return self._pad_tokens(rows, keep)
            if self.task == "regression":
                rows = self._reducible_rows(prepared, remote)
                return np.array([r.max() if how == "max" else r.min() for r in rows])
            return self.classes_[self._reduced_proba(prepared, remote).argmax(1)]
        return self.pipeline_.predict(self._pooled_matrix(prepared, how, remote, batch_size))

    def _prompt_level(self, prompts, remote):
        """Prompt-level (n,) predictions and (n, k) probabilities for scoring.

        ``inference_pooling="all"`` is scored as "max" (a prompt is positive if any token is).
        """
        how = self.inference_pooling_
        prepared = self._prepare_prompts(prompts)
        if self.task == "regression":
            if how in TOKEN_LEVEL_INFERENCE:
                rows = self._reducible_rows(prepared, remote)
                pred = np.array([r.min() if how == "min" else r.max() for r in rows])
            else:
                pred = self.pipeline_.predict(self._pooled_matrix(prepared, how, remote))
            return pred, None
        if how in TOKEN_LEVEL_INFERENCE:
            proba = self._reduced_proba(prepared, remote, "min" if how == "min" else "max")
        else:
            from .classifiers import classifier_proba

            proba = classifier_proba(self.pipeline_, self._pooled_matrix(prepared, how, remote))
        return self.classes_[proba.argmax(1)], proba

    def score(self, prompts, labels, *, remote: bool | None = None) -> float:
        """Accuracy (classification) or R^2 (regression)."""
        self._check_fitted()
        y = self._check_labels(list(labels))
        if len(y) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(y)} labels")
        pred, _ = self._prompt_level(prompts, remote)
        if self.task == "regression":
            from sklearn.metrics import r2_score

            return float(r2_score(y, pred))
        return float(np.mean(pred == y))

    def evaluate(self, prompts, labels, *, remote: bool | None = None, **kwargs) -> dict:
        """Several metrics at once.

        Classification: accuracy, f1, precision, recall, auroc (macro one-vs-rest for more
        than two classes; NaN if the labels hold one class). Regression: r2, mse, mae.
        After :meth:`calibrate`: also the threshold, the observed FPR, TPR at the
        calibrated FPR and bootstrap 95% intervals (``n_bootstrap=1000``,
        ``random_state=``); see :func:`.monitoring.evaluate_extra`. The result is kept
        as ``metrics_`` (saved with the probe, shown on hub model cards).
        """
        self._check_fitted()
        y = self._check_labels(list(labels))
        if len(y) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(y)} labels")
        pred, proba = self._prompt_level(prompts, remote)
        metrics = compute_metrics(y, pred, proba, self.task, getattr(self, "classes_", None))
        metrics.update(self._evaluate_extra(y, pred, proba, **kwargs))
        # The latest evaluation travels with the probe (saved files, hub model cards).
        self.metrics_ = dict(metrics)
        return metrics

    def cross_validate(self, cv: int = 5) -> float:
        """Stratified k-fold accuracy (R^2 for regression) on the training activations."""
        self._check_fitted()
        from sklearn.base import clone
        from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

        if "_X_train_" not in self.__dict__:
            raise ValueError(
                "cross_validate needs the training activations, which saved probes do not keep; "
                "refit this probe (its activations are cached, so that is quick)"
            )
        X, y = self._X_train_, self._y_train_
        if self.task == "classification":
            k = min(cv, int(np.unique(y, return_counts=True)[1].min()))
            if k < 2:
                return float("nan")
            splitter = StratifiedKFold(k, shuffle=True, random_state=self.random_state or 0)
        else:
            k = min(cv, len(y))
            splitter = KFold(k, shuffle=True, random_state=self.random_state or 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = cross_val_score(clone(self.pipeline_), X, y, cv=splitter)
        self.cv_score_ = float(np.mean(scores))
        return self.cv_score_

    def warmup(
        self, prompts, batch_size: int | None = None, *, remote: bool | None = None
    ) -> Probe:
        """Extract and cache activations for ``prompts`` so later calls hit the cache."""
        self._validate_params()
        prepared = self._prepare_prompts(prompts)
        layers = getattr(self, "layers_", None) or resolve_layers(
            self.layers, self.n_model_layers()
        )
        for pooling in {self.train_pooling_, self.inference_pooling_} - set(TOKEN_LEVEL_INFERENCE):
            self._features(prepared, pooling, layers, remote, batch_size)
        return self

    # ------------------------------------------------------------------ tokens
    def token_scores(self, texts, *, remote: bool | None = None) -> list[TokenScores]:
        """Per-token positive-class scores for each text (for highlights and monitoring)."""
        self._check_fitted()
        if isinstance(texts, str):
            texts = [texts]
        prepared = self._prepare_prompts(texts)
        toks = self._token_features(prepared, self.layers_, remote)
        rows = self._token_rows(toks, mode="score")
        return [TokenScores(t.text, t.tokens, r) for t, r in zip(toks, rows)]

    def show_tokens(self, texts, threshold: float = 0.5):
        """Per-token highlight widget (needs the ``jupyter`` extra)."""
        from ..jupyter.widgets import show_tokens

        return show_tokens(self.token_scores(texts), threshold=threshold)

    # ------------------------------------------------------------------ layer analysis
    @classmethod
    def sweep_layers(cls, model=None, positive_prompts=None, negative_prompts=None, **kwargs):
        """Train one probe per layer from a single extraction; see :mod:`.sweep`."""
        from .sweep import sweep_layers

        return sweep_layers(cls, model, positive_prompts, negative_prompts, **kwargs)

    def compute_layer_importance(self, metric: str = "l2") -> np.ndarray:
        """Per-layer importance of a multi-layer probe, normalized to sum to 1."""
        from .layer_selection import compute_layer_importance

        return compute_layer_importance(self, metric=metric)

    def plot_layer_importance(self, metric: str = "l2", ax=None):
        """Bar chart of :meth:`compute_layer_importance` (needs the ``plot`` extra)."""
        from .layer_selection import plot_layer_importance

        return plot_layer_importance(self, metric=metric, ax=ax)

    # ------------------------------------------------------------------ monitoring
    def _evaluate_extra(self, y, pred, proba, **kwargs) -> dict:
        """Calibrated-threshold metrics for :meth:`evaluate`; see :mod:`.monitoring`."""
        from .monitoring import evaluate_extra

        return evaluate_extra(self, y, pred, proba, **kwargs)

    def calibrate(self, benign_prompts, fpr: float = 0.01, **kwargs) -> Probe:
        """Set the decision threshold so at most ``fpr`` of benign prompts are flagged."""
        from .monitoring import calibrate

        return calibrate(self, benign_prompts, fpr=fpr, **kwargs)

    def flag(self, prompts, **kwargs) -> np.ndarray:
        """Boolean per prompt: is its score over the calibrated threshold?"""
        from .monitoring import flag

        return flag(self, prompts, **kwargs)

    def monitor(self, prompt, **kwargs):
        """Generate from ``prompt`` while scoring every new token; see :mod:`.monitoring`."""
        from .monitoring import monitor

        return monitor(self, prompt, **kwargs)

    # ------------------------------------------------------------------ sharing
    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload this probe and a model card to the HuggingFace Hub; returns the URL."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_hub(cls, repo_id: str, **kwargs) -> Probe:
        """Download a probe pushed with :meth:`push_to_hub`."""
        from .hub import from_hub

        return from_hub(repo_id, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save to ``path`` (safe format; a ``.pkl`` path uses pickle)."""
        from .serialization import save_probe

        save_probe(self, path)

    @classmethod
    def load(cls, path, *, trust_classifier: bool = False, **overrides) -> Probe:
        """Load a probe saved with :meth:`save`."""
        from .serialization import load_probe

        return load_probe(path, trust_classifier=trust_classifier, **overrides)


def compute_metrics(y, pred, proba, task: str, classes=None) -> dict:
    """accuracy/f1/precision/recall/auroc for classification, r2/mse/mae for regression."""
    from sklearn import metrics as M

    if task == "regression":
        pred = np.asarray(pred, dtype=np.float64)
        return {
            "r2": float(M.r2_score(y, pred)),
            "mse": float(M.mean_squared_error(y, pred)),
            "mae": float(M.mean_absolute_error(y, pred)),
        }
    classes = np.asarray(classes) if classes is not None else np.unique(np.concatenate([y, pred]))
    binary = len(classes) == 2
    avg = "binary" if binary else "macro"
    kw = {"pos_label": classes[1]} if binary else {}
    out = {
        "accuracy": float(M.accuracy_score(y, pred)),
        "f1": float(M.f1_score(y, pred, average=avg, zero_division=0, **kw)),
        "precision": float(M.precision_score(y, pred, average=avg, zero_division=0, **kw)),
        "recall": float(M.recall_score(y, pred, average=avg, zero_division=0, **kw)),
    }
    auroc = float("nan")
    if proba is not None and len(np.unique(y)) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if binary:
                auroc = float(M.roc_auc_score(y == classes[1], proba[:, 1]))
            elif set(np.unique(y)) <= set(classes):
                auroc = float(M.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    out["auroc"] = auroc
    out["n"] = len(y)
    return out


LinearProbe = Probe
