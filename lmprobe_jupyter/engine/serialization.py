"""Saving and loading probes (interim pickle format; the safe format arrives with issue 7)."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path


def save_probe(probe, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(probe, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_probe(path, trust_classifier: bool = False, **overrides):
    with open(path, "rb") as f:
        probe = pickle.load(f)
    for k, v in overrides.items():
        setattr(probe, k, v)
    return probe
