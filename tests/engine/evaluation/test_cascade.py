"""Probe -> judge cascades: band from calibration, budget kept, judge failures refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmtest_helpers import NEG, POS

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.evaluation.cascade import cascade
from lmprobe_jupyter.examples import BENIGN, MISUSE, SAFETY_TEST, SAFETY_TRICKY

CAL = [f"alpha {w}" for w in ("one", "two", "three", "four", "five")] + [
    f"omega {w}" for w in ("one", "two", "three", "four", "five")
]
CAL_Y = [1] * 5 + [0] * 5
TEST = ["alpha six", "alpha seven", "alpha eight", "omega six", "omega seven", "omega eight"]
TEST_Y = [1, 1, 1, 0, 0, 0]
TRUTH = dict(zip(CAL + TEST + ["alpha nine"], CAL_Y + TEST_Y + [1]))


@pytest.fixture
def tiny(tiny_probe):
    return tiny_probe().fit(POS, NEG)


def oracle(calls):
    def judge(text):
        calls.append(text)
        return float(TRUTH[text])

    return judge


def test_band_holds_at_most_budget_of_calibration_and_counts_calls(tiny):
    calls = []
    rep = tiny.cascade(
        oracle(calls), budget=0.2, calibration=(CAL, CAL_Y), test=(TEST, TEST_Y), n_bootstrap=0
    )
    s_cal = tiny.predict_proba(CAL)[:, 1]
    s_test = tiny.predict_proba(TEST)[:, 1]
    lo, hi = rep.band
    assert rep.calibration_routed == np.mean((s_cal >= lo) & (s_cal <= hi)) <= 0.2
    routed = int(np.sum((s_test >= lo) & (s_test <= hi)))
    assert rep.test_routed == routed / len(TEST)
    c = rep.row("cascade")
    assert c["judge_calls"] == routed and c["calibration_judge_calls"] == 2
    assert rep.row("judge")["judge_calls"] == len(TEST)
    # calibration band + routed test + judge alone on every test prompt
    assert len(calls) == 2 + routed + len(TEST)
    # the two calibration prompts closest to 0.5 (in logit) define the band
    closest = np.argsort(np.abs(np.log(s_cal / (1 - s_cal))))[:2]
    assert lo == pytest.approx(s_cal[closest].min()) and hi == pytest.approx(s_cal[closest].max())
    assert rep.row("judge")["auroc"] == 1.0  # a perfect judge
    assert rep.row("cascade")["auroc"] >= rep.row("probe")["auroc"]


def test_band_does_not_depend_on_the_test_set(tiny):
    def run(test):
        return tiny.cascade(
            oracle([]), budget=0.2, calibration=(CAL, CAL_Y), test=test, n_bootstrap=0
        ).band

    assert run((TEST, TEST_Y)) == run((TEST[::-1] + ["alpha nine"], TEST_Y[::-1] + [1]))


@pytest.mark.parametrize(
    ("judge", "match"),
    [
        (lambda t: 1 / 0, "judge raised ZeroDivisionError on prompt #"),
        (lambda t: float("nan"), "judge returned nan"),
        (lambda t: "high", "judge returned str"),
    ],
    ids=["raises", "nan", "not-a-number"],
)
def test_bad_judge_one_clear_error_probe_unchanged(tiny, judge, match):
    coef = tiny.classifier_.coef_.copy()
    state = dict(tiny.learned_state())
    with pytest.raises(ValueError, match=match):
        tiny.cascade(judge, budget=0.2, calibration=(CAL, CAL_Y), test=(TEST, TEST_Y))
    np.testing.assert_array_equal(tiny.classifier_.coef_, coef)
    assert tiny.learned_state().keys() == state.keys()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0}, "budget=0 must be a share"),
        ({"budget": 1.5}, "budget=1.5"),
        ({"budget": 0.01}, "routes none"),
        ({"test": None}, "needs calibration="),
        ({"test": (CAL[4:6], CAL_Y[4:6])}, "in both calibration and test"),
        ({"test": (TEST, TEST_Y[:2])}, "got 6 prompts but 2 labels"),
    ],
    ids=["zero", "over-one", "too-small", "no-test", "overlap", "short-labels"],
)
def test_bad_options(tiny, kwargs, match):
    kw = {"budget": 0.2, "calibration": (CAL, CAL_Y), "test": (TEST, TEST_Y), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        cascade(tiny, oracle([]), **kw)


def test_html_has_the_three_systems_and_no_script(tiny):
    rep = tiny.cascade(
        oracle([]), budget=0.2, calibration=(CAL, CAL_Y), test=(TEST, TEST_Y), n_bootstrap=0
    )
    html = rep._repr_html_()
    for system in ("probe", "judge", "cascade"):
        assert f"<td>{system}</td>" in html
    assert "<script" not in html and "http" not in html


@pytest.mark.real_model
def test_cascade_with_a_stronger_probe_as_judge_on_the_bundled_model(smollm):
    weak = Probe(model=smollm.name, layers=1, random_state=0, device="cpu").fit(MISUSE, BENIGN)
    strong = Probe(model=smollm.name, layers=16, random_state=0, device="cpu").fit(MISUSE, BENIGN)
    cal, test = SAFETY_TRICKY, SAFETY_TEST
    calls = []

    def judge(text):
        calls.append(text)
        return float(strong.predict_proba([text])[0, 1])

    rep = weak.cascade(
        judge,
        budget=0.5,
        calibration=([t for t, _ in cal], [y for _, y in cal]),
        test=([t for t, _ in test], [y for _, y in test]),
        n_bootstrap=200,
    )
    assert rep.calibration_routed <= 0.5
    c, p, j = rep.row("cascade"), rep.row("probe"), rep.row("judge")
    assert 1 <= c["judge_calls"] == round(rep.test_routed * len(test)) < len(test)
    assert len(calls) == c["calibration_judge_calls"] + c["judge_calls"] + len(test)
    # the layer-16 judge ranks better than the layer-1 probe, and routing its band to
    # the judge never ranks worse than the probe alone here
    assert j["auroc"] > p["auroc"]
    assert c["auroc"] >= p["auroc"]
    assert j["judge_calls"] == len(test)
    for r in (c, p, j):
        assert 0 <= r["auroc_lo"] <= r["auroc"] <= r["auroc_hi"] <= 1
        assert not math.isnan(r["tpr_at_fpr"])
    # outside the band the cascade keeps the probe's scores exactly
    lo, hi = rep.band
    out = (rep.scores["probe"] < lo) | (rep.scores["probe"] > hi)
    np.testing.assert_array_equal(rep.scores["cascade"][out], rep.scores["probe"][out])
    print(
        f"\ncascade figures: probe AUROC {p['auroc']:.3f} [{p['auroc_lo']:.3f}, "
        f"{p['auroc_hi']:.3f}], judge {j['auroc']:.3f}, cascade {c['auroc']:.3f} "
        f"[{c['auroc_lo']:.3f}, {c['auroc_hi']:.3f}]; routed {rep.test_routed:.2f}; "
        f"TPR@1%: probe {p['tpr_at_fpr']:.2f} judge {j['tpr_at_fpr']:.2f} "
        f"cascade {c['tpr_at_fpr']:.2f}"
    )
