"""Argument parsing of the magics: value kinds, Probe option flags, cell lines, namespace lookups."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.magic_arguments import magic_arguments, parse_argstring

from lmprobe_jupyter.jupyter._args import (
    PROBE_OPTIONS,
    parse_bool,
    parse_labeled_lines,
    parse_layers,
    parse_value,
    probe_kwargs,
    probe_options,
    user_list,
    user_object,
)


def test_every_probe_constructor_option_has_a_flag():
    from lmprobe_jupyter.engine.probes.probe import Probe

    params = [p for p in inspect.signature(Probe.__init__).parameters if p != "self"]
    assert list(PROBE_OPTIONS) == params


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16", 16),
        ("-1", -1),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        ("none", None),
        ("None", None),
        ("true", True),
        ("False", False),
        ("a,b", ["a", "b"]),
        ("1,2.5,x", [1, 2.5, "x"]),
        ("[3,4]", [3, 4]),
        ("sweep:5", "sweep:5"),
        ("logistic_regression", "logistic_regression"),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16", 16),
        ("-1", -1),
        ("14,15,16", [14, 15, 16]),
        ("[14, 15]", [14, 15]),
        ("[7]", [7]),
        ("sweep:5", "sweep:5"),
        ("sweep:2-4", "sweep:2-4"),
        ("middle", "middle"),
        ("all", "all"),
    ],
)
def test_parse_layers(text, value):
    assert parse_layers(text) == value


def test_parse_layers_rejects_mixed_lists():
    with pytest.raises(
        UsageError, match="--layers expects integers in a comma list like 14,15,16, got '14,x'"
    ):
        parse_layers("14,x")


def test_parse_bool():
    assert [parse_bool(t) for t in ("yes", "ON", "1", "no", "Off", "0")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(UsageError, match="--remote expects true or false, got 'maybe'"):
        parse_bool("maybe", "--remote")


@magic_arguments()
@probe_options()
def _dummy(line):
    """A magic with every Probe flag."""


def _kwargs(line, model="default-model"):
    return probe_kwargs(parse_argstring(_dummy, line), model)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", {"model": "default-model"}),
        ("--model other", {"model": "other"}),
        ("--dataset user/acts", {"dataset": "user/acts"}),
        ("--layers 16", {"layers": 16}),
        ("--layers=-1", {"layers": -1}),
        ("--layers 14,15,16", {"layers": [14, 15, 16]}),
        ("--layers sweep:5", {"layers": "sweep:5"}),
        ("--pooling mean --inference-pooling max", {"pooling": "mean", "inference_pooling": "max"}),
        ("--train-pooling none", {"train_pooling": None}),
        ("--classifier mass_mean", {"classifier": "mass_mean"}),
        ("--task regression", {"task": "regression"}),
        ("--device cpu", {"device": "cpu"}),
        ("--remote", {"remote": True}),
        ("--remote false", {"remote": False}),
        ("--random-state 0", {"random_state": 0}),
        ("--random-state none", {"random_state": None}),
        ("--batch-size 4", {"batch_size": 4}),
        ("--backend nnsight", {"backend": "nnsight"}),
        ("--dtype float16", {"dtype": "float16"}),
        ("--normalize-layers per_layer", {"normalize_layers": "per_layer"}),
        ("--normalize-layers false", {"normalize_layers": False}),
        (
            "--preprocessing standard+pca --pca-components 8",
            {"preprocessing": "standard+pca", "pca_components": 8},
        ),
        (
            "--classifier-kwargs C=0.01,solver=liblinear,max_iter=5000",
            {"classifier_kwargs": {"C": 0.01, "solver": "liblinear", "max_iter": 5000}},
        ),
        ("""--classifier-kwargs '{"C": 0.5}'""", {"classifier_kwargs": {"C": 0.5}}),
        ("--fast-auto-top-k 2", {"fast_auto_top_k": 2}),
        (
            "--auto-candidates 0.25,0.5,0.75 --auto-alpha 0.1",
            {"auto_candidates": [0.25, 0.5, 0.75], "auto_alpha": 0.1},
        ),
        (
            "--chat-template true --score-roles user,assistant",
            {"chat_template": True, "score_roles": ["user", "assistant"]},
        ),
        ("--progress false", {"progress": False}),
    ],
)
def test_probe_flags(line, expected):
    got = _kwargs(line)
    if "model" not in expected and "dataset" not in expected:
        expected = {**expected, "model": "default-model"}
    assert got == expected


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("--batch-size many", "--batch-size expects an integer, got 'many'"),
        ("--random-state 1.5", "--random-state expects an integer, got '1.5'"),
        ("--auto-alpha strong", "--auto-alpha expects a number, got 'strong'"),
        ("--remote maybe", "--remote expects true or false, got 'maybe'"),
        ("--classifier-kwargs C", "--classifier-kwargs expects key=value pairs"),
        ("--classifier-kwargs '{bad'", "--classifier-kwargs is not valid JSON"),
        ("--auto-candidates a,b", "--auto-candidates expects a comma list of numbers"),
        ("--no-such-flag 1", "unrecognized arguments: --no-such-flag 1"),
        ("--layers", "expected one argument"),
    ],
    ids=["int", "int-float", "float", "bool", "kv", "json", "numlist", "unknown", "missing-value"],
)
def test_probe_flag_mistakes_are_usage_errors(line, match):
    with pytest.raises(UsageError, match=match):
        _kwargs(line)


def test_help_lists_kebab_flags():
    doc = _dummy.__doc__
    for flag in (
        "--inference-pooling",
        "--normalize-layers",
        "--classifier-kwargs",
        "--random-state",
    ):
        assert flag in doc


def test_parse_labeled_lines():
    pos, neg = parse_labeled_lines(
        """
        # dogs vs cats
        + Who wants to go for a walk?
        +   Fetch the ball!

        - Purring, stalking, pouncing, scratching.
        - -5 degrees outside, the cat stays in.
        """
    )
    assert pos == ["Who wants to go for a walk?", "Fetch the ball!"]
    assert neg == [
        "Purring, stalking, pouncing, scratching.",
        "-5 degrees outside, the cat stays in.",
    ]


@pytest.mark.parametrize(
    ("cell", "match"),
    [
        (
            "+ ok\nno sign here",
            r"cell line 2 \('no sign here'\) must start with '\+ ' \(positive\) or '- '",
        ),
        ("-5 degrees", "cell line 1"),
        ("+ ok\n+", "cell line 2"),
    ],
    ids=["no-sign", "no-space", "empty-body"],
)
def test_parse_labeled_lines_mistakes(cell, match):
    with pytest.raises(UsageError, match=match):
        parse_labeled_lines(cell)


def test_user_lookups():
    ns = {
        "pos": ["a", "b"],
        "arr": np.array(["x", "y"]),
        "labels": np.array([1, 0]),
        "s": "text",
        "nums": [1, 2],
        "e": [],
    }
    assert user_list(ns, "pos", "--positive") == ["a", "b"]
    assert user_list(ns, "arr", "--test") == ["x", "y"]
    assert user_list(ns, "labels", "--labels", strings=False) == [1, 0]
    assert user_object(ns, "s", "PROBE") == "text"
    with pytest.raises(
        UsageError, match="--positive: no variable named 'missing' in the notebook namespace"
    ):
        user_list(ns, "missing", "--positive")
    with pytest.raises(
        UsageError, match=r"--positive s must be a list, got str \(wrap a single prompt in a list\)"
    ):
        user_list(ns, "s", "--positive")
    with pytest.raises(
        UsageError, match=r"--negative nums\[0\] is a int, every prompt must be a str"
    ):
        user_list(ns, "nums", "--negative")
    with pytest.raises(UsageError, match="--test e is empty"):
        user_list(ns, "e", "--test")
    with pytest.raises(UsageError, match="--test expects a variable name, got 'a-b'"):
        user_list(ns, "a-b", "--test")
