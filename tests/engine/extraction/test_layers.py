from __future__ import annotations

import pytest

from lmprobe_jupyter.engine.extraction.layers import is_selection_spec, resolve_layers


@pytest.mark.parametrize(
    "spec,expected",
    [
        (16, [16]),
        (-1, [29]),
        (-30, [0]),
        ([14, 15, 16], [14, 15, 16]),
        ("middle", [15]),
        ("last", [29]),
        ("all", list(range(30))),
        ("sweep", list(range(30))),
        ("sweep:10", [0, 10, 20]),
        ("sweep:5-8", [5, 6, 7, 8]),
        ("fast_auto", list(range(30))),
    ],
    ids=[
        "int",
        "neg",
        "neg-first",
        "list",
        "middle",
        "last",
        "all",
        "sweep",
        "every10",
        "range",
        "fast_auto",
    ],
)
def test_resolve_layers(spec, expected):
    assert resolve_layers(spec, 30) == expected


@pytest.mark.parametrize(
    "spec,exc,match",
    [
        (30, ValueError, "out of range: the model has 30 layers"),
        (-31, ValueError, "out of range"),
        ([1, 1], ValueError, "twice"),
        ([], ValueError, "empty"),
        ("deep", ValueError, "not a valid layer spec"),
        ("sweep:0", ValueError, "step must be >= 1"),
        ("sweep:9-3", ValueError, "after its end"),
        (True, TypeError, "bool"),
        ([1.5], TypeError, "ints"),
        (2.0, TypeError, "must be an int"),
    ],
    ids=[
        "too-high",
        "too-low",
        "dup",
        "empty",
        "name",
        "step0",
        "range-rev",
        "bool",
        "float-in-list",
        "float",
    ],
)
def test_bad_specs(spec, exc, match):
    with pytest.raises(exc, match=match):
        resolve_layers(spec, 30)


def test_selection_specs():
    assert (
        is_selection_spec("sweep:3")
        and is_selection_spec("auto")
        and is_selection_spec("fast_auto")
    )
    assert not is_selection_spec("all") and not is_selection_spec(3)
