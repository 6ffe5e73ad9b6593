"""Bulk extraction: resumable after SIGKILL with identical files, manifest, load, push, consolidate."""

# ruff: noqa: F811 - pytest fixtures imported from test_hub are parameters here

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lmprobe_jupyter.engine.extraction import models
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.sharing import bulk
from lmprobe_jupyter.engine.sharing.bulk import (
    consolidate_cache,
    extract,
    load_activations,
    load_manifest,
    push_extraction,
)
from lmprobe_jupyter.engine.sharing.datasets import MissingPromptsError

PROMPTS = [
    f"prompt number {i} about {'dogs' if i % 2 else 'cats'}" + " x" * (i % 5) for i in range(12)
]
LABELS = [i % 2 for i in range(12)]
LAYERS = [1, 3]


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _run(tiny, out, **kw):
    kw.setdefault("layers", LAYERS)
    kw.setdefault("labels", LABELS)
    kw.setdefault("batch_size", 2)
    return extract(tiny, PROMPTS, output_dir=out, device="cpu", **kw)


@pytest.fixture
def reference(tiny_model_path, tmp_path):
    """An uninterrupted run."""
    return _run(tiny_model_path, tmp_path / "reference", metadata={"source": "test"})


_CHILD = textwrap.dedent(
    """
    import sys, time
    from lmprobe_jupyter.engine.sharing import bulk
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    model, out, prompts, labels = sys.argv[1], sys.argv[2], {prompts!r}, {labels!r}
    pooled = Extractor.pooled

    def slow(self, *a, **k):
        result = pooled(self, *a, **k)
        print("computed", flush=True)
        time.sleep(0.5)  # between computing a batch and writing it
        return result

    Extractor.pooled = slow
    bulk.extract(model, prompts, layers={layers!r}, labels=labels, metadata={{"source": "test"}},
                 output_dir=out, batch_size=2, device="cpu")
    print("finished", flush=True)
    """
).format(prompts=PROMPTS, labels=LABELS, layers=LAYERS)


def _kill_after(script: Path, model: str, out: Path, n_batches: int, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(script), model, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, LMPROBE_PROGRESS="0"),
    )
    try:
        seen = 0
        for line in proc.stdout:
            seen += line.strip() == "computed"
            if seen == n_batches:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL


def test_killed_run_resumes_without_recomputing_and_gives_identical_files(
    tiny_model_path, reference, tmp_path
):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    out = tmp_path / "interrupted"
    # killed while sleeping between compute and write of batch 1, then (second run) about
    # when the sleep after its first new batch ends: before, inside or after its write
    _kill_after(script, tiny_model_path, out, n_batches=2, delay=0.1)
    first = load_manifest(out)
    assert [e.index for e in first.entries] == [0]
    _kill_after(script, tiny_model_path, out, n_batches=1, delay=0.5)
    done = {e.index for e in load_manifest(out).entries}
    assert 0 in done and len(done) < 6
    on_disk = {i for i in range(6) if (out / bulk.batch_file(i)).exists()}
    calls = Extractor.forward_calls
    _run(tiny_model_path, out, metadata={"source": "test"})
    # one forward pass per batch that had no file yet: nothing computed twice
    assert Extractor.forward_calls - calls == 6 - len(on_disk)
    assert _files(out) == _files(reference)
    assert not list(out.glob(".tmp-*"))


def test_rerun_of_a_complete_extraction_does_nothing(tiny_model_path, reference):
    before = _files(reference)
    calls = Extractor.forward_calls
    assert _run(tiny_model_path, reference, metadata={"source": "test"}) == reference
    assert Extractor.forward_calls == calls
    assert _files(reference) == before


def test_batch_file_missing_from_manifest_is_adopted(tiny_model_path, reference, tmp_path):
    before = _files(reference)
    body = json.loads((reference / "manifest.json").read_text())
    body["entries"] = body["entries"][:-1]  # killed between the batch rename and the manifest's
    (reference / "manifest.json").write_text(json.dumps(body))
    calls = Extractor.forward_calls
    _run(tiny_model_path, reference, metadata={"source": "test"})
    assert Extractor.forward_calls == calls
    assert _files(reference) == before


def test_damaged_batch_file_missing_from_manifest_is_recomputed(tiny_model_path, reference):
    before = _files(reference)
    body = json.loads((reference / "manifest.json").read_text())
    body["entries"] = body["entries"][:-1]
    (reference / "manifest.json").write_text(json.dumps(body))
    (reference / bulk.batch_file(5)).write_bytes(b"garbage")
    calls = Extractor.forward_calls
    _run(tiny_model_path, reference, metadata={"source": "test"})
    assert Extractor.forward_calls == calls + 1
    assert _files(reference) == before


