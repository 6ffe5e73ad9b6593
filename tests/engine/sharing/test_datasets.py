"""Activation datasets: push from the cache, train with no model, pull and load raw tensors."""

# ruff: noqa: F811 - pytest fixtures imported from test_hub are parameters here

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from lmtest_helpers import BUNDLED
from lmtest_helpers import DOG_NEG as NEG
from lmtest_helpers import DOG_POS as POS
from lmtest_helpers import DOG_TEST as TEST
from safetensors.numpy import load_file

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.cache import settings as cache_mod
from lmprobe_jupyter.engine.extraction import models
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.sharing.datasets import (
    MissingPromptsError,
    load_activation_dataset,
    prompt_sha256,
    pull_dataset,
    push_dataset,
)

REPO = "alice/smollm-animals"
PROMPTS = POS + NEG + TEST
LABELS = [1] * 6 + [0] * 6 + [1, 0]


@pytest.fixture
def pushed(fake_hub, warm, smollm):
    """Push the real SmolLM2 activations of PROMPTS (layers 2 and 4, 5-row shards)."""
    url = push_dataset(
        REPO,
        BUNDLED,
        PROMPTS,
        labels=LABELS,
        description="Dog vs cat activations",
        layers=[2, 4],
        shard_rows=5,
    )
    return url


def _go_offline(tmp_path, monkeypatch) -> int:
    """A fresh activation cache and no way to load any model, as on a machine without it.

    Returns the model load count at that point.
    """
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(tmp_path / "other-cache"))
    cache_mod.reset_cache()

    def no_model(*a, **k):
        raise AssertionError("a model was loaded or resolved")

    for name in ("load_model", "resolve_model", "model_n_layers"):
        monkeypatch.setattr(models, name, no_model)
    monkeypatch.setattr(Extractor, "_forward", no_model)
    return models.LOAD_COUNT


@pytest.fixture
def other_machine(tmp_path, monkeypatch) -> int:
    return _go_offline(tmp_path, monkeypatch)


def test_push_dataset_files_and_contents(fake_hub, pushed, warm, smollm):
    assert pushed == f"https://huggingface.co/datasets/{REPO}"
    assert fake_hub.repos == {("dataset", REPO): {"private": False}}
    shards = [f"layer_{layer}/shard_{i:03d}.safetensors" for layer in (2, 4) for i in range(3)]
    assert fake_hub.files(REPO, "dataset") == sorted(
        ["README.md", "index.parquet", "info.json", *shards]
    )
    assert fake_hub.commits[0]["repo_type"] == "dataset"

    info = json.loads(fake_hub.path(REPO, "info.json", "dataset").read_text())
    assert info["model_name"] == BUNDLED
    assert info["model_fingerprint"] == smollm.fingerprint
    assert info["model_key"] == smollm.key
    assert info["layers"] == [2, 4] and info["n_layers"] == 30
    assert info["pooling"] == "last_token" and info["hidden_size"] == 576
    assert info["n_prompts"] == 14 and info["has_labels"] is True
    assert [(e["start"], e["stop"]) for e in info["shards"]["4"]] == [(0, 5), (5, 10), (10, 14)]

    index = pq.read_table(fake_hub.path(REPO, "index.parquet", "dataset")).to_pydict()
    assert index["prompt"] == PROMPTS
    assert index["label"] == LABELS
    assert index["row"] == list(range(14))
    assert index["prompt_sha256"] == [prompt_sha256(p) for p in PROMPTS]

    got = np.concatenate(
        [
            load_file(str(fake_hub.path(REPO, f"layer_4/shard_{i:03d}.safetensors", "dataset")))[
                "activations"
            ]
            for i in range(3)
        ]
    )
    assert got.dtype == np.float32 and np.array_equal(got, warm[4])

    meta, body = fake_hub.card(REPO, "dataset")
    assert "lmprobe-jupyter" in meta["tags"]
    assert meta["configs"] == [{"config_name": "default", "data_files": "index.parquet"}]
    assert "Dog vs cat activations" in body


