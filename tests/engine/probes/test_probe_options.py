"""Probe options from lmprobe 0.10: mass_mean_augment, sample_weight, per-call batch_size and
max_retries, compute_backend; and that they stay in the sklearn parameter contract."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest
from lmtest_helpers import NEG, POS
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from lmprobe_jupyter import Extractor, Probe, load_model

TEXTS = ["alpha omega beta", "omega omega alpha gamma delta", "beta"]


@pytest.fixture
def feats(tiny_model_path):
    """Layer-2 last-token activations of POS + NEG, straight from the extractor."""
    ext = Extractor(load_model(tiny_model_path, device="cpu"), use_cache=False)
    return ext.pooled(POS + NEG, [2], "last_token")[2].astype(np.float64)


# ---------------------------------------------------------------------------- mass_mean_augment
def test_mass_mean_augment_adds_exactly_the_projection(tiny_probe, feats):
    p = tiny_probe(mass_mean_augment=True, preprocessing="standard").fit(POS, NEG)
    y = np.array([1] * 5 + [0] * 5)
    Z = p.pipeline_.named_steps["standard"].transform(feats)  # after preprocessing
    w = Z[y == 1].mean(0) - Z[y == 0].mean(0)
    w /= np.linalg.norm(w)
    augmented = p.pipeline_[:-1].transform(feats)
    assert augmented.shape == (10, feats.shape[1] + 1)
    np.testing.assert_allclose(augmented[:, :-1], Z, atol=1e-10)
    np.testing.assert_allclose(augmented[:, -1], Z @ w, atol=1e-8)
    clf = p.classifier_
    assert clf.n_features_in_ == feats.shape[1] + 1 and clf.coef_.shape == (1, feats.shape[1] + 1)
    plain = tiny_probe(preprocessing="standard").fit(POS, NEG)
    assert plain.classifier_.n_features_in_ == feats.shape[1]


def test_mass_mean_augment_from_activations(tiny_probe, feats, tmp_path):
    y = np.array([1] * 5 + [0] * 5)
    p = tiny_probe(mass_mean_augment=True).fit_from_activations(feats, y)
    w = feats[y == 1].mean(0) - feats[y == 0].mean(0)
    X = np.column_stack([feats, feats @ (w / np.linalg.norm(w))])
    ref = LogisticRegression(max_iter=2000, random_state=0).fit(X, y)
    np.testing.assert_allclose(p.predict_proba_from_activations(feats), ref.predict_proba(X))
    p.save(tmp_path / "aug")
    q = Probe.load(tmp_path / "aug")
    np.testing.assert_allclose(q.predict_proba_from_activations(feats), ref.predict_proba(X))


def test_mass_mean_augment_needs_classification(tiny_probe):
    with pytest.raises(ValueError, match="not defined for task='regression'"):
        tiny_probe(mass_mean_augment=True, task="regression").fit(POS, [0.0] * 5)
    with pytest.raises(ValueError, match="mass_mean_augment='yes' must be True or False"):
        tiny_probe(mass_mean_augment="yes").fit(POS, NEG)


def test_mass_mean_augment_layer_importance_folds_the_extra_feature(tiny_probe):
    p = tiny_probe(layers=[1, 3], mass_mean_augment=True).fit(POS, NEG)
    imp = p.compute_layer_importance()
    aug = p.pipeline_.named_steps["mass_mean_augment"]
    folded = aug.fold_coef(p.classifier_.coef_)[0]
    want = np.array([np.linalg.norm(b) for b in np.split(folded, 2)])
    np.testing.assert_allclose(imp, want / want.sum())


# ---------------------------------------------------------------------------- sample_weight
def test_sample_weight_reaches_the_classifier(tiny_probe, feats):
    w = np.array([1.0, 2.0, 0.5, 3.0, 1.0, 1.0, 0.2, 4.0, 1.0, 2.0])
    p = tiny_probe().fit(POS, NEG, sample_weight=w)
    y = np.array([1] * 5 + [0] * 5)
    ref = LogisticRegression(max_iter=2000, random_state=0).fit(feats, y, sample_weight=w)
    np.testing.assert_allclose(p.classifier_.coef_, ref.coef_, rtol=1e-4, atol=1e-6)


def test_zero_weight_equals_leaving_the_prompt_out(tiny_probe):
    w = np.array([1.0] * 4 + [0.0] + [1.0] * 4 + [0.0])
    weighted = tiny_probe().fit(POS, NEG, sample_weight=w)
    subset = tiny_probe().fit(POS[:4], NEG[:4])
    np.testing.assert_allclose(
        weighted.predict_proba(TEXTS), subset.predict_proba(TEXTS), atol=1e-4
    )


def test_sample_weight_per_token_training(tiny_probe):
    w = np.array([1.0] * 4 + [0.0] + [1.0] * 4 + [0.0])
    # unscaled: the scaler of preprocessing="auto" ("standard" for every-token training)
    # sees every token, weighted or not (as sklearn's Pipeline does), so only the
    # classifier's own weighting is compared here
    opts = dict(train_pooling="all", preprocessing=None)
    weighted = tiny_probe(**opts).fit(POS, NEG, sample_weight=w)
    subset = tiny_probe(**opts).fit(POS[:4], NEG[:4])
    np.testing.assert_allclose(
        weighted.predict_proba(TEXTS), subset.predict_proba(TEXTS), atol=1e-4
    )


def test_sample_weight_errors(tiny_probe):
    with pytest.raises(TypeError, match="MassMeanClassifier.fit does not accept sample_weight"):
        tiny_probe(classifier="mass_mean").fit(POS, NEG, sample_weight=np.ones(10))
    with pytest.raises(ValueError, match=r"shape \(3,\); it needs one weight per training prompt"):
        tiny_probe().fit(POS, NEG, sample_weight=[1, 2, 3])


def test_ensemble_passes_sample_weight_to_members(tiny_probe):
    from lmprobe_jupyter import ProbeEnsemble

    w = np.array([1.0] * 4 + [0.0] + [1.0] * 4 + [0.0])
    ens = ProbeEnsemble([tiny_probe(), tiny_probe(classifier="ensemble")])
    ens.fit(POS, NEG, sample_weight=w)
    subset = ProbeEnsemble([tiny_probe(), tiny_probe(classifier="ensemble")]).fit(POS[:4], NEG[:4])
    np.testing.assert_allclose(ens.predict_proba(TEXTS), subset.predict_proba(TEXTS), atol=1e-4)


# ---------------------------------------------------------------------------- per-call options
def test_per_call_batch_size(tiny_probe):
    p = tiny_probe(batch_size=8)
    before = Extractor.forward_calls
    p.fit(POS, NEG, batch_size=2)
    assert Extractor.forward_calls - before == 5
    before = Extractor.forward_calls
    p.predict(TEXTS, batch_size=1)
    assert Extractor.forward_calls - before == 3
    before = Extractor.forward_calls
    p.warmup(["new one", "new two", "new three"], batch_size=1)
    assert Extractor.forward_calls - before == 3
    before = Extractor.forward_calls
    p.warmup(["more one", "more two"], 1)  # positional batch_size counts too
    assert Extractor.forward_calls - before == 2
    assert p.batch_size == 8  # the parameter is left as it was
    with pytest.raises(ValueError, match="batch_size=0 must be a positive int"):
        p.predict(TEXTS, batch_size=0)


@pytest.mark.parametrize(
    "method", ["fit", "warmup", "predict", "predict_proba", "score", "evaluate"]
)
def test_every_call_takes_max_retries(tiny_probe, method):
    p = tiny_probe(max_retries=2).fit(POS, NEG)
    args = {
        "fit": (POS, NEG),
        "warmup": (TEXTS,),
        "predict": (TEXTS,),
        "predict_proba": (TEXTS,),
        "score": (POS + NEG, [1] * 5 + [0] * 5),
        "evaluate": (POS + NEG, [1] * 5 + [0] * 5),
    }[method]
    getattr(p, method)(*args, max_retries=3)  # local extraction: nothing to retry
    with pytest.raises(ValueError, match="max_retries=-1 must be None or an int >= 0"):
        getattr(p, method)(*args, max_retries=-1)


def test_max_retries_parameter_is_validated(tiny_probe):
    with pytest.raises(ValueError, match="max_retries=1.5 must be None or an int >= 0"):
        tiny_probe(max_retries=1.5).fit(POS, NEG)


# ---------------------------------------------------------------------------- compute_backend
def test_compute_backend_errors(tiny_probe, monkeypatch):
    with pytest.raises(ValueError, match="compute_backend='gpu' is not one of 'sklearn', 'cuml'"):
        tiny_probe(compute_backend="gpu").fit(POS, NEG)
    monkeypatch.setitem(sys.modules, "cuml", None)  # as if not installed
    with pytest.raises(ImportError, match="needs RAPIDS cuML"):
        tiny_probe(compute_backend="cuml").fit(POS, NEG)


@pytest.fixture
def fake_cuml(monkeypatch):
    """A stand-in ``cuml`` package (sklearn estimators under cuML's names) and a 'GPU'."""
    import torch

    made = []

    class CuLogisticRegression(LogisticRegression):
        def fit(self, X, y, sample_weight=None):
            made.append(type(self).__name__)
            return super().fit(X, y, sample_weight=sample_weight)

    pkg = types.ModuleType("cuml")
    pkg.__spec__ = importlib.machinery.ModuleSpec("cuml", None)
    lm = types.ModuleType("cuml.linear_model")
    lm.__spec__ = importlib.machinery.ModuleSpec("cuml.linear_model", None)
    lm.LogisticRegression = CuLogisticRegression
    pkg.linear_model = lm
    monkeypatch.setitem(sys.modules, "cuml", pkg)
    monkeypatch.setitem(sys.modules, "cuml.linear_model", lm)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return made


def test_compute_backend_cuml_trains_the_cuml_classifier(tiny_probe, fake_cuml):
    p = tiny_probe(compute_backend="cuml").fit(POS, NEG)
    assert fake_cuml == ["CuLogisticRegression"]
    assert type(p.classifier_).__name__ == "CuLogisticRegression"
    ref = tiny_probe().fit(POS, NEG)
    np.testing.assert_allclose(p.predict_proba(TEXTS), ref.predict_proba(TEXTS), atol=1e-8)
    with pytest.raises(
        ValueError, match="'mass_mean' is not available with compute_backend='cuml'"
    ):
        tiny_probe(compute_backend="cuml", classifier="mass_mean").fit(POS, NEG)


def test_cuml_without_gpu_is_a_clear_error(tiny_probe, fake_cuml, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device is available here"):
        tiny_probe(compute_backend="cuml").fit(POS, NEG)


# ---------------------------------------------------------------------------- sklearn contract
def test_new_options_round_trip_through_clone():
    p = Probe(layers=3, mass_mean_augment=True, max_retries=4, compute_backend="cuml")
    params = p.get_params()
    assert (params["mass_mean_augment"], params["max_retries"], params["compute_backend"]) == (
        True,
        4,
        "cuml",
    )
    q = clone(p)
    assert q.get_params() == params
    assert q.set_params(max_retries=None).max_retries is None
    assert "mass_mean_augment=True" in repr(p)
