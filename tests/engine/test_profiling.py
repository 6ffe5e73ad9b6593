"""Profiling: per-operation wall-clock breakdown, exclusive step times, off means no-op."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine import profiling
from lmprobe_jupyter.engine.profiling import (
    is_profiling,
    last_profile,
    operation,
    profile,
    profile_totals,
    reset_profile,
    set_profiling,
)

POS = ["alpha alpha alpha", "alpha beta alpha", "alpha gamma", "alpha alpha"]
NEG = ["omega omega omega", "omega delta", "delta omega omega", "omega omega"]


@pytest.fixture
def profiling_on():
    was = is_profiling()
    set_profiling(True)
    reset_profile()
    yield
    set_profiling(was)
    reset_profile()


def test_probe_fit_breakdown_names_every_step(tiny_model_path, profiling_on, caplog):
    with caplog.at_level(logging.INFO, logger="lmprobe"):
        Probe(model=tiny_model_path, layers=[1, 2], device="cpu", progress=False).fit(POS, NEG)
    report = last_profile()
    assert report.name == "Probe.fit"
    for step in ("tokenize", "forward", "pool", "cache_read", "cache_write", "fit"):
        assert report.steps[step] > 0, step
    assert report.calls["pool"] == 2  # one per layer, one batch
    assert report.calls["cache_read"] == 2 and report.calls["cache_write"] == 2
    # exclusive times: the steps add up to the operation's wall clock
    assert sum(report.steps.values()) == pytest.approx(report.total, rel=1e-6)
    logged = [r.getMessage() for r in caplog.records if r.name == "lmprobe"]
    assert logged[-1].startswith("profile Probe.fit: ")
    assert "forward" in logged[-1]
    totals = profile_totals()
    assert totals["forward"][1] == 1


def test_nested_steps_are_exclusive(profiling_on):
    with operation("outer"):
        with profile("forward"):
            time.sleep(0.05)
            with profile("pool"):
                time.sleep(0.03)
        with operation("inner"):  # merged into the outer operation
            with profile("fit"):
                time.sleep(0.01)
    r = last_profile()
    assert r.name == "outer"
    assert r.steps["pool"] == pytest.approx(0.03, abs=0.02)
    assert r.steps["forward"] == pytest.approx(0.05, abs=0.02)
    assert r.steps["forward"] < r.total - r.steps["pool"]
    assert set(r.steps) == {"forward", "pool", "fit", "other"}
    assert sum(r.steps.values()) == pytest.approx(r.total, rel=1e-6)


def test_a_step_outside_operations_is_its_own_report(profiling_on):
    with profile("tokenize"):
        pass
    r = last_profile()
    assert (r.name, list(r.steps), r.calls) == ("tokenize", ["tokenize"], {"tokenize": 1})


def test_off_is_a_shared_noop():
    was = is_profiling()
    set_profiling(False)
    reset_profile()
    try:
        assert profile("forward") is profile("pool")
        with operation("x"), profile("forward"):
            pass
        assert last_profile() is None
        assert profile_totals() == {}
    finally:
        set_profiling(was)
    with pytest.raises(TypeError, match="True or False"):
        set_profiling("yes")


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False)], ids=["on", "off"])
def test_env_var_turns_profiling_on(value, expected):
    env = dict(os.environ, LMPROBE_PROFILE=value)
    out = subprocess.run(
        [sys.executable, "-c", "from lmprobe_jupyter import is_profiling; print(is_profiling())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(expected)
    assert profiling.OPERATIONS[-1] == "fit"