def test_train_from_dataset_without_model(fake_hub, pushed, tmp_path, monkeypatch):
    # Reference: the same probe trained on the model's own activations, on this machine.
    on_model = Probe(
        model=BUNDLED, device="cpu", layers=4, random_state=0, progress=False, dtype="float32"
    )
    expected = on_model.fit(POS, NEG).predict_proba(TEST)

    loads = _go_offline(tmp_path, monkeypatch)
    probe = Probe(dataset=REPO, layers=4, random_state=0, progress=False).fit(POS, NEG)
    assert models.LOAD_COUNT == loads
    assert probe.model_name == BUNDLED
    assert probe.dataset_info_["model_key"] == on_model.runtime.loaded.key
    # Only info, index and the shards of layer 4 holding the training rows (0-11) came down.
    assert [f for _, _, f in fake_hub.downloads] == [
        "info.json",
        "index.parquet",
        "layer_4/shard_000.safetensors",
        "layer_4/shard_001.safetensors",
        "layer_4/shard_002.safetensors",
    ]
    proba = probe.predict_proba(TEST)
    assert np.array_equal(proba, expected)
    assert len(fake_hub.downloads) == 6  # TEST rows (12, 13) sit in shard_002, fetched again
    probe.predict_proba(TEST + POS)
    assert len(fake_hub.downloads) == 6  # everything is in the local cache now
    assert probe.last_cache_hits_ == 8
    assert models.LOAD_COUNT == loads


def test_dataset_probe_save_and_load(fake_hub, pushed, other_machine, tmp_path):
    probe = Probe(dataset=REPO, layers=[2, 4], random_state=0, progress=False).fit(POS, NEG)
    expected = probe.predict_proba(TEST)
    probe.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p")
    assert loaded.dataset == REPO and loaded.model_name == BUNDLED
    assert np.array_equal(loaded.predict_proba(TEST), expected)
    data = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert data["summary"]["dataset"] == REPO
    assert data["summary"]["model_fingerprint"] == probe.dataset_info_["model_fingerprint"]


