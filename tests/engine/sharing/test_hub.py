"""Hub sharing: push_to_hub / from_hub / ProbeCard against a local folder acting as the hub.

The ``fake_hub`` fixture replaces huggingface_hub's transport (HfApi.create_repo,
upload_folder, create_commit, upload_file, hf_hub_download, snapshot_download): nothing can
reach the network, and the tests check exactly which files and metadata were sent.
The fixture lives in ``tests/conftest.py``; ``FakeHub`` in ``tests/lmtest_helpers.py``.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from lmtest_helpers import BUNDLED
from lmtest_helpers import DOG_NEG as NEG
from lmtest_helpers import DOG_POS as POS
from lmtest_helpers import DOG_TEST as TEST

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.extraction import models
from lmprobe_jupyter.engine.sharing.hub import ProbeCard
from lmprobe_jupyter.engine.sharing.pickles import UntrustedPickleError
from lmprobe_jupyter.engine.sharing.probe_format import ProbeFormatError, UnsafeFormatError


@pytest.fixture
def dog_probe(warm):
    def make(**kw):
        kw.setdefault("layers", [2, 4])
        kw.setdefault("random_state", 0)
        kw.setdefault("dtype", "float32")  # the smollm fixture's weights
        return Probe(model=BUNDLED, device="cpu", progress=False, **kw).fit(POS, NEG)

    return make


# ---------------------------------------------------------------------------- push
def test_push_sends_exact_files_and_card(fake_hub, dog_probe):
    probe = dog_probe()
    metrics = probe.evaluate(POS + NEG, [1] * 6 + [0] * 6)
    url = probe.push_to_hub(
        "alice/dog-vs-cat",
        description="Detects dog-like vs cat-like text",
        class_labels={0: "cat", 1: "dog"},
        tags=["safety", "animals"],
        metrics=metrics,
        private=True,
    )
    assert url == "https://huggingface.co/alice/dog-vs-cat"
    assert fake_hub.repos == {("model", "alice/dog-vs-cat"): {"private": True}}
    assert len(fake_hub.commits) == 1
    assert fake_hub.commits[0]["files"] == ["README.md", "arrays.safetensors", "probe.json"]
    assert fake_hub.files("alice/dog-vs-cat") == ["README.md", "arrays.safetensors", "probe.json"]

    meta, body = fake_hub.card("alice/dog-vs-cat")
    assert meta["base_model"] == BUNDLED
    assert meta["library_name"] == "lmprobe-jupyter"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["tags"] == ["lmprobe-jupyter", "probe", "interpretability", "safety", "animals"]
    assert meta["metrics"] == ["accuracy", "f1", "precision", "recall", "auroc", "n"]
    assert meta["lmprobe"]["layers"] == [2, 4]
    assert meta["lmprobe"]["classifier"] == "LogisticRegression"
    assert meta["lmprobe"]["class_labels"] == {0: "cat", 1: "dog"}
    assert meta["lmprobe"]["metrics"]["accuracy"] == metrics["accuracy"]
    assert "Detects dog-like vs cat-like text" in body
    assert 'Probe.from_hub("alice/dog-vs-cat")' in body
    assert "| Classes | 0 (cat), 1 (dog) |" in body

    data = json.loads(fake_hub.path("alice/dog-vs-cat", "probe.json").read_text())
    assert data["weights"] == "arrays.safetensors"
    assert data["summary"]["model"] == BUNDLED
    assert data["card"]["description"] == "Detects dog-like vs cat-like text"


def test_from_hub_round_trip_preserves_predictions(fake_hub, dog_probe, smollm):
    probe = dog_probe(classifier="ridge", preprocessing="standard")
    expected = probe.predict_proba(TEST)
    probe.push_to_hub("alice/ridge-probe", class_labels={0: "cat", 1: "dog"})
    loads_before = models.LOAD_COUNT
    loaded = Probe.from_hub("alice/ridge-probe", device="cpu")
    assert models.LOAD_COUNT == loads_before  # the memoised bundled model is reused
    assert loaded.runtime.loaded is smollm
    assert loaded.class_labels_ == {0: "cat", 1: "dog"}
    assert loaded.hub_repo_id_ == "alice/ridge-probe"
    assert np.array_equal(loaded.predict_proba(TEST), expected)
    assert {f for _, _, f in fake_hub.downloads} == {"probe.json", "arrays.safetensors"}


def test_from_hub_without_model_load(fake_hub, dog_probe):
    dog_probe().push_to_hub("alice/p")
    loaded = Probe.from_hub("alice/p", load_model=False)
    assert not loaded.runtime.is_loaded
    assert loaded.device == "auto"
    assert loaded.layers_ == [2, 4]


def test_probe_card_reads_only_metadata(fake_hub, dog_probe):
    probe = dog_probe(layers=3)
    probe.threshold_ = 0.8
    probe.push_to_hub(
        "alice/card",
        description="A test probe",
        class_labels={0: "cat", 1: "dog"},
        tags=["animals"],
        metrics={"accuracy": 0.75},
    )
    card = ProbeCard.from_hub("alice/card")
    assert card.base_model == BUNDLED
    assert card.layers == [3]
    assert card.classifier_type == "LogisticRegression"
    assert card.metrics == {"accuracy": 0.75}
    assert card.pooling == "last_token" and card.inference_pooling == "last_token"
    assert card.task == "classification"
    assert card.classes == [0, 1]
    assert card.class_labels == {0: "cat", 1: "dog"}
    assert card.description == "A test probe"
    assert card.tags == ["animals", "lmprobe-jupyter", "probe", "interpretability"]
    assert card.threshold == 0.8
    assert card.format == "safetensors" and not card.trust_required
    assert card.url == "https://huggingface.co/alice/card"
    assert [f for _, _, f in fake_hub.downloads] == ["probe.json", "README.md"]


def test_include_training_data(fake_hub, dog_probe):
    dog_probe().push_to_hub("alice/with-data", include_training_data=True)
    assert "training_data.json" in fake_hub.files("alice/with-data")
    data = json.loads(fake_hub.path("alice/with-data", "training_data.json").read_text())
    assert data == {"prompts": POS + NEG, "labels": [1] * 6 + [0] * 6}
    # A later push without it removes the stale file.
    dog_probe().push_to_hub("alice/with-data")
    assert "training_data.json" not in fake_hub.files("alice/with-data")
    assert fake_hub.commits[-1]["deleted"] == ["training_data.json"]


def test_include_training_data_needs_prompts(fake_hub):
    rng = np.random.default_rng(0)
    p = Probe(random_state=0).fit_from_activations(rng.normal(size=(20, 8)), [0, 1] * 10)
    with pytest.raises(ValueError, match=r"no stored training prompts.*\(prompts, labels\)"):
        p.push_to_hub("alice/x", include_training_data=True)
    p.push_to_hub("alice/x", include_training_data=(["a", "b"], [0, 1]))
    data = json.loads(fake_hub.path("alice/x", "training_data.json").read_text())
    assert data == {"prompts": ["a", "b"], "labels": [0, 1]}


def _gaussian_nb_probe(dog_probe):
    from sklearn.naive_bayes import GaussianNB

    return dog_probe(classifier=GaussianNB(), layers=3)


def test_pickle_probe_needs_trust(fake_hub, dog_probe, monkeypatch):
    probe = _gaussian_nb_probe(dog_probe)
    expected = probe.predict_proba(TEST)
    with pytest.warns(UserWarning, match=r"GaussianNB.*Pushing a pickle"):
        probe.push_to_hub("mallory/nb")
    assert fake_hub.files("mallory/nb") == ["README.md", "probe.json", "probe.pkl"]
    card = ProbeCard.from_hub("mallory/nb")
    assert card.format == "pickle" and card.trust_required
    assert card.classifier_type == "GaussianNB"
    meta, body = fake_hub.card("mallory/nb")
    assert 'Probe.from_hub("mallory/nb", trust_classifier=True)' in body

    def boom(*a, **k):
        raise AssertionError("unpickled without trust")

    with monkeypatch.context() as m:
        m.setattr(pickle, "load", boom)
        m.setattr(pickle, "loads", boom)
        with pytest.raises(
            UntrustedPickleError, match=r"runs arbitrary code.*trust_classifier=True"
        ):
            Probe.from_hub("mallory/nb", device="cpu")
    assert ("model", "mallory/nb", "probe.pkl") not in fake_hub.downloads

    loaded = Probe.from_hub("mallory/nb", trust_classifier=True, device="cpu")
    assert np.array_equal(loaded.predict_proba(TEST), expected)
    # Training prompts and activations were not shared (include_training_data=False).
    assert probe.training_activations is not None and probe.training_data is not None
    assert loaded.training_activations is None and loaded.training_data is None
    # The downloaded pickle sits in the hub cache: loading it directly needs trust too.
    pkl = fake_hub.cache / "model" / "mallory/nb" / "main" / "probe.pkl"
    with pytest.raises(UntrustedPickleError, match="trust_classifier=True"):
        Probe.load(pkl)
    assert np.array_equal(Probe.load(pkl, trust_classifier=True).predict_proba(TEST), expected)


def test_tampered_pickle_refused_even_with_trust(fake_hub, dog_probe):
    probe = _gaussian_nb_probe(dog_probe)
    probe.push_to_hub("mallory/nb2", serialization="pickle")
    pkl = fake_hub.path("mallory/nb2", "probe.pkl")
    pkl.write_bytes(pickle.dumps({"not": "the pushed probe"}))
    with pytest.raises(ProbeFormatError, match="SHA-256 does not match"):
        Probe.from_hub("mallory/nb2", trust_classifier=True, load_model=False)


def test_safe_only_serialization_refuses_unsupported(fake_hub, dog_probe):
    probe = _gaussian_nb_probe(dog_probe)
    with pytest.raises(UnsafeFormatError, match=r"GaussianNB.*'\.pkl'"):
        probe.push_to_hub("alice/nb", serialization="safe")
    assert fake_hub.commits == []


def test_safe_from_hub_never_unpickles(fake_hub, dog_probe, monkeypatch):
    probe = dog_probe(classifier="sgd", layers=3)
    expected = probe.predict_proba(TEST)
    probe.push_to_hub("alice/sgd")

    def boom(*a, **k):
        raise AssertionError("pickle used by the safe loader")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    loaded = Probe.from_hub("alice/sgd", device="cpu")
    assert np.array_equal(loaded.predict_proba(TEST), expected)


def test_repush_safe_over_pickle_removes_pickle(fake_hub, dog_probe):
    with pytest.warns(UserWarning):
        _gaussian_nb_probe(dog_probe).push_to_hub("alice/switch")
    dog_probe().push_to_hub("alice/switch")
    assert fake_hub.files("alice/switch") == ["README.md", "arrays.safetensors", "probe.json"]
    assert Probe.from_hub("alice/switch", load_model=False).classifier == "logistic_regression"


def test_fingerprint_mismatch_warns(fake_hub, dog_probe):
    dog_probe().push_to_hub("alice/fp")
    path = fake_hub.path("alice/fp", "probe.json")
    data = json.loads(path.read_text())
    data["summary"]["model_fingerprint"] = "0000000000000000"
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="fingerprint 0000000000000000"):
        Probe.from_hub("alice/fp", device="cpu")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"class_labels": {2: "bird"}}, ValueError, r"\[2\].*classes are \[0, 1\]"),
        ({"class_labels": ["cat", "dog"]}, TypeError, "dict mapping class"),
        ({"tags": "safety"}, TypeError, "list of strings"),
        ({"serialization": "zip"}, ValueError, "'auto', 'safe', 'pickle'"),
    ],
    ids=["unknown-class", "labels-not-dict", "tags-str", "bad-serialization"],
)
def test_push_argument_errors(fake_hub, kwargs, exc, match):
    rng = np.random.default_rng(0)
    p = Probe(random_state=0).fit_from_activations(rng.normal(size=(20, 8)), [0, 1] * 10)
    with pytest.raises(exc, match=match):
        p.push_to_hub("alice/x", **kwargs)
    assert fake_hub.commits == []


def test_push_unfitted_and_bad_repo_id(fake_hub):
    from lmprobe_jupyter.engine.probes.probe import NotFittedError

    with pytest.raises(NotFittedError):
        Probe().push_to_hub("alice/x")
    rng = np.random.default_rng(0)
    p = Probe().fit_from_activations(rng.normal(size=(10, 4)), [0, 1] * 5)
    with pytest.raises(ValueError, match="'owner/name'"):
        p.push_to_hub("no-slash")


def test_from_hub_missing_repo_and_not_a_probe(fake_hub):
    with pytest.raises(FileNotFoundError, match="'alice/nothing' was not found"):
        Probe.from_hub("alice/nothing")
    fake_hub.create_repo(None, "alice/empty")
    with pytest.raises(FileNotFoundError, match="probe.json is not in the repo 'alice/empty'"):
        ProbeCard.from_hub("alice/empty")


def test_offline_download_error_is_clear(monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors

    def offline(*a, **k):
        raise errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FileNotFoundError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        ProbeCard.from_hub("alice/anything")


# ---------------------------------------------------------------------------- hostile repos
def _hostile_repo(fake_hub, repo_id: str, files: dict[str, bytes]) -> None:
    fake_hub.repos[("model", repo_id)] = {"private": False}
    for name, raw in files.items():
        path = fake_hub.path(repo_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)


class _WritesMarker:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_hub_pickle_copied_out_of_cache_still_needs_trust(fake_hub, tmp_path):
    import hashlib

    marker = tmp_path / "marker"
    payload = pickle.dumps(_WritesMarker(marker))
    manifest = {"format": "lmprobe-jupyter.probe", "format_version": 1, "weights": "probe.pkl"}
    manifest["pickle_sha256"] = hashlib.sha256(payload).hexdigest()
    _hostile_repo(
        fake_hub,
        "mallory/evil",
        {"probe.json": json.dumps(manifest).encode(), "probe.pkl": payload},
    )
    with pytest.raises(UntrustedPickleError, match="trust_classifier=True"):
        Probe.from_hub("mallory/evil", load_model=False)
    # Someone downloads the repo (snapshot) and copies it to a folder of their own.
    import huggingface_hub

    snapshot = Path(huggingface_hub.snapshot_download("mallory/evil"))
    mine = tmp_path / "my-probes" / "evil"
    shutil.copytree(snapshot, mine)
    for path in (snapshot, mine, mine / "probe.pkl"):
        with pytest.raises(UntrustedPickleError, match="never unpickles without trust"):
            Probe.load(path)
    assert not marker.exists()

    no_hash = {k: v for k, v in manifest.items() if k != "pickle_sha256"}
    _hostile_repo(
        fake_hub,
        "mallory/nohash",
        {"probe.json": json.dumps(no_hash).encode(), "probe.pkl": payload},
    )
    with pytest.raises(ProbeFormatError, match="names a pickle .* without its SHA-256"):
        Probe.from_hub("mallory/nohash", trust_classifier=True, load_model=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests"),
        (b"\x00\xff not json", "not UTF-8|not valid JSON"),
        (b'{"format": "lmprobe-jupyter.probe", "format_version": 0}', "no lmprobe-jupyter ever"),
    ],
    ids=["deep", "garbage", "version-0"],
)
def test_hostile_probe_json_on_hub_is_a_format_error(fake_hub, raw, match):
    _hostile_repo(fake_hub, "mallory/bad", {"probe.json": raw})
    with pytest.raises(ProbeFormatError, match=match):
        ProbeCard.from_hub("mallory/bad")
    with pytest.raises(ProbeFormatError, match=match):
        Probe.from_hub("mallory/bad", load_model=False)


@pytest.mark.parametrize(
    "edit",
    [
        {"summary": [1, 2]},
        {"summary": {"pooling": "mean", "classifier": 3}},
        {"card": {"tags": 5}},
    ],
    ids=["summary-list", "pooling-str", "tags-int"],
)
def test_malformed_card_is_a_format_error(fake_hub, edit):
    data = {"format": "lmprobe-jupyter.probe", "format_version": 1, **edit}
    _hostile_repo(fake_hub, "mallory/card", {"probe.json": json.dumps(data).encode()})
    with pytest.raises(ProbeFormatError, match="'mallory/card'.* malformed"):
        ProbeCard.from_hub("mallory/card")


def test_from_hub_refuses_overriding_fitted_structure(fake_hub, dog_probe):
    dog_probe().push_to_hub("alice/layers")
    with pytest.raises(ValueError, match=r"layers=3 cannot be changed when loading"):
        Probe.from_hub("alice/layers", load_model=False, layers=3)
    loaded = Probe.from_hub("alice/layers", load_model=False, batch_size=2)
    assert loaded.batch_size == 2 and loaded.layers_ == [2, 4]
