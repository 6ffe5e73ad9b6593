"""Drift of new prompts against a probe's calibration set."""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import NEG, POS

from lmprobe_jupyter.engine.evaluation.transforms import apply_transform
from lmprobe_jupyter.engine.monitoring.calibration import prompt_scores
from lmprobe_jupyter.engine.monitoring.drift import DriftReport

REFERENCE = [f"{w} omega delta" for w in ("one", "two", "three", "four", "five")] + NEG * 3


@pytest.fixture
def calibrated(tiny_probe):
    return tiny_probe(pooling="mean").fit(POS, NEG).calibrate(REFERENCE, fpr=0.1)


def test_numbers_behind_the_verdict(calibrated):
    new = POS + NEG  # half of them positive: far more flagged than 10%
    rep = calibrated.drift(new, REFERENCE)
    assert isinstance(rep, DriftReport)
    scores = prompt_scores(calibrated, new)
    k = int(np.sum(scores > calibrated.threshold_))
    assert (rep.n_new, rep.n_flagged) == (10, k)
    assert rep.flag_rate == pytest.approx(k / 10)
    lo, hi = rep.flag_rate_ci
    assert lo <= rep.flag_rate <= hi
    assert rep.score_median_new == pytest.approx(float(np.median(scores)))
    assert f"{k}/10 new prompts flagged" in rep.verdict and "vs 10.0% calibrated" in rep.verdict
    assert str(rep) == rep.verdict and "\n" not in rep.verdict
    assert rep.to_dict()["n_flagged"] == k


def test_the_calibration_set_itself_holds(calibrated):
    rep = calibrated.drift(REFERENCE, REFERENCE)
    assert rep.holds and not rep.drifted
    assert rep.score_ks == pytest.approx(0.0) and rep.mean_shift_sd == pytest.approx(0.0)
    assert rep.verdict.split(":")[0].endswith(" holds")


def test_errors(tiny_probe, calibrated):
    uncalibrated = tiny_probe(pooling="mean").fit(POS, NEG)
    with pytest.raises(ValueError, match=r"call probe.calibrate\(benign_prompts\) first"):
        uncalibrated.drift(NEG, REFERENCE)
    with pytest.raises(ValueError, match="no prompts were given|drift got no prompts"):
        calibrated.drift([], REFERENCE)
    with pytest.raises(ValueError, match="alpha=2"):
        calibrated.drift(NEG, REFERENCE, alpha=2)


def test_a_reference_that_is_not_the_calibration_set_warns(calibrated):
    with pytest.warns(UserWarning, match="does not reproduce the calibrated threshold"):
        calibrated.drift(NEG, POS)


@pytest.mark.real_model
def test_benign_text_in_long_news_breaks_a_short_prompt_threshold():
    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.examples import BENIGN, BENIGN_CALIBRATION, MISUSE

    probe = Probe(layers=16, pooling="mean", random_state=0).fit(MISUSE, BENIGN)
    probe.calibrate(BENIGN_CALIBRATION, fpr=0.1)
    same = probe.drift(BENIGN_CALIBRATION[::2], BENIGN_CALIBRATION)
    assert same.holds and same.n_flagged <= 2
    # the same benign questions inside ordinary news: every one is over the threshold
    # (measured 20/20) and their mean activations move by about 2 calibration sds
    moved = probe.drift(apply_transform("embed_64", BENIGN_CALIBRATION), BENIGN_CALIBRATION)
    assert not moved.holds and moved.drifted
    assert moved.flag_rate > 0.5 and moved.flag_p_value < 1e-3
    assert moved.mean_shift_sd > 1.0 and moved.mean_shift_p < 0.01
    assert "does NOT hold" in moved.verdict


def test_reference_defaults_to_the_calibration_set(calibrated):
    new = POS + NEG
    explicit = calibrated.drift(new, REFERENCE)
    default = calibrated.drift(new)  # the calibration set: saved scores, remembered prompts
    assert default.to_dict() == explicit.to_dict()
    assert len(calibrated.calibration_["scores"]) == len(REFERENCE)


def test_a_reloaded_probe_compares_saved_scores_without_its_prompts(calibrated, tmp_path):
    from lmprobe_jupyter import Probe

    calibrated.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p")
    assert not hasattr(loaded, "calibration_prompts_")  # prompts are never saved
    rep = loaded.drift(POS + NEG)
    full = calibrated.drift(POS + NEG)
    assert (rep.n_flagged, rep.flag_p_value, rep.score_ks) == (
        full.n_flagged,
        full.flag_p_value,
        pytest.approx(full.score_ks),
    )
    assert np.isnan(rep.mean_shift_sd) and "activations not compared" in rep.verdict
    # with the prompts passed again, the activation test runs too
    assert loaded.drift(POS + NEG, REFERENCE).mean_shift_sd == pytest.approx(full.mean_shift_sd)
