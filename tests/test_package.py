"""Package hygiene: fast import, lazy public names, an engine free of IPython."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import lmprobe_jupyter


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_light():
    got = _run(
        "import sys, json, lmprobe_jupyter;"
        "print(json.dumps({m: m in sys.modules for m in "
        "['torch', 'transformers', 'sklearn', 'IPython', 'anywidget', 'numpy']}))"
    )
    assert got == {
        "torch": False,
        "transformers": False,
        "sklearn": False,
        "IPython": False,
        "anywidget": False,
        "numpy": False,
    }


def test_every_public_name_resolves():
    for name in lmprobe_jupyter.__all__:
        assert getattr(lmprobe_jupyter, name) is not None, name
    assert lmprobe_jupyter.LinearProbe is lmprobe_jupyter.Probe


def test_engine_never_imports_ipython():
    import lmprobe_jupyter.engine as engine

    mods = [m.name for m in pkgutil.walk_packages(engine.__path__, "lmprobe_jupyter.engine.")]
    assert {"lmprobe_jupyter.engine.probes.probe", "lmprobe_jupyter.engine.cache.store"} <= set(
        mods
    )
    got = _run(
        "import sys, json, importlib;"
        f"[importlib.import_module(m) for m in {mods!r}];"
        "print(json.dumps({m: m in sys.modules for m in ['IPython', 'ipywidgets', 'anywidget']}))"
    )
    assert got == {"IPython": False, "ipywidgets": False, "anywidget": False}


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lmprobe_jupyter.Nope  # noqa: B018


def test_lmprobe_names_resolve_to_ours():
    from lmprobe_jupyter.engine.evaluation.baselines import BatteryResults
    from lmprobe_jupyter.engine.evaluation.sweep import SweepResult
    from lmprobe_jupyter.engine.probes.features import LayerNormalizer

    assert lmprobe_jupyter.LayerSweepResult is SweepResult
    assert lmprobe_jupyter.BaselineResults is BatteryResults
    assert lmprobe_jupyter.PerLayerScaler is LayerNormalizer
    for name in ("ProbeEnsemble", "ActivationStore", "WarmupStats", "CacheInfo", "BaselineResult"):
        assert name in lmprobe_jupyter.__all__
