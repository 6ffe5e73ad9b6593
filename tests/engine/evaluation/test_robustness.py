"""Robustness reports: metrics per transform, cache reuse, bad input, the HTML."""

from __future__ import annotations

import re

import numpy as np
import pytest
from lmtest_helpers import NEG, POS
from sklearn.metrics import roc_auc_score

from lmprobe_jupyter.engine.cache.settings import cache_info, tokens_cached
from lmprobe_jupyter.engine.evaluation.robustness import RobustnessReport, bootstrap_metrics
from lmprobe_jupyter.engine.evaluation.transforms import apply_transform

HELD = ["alpha beta beta", "gamma alpha", "alpha alpha gamma", "omega delta delta", "sigma omega"]
HELD_Y = [1, 1, 1, 0, 0]
SHORT = ["roleplay", "leetspeak", "uppercase"]


@pytest.fixture
def fitted(tiny_probe):
    return tiny_probe(pooling="mean").fit(POS, NEG)


def test_bootstrap_metrics_match_sklearn_and_bracket_the_estimate():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 60), rng.normal(0, 1, 80)
    m = bootstrap_metrics(pos, neg, fpr=0.05, n_bootstrap=300, seed=1)
    y = np.r_[np.ones(60), np.zeros(80)]
    assert m["auroc"] == pytest.approx(roc_auc_score(y, np.r_[pos, neg]))
    # TPR at the 5% threshold: the 5th highest of 80 negatives (floor(0.05*80)=4 above it)
    thr = np.sort(neg)[::-1][4]
    assert m["tpr_at_fpr"] == pytest.approx(np.mean(pos > thr))
    assert m["auroc_lo"] < m["auroc"] < m["auroc_hi"]
    assert m["tpr_lo"] <= m["tpr_at_fpr"] <= m["tpr_hi"]
    assert bootstrap_metrics(pos, neg, n_bootstrap=300, seed=1) == bootstrap_metrics(
        pos, neg, n_bootstrap=300, seed=1
    )


def test_report_scores_each_transform_and_the_drop_against_clean(fitted):
    rep = fitted.robustness_report(HELD, HELD_Y, SHORT, n_bootstrap=50)
    assert isinstance(rep, RobustnessReport)
    assert list(rep.table["transform"]) == ["clean", *SHORT]
    y = np.array(HELD_Y)
    for name in ["clean", *SHORT]:
        copies = HELD if name == "clean" else apply_transform(name, HELD)
        want = fitted.predict_proba(copies)[:, 1]
        np.testing.assert_allclose(rep.scores[name], want, rtol=1e-5, atol=1e-6)
        row = rep.row(name)
        assert row["auroc"] == pytest.approx(roc_auc_score(y, want))
        assert row["auroc_drop"] == pytest.approx(rep.row("clean")["auroc"] - row["auroc"])
        assert row["n"] == 5
    assert (
        rep.weakest(min_drop=-1.0)[0]
        == rep.table.iloc[1:].sort_values("auroc_drop", ascending=False)["transform"].iloc[0]
    )
    # worst examples: n_worst per transform, positives with the lowest scores first
    assert len(rep.worst) == 2 * len(SHORT)
    first = [w for w in rep.worst if w.transform == "roleplay"][0]
    wrong = np.where(y == 1, 1 - rep.scores["roleplay"], rep.scores["roleplay"])
    assert first.index == int(np.argmax(wrong))
    assert first.clean_score == pytest.approx(rep.scores["clean"][first.index])
    assert first.tokens is None  # a pooled probe: no per-token highlights


def test_a_second_run_is_a_cache_hit(fitted):
    first = fitted.robustness_report(HELD, HELD_Y, SHORT, n_bootstrap=20)
    assert first.cache_hits < first.cache_lookups  # cold: the copies were extracted
    entries = cache_info().entries
    again = fitted.robustness_report(HELD, HELD_Y, SHORT, n_bootstrap=20)
    assert again.cache_lookups > 0 and again.cache_hits == again.cache_lookups
    assert cache_info().entries == entries
    assert again.table.equals(first.table)


def test_token_level_probe_worst_examples_carry_token_scores_and_rerun_hits(tiny_probe):
    probe = tiny_probe(train_pooling="all", inference_pooling="rolling_max:2").fit(POS, NEG)
    rep = probe.robustness_report(HELD, HELD_Y, ["uppercase"], n_bootstrap=10, n_worst=1)
    assert rep.token_level and not tokens_cached()  # token caching restored after the run
    (w,) = rep.worst
    assert len(w.tokens) == len(w.token_scores) > 3
    assert np.isnan(w.token_scores[0])  # the attention sink is not scored
    again = probe.robustness_report(HELD, HELD_Y, ["uppercase"], n_bootstrap=10, n_worst=1)
    assert again.cache_hits == again.cache_lookups > 0


def test_unknown_transform_lists_the_known_ones(fitted):
    with pytest.raises(ValueError, match=r"unknown transform\(s\) 'rot13'; known: .*roleplay"):
        fitted.robustness_report(HELD, HELD_Y, ["rot13"])