def test_manifest_contents(tiny_model_path, reference):
    m = load_manifest(reference)
    tiny = models.load_model(tiny_model_path, device="cpu")
    assert (m.model_key, m.layers, m.pooling, m.batch_size) == (tiny.key, LAYERS, "last_token", 2)
    assert m.complete and m.n_done == 12 and m.n_batches == 6
    assert m.prompts == PROMPTS and m.labels == LABELS
    assert m.metadata == {"source": "test"}
    import hashlib

    assert m.prompt_hashes[3] == hashlib.sha256(PROMPTS[3].encode()).hexdigest()
    assert [(e.start, e.stop) for e in m.entries] == [(i, i + 2) for i in range(0, 12, 2)]
    assert (
        m.entries[2].sha256
        == hashlib.sha256((reference / m.entries[2].file).read_bytes()).hexdigest()
    )


def test_load_activations_equals_direct_extraction(tiny_model_path, reference):
    tiny = models.load_model(tiny_model_path, device="cpu")
    direct = Extractor(tiny, use_cache=False, progress=False).pooled(PROMPTS, LAYERS, "last_token")
    acts, labels = load_activations(reference, return_labels=True)
    assert sorted(acts) == LAYERS and labels == LABELS
    for layer in LAYERS:
        assert acts[layer].shape == (12, 32)
        np.testing.assert_allclose(acts[layer], direct[layer], atol=1e-5)
    some = load_activations(reference, prompts=[PROMPTS[7], PROMPTS[2]], layers=3)
    np.testing.assert_array_equal(some[3], acts[3][[7, 2]])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"pooling": "mean"}, ValueError, "holds 'last_token' activations"),
        ({"layers": [2]}, ValueError, r"layers \[2\] are not in"),
        ({"prompts": ["not there"]}, MissingPromptsError, "1 of 1 prompts are not in"),
    ],
    ids=["pooling", "layer", "prompt"],
)
def test_load_activations_errors(reference, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_activations(reference, **kwargs)


def test_resume_with_other_arguments_is_refused(tiny_model_path, reference):
    with pytest.raises(ValueError, match="other layers"):
        _run(tiny_model_path, reference, layers=[2])
    with pytest.raises(ValueError, match="other labels"):
        _run(tiny_model_path, reference, labels=[0] * 12)


def test_retries_with_backoff_then_raises(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(bulk, "RETRY_BASE_DELAY", 0.0)
    pooled, fails = Extractor.pooled, {"n": 0}

    def flaky(self, *a, **k):
        if fails["n"] < 2:
            fails["n"] += 1
            raise ConnectionError("lost the worker")
        return pooled(self, *a, **k)

    monkeypatch.setattr(Extractor, "pooled", flaky)
    out = _run(tiny_model_path, tmp_path / "a", max_retries=2)
    assert load_manifest(out).complete
    fails["n"] = 0
    with pytest.raises(ConnectionError, match="lost the worker"):
        _run(tiny_model_path, tmp_path / "b", max_retries=1)
    assert load_manifest(tmp_path / "b").entries == []


def test_push_extraction_publishes_an_activation_dataset(tiny_model_path, reference, fake_hub):
    url = push_extraction(reference, "alice/tiny-acts", description="tiny test")
    assert url == "https://huggingface.co/datasets/alice/tiny-acts"
    acts, labels = load_activations("alice/tiny-acts", return_labels=True)
    local = load_activations(reference)
    assert labels == LABELS
    for layer in LAYERS:
        np.testing.assert_array_equal(acts[layer], local[layer])
    sub = load_activations("alice/tiny-acts", prompts=PROMPTS[:3], layers=[1])
    np.testing.assert_array_equal(sub[1], local[1][:3])


def test_consolidate_cache_writes_the_same_format(tiny_model_path, tmp_path):
    tiny = models.load_model(tiny_model_path, device="cpu")
    direct = Extractor(tiny, progress=False).pooled(PROMPTS, [0, 2], "mean")  # fills the cache
    calls = Extractor.forward_calls
    out = consolidate_cache(
        tiny.key, PROMPTS, [0, 2], tmp_path / "c", pooling="mean", labels=LABELS, batch_size=5
    )
    assert Extractor.forward_calls == calls
    m = load_manifest(out)
    assert m.complete and [e.n_prompts for e in m.entries] == [5, 5, 2]
    acts, labels = load_activations(out, pooling="mean", return_labels=True)
    assert labels == LABELS
    for layer in (0, 2):
        np.testing.assert_array_equal(acts[layer], direct[layer])
    with pytest.raises(MissingPromptsError, match="1 of 13 prompts have no cached"):
        consolidate_cache(tiny.key, [*PROMPTS, "new"], [0], tmp_path / "d", pooling="mean")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"pooling": "all"}, ValueError, "pooling='all' is not one of"),
        ({"batch_size": 0}, ValueError, "batch_size=0 must be a positive int"),
        ({"labels": [1, 0]}, ValueError, "got 12 prompts but 2 labels"),
        ({"remote": True}, ValueError, "backend='nnsight'"),
        ({"max_retries": -1}, ValueError, "max_retries=-1"),
    ],
    ids=["pooling", "batch", "labels", "remote", "retries"],
)
def test_extract_argument_errors(tiny_model_path, tmp_path, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _run(tiny_model_path, tmp_path / "x", **kwargs)
