"""Classifier construction: names from the reference mapped to sklearn estimators.

``ridge``: sklearn's RidgeClassifier has no probabilities. :class:`RidgeProbaClassifier`
adds a *documented* ``predict_proba``: the logistic sigmoid of the decision function for
two classes and a softmax over decision values for more. These are monotone scores, not
calibrated probabilities; use ``logistic_regression`` or ``svm`` when calibration matters.

``logistic_regression_cv``: sklearn's LogisticRegressionCV (regularization chosen by 5-fold
cross-validation; fewer folds when the smallest class has fewer than 5 samples).
``ensemble``: :class:`LogisticEnsembleClassifier`, logistic regressions over several
regularization strengths (``classifier_kwargs={"C_values": [...]}``), probabilities
averaged, ``coef_`` the average of the members' (so layer importance still works).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeClassifier
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

CLASSIFIERS = (
    "logistic_regression",
    "ridge",
    "svm",
    "lda",
    "mass_mean",
    "sgd",
    "logistic_regression_cv",
    "ensemble",
)

#: Where a probe's classifier trains (``Probe(compute_backend=...)``).
COMPUTE_BACKENDS = ("sklearn", "cuml")
#: Named classifiers cuML provides (classification; regression uses its Ridge).
CUML_CLASSIFIERS = ("logistic_regression", "svm")

#: Default regularization strengths of the ``"ensemble"`` classifier.
DEFAULT_C_VALUES = (0.01, 0.1, 1.0, 10.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def proba_from_decision(decision: np.ndarray) -> np.ndarray:
    """(n,) binary decision values or (n, k) multi-class ones -> (n, k) scores in [0, 1]."""
    decision = np.asarray(decision, dtype=np.float64)
    if decision.ndim == 1:
        p = _sigmoid(decision)
        return np.column_stack([1 - p, p])
    return _softmax(decision)


class RidgeProbaClassifier(RidgeClassifier):
    """RidgeClassifier whose ``predict_proba`` is sigmoid/softmax of the decision function."""

    def predict_proba(self, X):
        return proba_from_decision(self.decision_function(X))


class MassMeanClassifier(ClassifierMixin, BaseEstimator):
    """Mass-mean probing: the direction between class centroids.

    Binary: ``w = mu_1 - mu_0``; scores are projections onto ``w`` centred at the midpoint
    and scaled by the pooled within-class spread along ``w``, then squashed by a sigmoid.
    More classes: one centroid direction per class against the rest, softmax over scores.
    """

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = unique_labels(y)
        if len(self.classes_) < 2:
            raise ValueError("mass_mean needs at least two classes")
        directions, offsets, scales = [], [], []
        targets = self.classes_[1:] if len(self.classes_) == 2 else self.classes_
        for c in targets:
            pos, neg = X[y == c], X[y != c]
            w = pos.mean(0) - neg.mean(0)
            proj_pos, proj_neg = pos @ w, neg @ w
            mid = 0.5 * (proj_pos.mean() + proj_neg.mean())
            spread = np.sqrt(0.5 * (proj_pos.var() + proj_neg.var())) + 1e-12
            directions.append(w)
            offsets.append(mid)
            scales.append(spread)
        self.coef_ = np.vstack(directions)
        self.intercept_ = -np.asarray(offsets)
        self.scale_ = np.asarray(scales)
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        z = (np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_) / self.scale_
        return z[:, 0] if len(self.classes_) == 2 else z

    def predict_proba(self, X):
        return proba_from_decision(self.decision_function(X))

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class CVLogisticRegression(LogisticRegressionCV):
    """LogisticRegressionCV whose integer ``cv`` shrinks to the smallest class's size
    (at least 2), so a probe fitted on a handful of prompts still fits."""

    def fit(self, X, y, sample_weight=None, **params):
        cv = self.cv
        if isinstance(cv, int) or cv is None:
            counts = np.unique(np.asarray(y), return_counts=True)[1]
            k = min(5 if cv is None else cv, int(counts.min()))
            if k < 2:
                raise ValueError(
                    "logistic_regression_cv needs at least 2 samples of every class for "
                    f"cross-validation, got class counts {counts.tolist()}; use "
                    "classifier='logistic_regression' for smaller training sets"
                )
            self.cv = k
            try:
                return super().fit(X, y, sample_weight=sample_weight, **params)
            finally:
                self.cv = cv
        return super().fit(X, y, sample_weight=sample_weight, **params)


class LogisticEnsembleClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regressions over several regularization strengths, probabilities averaged.

    Parameters
    ----------
    C_values : sequence of float, default (0.01, 0.1, 1.0, 10.0)
        One member per value (sklearn's ``C``: smaller is stronger regularization).
    max_iter : int, default 2000
    class_weight : dict, "balanced" or None
    random_state : int or None

    Attributes
    ----------
    estimators_ : list of LogisticRegression
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        The members' mean ``coef_`` (what layer importance reads).
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    """

    def __init__(
        self, C_values=DEFAULT_C_VALUES, max_iter: int = 2000, class_weight=None, random_state=None
    ):
        self.C_values = C_values
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        values = list(np.atleast_1d(np.asarray(self.C_values, dtype=np.float64)))
        if not values or any(not np.isfinite(c) or c <= 0 for c in values):
            raise ValueError(
                f"C_values={self.C_values!r} must be a non-empty list of positive numbers, "
                "e.g. [0.01, 0.1, 1.0, 10.0]"
            )
        self.estimators_ = [
            LogisticRegression(
                C=float(c),
                max_iter=self.max_iter,
                class_weight=self.class_weight,
                random_state=self.random_state,
            ).fit(X, y, sample_weight=sample_weight)
            for c in values
        ]
        self.classes_ = self.estimators_[0].classes_
        self.coef_ = np.mean([e.coef_ for e in self.estimators_], axis=0)
        self.intercept_ = np.mean([e.intercept_ for e in self.estimators_], axis=0)
        self.n_features_in_ = self.estimators_[0].n_features_in_
        return self

    def predict_proba(self, X):
        """Mean of the members' probabilities, shape (n_samples, n_classes)."""
        check_is_fitted(self, "estimators_")
        return np.mean([e.predict_proba(X) for e in self.estimators_], axis=0)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _cv_defaults(random_state) -> dict:
    """LogisticRegressionCV defaults; on sklearn >= 1.8 also the settings that keep its
    fitted attributes plain float arrays (storable in the safe format) and silence its
    transition warnings: L2 only (``l1_ratios=(0.0,)``), accuracy scoring (today's default)."""
    import inspect

    out = {"cv": 5, "max_iter": 2000, "random_state": random_state}
    params = inspect.signature(LogisticRegressionCV).parameters
    if "use_legacy_attributes" in params:
        out.update(use_legacy_attributes=False, scoring=None, l1_ratios=(0.0,))
    return out


