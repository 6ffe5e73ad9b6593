"""The input transformer: ?-ending magic lines and empty cell bodies reach the magic."""

from __future__ import annotations

import pytest

from lmprobe_jupyter.jupyter.input_transform import make_transformer

T = make_transformer({"probe_tokens", "probe_fit", "probe_monitor"})


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["%probe_tokens dog_probe Who's a good boy?\n"],
            ["get_ipython().run_line_magic('probe_tokens', \"dog_probe Who's a good boy?\")\n"],
        ),
        (
            ["x = 1\n", "  %probe_monitor p Why?\n"],
            ["x = 1\n", "  get_ipython().run_line_magic('probe_monitor', 'p Why?')\n"],
        ),
        (
            ["%%probe_fit dog --layers 2\n"],
            ["get_ipython().run_cell_magic('probe_fit', 'dog --layers 2', '\\n')\n"],
        ),
        (
            ["%%probe_fit dog\n", "\n", "   \n"],
            ["get_ipython().run_cell_magic('probe_fit', 'dog', '\\n')\n"],
        ),
    ],
    ids=["question", "indented-in-a-cell", "empty-cell-body", "blank-cell-body"],
)
def test_rewrites(lines, expected):
    assert T(lines) == expected


@pytest.mark.parametrize(
    "lines",
    [
        ["%probe_tokens?\n"],  # help on the magic itself
        ["%probe_tokens ?\n"],
        ["%probe_tokens dog hello\n"],  # no ?: IPython's own handling is right
        ["%timeit x?\n"],  # not our magic
        ["%probe_tokensx a?\n"],
        ["%%probe_fit dog\n", "+ Who's a good boy?\n", "- A cat.\n"],  # a body is kept
        ["%%probe_fit?\n"],
        ["print('a?')\n"],
    ],
    ids=[
        "help",
        "help-space",
        "no-question",
        "other-magic",
        "other-name",
        "body",
        "cell-help",
        "python",
    ],
)
def test_leaves_alone(lines):
    assert T(lines) == lines
