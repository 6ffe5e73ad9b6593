from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from lmprobe_jupyter.engine.classifiers import (
    CLASSIFIERS,
    MassMeanClassifier,
    build_classifier,
    classifier_proba,
)


def _blobs(n=60, d=5, k=2, seed=0):
    rng = np.random.default_rng(seed)
    # class c sits at 4 * e_c: every class is linearly separable from the rest
    X = np.concatenate([rng.normal(0.0, 1.0, size=(n, d)) + 4 * np.eye(d)[c] for c in range(k)])
    y = np.repeat(np.arange(k), n)
    return X, y


@pytest.mark.parametrize("name", CLASSIFIERS, ids=CLASSIFIERS)
def test_every_classifier_learns_binary(name):
    X, y = _blobs()
    est = build_classifier(name, random_state=0).fit(X, y)
    assert (est.predict(X) == y).mean() > 0.95
    p = classifier_proba(est, X)
    assert p.shape == (len(X), 2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert (p[y == 1, 1] > 0.5).mean() > 0.95


@pytest.mark.parametrize("name", CLASSIFIERS, ids=CLASSIFIERS)
def test_every_classifier_learns_multiclass(name):
    X, y = _blobs(k=3)
    est = build_classifier(name, random_state=0).fit(X, y)
    assert (est.predict(X) == y).mean() > 0.9
    assert classifier_proba(est, X).shape == (len(X), 3)


def test_ridge_proba_is_sigmoid_of_decision():
    X, y = _blobs()
    est = build_classifier("ridge").fit(X, y)
    d = est.decision_function(X[:5])
    np.testing.assert_allclose(est.predict_proba(X[:5])[:, 1], 1 / (1 + np.exp(-d)))


def test_lda_when_fewer_samples_than_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 200))
    X[:5, :3] += 4
    y = np.array([1] * 5 + [0] * 5)
    est = build_classifier("lda").fit(X, y)
    assert (est.predict(X) == y).all()


def test_mass_mean_direction_is_centroid_difference():
    X, y = _blobs(d=3)
    est = MassMeanClassifier().fit(X, y)
    np.testing.assert_allclose(est.coef_[0], X[y == 1].mean(0) - X[y == 0].mean(0))


def test_random_state_and_kwargs_propagate():
    est = build_classifier("logistic_regression", random_state=7, classifier_kwargs={"C": 0.01})
    assert est.random_state == 7 and est.C == 0.01
    custom = build_classifier(LogisticRegression(), random_state=3)
    assert custom.random_state == 3
    assert build_classifier("sgd", random_state=5).random_state == 5


def test_unknown_classifier_lists_valid():
    with pytest.raises(ValueError, match="'logistic_regression', 'ridge', 'svm'"):
        build_classifier("xgboost")
    with pytest.raises(TypeError, match="sklearn-style estimator"):
        build_classifier(object())


def test_regression_defaults_to_ridge():
    from sklearn.linear_model import Ridge

    assert isinstance(build_classifier("logistic_regression", task="regression"), Ridge)
    with pytest.raises(ValueError, match="not available for task='regression'"):
        build_classifier("mass_mean", task="regression")
