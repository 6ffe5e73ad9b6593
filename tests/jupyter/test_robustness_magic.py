"""%probe_robustness through a real InteractiveShell."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from lmtest_helpers import NEG, POS

from lmprobe_jupyter.engine.evaluation.robustness import RobustnessReport

HELD = ["alpha beta beta", "gamma alpha", "alpha alpha gamma", "omega delta delta", "sigma omega"]
HELD_Y = [1, 1, 1, 0, 0]


@pytest.fixture
def shell(ip, tiny_probe):
    probe = tiny_probe(pooling="mean").fit(POS, NEG)
    ip.user_ns.update(probe=probe, held=list(HELD), held_y=list(HELD_Y), word="x")
    return ip


def test_runs_the_report_binds_it_and_displays_html(shell):
    rep = shell.run_line_magic(
        "probe_robustness",
        "probe held --labels held_y --transforms roleplay,uppercase --bootstrap 20 -o rep",
    )
    assert isinstance(rep, RobustnessReport) and shell.user_ns["rep"] is rep
    assert list(rep.table["transform"]) == ["clean", "roleplay", "uppercase"]
    assert rep.n_bootstrap == 20
    direct = shell.user_ns["probe"].robustness_report(
        HELD, HELD_Y, ["roleplay", "uppercase"], n_bootstrap=20
    )
    assert rep.table.equals(direct.table)
    assert "lmpj-robustness-svg" in rep._repr_html_()


@pytest.mark.parametrize(
    "line, match",
    [
        ("probe held --labels held_y --transforms rot13", "probe_robustness: unknown transform"),
        ("nothere held --labels held_y", "no variable named 'nothere'"),
        ("word held --labels held_y", "PROBE word is a str, not a Probe"),
        ("probe word --labels held_y", "must be a list"),
        ("probe held --labels held_y -o 1x", "expects a variable name"),
        ("probe held --labels held_y --fpr 2", "fpr=2.0 must be"),
    ],
    ids=["unknown-transform", "no-variable", "not-a-probe", "not-a-list", "bad-out", "bad-fpr"],
)
def test_mistakes_are_one_line_usage_errors(shell, line, match):
    with pytest.raises(UsageError, match=match):
        shell.run_line_magic("probe_robustness", line)


def test_one_class_set_is_a_usage_error(shell):
    shell.user_ns["ones"] = [1, 1, 1, 1, 1]
    with pytest.raises(UsageError, match="needs both classes"):
        shell.run_line_magic("probe_robustness", "probe held --labels ones")
