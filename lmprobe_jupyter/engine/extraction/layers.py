"""Layer specifications: which residual-stream layers a probe reads.

Layer ``i`` is the output of decoder block ``i`` (``0 <= i < n_layers``); negative integers
count from the end (``-1`` is the last block).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NAMED_SPECS = ("middle", "last", "all", "auto", "fast_auto", "sweep", "sweep:N", "sweep:A-B")
_SWEEP_EVERY = re.compile(r"^sweep:(\d+)$")
_SWEEP_RANGE = re.compile(r"^sweep:(-?\d+)-(-?\d+)$")


def check_index(layer: int, n_layers: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int | np_integer()):
        raise TypeError(f"layer {layer!r} must be an int")
    layer = int(layer)
    if not -n_layers <= layer < n_layers:
        raise ValueError(
            f"layer {layer} is out of range: the model has {n_layers} layers "
            f"(valid: 0..{n_layers - 1}, or -{n_layers}..-1 counting from the end)"
        )
    return layer % n_layers


def np_integer():
    import numpy as np

    return np.integer


def is_sweep_spec(spec) -> bool:
    return isinstance(spec, str) and (spec == "sweep" or spec.startswith("sweep:"))


def is_selection_spec(spec) -> bool:
    """Specs that choose layers during ``fit`` (sweep, auto, fast_auto)."""
    return isinstance(spec, str) and (spec in ("auto", "fast_auto") or is_sweep_spec(spec))


def validate_spec(spec) -> None:
    """Reject malformed specs early (at ``fit``), before any model is loaded."""
    if isinstance(spec, str):
        if spec in ("middle", "last", "all", "auto", "fast_auto", "sweep"):
            return
        if _SWEEP_EVERY.match(spec) or _SWEEP_RANGE.match(spec):
            return
        raise ValueError(
            f"layers={spec!r} is not a valid layer spec; use an int, a list of ints, or one of "
            f"{', '.join(map(repr, NAMED_SPECS))}"
        )
    if isinstance(spec, bool):
        raise TypeError("layers must be an int, a list of ints or a string spec, not a bool")
    if isinstance(spec, int | np_integer()):
        return
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        if len(spec) == 0:
            raise ValueError("layers=[] is empty; give at least one layer index")
        for x in spec:
            if isinstance(x, bool) or not isinstance(x, int | np_integer()):
                raise TypeError(f"layers list must hold ints, got {x!r}")
        return
    raise TypeError(f"layers={spec!r} must be an int, a list of ints, or a string spec")


def resolve_layers(spec, n_layers: int) -> list[int]:
    """Turn a layer spec into a sorted-as-given list of non-negative layer indices.

    For selection specs (``auto``/``fast_auto``/``sweep*``) this returns the candidate
    layers the selection runs over.
    """
    validate_spec(spec)
    if isinstance(spec, str):
        if spec == "middle":
            return [n_layers // 2]
        if spec == "last":
            return [n_layers - 1]
        if spec in ("all", "sweep", "fast_auto", "auto"):
            return list(range(n_layers))
        m = _SWEEP_EVERY.match(spec)
        if m:
            step = int(m.group(1))
            if step < 1:
                raise ValueError(f"layers={spec!r}: the sweep step must be >= 1")
            return list(range(0, n_layers, step))
        m = _SWEEP_RANGE.match(spec)
        a, b = check_index(int(m.group(1)), n_layers), check_index(int(m.group(2)), n_layers)
        if a > b:
            raise ValueError(f"layers={spec!r}: range start {a} is after its end {b}")
        return list(range(a, b + 1))
    if isinstance(spec, int | np_integer()):
        return [check_index(spec, n_layers)]
    out = [check_index(x, n_layers) for x in spec]
    if len(set(out)) != len(out):
        raise ValueError(f"layers={list(spec)!r} lists a layer twice")
    return out
