"""MoE: config-only detection, router-logit extraction on a tiny random Mixtral."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lmtest_helpers import make_tiny_mixtral

from lmprobe_jupyter.engine.extraction import models
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.extraction.moe import ActivationType, NotMoEError, detect_moe_info
from lmprobe_jupyter.engine.sharing.bulk import (
    extract,
    load_activations,
    load_manifest,
    load_router_logits,
)

PROMPTS = ["the dog runs", "a cat sits on the mat", "hi", "experts route tokens here"]


@pytest.fixture(scope="module")
def tiny_moe_path(tmp_path_factory, bundled_dir) -> str:
    return str(make_tiny_mixtral(tmp_path_factory.mktemp("tiny-mixtral"), bundled_dir))


def test_detect_moe_info_mixtral(tiny_moe_path):
    info = detect_moe_info(tiny_moe_path)
    assert (info.is_moe, info.n_experts, info.n_experts_per_token) == (True, 4, 2)
    assert (info.moe_layers, info.n_layers, info.model_type) == ([0, 1, 2], 3, "mixtral")


def test_detect_moe_info_reads_only_the_config(tmp_path, monkeypatch):
    # a Qwen-MoE config with no weights at all next to it
    cfg = {
        "model_type": "qwen2_moe",
        "num_hidden_layers": 6,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [5],
        "shared_expert_intermediate_size": 64,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded weights"))
    info = detect_moe_info(str(tmp_path))
    assert (info.n_experts, info.moe_layers, info.n_shared_experts) == (8, [1, 3], 1)


def test_detect_moe_info_dense_is_none(tiny_model_path):
    assert detect_moe_info(tiny_model_path) is None


def test_activation_type_names():
    assert [t.value for t in ActivationType] == ["hidden", "logits", "router"]
    assert ActivationType("router") is ActivationType.ROUTER


def test_extract_router_logits_match_the_model(tiny_moe_path, tmp_path):
    import torch

    out = extract(
        tiny_moe_path,
        PROMPTS,
        layers=[0, 2],
        output_dir=tmp_path / "moe",
        batch_size=3,
        extract_router=True,
        device="cpu",
    )
    m = load_manifest(out)
    assert m.extract_router and m.router_layers == [0, 1, 2]
    lm = models.load_model(tiny_moe_path, device="cpu")
    for layer in (0, 2):
        rows = load_router_logits(out, layer)
        assert len(rows) == len(PROMPTS)
        for prompt, got in zip(PROMPTS, rows):
            ids = lm.tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode():
                ref = lm.model(**ids, output_router_logits=True).router_logits[layer]
            assert got.shape == (ids["input_ids"].shape[1], 4)
            np.testing.assert_allclose(got, ref.float().numpy(), atol=1e-5)
    # routing is not uniform: tokens go to different experts
    top = np.concatenate([r.argmax(1) for r in load_router_logits(out, 1)])
    assert len(set(top.tolist())) > 1
    # the hidden states of the same pass equal the regular extractor's
    direct = Extractor(lm, use_cache=False, progress=False).pooled(PROMPTS, [0, 2], "last_token")
    acts = load_activations(out)
    for layer in (0, 2):
        np.testing.assert_allclose(acts[layer], direct[layer], atol=1e-5)
    with pytest.raises(ValueError, match="layer 5 has no router logits"):
        load_router_logits(out, 5)


def test_extract_router_on_a_dense_model_is_a_clear_error(tiny_model_path, tmp_path):
    with pytest.raises(NotMoEError, match="is not a mixture-of-experts model"):
        extract(
            tiny_model_path, PROMPTS, output_dir=tmp_path / "d", extract_router=True, device="cpu"
        )
