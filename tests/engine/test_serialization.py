"""Saving and loading probes: the safe format (directory and single file) and pickle."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from engine.test_hub import BUNDLED, NEG, POS, TEST, bundled_acts, warm  # noqa: F401
from safetensors.numpy import load_file, save_file

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine import serialization
from lmprobe_jupyter.engine.extraction import Extractor
from lmprobe_jupyter.engine.probe import NotFittedError
from lmprobe_jupyter.engine.serialization import (
    FORMAT_VERSION,
    ProbeFormatError,
    UnsafeFormatError,
    UntrustedPickleError,
)

FORMATS = ["dir", "file.safetensors", "probe.pkl"]


@pytest.fixture
def bundled_probe(warm):  # noqa: F811 - the fixture imported above
    """Probes on real SmolLM2 activations (served from the warmed cache)."""

    def make(**kw):
        kw.setdefault("layers", [2, 4])
        kw.setdefault("random_state", 0)
        return Probe(model=BUNDLED, device="cpu", progress=False, **kw)

    return make


@pytest.fixture
def no_pickle(monkeypatch):
    """Make any use of pickle fail loudly."""

    def boom(*a, **k):
        raise AssertionError("the safe format must never unpickle")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)


CASES = [
    ("logistic_regression", {}),
    ("logistic_regression", {"preprocessing": "standard+pca", "pca_components": 4}),
    ("ridge", {"normalize_layers": "per_layer"}),
    ("svm", {"layers": 3}),
    ("lda", {"layers": 3}),
    ("mass_mean", {"preprocessing": "pca", "pca_components": 3}),
    ("sgd", {"preprocessing": "standard"}),
]


@pytest.mark.parametrize(
    "classifier, kw", CASES, ids=[f"{c}-{'-'.join(k) or 'plain'}" for c, k in CASES]
)
def test_round_trip_preserves_predictions(bundled_probe, tmp_path, classifier, kw):
    probe = bundled_probe(classifier=classifier, **kw).fit(POS, NEG)
    expected = probe.predict_proba(TEST + POS)
    expected_pred = probe.predict(TEST + POS)
    calls = Extractor.forward_calls
    for fmt in FORMATS:
        path = tmp_path / fmt
        probe.save(path)
        loaded = Probe.load(path)
        assert np.array_equal(loaded.predict_proba(TEST + POS), expected), fmt
        assert np.array_equal(loaded.predict(TEST + POS), expected_pred), fmt
        assert loaded.layers_ == probe.layers_
        assert type(loaded.classifier_) is type(probe.classifier_)
        assert loaded.get_params() == probe.get_params()
    assert Extractor.forward_calls == calls  # every prediction came from the cache


def test_round_trip_regression_and_string_labels(bundled_probe, tmp_path):
    y = np.linspace(0.0, 1.0, 12)
    reg = bundled_probe(task="regression", layers=3).fit(POS + NEG, y)
    expected = reg.predict(TEST)
    reg.save(tmp_path / "reg")
    assert np.array_equal(Probe.load(tmp_path / "reg").predict(TEST), expected)

    named = bundled_probe(classifier="ridge").fit(POS + NEG, labels=["dog"] * 6 + ["cat"] * 6)
    named.save(tmp_path / "named.safetensors")
    loaded = Probe.load(tmp_path / "named.safetensors")
    assert loaded.classes_.dtype == named.classes_.dtype
    assert np.array_equal(loaded.predict(POS + TEST), named.predict(POS + TEST))
    assert set(loaded.predict(POS + TEST)) <= {"dog", "cat"}


def test_probe_json_contents(bundled_probe, tmp_path, smollm):
    probe = bundled_probe(preprocessing="standard").fit(POS, NEG)
    probe.threshold_ = 0.73
    probe.metrics_ = {"accuracy": 0.9, "auroc": float("nan")}
    probe.save(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "arrays.safetensors",
        "probe.json",
    ]
    data = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert data["format"] == "lmprobe-jupyter.probe"
    assert data["format_version"] == FORMAT_VERSION
    assert data["library"]["lmprobe_jupyter"] == "0.1.0"
    s = data["summary"]
    assert s["model"] == BUNDLED and s["model_fingerprint"] == smollm.fingerprint
    assert s["layers"] == [2, 4] and s["candidate_layers"] == [2, 4]
    assert s["pooling"] == {"train": "last_token", "inference": "last_token"}
    assert s["task"] == "classification" and s["classes"] == [0, 1]
    assert s["threshold"] == 0.73
    assert s["metrics"] == {"accuracy": 0.9, "auroc": None}
    assert s["classifier"]["type"] == "LogisticRegression"
    assert s["classifier"]["params"]["max_iter"] == 2000
    assert s["steps"] == [
        {"name": "normalize", "type": "LayerNormalizer"},
        {"name": "standard", "type": "StandardScaler"},
    ]
    assert data["params"]["layers"] == [2, 4] and data["params"]["preprocessing"] == "standard"
    arrays = load_file(str(tmp_path / "p" / "arrays.safetensors"))
    assert set(arrays) == set(data["arrays"])
    assert {
        "pipeline_.normalize.mean_",
        "pipeline_.normalize.scale_",
        "pipeline_.standard.mean_",
        "pipeline_.standard.scale_",
        "pipeline_.classifier.coef_",
        "pipeline_.classifier.intercept_",
        "classes_",
    } <= set(arrays)
    clf = probe.classifier_
    assert np.array_equal(arrays["pipeline_.classifier.coef_"], clf.coef_)
    assert arrays["pipeline_.normalize.mean_"].shape == (2 * 576,)

    loaded = Probe.load(tmp_path / "p")
    assert loaded.threshold_ == 0.73
    assert loaded.metrics_["accuracy"] == 0.9 and np.isnan(loaded.metrics_["auroc"])
    assert loaded.model_fingerprint_ == smollm.fingerprint
    assert not loaded.runtime.is_loaded  # loading a probe loads no model


@pytest.mark.parametrize("fmt", ["dir", "file.safetensors"])
def test_safe_format_never_unpickles(bundled_probe, tmp_path, fmt, request):
    probe = bundled_probe(classifier="svm", layers=3).fit(POS, NEG)
    expected = probe.predict_proba(TEST)
    probe.save(tmp_path / fmt)
    request.getfixturevalue("no_pickle")
    loaded = Probe.load(tmp_path / fmt)
    assert np.array_equal(loaded.predict_proba(TEST), expected)


# ---------------------------------------------------------------------------- logic (tiny model)
@pytest.fixture
def tiny_fitted(tiny_model_path):
    def make(**kw):
        kw.setdefault("layers", [1, 3])
        return Probe(model=tiny_model_path, device="cpu", random_state=0, **kw).fit(POS, NEG)

    return make


def _edit_json(folder, fn):
    path = folder / "probe.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_newer_format_version_refused(tiny_fitted, tmp_path):
    tiny_fitted().save(tmp_path / "p")
    _edit_json(tmp_path / "p", lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(
        ProbeFormatError,
        match=rf"format version {FORMAT_VERSION + 1} .* reads format version {FORMAT_VERSION} "
        "at most; upgrade",
    ):
        Probe.load(tmp_path / "p")


def test_tampered_arrays_refused(tiny_fitted, tmp_path):
    tiny_fitted().save(tmp_path / "p")
    arrays_path = tmp_path / "p" / "arrays.safetensors"
    arrays = load_file(str(arrays_path))
    arrays["pipeline_.classifier.coef_"] = arrays["pipeline_.classifier.coef_"] * -1.0
    save_file(arrays, str(arrays_path))
    with pytest.raises(ProbeFormatError, match="SHA-256 .* does not match .* modified"):
        Probe.load(tmp_path / "p")


def test_inconsistent_shapes_refused(tiny_fitted, tmp_path):
    tiny_fitted().save(tmp_path / "p")
    arrays_path = tmp_path / "p" / "arrays.safetensors"
    arrays = load_file(str(arrays_path))
    arrays["pipeline_.classifier.coef_"] = arrays["pipeline_.classifier.coef_"][:, :10].copy()
    save_file(arrays, str(arrays_path))
    with pytest.raises(ProbeFormatError, match=r"coef_.* is float64\[1, 10\] but .* records"):
        Probe.load(tmp_path / "p")

    # Manifest and hash rewritten consistently, but the arrays no longer fit together.
    def forge(d):
        d["arrays"]["pipeline_.classifier.coef_"]["shape"] = [1, 10]
        d["arrays_sha256"] = serialization.arrays_digest(arrays)

    _edit_json(tmp_path / "p", forge)
    with pytest.raises(ProbeFormatError, match="inconsistent with each other"):
        Probe.load(tmp_path / "p")


def test_missing_array_and_unknown_class_refused(tiny_fitted, tmp_path):
    tiny_fitted().save(tmp_path / "p")
    arrays_path = tmp_path / "p" / "arrays.safetensors"
    arrays = load_file(str(arrays_path))
    del arrays["classes_"]
    save_file(arrays, str(arrays_path))
    with pytest.raises(ProbeFormatError, match=r"missing: \['classes_'\]"):
        Probe.load(tmp_path / "p")

    tiny_fitted().save(tmp_path / "q")

    def swap(d):
        d["state"]["pipeline_"]["steps"][-1][1]["__estimator__"] = "os.system"

    _edit_json(tmp_path / "q", swap)
    with pytest.raises(ProbeFormatError, match="'os.system', which is not in the safe-format"):
        Probe.load(tmp_path / "q")


def test_tampered_single_file_refused(tiny_fitted, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save

    path = tmp_path / "p.safetensors"
    tiny_fitted().save(path)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    arrays = load_file(str(path))
    arrays["pipeline_.classifier.intercept_"] = arrays["pipeline_.classifier.intercept_"] + 1
    path.write_bytes(save(arrays, metadata=meta))
    with pytest.raises(ProbeFormatError, match="modified after saving"):
        Probe.load(path)
    save_file(arrays, str(path))  # no lmprobe metadata at all
    with pytest.raises(ProbeFormatError, match="without lmprobe metadata"):
        Probe.load(path)


def test_callable_pooling_needs_pickle(tiny_model_path, tmp_path):
    def centre(h):
        return h.mean(0)

    p = Probe(model=tiny_model_path, layers=2, pooling=centre, random_state=0).fit(POS, NEG)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeFormatError, match=r"pooling is a callable \('centre'\).*'\.pkl'"):
        p.save(out / "p")
    assert list(out.iterdir()) == []  # nothing written, no temp folder left behind


def test_unsupported_classifier_needs_pickle(tiny_model_path, tmp_path):
    from sklearn.naive_bayes import GaussianNB

    p = Probe(model=tiny_model_path, layers=2, classifier=GaussianNB()).fit(POS, NEG)
    with pytest.raises(UnsafeFormatError, match=r"GaussianNB.*save to a '\.pkl' path"):
        p.save(tmp_path / "p")
    p.save(tmp_path / "p.pkl")
    loaded = Probe.load(tmp_path / "p.pkl")  # a local pickle you wrote needs no trust flag
    assert np.array_equal(loaded.predict_proba(TEST), p.predict_proba(TEST))


def test_supported_estimator_instance_is_saved_safely(tiny_model_path, tmp_path, no_pickle):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=0.5, class_weight={0: 1.0, 1: 2.0}, max_iter=500)
    p = Probe(model=tiny_model_path, layers=2, classifier=clf).fit(POS, NEG)
    p.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p")
    assert loaded.classifier.get_params() == clf.get_params()  # int dict keys survive JSON
    assert np.array_equal(loaded.predict_proba(TEST), p.predict_proba(TEST))


def test_pickle_from_hub_cache_needs_trust(tiny_fitted, tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub_cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    path = hub_cache / "models--x--y" / "snapshots" / "abc" / "probe.pkl"
    tiny_fitted().save(path)
    with pytest.raises(UntrustedPickleError, match="runs arbitrary code"):
        Probe.load(path)
    assert Probe.load(path, trust_classifier=True).layers_ == [1, 3]


def test_overwrite_is_atomic(tiny_fitted, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    first = tiny_fitted(layers=[1, 3])
    first.save(tmp_path / "p")
    second = tiny_fitted(layers=[2])
    second.save(tmp_path / "p")
    assert Probe.load(tmp_path / "p").layers_ == [2]

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(serialization, "write_safe_dir", crash)
    with pytest.raises(OSError, match="disk full"):
        first.save(tmp_path / "p")
    assert Probe.load(tmp_path / "p").layers_ == [2]  # the earlier save is intact
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]  # no temp folders left


def test_save_errors(tiny_model_path, tiny_fitted, tmp_path):
    with pytest.raises(NotFittedError):
        Probe(model=tiny_model_path).save(tmp_path / "p")
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a saved probe"):
        tiny_fitted().save(tmp_path / "occupied")
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "mine"


def test_load_errors_and_overrides(tiny_fitted, tmp_path):
    tiny_fitted().save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p", device="cpu", batch_size=2)
    assert loaded.device == "cpu" and loaded.batch_size == 2
    assert Probe.load(tmp_path / "p" / "probe.json").layers_ == [1, 3]
    with pytest.raises(ValueError, match="'colour' is not a Probe parameter"):
        Probe.load(tmp_path / "p", colour="red")
    with pytest.raises(FileNotFoundError, match="no saved probe"):
        Probe.load(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ProbeFormatError, match="not a saved probe"):
        Probe.load(tmp_path / "x.txt")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "probe.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ProbeFormatError, match="not an lmprobe-jupyter probe"):
        Probe.load(tmp_path / "bad")


def test_from_activations_probe_round_trip(tmp_path, no_pickle):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3, 8))
    y = (X[:, 1, 0] > 0).astype(int)
    p = Probe(classifier="mass_mean", random_state=0).fit_from_activations(X, y)
    p.save(tmp_path / "acts.safetensors")
    loaded = Probe.load(tmp_path / "acts.safetensors")
    assert np.array_equal(
        loaded.predict_proba_from_activations(X), p.predict_proba_from_activations(X)
    )
