"""Shared fixtures: a tiny random Llama for logic, the bundled SmolLM2 for learning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lmtest_helpers import make_tiny_llama

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
    from lmprobe_jupyter.engine import cache

    d = tmp_path / "lmprobe-cache"
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(d))
    cache.reset_cache()
    yield d
    cache.reset_cache()


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """Folder of the materialized bundled SmolLM2 (safetensors + tokenizer)."""
    from lmprobe_jupyter.engine.models import resolve_model

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
    from lmprobe_jupyter.engine.models import load_model

    return load_model(BUNDLED, device="cpu")


@pytest.fixture
def store_reads(monkeypatch):
    """A list that records how many prompts each ``StoredTokenSource.take`` read."""
    from lmprobe_jupyter.engine.token_store import StoredTokenSource

    sizes = []
    real = StoredTokenSource.take

    def spy(self, indices):
        indices = list(indices)
        sizes.append(len(indices))
        return real(self, indices)

    monkeypatch.setattr(StoredTokenSource, "take", spy)
    return sizes