def test_prompts_missing_from_dataset(fake_hub, pushed, other_machine):
    probe = Probe(dataset=REPO, layers=2, progress=False)
    with pytest.raises(
        MissingPromptsError,
        match=rf"2 of 14 prompts are not in dataset '{REPO}' \(first missing: 'A brand new",
    ):
        probe.fit(POS + ["A brand new prompt"], NEG + ["Another unseen one"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": 3}, r"layer\(s\) \[3\] are not in dataset .* holds layers \[2, 4\]"),
        ({"layers": 2, "pooling": "mean"}, r"holds 'last_token'-pooled .* pooling='mean'"),
    ],
    ids=["layer", "pooling"],
)
def test_dataset_layer_and_pooling_errors(fake_hub, pushed, other_machine, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Probe(dataset=REPO, progress=False, **kwargs).fit(POS, NEG)


def test_dataset_has_no_per_token_features(fake_hub, pushed, other_machine):
    probe = Probe(dataset=REPO, layers=2, progress=False).fit(POS, NEG)
    with pytest.raises(ValueError, match=r"pooled activations only; per-token .* need the model"):
        probe.token_scores(TEST)


def test_pull_dataset_then_train_offline(fake_hub, pushed, other_machine):
    assert pull_dataset(REPO, layers=[4]) == 14
    pulled = len(fake_hub.downloads)
    assert [f for _, _, f in fake_hub.downloads][2:] == [
        f"layer_4/shard_{i:03d}.safetensors" for i in range(3)
    ]
    probe = Probe(dataset=REPO, layers=4, progress=False).fit(POS, NEG)
    probe.predict(TEST)
    # Only info.json is read again (to identify the dataset); no index, no shards.
    assert [f for _, _, f in fake_hub.downloads[pulled:]] == ["info.json"]
    assert probe.last_cache_hits_ == 2
    with pytest.raises(ValueError, match=r"\[3\] are not in dataset"):
        pull_dataset(REPO, layers=[3])


def test_load_activation_dataset(fake_hub, pushed, warm, other_machine):
    tensors, info = load_activation_dataset(REPO, layers=[2])
    assert list(tensors) == ["hidden.layer_2"]
    assert tensors["hidden.layer_2"].shape == (14, 576)
    assert np.array_equal(tensors["hidden.layer_2"], warm[2])
    assert info["prompts"] == PROMPTS and info["labels"] == LABELS
    assert info["model_name"] == BUNDLED and info["layers"] == [2, 4]
    everything, _ = load_activation_dataset(REPO)
    assert sorted(everything) == ["hidden.layer_2", "hidden.layer_4"]


def test_push_needs_cached_activations(fake_hub, warm, smollm):
    with pytest.raises(
        MissingPromptsError,
        match=r"2 of 14 prompts have no cached activations .* at layer 2 .*\.warmup\(prompts\)",
    ):
        push_dataset(REPO, BUNDLED, PROMPTS[:12] + ["new one", "new two"], layers=[2])
    with pytest.raises(MissingPromptsError, match=r"layer 5"):
        push_dataset(REPO, BUNDLED, PROMPTS, layers=[2, 5])
    assert fake_hub.commits == []


def test_push_default_layers_are_the_fully_cached_ones(fake_hub, warm, smollm):
    push_dataset(REPO, f"{smollm.name}@{smollm.fingerprint}", PROMPTS)
    info = json.loads(fake_hub.path(REPO, "info.json", "dataset").read_text())
    assert info["layers"] == [2, 3, 4]
    assert info["has_labels"] is False
    index = pq.read_table(fake_hub.path(REPO, "index.parquet", "dataset"))
    assert index.column_names == ["row", "prompt", "prompt_sha256"]


def test_tampered_shard_refused(fake_hub, pushed, other_machine):
    from safetensors.numpy import save_file

    path = fake_hub.path(REPO, "layer_2/shard_000.safetensors", "dataset")
    save_file({"activations": np.zeros((5, 576), np.float32)}, str(path))
    with pytest.raises(ValueError, match="does not match the SHA-256 recorded in info.json"):
        Probe(dataset=REPO, layers=2, progress=False).fit(POS, NEG)


def test_not_a_dataset(fake_hub):
    fake_hub.create_repo(None, "alice/plain", repo_type="dataset")
    (fake_hub.repo_dir("alice/plain", "dataset") / "info.json").write_text("{}")
    with pytest.raises(ValueError, match="not an lmprobe-jupyter activation dataset"):
        pull_dataset("alice/plain")
    with pytest.raises(FileNotFoundError, match="dataset repo 'alice/none' was not found"):
        Probe(dataset="alice/none", layers=2).fit(POS, NEG)


def test_push_dataset_finds_activations_of_the_dtype_they_were_extracted_in(fake_hub, smollm):
    """Probe(dtype="auto") caches bfloat16 activations under "name@fp:bfloat16" on CPUs
    with native bfloat16: push_dataset(model_name) finds them without being told."""
    prompts = ["The dog ran.", "A cat slept."]
    Probe(model=BUNDLED, layers=[3], dtype="bfloat16", device="cpu").warmup(prompts)
    push_dataset("alice/bf16", BUNDLED, prompts, layers=[3])
    info = json.loads(fake_hub.path("alice/bf16", "info.json", "dataset").read_text())
    assert info["model_key"] == f"{smollm.name}@{smollm.fingerprint}:bfloat16"
    with pytest.raises(MissingPromptsError, match="no cached activations"):
        push_dataset("alice/f16", BUNDLED, prompts, layers=[3], dtype="float16")
    with pytest.raises(ValueError, match="dtype='fp8' is not one of"):
        push_dataset("alice/x", BUNDLED, prompts, layers=[3], dtype="fp8")
