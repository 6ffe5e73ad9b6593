"""lmprobe_jupyter: probes on language-model activations, native to Jupyter.

Public names are loaded lazily so ``import lmprobe_jupyter`` stays fast (no torch, no
sklearn at import time).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_EXPORTS = {
    "Probe": "engine.probe",
    "LinearProbe": "engine.probe",
    "NotFittedError": "engine.probe",
    "TokenScores": "engine.probe",
    "DEFAULT_MODEL": "engine.models",
    "load_model": "engine.models",
    "Extractor": "engine.extraction",
}

__all__ = sorted([*_EXPORTS, "__version__", "load_ipython_extension"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmprobe_jupyter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


def load_ipython_extension(ipython) -> None:
    """``%load_ext lmprobe_jupyter``: register the probe magics."""
    from .jupyter import load_ipython_extension as _load

    _load(ipython)
