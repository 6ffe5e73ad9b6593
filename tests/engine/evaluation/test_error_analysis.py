"""Error analysis: sorted mistakes, filters, relabel/exclude, refit from the cache."""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import NEG, POS

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.evaluation.error_analysis import set_metrics
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.examples import CAT, DOG
from lmprobe_jupyter.examples import DOG_CAT_TEST as TEST


@pytest.fixture
def tiny(tiny_probe):
    return tiny_probe().fit(POS, NEG)


HELD = ["alpha beta beta", "omega alpha", "delta delta", "alpha", "sigma omega"]
HELD_Y = [1, 1, 0, 1, 0]


def test_rows_sorted_mistakes_first_then_least_confident(tiny):
    err = tiny.errors(HELD, HELD_Y, n_highlight=0)
    rows = err.rows()
    assert err.threshold == 0.5 and err.threshold_source == "default 0.5"
    s = tiny.predict_proba(HELD)[:, 1]
    np.testing.assert_allclose(err.scores, s, atol=1e-6)
    wrong = [r for r in rows if r.wrong]
    right = [r for r in rows if not r.wrong]
    assert rows == wrong + right
    assert [abs(r.margin) for r in wrong] == sorted((abs(r.margin) for r in wrong), reverse=True)
    assert [abs(r.margin) for r in right] == sorted(abs(r.margin) for r in right)
    for r in rows:
        pos, flagged = HELD_Y[r.index] == 1, s[r.index] > 0.5
        assert r.kind == ("tp" if pos else "fp") if flagged else ("fn" if pos else "tn")
    fp = err.rows("fp")
    assert all(r.kind == "fp" for r in fp) and len(fp) == sum((s > 0.5) & (np.array(HELD_Y) == 0))
    assert [r.index for r in err.rows(search="DELTA")] == [2]


def test_calibrated_threshold_is_used_and_named(tiny):
    tiny.calibrate(["omega omega", "delta sigma", "sigma sigma", "omega delta omega"], fpr=0.25)
    err = tiny.errors(HELD, HELD_Y, n_highlight=0)
    assert err.threshold_source == "calibrated"
    assert err.threshold == pytest.approx(tiny.threshold_)


def test_relabel_exclude_labels_and_group_by(tiny):
    err = tiny.errors(HELD, HELD_Y, metadata={"src": ["a", "a", "b", "b", "b"]}, n_highlight=0)
    err.relabel(2, 1).exclude(4)
    assert err.labels == [1, 1, 1, 1, 0]
    assert err.excluded == [4]
    assert err.corrections["relabeled"] == [
        {"index": 2, "prompt": "delta delta", "old": 0, "new": 1}
    ]
    groups = {g["value"]: g for g in err.group_by("src")}
    assert groups["b"]["n"] == 2 and groups["a"]["n"] == 2  # the excluded row is left out
    assert err.metrics()["n"] == 4
    assert [r.index for r in err.rows(src="a")] == sorted(
        [r.index for r in err.rows(src="a")], key=lambda i: [x.index for x in err.rows()].index(i)
    )
    with pytest.raises(ValueError, match="not one of the probe's classes"):
        err.relabel(0, 7)
    with pytest.raises(IndexError, match="out of range; this analysis has 5"):
        err.exclude(9)
    with pytest.raises(ValueError, match="no metadata column 'lang'"):
        err.group_by("lang")
    assert err.labels == [1, 1, 1, 1, 0]  # the failed calls changed nothing


@pytest.mark.parametrize(
    ("labels", "match"),
    [([1, 0], "got 5 prompts but 2 labels"), ([1, 0, 1, 0, 5], "5"), ("10101", "list")],
    ids=["short", "unknown-class", "string"],
)
def test_bad_labels_one_clear_error_probe_unchanged(tiny, labels, match):
    before = tiny.pipeline_
    coef = tiny.classifier_.coef_.copy()
    with pytest.raises((ValueError, TypeError), match=match):
        tiny.errors(HELD, labels)
    assert tiny.pipeline_ is before
    np.testing.assert_array_equal(tiny.classifier_.coef_, coef)


