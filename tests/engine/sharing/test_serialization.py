"""Saving and loading probes: the safe format (directory and single file) and pickle."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from lmtest_helpers import BUNDLED
from lmtest_helpers import DOG_NEG as NEG
from lmtest_helpers import DOG_POS as POS
from lmtest_helpers import DOG_TEST as TEST
from safetensors.numpy import load_file, save_file

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.probes.probe import NotFittedError
from lmprobe_jupyter.engine.sharing import pickles, probe_format, safe_files
from lmprobe_jupyter.engine.sharing.pickles import UntrustedPickleError
from lmprobe_jupyter.engine.sharing.probe_format import (
    FORMAT_VERSION,
    ProbeFormatError,
    UnsafeFormatError,
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
        loaded = Probe.load(path, trust_classifier=fmt.endswith(".pkl"))
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
        d["arrays_sha256"] = probe_format.arrays_digest(arrays)

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


def centre_pool(h):
    """A named module-level pooling: pickle can store it by reference."""
    return h.mean(0)


def test_callable_pooling_needs_pickle(tiny_model_path, tmp_path):
    p = Probe(model=tiny_model_path, layers=2, pooling=centre_pool, random_state=0).fit(POS, NEG)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        UnsafeFormatError, match=r"pooling is a callable \('centre_pool'\).*'\.pkl' path"
    ):
        p.save(out / "p")
    assert list(out.iterdir()) == []  # nothing written, no temp folder left behind
    p.save(out / "p.pkl")
    loaded = Probe.load(out / "p.pkl", trust_classifier=True)
    assert np.array_equal(loaded.predict_proba(TEST), p.predict_proba(TEST))


def _local_pool():
    def centre(h):
        return h.mean(0)

    return centre


@pytest.mark.parametrize(
    "pool, kind",
    [(lambda h: h.mean(0), "a lambda"), (_local_pool(), "a function defined inside")],
    ids=["lambda", "local-function"],
)
def test_unpicklable_pooling_says_so(tiny_model_path, tmp_path, pool, kind):
    p = Probe(model=tiny_model_path, layers=2, pooling=pool, random_state=0).fit(POS, NEG)
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    # The safe format must not suggest '.pkl' as the fix: pickle cannot store it either.
    with pytest.raises(UnsafeFormatError, match=rf"{kind}.*pickle cannot store it either"):
        p.save(tmp_path / "p")
    with pytest.raises(
        pickles.UnpicklableProbeError,
        match=rf"pooling is {kind}.*pickle cannot store.*named function at module level",
    ):
        p.save(tmp_path / "p.pkl")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_classifier_needs_pickle(tiny_model_path, tmp_path):
    from sklearn.naive_bayes import GaussianNB

    p = Probe(model=tiny_model_path, layers=2, classifier=GaussianNB()).fit(POS, NEG)
    with pytest.raises(UnsafeFormatError, match=r"GaussianNB.*save to a '\.pkl' path"):
        p.save(tmp_path / "p")
    p.save(tmp_path / "p.pkl")
    with pytest.raises(UntrustedPickleError, match="never unpickles without trust_classifier"):
        Probe.load(tmp_path / "p.pkl")  # even a pickle you wrote: its path proves nothing
    loaded = Probe.load(tmp_path / "p.pkl", trust_classifier=True)
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

    monkeypatch.setattr(safe_files, "_write_arrays", crash)
    with pytest.raises(OSError, match="disk full"):
        first.save(tmp_path / "p")
    assert Probe.load(tmp_path / "p").layers_ == [2]  # the earlier save is intact
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]  # no temp folders left
    assert sorted(x.name for x in (tmp_path / "p").iterdir()) == [
        "arrays.safetensors",
        "probe.json",
    ]


USER_FILES = {"README.md": "# my probe", "eval.csv": "acc\n0.9\n", ".git/HEAD": "ref: main\n"}


def _add_user_files(folder):
    for name, text in USER_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _user_files(folder):
    return {n: (folder / n).read_text() for n in USER_FILES if (folder / n).exists()}


def test_save_over_probe_keeps_other_files(tiny_fitted, tmp_path):
    folder = tmp_path / "p"
    tiny_fitted(layers=[1, 3]).save(folder)
    _add_user_files(folder)
    tiny_fitted(layers=[2]).save(folder)
    assert Probe.load(folder).layers_ == [2]
    assert _user_files(folder) == USER_FILES  # README, results and .git survive
    assert sorted(x.name for x in folder.iterdir()) == sorted(
        [".git", "README.md", "eval.csv", "arrays.safetensors", "probe.json"]
    )


@pytest.mark.parametrize("fail_at", [1, 2, 3], ids=["pending", "arrays-rename", "json-rename"])
def test_save_over_probe_interrupted(tiny_fitted, tmp_path, monkeypatch, fail_at):
    """A save killed at each rename leaves the old probe or the new one, never a broken one."""
    folder = tmp_path / "p"
    tiny_fitted(layers=[1, 3]).save(folder)
    _add_user_files(folder)
    new = tiny_fitted(layers=[2])
    real = safe_files.os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(safe_files.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        new.save(folder)
    monkeypatch.setattr(safe_files.os, "replace", real)
    # Killed after the arrays were renamed (json-rename), the pending JSON completes it.
    assert Probe.load(folder).layers_ == ([2] if fail_at == 3 else [1, 3])
    assert np.array_equal(
        Probe.load(folder).predict_proba(TEST),
        (new if fail_at == 3 else tiny_fitted(layers=[1, 3])).predict_proba(TEST),
    )
    assert _user_files(folder) == USER_FILES
    tiny_fitted(layers=[3]).save(folder)  # the next save finishes and tidies up
    assert Probe.load(folder).layers_ == [3]
    assert sorted(x.name for x in folder.iterdir() if x.name not in {".git", "README.md"}) == [
        "arrays.safetensors",
        "eval.csv",
        "probe.json",
    ]


def test_save_errors(tiny_model_path, tiny_fitted, tmp_path):
    with pytest.raises(NotFittedError):
        Probe(model=tiny_model_path).save(tmp_path / "p")
    occupied = tmp_path / "occupied"
    _add_user_files(occupied)
    with pytest.raises(
        FileExistsError,
        match=r"not a saved probe \(it holds \.git, README.*"
        r"overwrite=True.*other files are left alone",
    ):
        tiny_fitted().save(occupied)
    assert sorted(x.name for x in occupied.iterdir()) == [".git", "README.md", "eval.csv"]
    tiny_fitted().save(occupied, overwrite=True)  # adds the probe, deletes nothing
    assert Probe.load(occupied).layers_ == [1, 3]
    assert _user_files(occupied) == USER_FILES

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "probe.json").write_text('{"someone": "else"}')
    with pytest.raises(FileExistsError, match="probe.json that is not a saved lmprobe"):
        tiny_fitted().save(foreign)
    assert (foreign / "probe.json").read_text() == '{"someone": "else"}'

    (tmp_path / "dir.pkl").mkdir()
    with pytest.raises(IsADirectoryError, match=r"is a directory, but a '\.pkl' probe is one"):
        tiny_fitted().save(tmp_path / "dir.pkl")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        tiny_fitted().save(tmp_path / "dir.safetensors")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match=r"is a file.*'\.safetensors'"):
        tiny_fitted().save(tmp_path / "afile")
    weights = tmp_path / "model.safetensors"
    save_file({"w": np.ones(3)}, str(weights))
    with pytest.raises(FileExistsError, match="not a saved probe .*model weights.*overwrite"):
        tiny_fitted().save(weights)
    assert np.array_equal(load_file(str(weights))["w"], np.ones(3))


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


# ---------------------------------------------------------------------------- hostile files
class _WritesMarker:
    """Unpickling this writes a marker file: stands in for any payload in a pickle."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _hostile_folder(folder, marker, *, with_hash: bool = True):
    """A probe folder whose probe.json names a pickle that writes ``marker`` when loaded."""
    import hashlib

    folder.mkdir(parents=True)
    payload = pickle.dumps(_WritesMarker(marker))
    (folder / "probe.pkl").write_bytes(payload)
    data = {"format": probe_format.FORMAT, "format_version": FORMAT_VERSION}
    data["weights"] = "probe.pkl"
    if with_hash:
        data["pickle_sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / "probe.json").write_text(json.dumps(data))
    return folder


def test_probe_json_naming_a_pickle_never_runs_it_without_trust(tmp_path):
    marker = tmp_path / "marker"
    folder = _hostile_folder(tmp_path / "evil", marker)
    with pytest.raises(UntrustedPickleError, match="never unpickles without trust_classifier"):
        Probe.load(folder)
    with pytest.raises(UntrustedPickleError, match="trust_classifier=True"):
        Probe.load(folder / "probe.json")
    with pytest.raises(UntrustedPickleError, match="trust_classifier=True"):
        Probe.load(folder / "probe.pkl")
    assert not marker.exists()
    # A JSON naming a pickle without the hash a pushed manifest records: refused outright.
    bare = _hostile_folder(tmp_path / "bare", marker, with_hash=False)
    for trust in (False, True):
        with pytest.raises(ProbeFormatError, match="names a pickle .* without its SHA-256"):
            Probe.load(bare, trust_classifier=trust)
    assert not marker.exists()
    # The flag is the only gate: with it, the payload runs (then the type check refuses it).
    with pytest.raises(ProbeFormatError, match="holds a NoneType, not a Probe"):
        Probe.load(folder, trust_classifier=True)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("weights", ["../probe.pkl", "x.npy", None, 7], ids=str)
def test_safe_folder_accepts_only_its_arrays_file(tiny_fitted, tmp_path, weights, no_pickle):
    tiny_fitted().save(tmp_path / "p")
    _edit_json(tmp_path / "p", lambda d: d.update(weights=weights))
    with pytest.raises(ProbeFormatError, match="always stores them in 'arrays.safetensors'"):
        Probe.load(tmp_path / "p")


def test_pickle_in_or_copied_out_of_hub_cache_needs_trust(tiny_fitted, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    hub_cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    cached = hub_cache / "models--x--y" / "snapshots" / "abc" / "probe.pkl"
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "marker"
    cached.write_bytes(pickle.dumps(_WritesMarker(marker)))
    copied = tmp_path / "mine" / "probe.pkl"
    copied.parent.mkdir()
    shutil.copy(cached, copied)
    for path in (cached, copied):
        with pytest.raises(UntrustedPickleError, match="runs arbitrary code"):
            Probe.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("version", [0, -7, 1.0, "1", True], ids=repr)
def test_unknown_format_versions_refused(tiny_fitted, tmp_path, version):
    tiny_fitted().save(tmp_path / "p")
    _edit_json(tmp_path / "p", lambda d: d.update(format_version=version))
    with pytest.raises(ProbeFormatError, match="format_version"):
        Probe.load(tmp_path / "p")


def _nest(depth):
    v = 0
    for _ in range(depth):
        v = {"x": v}
    return v


BAD_JSON = [
    ("binary", b"\xff\xfe\x00garbage"),
    ("truncated", b'{"format": "lmprobe-jupyter.probe", "form'),
    ("deep-brackets", b"[" * 200_000 + b"]" * 200_000),
    ("deep-objects", b'{"x":' * 5000 + b"0" + b"}" * 5000),
    ("top-level-list", b"[1, 2, 3]"),
]


@pytest.mark.parametrize("raw", [r for _, r in BAD_JSON], ids=[n for n, _ in BAD_JSON])
def test_garbage_probe_json_is_a_format_error(tmp_path, raw):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "probe.json").write_bytes(raw)
    with pytest.raises(ProbeFormatError, match=r"not valid JSON|not UTF-8|nests|not an lmprobe"):
        Probe.load(tmp_path / "p")


def _deepen(d):
    d["card"] = {"description": _nest(100)}


def _strarray(dtype, strings=("a", "b"), shape=None):
    def edit(d):
        d["state"]["classes_"] = {
            "__strarray__": list(strings),
            "dtype": dtype,
            "shape": [len(strings)] if shape is None else shape,
        }

    return edit


BAD_STRUCTURE = [
    ("params-list", lambda d: d.update(params=[1]), "params .* must be a JSON object"),
    ("state-string", lambda d: d.update(state="x"), "state .* must be a JSON object"),
    ("manifest-list", lambda d: d.update(arrays=[]), "no valid array manifest"),
    ("deep-card", _deepen, "nests deeper than 64"),
    ("property-attr", lambda d: d["state"].update(train_pooling_="mean"), "not learned attr"),
    ("np-dtype", lambda d: d["state"].update(x_={"__np__": "nonsense", "value": 1}), "dtype"),
    ("huge-width", _strarray("<U200000000"), r"'<U200000000' \(1,600,000,000 bytes\)"),
    ("shape-lie", _strarray("<U1", shape=[3, 1000]), "holds 2 strings"),
    ("bad-items", lambda d: d["state"].update(x_={"__items__": [[1]]}), r"\[key, value\]"),
    ("bad-steps", lambda d: d["state"]["pipeline_"].update(steps="x"), "must be a list"),
]


@pytest.mark.parametrize(
    "edit, match", [(e, m) for _, e, m in BAD_STRUCTURE], ids=[n for n, _, _ in BAD_STRUCTURE]
)
def test_malformed_probe_json_is_a_format_error(tiny_fitted, tmp_path, edit, match):
    import tracemalloc

    tiny_fitted(classifier="ridge").save(tmp_path / "p")
    _edit_json(tmp_path / "p", edit)
    tracemalloc.start()
    try:
        with pytest.raises(ProbeFormatError, match=match):
            Probe.load(tmp_path / "p")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # what the file asked for was refused before allocating it


def test_string_classes_with_wider_dtype_still_round_trip(tiny_model_path, tmp_path):
    p = Probe(model=tiny_model_path, layers=2, classifier="ridge", random_state=0)
    p.fit(POS + NEG, labels=["dog"] * 6 + ["cat"] * 6)
    p.classes_ = p.classes_.astype("<U5")  # wider than its longest string: still allowed
    p.save(tmp_path / "p")
    assert Probe.load(tmp_path / "p").classes_.dtype == np.dtype("<U5")


def test_arrays_header_checked_before_reading(tiny_fitted, tmp_path):
    import tracemalloc

    tiny_fitted().save(tmp_path / "p")
    arrays = load_file(str(tmp_path / "p" / "arrays.safetensors"))
    arrays["pipeline_.classifier.coef_"] = np.zeros((1, 2_000_000))  # 16 MB not in the manifest
    save_file(arrays, str(tmp_path / "p" / "arrays.safetensors"))
    del arrays
    tracemalloc.start()
    try:
        with pytest.raises(ProbeFormatError, match=r"coef_.* is float64\[1, 2000000\] but"):
            Probe.load(tmp_path / "p")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # refused from the header: the 16 MB were never read


def test_load_refuses_overriding_fitted_structure(tiny_fitted, tmp_path):
    tiny_fitted(layers=[1, 3]).save(tmp_path / "p")
    with pytest.raises(
        ValueError, match=r"layers=3 cannot be changed when loading.*layers_=\[1, 3\].*fit a new"
    ):
        Probe.load(tmp_path / "p", layers=3)
    for k, v in [("pooling", "mean"), ("classifier", "svm"), ("preprocessing", "pca")]:
        with pytest.raises(ValueError, match=rf"{k}=.* cannot be changed when loading"):
            Probe.load(tmp_path / "p", **{k: v})
    same = Probe.load(tmp_path / "p", layers=[1, 3], inference_pooling="max", batch_size=2)
    assert same.layers_ == [1, 3] and same.inference_pooling_ == "max" and same.batch_size == 2