def build_classifier(
    classifier, task: str = "classification", random_state=None, classifier_kwargs=None
):
    """Return an unfitted estimator for a name or a user-supplied sklearn estimator.

    ``random_state`` is set on estimators that take one (unless given in
    ``classifier_kwargs``).
    """
    kwargs = dict(classifier_kwargs or {})
    if task not in ("classification", "regression"):
        raise ValueError(f"task={task!r} is not one of 'classification', 'regression'")
    if not isinstance(classifier, str):
        if not (hasattr(classifier, "fit") and hasattr(classifier, "predict")):
            raise TypeError(
                f"classifier={classifier!r} must be one of {', '.join(map(repr, CLASSIFIERS))} "
                "or an sklearn-style estimator with fit() and predict()"
            )
        est = clone(classifier)
        params = est.get_params()
        if kwargs:
            est.set_params(**kwargs)
        if "random_state" in params and params["random_state"] is None and random_state is not None:
            est.set_params(random_state=random_state)
        return est
    if task == "regression":
        from sklearn.linear_model import Ridge

        if classifier in ("logistic_regression", "ridge"):
            return Ridge(**kwargs)
        if classifier == "svm":
            from sklearn.svm import SVR

            return SVR(**{"kernel": "linear", **kwargs})
        if classifier == "sgd":
            from sklearn.linear_model import SGDRegressor

            return SGDRegressor(**{"random_state": random_state, **kwargs})
        raise ValueError(
            f"classifier={classifier!r} is not available for task='regression'; use "
            "'ridge' (default), 'svm', 'sgd' or an sklearn regressor"
        )
    if classifier == "logistic_regression":
        return LogisticRegression(**{"max_iter": 2000, "random_state": random_state, **kwargs})
    if classifier == "logistic_regression_cv":
        return CVLogisticRegression(**{**_cv_defaults(random_state), **kwargs})
    if classifier == "ensemble":
        return LogisticEnsembleClassifier(**{"random_state": random_state, **kwargs})
    if classifier == "ridge":
        return RidgeProbaClassifier(**kwargs)
    if classifier == "svm":
        from sklearn.svm import SVC

        return SVC(
            **{"kernel": "linear", "probability": True, "random_state": random_state, **kwargs}
        )
    if classifier == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        # lsqr + shrinkage keeps LDA well-posed when n_samples < n_features.
        return LinearDiscriminantAnalysis(**{"solver": "lsqr", "shrinkage": "auto", **kwargs})
    if classifier == "mass_mean":
        return MassMeanClassifier(**kwargs)
    if classifier == "sgd":
        from sklearn.linear_model import SGDClassifier

        return SGDClassifier(**{"loss": "log_loss", "random_state": random_state, **kwargs})
    raise ValueError(
        f"classifier={classifier!r} is not one of {', '.join(map(repr, CLASSIFIERS))} "
        "(or pass an sklearn estimator)"
    )


