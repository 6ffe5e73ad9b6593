"""Probes and activation caches written before the engine's re-layout still load.

``tests/data/legacy`` was written by ``tests/data/make_legacy_files.py`` at commit 9e59995
(the flat ``engine/`` folder): a safe-format probe folder, a single-file sequence probe, a
pickle (which names classes by their module paths) and the activation cache they filled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    """A copy of the legacy files, its cache as the activation cache."""
    from lmprobe_jupyter.engine.cache.settings import reset_cache

    root = tmp_path / "legacy"
    shutil.copytree(LEGACY, root)
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(root / "cache"))
    reset_cache()
    yield root
    reset_cache()


@pytest.mark.real_model
def test_old_cache_entries_are_hits(legacy):
    from lmprobe_jupyter import Probe

    probe = Probe(layers=12, pooling="mean", device="cpu", dtype="float32", random_state=0)
    probe.fit(EXPECTED["prompts"], [1, 1, 0, 0])
    assert probe.train_cache_hits_ == len(EXPECTED["prompts"])


@pytest.mark.real_model
@pytest.mark.parametrize("name", sorted(EXPECTED["proba"]))
def test_old_probe_files_load_and_predict_the_same(legacy, name):
    from lmprobe_jupyter import Probe

    probe = Probe.load(legacy / name, trust_classifier=name.endswith(".pkl"))
    proba = probe.predict_proba(EXPECTED["test"])[:, 1]
    np.testing.assert_allclose(proba, EXPECTED["proba"][name], rtol=1e-4, atol=1e-6)
