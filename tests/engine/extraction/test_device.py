"""CUDA placement: probes on the GPU, CPU/GPU parity, half-precision models give float32.

These tests need a CUDA GPU and are skipped without one (a hardware gate: the same code
paths run on CPU in the other test files).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lmtest_helpers import BACKEND_PROMPTS, SENTIMENT_NEG, SENTIMENT_POS

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.extraction.models import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPTS = BACKEND_PROMPTS
POS, NEG = SENTIMENT_POS, SENTIMENT_NEG
TEST = ["I adore it", "I loathe it", "Fantastic work", "Dreadful work"]


@pytest.fixture(scope="module")
def smollm_cuda():
    return load_model(BUNDLED, device="cuda")


def _rows_close(a: np.ndarray, b: np.ndarray) -> None:
    """fp32 parity across devices.

    atol 1e-3 as asked, plus rtol 1e-3: SmolLM2 has "massive activations" (up to ~2.4e4 at
    layer 15), where one fp32 ulp is already 2e-3, so no two kernels agree to 1e-3 absolute
    there. Every row must also point the same way (cosine > 0.99999).
    """
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert (cos > 0.99999).all(), cos


@pytest.mark.real_model
def test_probe_fits_and_predicts_on_cuda(smollm):
    gpu = Probe(model=BUNDLED, device="cuda", layers=[15], random_state=0, progress=False)
    gpu.fit(POS, NEG)
    assert gpu.runtime.loaded.device.type == "cuda"
    assert next(gpu.runtime.loaded.model.parameters()).device.type == "cuda"
    assert gpu.score(POS + NEG, [1] * 4 + [0] * 4) == 1.0
    cpu = Probe(model=BUNDLED, device="cpu", layers=[15], random_state=0, progress=False)
    # A separate cache key would be wrong (same weights), so compute the CPU side fresh.
    cpu.runtime.extractor().use_cache = False
    cpu.fit(POS, NEG)
    np.testing.assert_array_equal(gpu.predict(TEST), cpu.predict(TEST))
    np.testing.assert_allclose(gpu.predict_proba(TEST), cpu.predict_proba(TEST), atol=1e-3)


@pytest.mark.real_model
def test_cpu_cuda_pooled_parity(smollm, smollm_cuda):
    assert smollm.key == smollm_cuda.key  # same weights: one cache identity
    cpu = Extractor(smollm, batch_size=2, use_cache=False)
    gpu = Extractor(smollm_cuda, batch_size=2, use_cache=False)
    for pooling in ("last_token", "mean", "max"):
        a = cpu.pooled(PROMPTS, [3, 15, 29], pooling)
        b = gpu.pooled(PROMPTS, [3, 15, 29], pooling)
        for layer in (3, 15, 29):
            assert b[layer].dtype == np.float32 and b[layer].shape == (len(PROMPTS), 576)
            _rows_close(b[layer], a[layer])


@pytest.mark.real_model
def test_bfloat16_on_cuda_returns_float32(smollm):
    p = Probe(model=BUNDLED, device="cuda", dtype="bfloat16", layers=[3, 15], random_state=0).fit(
        POS, NEG
    )
    loaded = p.runtime.loaded
    assert loaded.dtype == torch.bfloat16
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    feats = p._features(PROMPTS, "mean")
    ref = Extractor(smollm, use_cache=False).pooled(PROMPTS, [3, 15], "mean")
    for layer in (3, 15):
        assert feats[layer].dtype == np.float32 and feats[layer].shape == (len(PROMPTS), 576)
        assert np.isfinite(feats[layer]).all()
        a, b = feats[layer], ref[layer]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert (cos > 0.99).all(), cos  # bf16 is close to fp32, not equal
    assert p.predict(TEST).shape == (4,)


def test_float16_on_cuda_returns_float32(tiny_model_path):
    p = Probe(model=tiny_model_path, device="cuda", dtype="float16", layers=[1, 3])
    p.fit(POS, NEG)
    assert next(p.runtime.loaded.model.parameters()).dtype == torch.float16
    feats = p._features(PROMPTS, "max")
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in feats.values())


@pytest.mark.real_model
def test_nnsight_backend_on_cuda(smollm_cuda):
    from lmprobe_jupyter.engine.extraction.nnsight_backend import NNsightExtractor

    ref = Extractor(smollm_cuda, batch_size=2, use_cache=False)
    nn = NNsightExtractor(BUNDLED, device="cuda", batch_size=2, use_cache=False)
    assert nn.loaded is smollm_cuda
    for pooling in ("last_token", "mean", "max"):
        a = ref.pooled(PROMPTS, [3, 15, 29], pooling)
        b = nn.pooled(PROMPTS, [3, 15, 29], pooling)
        for layer in a:
            np.testing.assert_allclose(b[layer], a[layer], atol=1e-4, rtol=0)
    p = Probe(model=BUNDLED, backend="nnsight", device="cuda", layers=[15], random_state=0)
    assert p.fit(POS, NEG).score(POS + NEG, [1] * 4 + [0] * 4) == 1.0


def test_nnsight_keeps_a_cpu_model_on_cpu(tiny_model_path):
    """Wrapping must not move a CPU model to cuda:0 (transformers' pipeline default)."""
    from lmprobe_jupyter.engine.extraction.nnsight_backend import NNsightExtractor

    nn = NNsightExtractor(tiny_model_path, device="cpu", use_cache=False)
    out = nn.pooled(PROMPTS, [2], "mean")
    assert next(nn.loaded.model.parameters()).device.type == "cpu"
    ref = Extractor(load_model(tiny_model_path, device="cpu"), use_cache=False)
    np.testing.assert_allclose(out[2], ref.pooled(PROMPTS, [2], "mean")[2], atol=1e-6)


def test_auto_dtype_on_cuda(tiny_model_path):
    lm = load_model(tiny_model_path, device="cuda", dtype="auto")
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert lm.dtype_name == ("bfloat16" if native else "float32")
    assert lm.key.endswith(":bfloat16") == native
    feats = Extractor(lm, use_cache=False).pooled(PROMPTS, [1, 3], "mean")
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in feats.values())


def test_shared_prefix_equals_plain_path_on_cuda(tiny_model_path):
    lm = load_model(tiny_model_path, device="cuda", dtype="float32")
    system = (
        "System: you are a careful assistant. Answer briefly, refuse harmful requests, and "
        "explain chemistry and programming questions for students with care. User: "
    )
    prompts = [system + q for q in ("hi", "what is a mole?", "write a python loop")]
    shared = Extractor(lm, use_cache=False)
    plain = Extractor(lm, use_cache=False, share_prefix=False)
    for pooling in ("last_token", "mean", "max"):
        a = shared.pooled(prompts, [1, 3], pooling)
        b = plain.pooled(prompts, [1, 3], pooling)
        for layer in (1, 3):
            np.testing.assert_allclose(a[layer], b[layer], atol=1e-4, rtol=1e-5)