def check_compute_backend(compute_backend) -> None:
    """Refuse unknown backends, and ``"cuml"`` where cuML or a CUDA GPU is missing."""
    if compute_backend not in COMPUTE_BACKENDS:
        raise ValueError(
            f"compute_backend={compute_backend!r} is not one of "
            f"{', '.join(map(repr, COMPUTE_BACKENDS))}"
        )
    if compute_backend == "sklearn":
        return
    import importlib.util

    try:
        found = importlib.util.find_spec("cuml") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        found = False
    if not found:
        raise ImportError(
            "compute_backend='cuml' needs RAPIDS cuML (pip install cuml-cu12) and an NVIDIA "
            "GPU; cuML is not installed here, so use compute_backend='sklearn'"
        )
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "compute_backend='cuml' trains on an NVIDIA GPU, but no CUDA device is available "
            "here; use compute_backend='sklearn'"
        )


def build_cuml_classifier(
    classifier, task: str = "classification", random_state=None, classifier_kwargs=None
):
    """The cuML (GPU) counterpart of :func:`build_classifier` for a named classifier."""
    kwargs = dict(classifier_kwargs or {})
    if task == "regression":
        if classifier not in ("logistic_regression", "ridge"):
            raise ValueError(
                f"classifier={classifier!r} is not available with compute_backend='cuml' for "
                "task='regression'; use 'ridge' or compute_backend='sklearn'"
            )
        from cuml.linear_model import Ridge

        return Ridge(**kwargs)
    if classifier == "logistic_regression":
        from cuml.linear_model import LogisticRegression as CuLogisticRegression

        return CuLogisticRegression(**{"max_iter": 2000, **kwargs})
    if classifier == "svm":
        from cuml.svm import SVC as CuSVC

        return CuSVC(**{"kernel": "linear", "probability": True, **kwargs})
    raise ValueError(
        f"classifier={classifier!r} is not available with compute_backend='cuml'; use one of "
        f"{', '.join(map(repr, CUML_CLASSIFIERS))} or compute_backend='sklearn'"
    )


def check_sample_weight(est, sample_weight, n_samples: int) -> np.ndarray | None:
    """Validate ``sample_weight`` for ``est``: shape (n_samples,), finite, >= 0, and an
    estimator whose ``fit`` takes it (else a clear error)."""
    if sample_weight is None:
        return None
    from sklearn.utils.validation import has_fit_parameter

    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {w.shape}; it needs one weight per training prompt "
            f"({n_samples},)"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("sample_weight must be finite, non-negative and not all zero")
    if not has_fit_parameter(est, "sample_weight"):
        raise TypeError(
            f"{type(est).__name__}.fit does not accept sample_weight; use a classifier that "
            "does ('logistic_regression', 'ridge', 'svm', 'sgd', 'ensemble', "
            "'logistic_regression_cv') or drop sample_weight"
        )
    return w


def classifier_proba(est, X) -> np.ndarray:
    """predict_proba, falling back to sigmoid/softmax of decision_function."""
    if hasattr(est, "predict_proba"):
        try:
            return np.asarray(est.predict_proba(X))
        except AttributeError:
            pass
    if hasattr(est, "decision_function"):
        return proba_from_decision(est.decision_function(X))
    raise TypeError(
        f"{type(est).__name__} has neither predict_proba nor decision_function; "
        "use predict() or a probabilistic classifier"
    )
