from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from lmprobe_jupyter.engine.probes.classifiers import (
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


def test_logistic_regression_cv_picks_c_by_5_fold_cv():
    from sklearn.linear_model import LogisticRegressionCV

    X, y = _blobs(n=40, d=4)
    est = build_classifier(
        "logistic_regression_cv", random_state=0, classifier_kwargs={"Cs": [0.001, 1.0]}
    ).fit(X, y)
    same = {k: est.get_params()[k] for k in ("scoring", "l1_ratios", "max_iter")}
    ref = LogisticRegressionCV(Cs=[0.001, 1.0], cv=5, random_state=0, **same).fit(X, y)
    assert est.cv == 5 and est.Cs == [0.001, 1.0]
    np.testing.assert_allclose(est.C_, ref.C_)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X))


def test_logistic_regression_cv_shrinks_folds_to_the_smallest_class():
    X, y = _blobs(n=3, d=4)
    est = build_classifier("logistic_regression_cv", random_state=0).fit(X, y)
    assert est.cv == 5  # the parameter is left as given
    scores = est.scores_
    scores = next(iter(scores.values())) if isinstance(scores, dict) else scores
    assert scores.shape[0] == 3  # but 3 folds were run
    with pytest.raises(ValueError, match="at least 2 samples of every class"):
        build_classifier("logistic_regression_cv").fit(X[:4], [0, 1, 1, 1])


def test_ensemble_averages_logistic_regressions_over_c_values():
    X, y = _blobs(d=4)
    cs = [0.01, 1.0, 100.0]
    est = build_classifier("ensemble", random_state=0, classifier_kwargs={"C_values": cs})
    est.fit(X, y)
    members = [LogisticRegression(C=c, max_iter=2000, random_state=0).fit(X, y) for c in cs]
    assert [m.C for m in est.estimators_] == cs
    want = np.mean([m.predict_proba(X) for m in members], axis=0)
    np.testing.assert_allclose(est.predict_proba(X), want, atol=1e-8)
    np.testing.assert_allclose(est.coef_, np.mean([m.coef_ for m in members], axis=0), atol=1e-8)
    np.testing.assert_array_equal(est.predict(X), est.classes_[want.argmax(1)])


def test_ensemble_bad_c_values():
    X, y = _blobs()
    with pytest.raises(ValueError, match=r"C_values=\[0.1, -1\] must be a non-empty list"):
        build_classifier("ensemble", classifier_kwargs={"C_values": [0.1, -1]}).fit(X, y)


def test_ensemble_coef_drives_layer_importance(tiny_model_path):
    from lmprobe_jupyter import Probe

    pos = ["alpha alpha", "alpha beta", "alpha gamma", "beta alpha"]
    neg = ["omega omega", "omega delta", "delta omega", "omega sigma"]
    p = Probe(model=tiny_model_path, layers=[1, 3], classifier="ensemble", device="cpu")
    p.fit(pos, neg)
    imp = p.compute_layer_importance()
    clf = p.classifier_
    blocks = np.split(clf.coef_[0], 2)
    want = np.array([np.linalg.norm(b) for b in blocks])
    np.testing.assert_allclose(imp, want / want.sum(), atol=1e-8)


@pytest.mark.parametrize("name", ["logistic_regression_cv", "ensemble"], ids=["cv", "ensemble"])
def test_new_classifiers_survive_the_safe_format(tmp_path, tiny_model_path, name):
    from lmprobe_jupyter import Probe

    pos = ["alpha alpha", "alpha beta", "alpha gamma", "beta alpha"]
    neg = ["omega omega", "omega delta", "delta omega", "omega sigma"]
    p = Probe(model=tiny_model_path, layers=2, classifier=name, device="cpu", random_state=0)
    p.fit(pos, neg)
    p.save(tmp_path / "probe")
    q = Probe.load(tmp_path / "probe")
    assert type(q.classifier_) is type(p.classifier_)
    np.testing.assert_allclose(q.predict_proba(pos + neg), p.predict_proba(pos + neg))


def test_compute_backend_names_the_valid_ones_and_what_cuml_needs(monkeypatch):
    import importlib.util

    from lmprobe_jupyter.engine.probes.classifiers import check_compute_backend

    check_compute_backend("sklearn")
    with pytest.raises(ValueError, match="compute_backend='gpu' is not one of 'sklearn', 'cuml'"):
        check_compute_backend("gpu")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "cuml" else real(n, *a)
    )
    with pytest.raises(ImportError, match="needs RAPIDS cuML.*use compute_backend='sklearn'"):
        check_compute_backend("cuml")


def test_cuml_without_a_gpu_is_a_clear_error(monkeypatch):
    import importlib.util

    import torch

    from lmprobe_jupyter.engine.probes.classifiers import check_compute_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "cuml" else real(n, *a)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        check_compute_backend("cuml")


def test_check_sample_weight():
    from lmprobe_jupyter.engine.probes.classifiers import check_sample_weight

    est = build_classifier("logistic_regression")
    np.testing.assert_array_equal(check_sample_weight(est, [1, 2], 2), [1.0, 2.0])
    assert check_sample_weight(est, None, 2) is None
    with pytest.raises(ValueError, match=r"shape \(3,\); it needs one weight per training"):
        check_sample_weight(est, [1, 2, 3], 2)
    with pytest.raises(ValueError, match="non-negative"):
        check_sample_weight(est, [1, -2], 2)
    with pytest.raises(TypeError, match="MassMeanClassifier.fit does not accept sample_weight"):
        check_sample_weight(build_classifier("mass_mean"), [1, 2], 2)
