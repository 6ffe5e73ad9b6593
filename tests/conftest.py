"""Shared fixtures: a tiny random Llama for logic, the bundled SmolLM2 for learning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


def make_tiny_llama(
    path: Path, tokenizer_dir: Path, n_layers: int = 4, hidden: int = 32, seed: int = 0
):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, bundled_dir) -> str:
    """A random-weight 4-layer Llama (hidden 32, context 128) with the bundled tokenizer."""
    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), bundled_dir))


@pytest.fixture(scope="session")
def smollm():
    """The bundled SmolLM2-135M-Instruct, loaded once (real weights, CPU, float32)."""
    from lmprobe_jupyter.engine.models import load_model

    return load_model(BUNDLED, device="cpu")