@pytest.mark.parametrize(
    "prompts, labels, match",
    [
        ([], [], "empty held-out set"),
        (HELD[:3], [1, 1, 1], "needs both classes .* every label is 1"),
        (HELD, [1, 0], "5 prompts but 2 labels"),
    ],
    ids=["empty", "one-class", "mismatch"],
)
def test_bad_sets(fitted, prompts, labels, match):
    with pytest.raises(ValueError, match=match):
        fitted.robustness_report(prompts, labels, ["uppercase"])
    assert cache_info().entries == len(POS) + len(NEG)  # only the training vectors


def test_prompts_over_the_context_raise_and_nothing_is_cached(fitted):
    before = cache_info().entries
    # the tiny model's context is 128 tokens: 256 words of news do not fit
    with pytest.raises(ValueError, match=r"transform 'embed_256': 5 prompt\(s\) exceed .*128"):
        fitted.robustness_report(HELD, HELD_Y, ["uppercase", "embed_256"])
    assert cache_info().entries == before


def test_bad_options(fitted):
    with pytest.raises(ValueError, match="fpr=0 must be"):
        fitted.robustness_report(HELD, HELD_Y, SHORT, fpr=0)
    with pytest.raises(ValueError, match="n_bootstrap=-1"):
        fitted.robustness_report(HELD, HELD_Y, SHORT, n_bootstrap=-1)


def test_regression_probe_is_refused(tiny_probe):
    probe = tiny_probe(task="regression", pooling="mean").fit(POS + NEG, [1.0] * 5 + [0.0] * 5)
    with pytest.raises(ValueError, match="binary classification probe"):
        probe.robustness_report(HELD, HELD_Y, SHORT)


def test_calibrated_probe_reports_rates_at_its_threshold(fitted):
    fitted.calibrate(NEG * 10, fpr=0.1)
    rep = fitted.robustness_report(HELD, HELD_Y, ["uppercase"], n_bootstrap=0)
    s = rep.scores["uppercase"]
    assert rep.row("uppercase")["tpr_at_threshold"] == pytest.approx(
        np.mean(s[:3] > fitted.threshold_)
    )
    assert np.isnan(rep.row("clean")["auroc_lo"])  # no bootstrap asked for


def test_html_is_self_contained_with_chart_table_and_worst(fitted):
    rep = fitted.robustness_report(HELD, HELD_Y, SHORT, n_bootstrap=20)
    html = rep._repr_html_()
    assert "<script" not in html and "http" not in html
    assert html.count('class="lmpj-ci"') == 2 * 4  # AUROC and TPR whiskers, 4 rows
    assert 'class="lmpj-robustness-table"' in html
    assert html.count("<tr>") == 1 + 4
    for name in SHORT:
        assert f">{name}<" in html
    assert "Worst examples" in html
    assert re.search(r"\d+ of \d+ activation lookups from the cache", html)
    assert "clean" in repr(rep) and "AUROC" in repr(rep)


def test_streams_a_progress_bar_over_the_transforms(fitted):
    from lmprobe_jupyter.engine.progress import set_progress_factory

    seen = []

    def factory(iterable, desc, unit):
        items = list(iterable)
        seen.append((desc, unit, items))
        return items

    set_progress_factory(factory)
    try:
        fitted.robustness_report(HELD, HELD_Y, SHORT, n_bootstrap=0, progress=True)
        fitted.robustness_report(HELD, HELD_Y, SHORT, n_bootstrap=0, progress=False)
    finally:
        set_progress_factory(None)
    mine = [s for s in seen if s[0] == "robustness"]
    assert mine == [("robustness", "transform", ["clean", *SHORT])]


def test_chart_is_valid_svg_with_bars_to_scale():
    import xml.etree.ElementTree as ET

    from lmprobe_jupyter.presentation.robustness import PLOT_W, render_robustness_chart

    rows = [
        dict(transform="clean", auroc=0.9, auroc_lo=0.8, auroc_hi=0.95, tpr_at_fpr=0.5,
             tpr_lo=0.3, tpr_hi=0.7, auroc_drop=0.0),
        dict(transform="roleplay", auroc=0.5, auroc_lo=0.3, auroc_hi=0.7, tpr_at_fpr=0.1,
             tpr_lo=0.0, tpr_hi=0.3, auroc_drop=0.4),
    ]  # fmt: skip
    svg = ET.fromstring(render_robustness_chart(rows))
    bars = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.find("title") is not None]
    bars = bars or [r for r in svg.iter("rect") if r.find("title") is not None]
    widths = [float(r.get("width")) for r in bars]
    assert widths == pytest.approx([0.9 * PLOT_W, 0.5 * PLOT_W, 0.5 * PLOT_W, 0.1 * PLOT_W])
    drops = [t.text for t in svg.iter("text") if t.get("class") == "lmpj-drop-bad"]
    assert drops == ["+0.400"]