def test_set_metrics_confusion_and_auroc():
    m = set_metrics([0.9, 0.2, 0.7, 0.4], [True, False, False, True], 0.5, n_bootstrap=0)
    assert m["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    # pairs (pos, neg): 0.9>0.2, 0.9>0.7, 0.4>0.2, 0.4<0.7
    assert m["auroc"] == pytest.approx(0.75)


def test_token_level_highlights_are_the_probes_token_scores(tiny_probe):
    p = tiny_probe(train_pooling="all", inference_pooling="rolling_max:2").fit(POS, NEG)
    err = p.errors(HELD, HELD_Y, n_highlight=2)
    assert err.token_level
    top = [r.index for r in err.rows()[:2]]
    assert sorted(err.computed_highlights) == sorted(top)
    (ts,) = p.token_scores([HELD[top[0]]])
    np.testing.assert_allclose(err.computed_highlights[top[0]].scores, ts.scores, equal_nan=True)


def test_pooled_probe_highlights_are_labelled_as_not_attribution(tiny):
    err = tiny.errors(HELD, HELD_Y, n_highlight=1)
    assert not err.token_level
    assert "not an attribution" in err.highlight_note
    assert "off its training distribution" in err.highlight_note


# ---------------------------------------------------------------------- real model
@pytest.fixture
def dog(smollm):
    # function scope: each test has a fresh activation cache (conftest), filled by this fit
    return Probe(model=smollm.name, layers=16, random_state=0, device="cpu").fit(DOG, CAT)


@pytest.mark.real_model
def test_refit_on_corrected_labels_runs_no_forward_pass(dog, tmp_path):
    texts = [t for t, _ in TEST]
    truth = [y for _, y in TEST]
    s = dog.predict_proba(texts)[:, 1]
    # flip two labels the probe gets right, so the analysis shows them as mistakes
    flipped = [i for i in range(len(texts)) if (s[i] > 0.5) == (truth[i] == 1)][:2]
    noisy = list(truth)
    for i in flipped:
        noisy[i] = 1 - noisy[i]
    coef = dog.classifier_.coef_.copy()
    err = dog.errors(texts, noisy, n_highlight=0)
    before_fp_fn = {r.index for r in err.rows("wrong")}
    assert set(flipped) <= before_fp_fn  # the probe disagrees with the noisy labels
    for i in flipped:
        err.flip(i)
    assert err.labels == truth
    calls = Extractor.forward_calls
    res = err.refit()
    assert Extractor.forward_calls == calls and res.forward_passes == 0
    assert res.cache_hits == len(DOG) + len(CAT) + len(texts)
    assert res.n_train == len(DOG) + len(CAT) + len(texts) and res.in_sample
    # the original probe is unchanged; the copy learned the corrected labels
    np.testing.assert_array_equal(dog.classifier_.coef_, coef)
    assert res.after["auroc"] >= res.before["auroc"]
    assert res.after["auroc"] >= 0.9
    side_b = res.before_scores > err.threshold
    side_a = res.after_scores > err.threshold
    assert res.changed == [int(i) for i in np.flatnonzero(side_b != side_a)]
    # nearest training examples: cosine on the probe layer's pooled activations, cached
    calls = Extractor.forward_calls
    near = err.nearest_training(1, k=3)
    assert Extractor.forward_calls == calls
    assert [n["similarity"] for n in near] == sorted((n["similarity"] for n in near), reverse=True)
    assert all(-1.0 <= n["similarity"] <= 1.0 + 1e-6 for n in near)
    # corrections travel with the refitted probe when it is saved
    res.probe.save(tmp_path / "p")
    back = Probe.load(tmp_path / "p")
    rel = back.label_corrections_["relabeled"]
    assert [(r["index"], r["old"], r["new"]) for r in rel] == [
        (i, noisy[i], truth[i]) for i in flipped
    ]


@pytest.mark.real_model
def test_old_probe_folder_without_corrections_still_loads(dog, tmp_path):
    dog.save(tmp_path / "old")
    back = Probe.load(tmp_path / "old")
    assert "label_corrections_" not in back.__dict__
    np.testing.assert_allclose(
        back.predict_proba(["Woof!"]), dog.predict_proba(["Woof!"]), atol=1e-6
    )
