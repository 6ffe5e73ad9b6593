"""Classifier construction: names from the reference mapped to sklearn estimators.

``ridge``: sklearn's RidgeClassifier has no probabilities. :class:`RidgeProbaClassifier`
adds a *documented* ``predict_proba``: the logistic sigmoid of the decision function for
two classes and a softmax over decision values for more. These are monotone scores, not
calibrated probabilities; use ``logistic_regression`` or ``svm`` when calibration matters.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import RidgeClassifier
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

CLASSIFIERS = ("logistic_regression", "ridge", "svm", "lda", "mass_mean", "sgd")


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
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**{"max_iter": 2000, "random_state": random_state, **kwargs})
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
