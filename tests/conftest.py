"""Shared fixtures: a tiny random Llama for logic, the bundled SmolLM2 for learning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lmtest_helpers import DOG_NEG, DOG_POS, DOG_TEST, FakeHub, make_tiny_llama

# Materialized bundled weights are shared by every test (and with the user's cache), while
# each test gets its own activation cache directory.
os.environ.setdefault("LMPROBE_MODELS_DIR", str(Path.home() / ".cache" / "lmprobe" / "models"))
os.environ.setdefault("LMPROBE_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A fresh, empty activation cache for every test."""
    from lmprobe_jupyter.engine.cache import settings as cache

    d = tmp_path / "lmprobe-cache"
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(d))
    cache.reset_cache()
    yield d
    cache.reset_cache()


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """Folder of the materialized bundled SmolLM2 (safetensors + tokenizer)."""
    from lmprobe_jupyter.engine.extraction.models import resolve_model

    return Path(resolve_model(BUNDLED)[1])


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, bundled_dir) -> str:
    """A random-weight 4-layer Llama (hidden 32, context 128) with the bundled tokenizer."""
    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), bundled_dir))


@pytest.fixture
def tiny_probe(tiny_model_path):
    """``make(**params)``: a Probe on the tiny Llama (layer 2, CPU, random_state 0 unless
    given)."""
    from lmprobe_jupyter import Probe

    def make(**kw):
        kw.setdefault("layers", 2)
        kw.setdefault("random_state", 0)
        kw.setdefault("device", "cpu")
        # float32: logic tests compare with float32 references (load_model's default)
        kw.setdefault("dtype", "float32")
        return Probe(model=tiny_model_path, **kw)

    return make


@pytest.fixture(scope="session")
def smollm():
    """The bundled SmolLM2-135M-Instruct, loaded once (real weights, CPU, float32)."""
    from lmprobe_jupyter.engine.extraction.models import load_model

    return load_model(BUNDLED, device="cpu")


@pytest.fixture
def store_reads(monkeypatch):
    """A list that records how many prompts each ``StoredTokenSource.take`` read."""
    from lmprobe_jupyter.engine.cache.token_store import StoredTokenSource

    sizes = []
    real = StoredTokenSource.take

    def spy(self, indices):
        indices = list(indices)
        sizes.append(len(indices))
        return real(self, indices)

    monkeypatch.setattr(StoredTokenSource, "take", spy)
    return sizes


# ---------------------------------------------------------------- hub and real activations
@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    import huggingface_hub
    from huggingface_hub import constants

    hub = FakeHub(tmp_path / "fake-hub")

    def method(fn):
        return lambda self, *a, **k: fn(self, *a, **k)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", method(hub.create_repo))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", method(hub.upload_folder))
    for name in ("create_commit", "upload_file", "upload_large_folder", "preupload_lfs_files"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, hub.forbidden, raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache))
    return hub


#: Layers of the session's real activations (``bundled_acts``).
HUB_LAYERS = [2, 3, 4]
ALL_PROMPTS = DOG_POS + DOG_NEG + DOG_TEST


@pytest.fixture(scope="session")
def bundled_acts(smollm, request):
    """Real SmolLM2 last-token activations of every prompt used here, extracted once.

    Kept on the pytest config, so that every module using it shares one extraction.
    """
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    memo = request.config.__dict__.setdefault("_lmprobe_bundled_acts", {})
    if smollm.key not in memo:
        ext = Extractor(smollm, use_cache=False, progress=False)
        memo[smollm.key] = ext.pooled(ALL_PROMPTS, HUB_LAYERS, "last_token")
    return memo[smollm.key]


@pytest.fixture
def warm(bundled_acts, smollm):
    """Put the session's real activations into this test's fresh cache: no forward passes."""
    from lmprobe_jupyter.engine.cache.settings import get_cache

    cache = get_cache()
    for layer, mat in bundled_acts.items():
        cache.store(smollm.key, ALL_PROMPTS, layer, "last_token", list(mat))
    return bundled_acts
