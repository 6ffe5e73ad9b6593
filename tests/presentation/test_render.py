"""Snapshot tests of the self-contained HTML/SVG renderers (fixed ids, hand-written expectations)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from lmprobe_jupyter import presentation as render
from lmprobe_jupyter.presentation import (
    new_uid,
    normalize_battery_rows,
    normalize_token_texts,
    render_battery,
    render_cache_info,
    render_metrics,
    render_probe_card,
    render_sweep_curve,
    render_token_highlights,
    reset_uids,
    score_color,
    text_color,
)

FORBIDDEN = ("<script", "require(", "requirejs", "http://cdn", "https://", "src=", "@import")


def assert_self_contained(html: str) -> None:
    low = html.lower()
    for bad in FORBIDDEN:
        assert bad not in low, f"{bad!r} in output"
    # every tag opened is closed (cheap well-formedness check on the elements we emit)
    for tag in ("div", "span", "svg", "table", "tr", "style", "text", "title", "g"):
        opened = len(re.findall(rf"<{tag}[\s>]", html))
        assert opened == html.count(f"</{tag}>"), tag


# ------------------------------------------------------------------ colours


@pytest.mark.parametrize(
    ("score", "color"),
    [
        (1.0, "#b2182b"),
        (0.0, "#2166ac"),
        (0.5, "#ffffff"),
        (0.75, "#d98c95"),
        (0.25, "#90b3d6"),
        (1.7, "#b2182b"),
        (-3.0, "#2166ac"),
        (None, "#e0e0e0"),
        (float("nan"), "#e0e0e0"),
    ],
    ids=[
        "one-full-red",
        "zero-full-blue",
        "half-white",
        "0.75",
        "0.25",
        "clip-high",
        "clip-low",
        "none",
        "nan",
    ],
)
def test_score_color(score, color):
    assert score_color(score) == color


def test_score_color_custom_range_centres_white():
    assert score_color(0.0, vmin=-2, vmax=2) == "#ffffff"
    assert score_color(2.0, vmin=-2, vmax=2) == "#b2182b"
    assert score_color(-2.0, vmin=-2, vmax=2) == "#2166ac"
    with pytest.raises(ValueError, match=r"vmax=1 must be greater than vmin=1"):
        score_color(0.5, vmin=1, vmax=1)


def test_text_color_readable():
    assert text_color("#b2182b") == "#ffffff"
    assert text_color("#2166ac") == "#ffffff"
    assert text_color("#ffffff") == "#000000"
    assert text_color("#d98c95") == "#000000"


# ------------------------------------------------------------------ ids


def test_uids_are_deterministic_and_unique():
    reset_uids()
    assert [new_uid(), new_uid("x")] == ["lmpj-0", "x-1"]
    reset_uids(7)
    assert new_uid() == "lmpj-7"
    reset_uids()
    a = render_token_highlights([(["a"], [0.1])])
    b = render_token_highlights([(["a"], [0.1])])
    assert 'id="lmpj-tokens-0"' in a and 'id="lmpj-tokens-1"' in b
    reset_uids()
    assert render_token_highlights([(["a"], [0.1])]) == a


# ------------------------------------------------------------------ token highlights


def test_token_spans_exact():
    html = render_token_highlights(
        [(["Good", " dog", "\n", "<b>"], [1.0, 0.75, 0.5, 0.0])], threshold=0.6, uid="t0"
    )
    assert_self_contained(html)
    assert html.startswith('<div id="t0" class="lmpj lmpj-tokens" data-threshold="0.6"')
    assert (
        '<span class="lmpj-tok lmpj-over" style="background-color:#b2182b;color:#ffffff" '
        'data-score="1.0" title="&quot;Good&quot; score 1.000">Good</span>'
    ) in html
    assert (
        '<span class="lmpj-tok lmpj-over" style="background-color:#d98c95;color:#000000" '
        'data-score="0.75" title="&quot; dog&quot; score 0.750"> dog</span>'
    ) in html
    # the newline token: a visible arrow, then a real line break (pre-wrap keeps it)
    assert (
        '<span class="lmpj-tok" style="background-color:#ffffff;color:#000000" '
        'data-score="0.5" title="&quot;\\n&quot; score 0.500">\u21b5\n</span>'
    ) in html
    # markup inside tokens is escaped, never interpreted
    assert (
        '<span class="lmpj-tok" style="background-color:#2166ac;color:#ffffff" '
        'data-score="0.0" title="&quot;&lt;b&gt;&quot; score 0.000">&lt;b&gt;</span>'
    ) in html
    assert "<b>" not in html
    assert "white-space:pre-wrap" in html
    assert (
        'text 1 &#183; max <span class="lmpj-max" style="background-color:#b2182b;'
        'color:#ffffff;padding:0 3px;border-radius:2px">1.000</span> &#183; '
        '<span class="lmpj-n-over">2</span> of 4 tokens over threshold'
    ) in html
    assert '<span class="lmpj-threshold-value">0.60</span>' in html


def test_token_text_order_and_whitespace_kept():
    html = render_token_highlights(
        [(["a", "  ", "\tb", "\r\n"], [0.1, 0.2, 0.3, 0.4]), (["x"], [0.9])], uid="t1"
    )
    bodies = re.findall(r'<div class="lmpj-text" data-index="(\d)">', html)
    assert bodies == ["0", "1"]
    texts = re.findall(r'title="[^"]*">([^<]*)</span>', html)
    assert texts == ["a", "  ", "\tb", "\u21b5\n", "x"]
    assert "text 2 &#183; max" in html


def test_token_threshold_is_strict():
    html = render_token_highlights([(["a", "b"], [0.5, 0.5000001])], threshold=0.5, uid="t")
    classes = re.findall(r'<span class="(lmpj-tok[^"]*)"', html)
    assert classes == ["lmpj-tok", "lmpj-tok lmpj-over"]


def test_token_missing_scores_grey_and_excluded_from_max():
    items = normalize_token_texts([(["<s>", "hi"], [float("nan"), 0.3])])
    assert items[0]["max"] == pytest.approx(0.3)
    html = render_token_highlights(items, uid="t")
    assert (
        'background-color:#e0e0e0;color:#000000" data-score="nan" title="&quot;&lt;s&gt;&quot; score n/a"'
        in html
    )


class _TokenScores:  # the engine's TokenScores shape
    def __init__(self, tokens, scores):
        self.text = "".join(tokens)
        self.tokens = tokens
        self.scores = np.asarray(scores, dtype=np.float32)


@pytest.mark.parametrize(
    "texts",
    [
        [(["a", "b"], [0.25, 1.0])],
        [[("a", 0.25), ("b", 1.0)]],
        [{"tokens": ["a", "b"], "scores": [0.25, 1.0]}],
        [_TokenScores(["a", "b"], [0.25, 1.0])],
        [(("a", "b"), np.array([0.25, 1.0]))],
    ],
    ids=["tokens-scores", "pairs", "dict", "token-scores-object", "numpy"],
)
def test_normalize_token_texts_forms(texts):
    assert normalize_token_texts(texts) == [
        {"tokens": ["a", "b"], "scores": [0.25, 1.0], "max": 1.0}
    ]


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        ("hello", "must be a list of texts"),
        ([(["a", "b"], [0.1])], "text 0 has 2 tokens but 1 scores"),
        ([{"tokens": ["a"]}], "text 0 needs both 'tokens' and 'scores'"),
        ([["a", "b", "c"]], "text 0: expected"),
    ],
    ids=["string", "length-mismatch", "dict-missing", "bad-entry"],
)
def test_normalize_token_texts_errors(texts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        normalize_token_texts(texts)


def test_token_empty_list():
    html = render_token_highlights([], uid="e")
    assert "no texts" in html


# ------------------------------------------------------------------ sweep curve


def test_sweep_curve_exact_geometry():
    html = render_sweep_curve(
        [0, 1, 2, 3], [0.5, 0.7, 0.9, 0.8], [0.45, 0.65, 0.95, None], best_layer=2, uid="s0"
    )
    assert_self_contained(html)
    assert html.startswith('<div id="s0" class="lmpj lmpj-sweep" data-best-layer="2"')
    # plot box: x from 52 to 504 (3 gaps of 150.7), y from 30 (score 1) to 238 (score 0)
    assert (
        '<polyline class="lmpj-series lmpj-series-train" fill="none" stroke="#1f77b4" '
        'stroke-width="2" points="52.0,134.0 202.7,92.4 353.3,50.8 504.0,71.6"/>'
    ) in html
    # the missing test score at layer 3 ends the test line at layer 2
    assert (
        '<polyline class="lmpj-series lmpj-series-test" fill="none" stroke="#d62728" '
        'stroke-width="2" points="52.0,144.4 202.7,102.8 353.3,40.4"/>'
    ) in html
    assert html.count('class="lmpj-point') == 7
    assert (
        '<circle class="lmpj-point lmpj-best" data-layer="2" data-series="test" cx="353.3" '
        'cy="40.4" r="5.5" fill="#d62728" stroke="#1a9850" stroke-width="2.5">'
        "<title>layer 2 &#183; test 0.950</title></circle>"
    ) in html
    assert (
        '<line class="lmpj-best-line" data-layer="2" x1="353.3" y1="30.0" x2="353.3" y2="238.0" '
        'stroke="#1a9850"'
    ) in html
    assert "best: layer 2 (0.950)</text>" in html
    # one click target per layer, centred on the layer
    assert re.findall(r'class="lmpj-hit" data-layer="(\d+)" data-x="([\d.]+)"', html) == [
        ("0", "52.0"),
        ("1", "202.7"),
        ("2", "353.3"),
        ("3", "504.0"),
    ]
    assert 'class="lmpj-selected-line"' in html and 'visibility="hidden"' in html
    assert ">train CV</text>" in html and ">test</text>" in html


def test_sweep_curve_train_only_sorted_and_selected():
    html = render_sweep_curve([4, 0, 2], train_scores=[0.9, 0.5, 0.7], selected_layer=2, uid="s1")
    assert "lmpj-series-test" not in html and ">test</text>" not in html
    assert 'points="52.0,134.0 278.0,92.4 504.0,50.8"' in html  # sorted by layer
    assert re.search(r'class="lmpj-selected-line" x1="278.0"[^>]*visibility="visible"', html)
    assert "lmpj-best-line" not in html


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": [], "train_scores": []}, "layers is empty"),
        ({"layers": [0, 1]}, "give train_scores or test_scores"),
        (
            {"layers": [0, 1], "train_scores": [0.5]},
            "train_scores has 1 values but there are 2 layers",
        ),
        (
            {"layers": [0, 1], "train_scores": [0.5, 0.6], "best_layer": 5},
            r"best_layer=5 is not one of the swept layers \[0, 1\]",
        ),
        ({"layers": [1, 1], "train_scores": [0.5, 0.6]}, "duplicates"),
    ],
    ids=["empty", "no-scores", "length", "best-not-swept", "duplicates"],
)
def test_sweep_curve_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        render_sweep_curve(**kwargs)


def test_sweep_curve_y_range_grows_for_regression_scores():
    html = render_sweep_curve([0, 1], train_scores=[-0.5, 1.5], uid="s2")
    ticks = re.findall(
        r'text-anchor="end" font-size="11" class="lmpj-fg2" fill="#595959">([-\d.]+)</text>', html
    )
    assert ticks[0] == "-0.5" and ticks[-1] == "1.5"


# ------------------------------------------------------------------ battery


ROWS = [
    {"name": "bow", "score": 0.6, "fit_s": 0.012, "predict_s": 0.0004},
    {"name": "probe dog", "score": 0.9, "fit_s": 1.5, "predict_s": 0.25, "is_probe": True},
    {"name": "random", "score": 0.5, "fit_s": 0.0, "predict_s": 0.0},
    {"name": "broken", "score": None},
]


def test_battery_sorted_bars_and_reference_line():
    html = render_battery(ROWS, uid="b0")
    assert_self_contained(html)
    names = re.findall(r'<g class="lmpj-row" data-name="([^"]+)" data-rank="(\d)">', html)
    assert names == [("probe dog", "0"), ("bow", "1"), ("random", "2"), ("broken", "3")]
    # bar length = score * 240 px, starting at x=170
    assert (
        '<rect class="lmpj-bar lmpj-probe" x="170.0" y="30.0" width="216.0" height="16.0" '
        'fill="#b2182b"><title>probe dog 0.900</title></rect>'
    ) in html
    assert (
        '<rect class="lmpj-bar" x="170.0" y="54.0" width="144.0" height="16.0" fill="#8c9db5">'
    ) in html
    assert html.count("<rect") == 3  # no bar for the missing score
    assert (
        '<line class="lmpj-ref-line" x1="386.0" y1="26.0" x2="386.0" y2="122.0" '
        'stroke="#b2182b" stroke-width="1.5" stroke-dasharray="5 3"/>'
    ) in html
    assert ">probe 0.900</text>" in html
    assert ">fit 1.50s &#183; predict 0.25s</text>" in html
    assert ">fit 0.01s &#183; predict 0.4ms</text>" in html
    assert ">fit n/a &#183; predict n/a</text>" in html


def test_battery_rows_from_objects_and_aliases():
    class Result:
        def __init__(self, name, score, fit_time, predict_time, is_probe=False):
            self.name, self.score = name, score
            self.fit_time, self.predict_time, self.is_probe = fit_time, predict_time, is_probe

    rows = normalize_battery_rows(
        [Result("tfidf", 0.7, 0.1, 0.01), Result("p", 0.8, 2.0, 0.2, True)]
    )
    assert rows == [
        {"name": "p", "score": 0.8, "fit_s": 2.0, "predict_s": 0.2, "is_probe": True},
        {"name": "tfidf", "score": 0.7, "fit_s": 0.1, "predict_s": 0.01, "is_probe": False},
    ]
    with pytest.raises(ValueError, match="battery row 0 has no name"):
        normalize_battery_rows([{"score": 0.5}])
    with pytest.raises(ValueError, match="no rows"):
        render_battery([])


# ------------------------------------------------------------------ metrics, card, cache


def test_metrics_table_and_roc():
    html = render_metrics(
        {"accuracy": 0.875, "auroc": 0.9375, "n": 8, "note": "<ok>"},
        roc={"fpr": [0.0, 0.25, 1.0], "tpr": [0.0, 0.75, 1.0]},
        uid="m0",
    )
    assert_self_contained(html)
    assert (
        '<tr data-metric="accuracy"><th>accuracy</th><td class="lmpj-value">0.8750</td></tr>'
        in html
    )
    assert '<tr data-metric="n"><th>n</th><td class="lmpj-value">8</td></tr>' in html
    assert "&lt;ok&gt;" in html
    # ROC square: 196 px side from (34, 10)
    assert 'points="34.0,206.0 83.0,59.0 230.0,10.0"' in html
    assert ">AUC 0.938</text>" in html


def test_metrics_without_roc_and_bad_roc():
    html = render_metrics({"r2": 0.5}, uid="m1")
    assert "<svg" not in html and ">0.5000</td>" in html
    with pytest.raises(ValueError, match="matching fpr/tpr"):
        render_metrics({}, roc={"fpr": [0.0], "tpr": [0.0]})


def test_probe_card_fields():
    html = render_probe_card(
        {
            "name": "dog_probe",
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "layers": [14, 15],
            "pooling": "last_token",
            "classifier": "logistic_regression",
            "n_positive": 5,
            "n_negative": 4,
            "train_accuracy": 1.0,
            "cv_accuracy": None,
            "fit_time_s": 2.345,
            "cache_hits": "9 of 9 prompts",
            "extra": "kept",
        },
        uid="c0",
    )
    assert_self_contained(html)
    rows = re.findall(r'<tr data-field="([^"]+)"><th>([^<]+)</th><td>([^<]*)</td></tr>', html)
    assert rows == [
        ("model", "model", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("layers", "layers", "14, 15"),
        ("pooling", "pooling", "last_token"),
        ("classifier", "classifier", "logistic_regression"),
        ("n_positive", "positive prompts", "5"),
        ("n_negative", "negative prompts", "4"),
        ("train_accuracy", "training accuracy", "1.000"),
        ("cv_accuracy", "cross-validated accuracy", "n/a"),
        ("fit_time_s", "fit time", "2.35s"),
        ("cache_hits", "cache hits", "9 of 9 prompts"),
        ("extra", "extra", "kept"),
    ]
    assert "probe <code>dog_probe</code>" in html


def test_cache_info_table_readable_labels_and_model_table():
    html = render_cache_info(
        {
            "path": "/tmp/c",
            "entries": 12,
            "bytes": 1_500_000,
            "shards": 1,
            "limit_bytes": None,
            "hits": 9,
            "misses": 3,
            "hit_rate": 0.75,
            "models": {
                "m@abc": {"model": "m@abc", "entries": 12, "bytes": 2048, "layers": [1, 2]},
                "big@1": {
                    "entries": 30,
                    "bytes": 5e9,
                    "layers": list(range(30)),
                    "poolings": ["mean", "last_token"],
                },
            },
        },
        uid="x0",
    )
    assert_self_contained(html)
    rows = re.findall(r'<tr data-field="(\w+)"><th>([^<]+)</th><td>([^<]*)</td></tr>', html)
    assert rows == [
        ("path", "location", "/tmp/c"),
        ("entries", "entries", "12"),
        ("bytes", "size on disk", "1.5 MB in 1 shard"),
        ("limit_bytes", "size limit", "unlimited"),
        ("hits", "hits / misses", "9 / 3 (75%)"),
    ]
    assert "limit_bytes</th>" not in html and "entries=" not in html
    models = re.findall(r"<tr>((?:<td>[^<]*</td>)+)</tr>", html)
    assert models == [
        "<td>m@abc</td><td>12</td><td>2.0 KB</td><td>1, 2</td><td></td>",
        "<td>big@1</td><td>30</td><td>5.0 GB</td><td>0..29 (30)</td><td>mean, last_token</td>",
    ]


def test_fmt_helpers():
    assert render.fmt(None) == "n/a" and render.fmt(math.nan) == "n/a"
    assert render.fmt(3) == "3" and render.fmt(0.12345) == "0.123"
    assert render.num(-0.04) == "0.0"


# ------------------------------------------------------------------ issue 18 details


def test_sweep_best_label_names_the_score_it_was_chosen_by():
    html = render_sweep_curve(
        [0, 1, 2], [0.6, 0.9, 0.7], [0.9, 0.6, 0.8], best_layer=1, best_by="cv", uid="s"
    )
    label = re.search(r'class="lmpj-best-label[^"]*"[^>]*>([^<]+)<', html).group(1)
    assert label == "best by CV: layer 1 (CV 0.900 \u00b7 test 0.600)"
    html = render_sweep_curve([0, 1], None, [0.5, 0.8], best_layer=1, best_by="test", uid="s")
    assert "best by test: layer 1 (0.800)" in html
    with pytest.raises(ValueError, match="best_by='train' is not one of None, 'cv', 'test'"):
        render_sweep_curve([0, 1], [0.5, 0.8], best_layer=1, best_by="train")


@pytest.mark.parametrize(
    ("n_layers", "expected"),
    [
        (5, [0, 1, 2, 3, 4]),
        (12, list(range(12))),
        (30, [0, 5, 10, 15, 20, 25, 29]),
        (61, [*range(0, 61, 10)]),
    ],
    ids=["5", "12", "30", "61"],
)
def test_layer_ticks_never_crowd(n_layers, expected):
    html = render_sweep_curve(list(range(n_layers)), [0.5] * n_layers, uid="s")
    ticks = [int(t) for t in re.findall(r'class="lmpj-xtick[^"]*"[^>]*>(\d+)<', html)]
    assert ticks == expected


def test_battery_ties_keep_the_given_order():
    rows = [
        {"name": "tfidf", "score": 0.9},
        {"name": "bow", "score": 0.9},
        {"name": "probe", "score": 0.95, "is_probe": True},
    ]
    assert [r["name"] for r in normalize_battery_rows(rows)] == ["probe", "tfidf", "bow"]


def test_roc_x_label_sits_under_its_ticks():
    html = render_metrics({"auroc": 0.8}, roc={"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1]})
    tick_y = float(
        re.search(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="middle" font-size="10"', html).group(
            1
        )
    )
    label_y = float(re.search(r'y="([\d.]+)"[^>]*>false positive rate<', html).group(1))
    assert 10 <= label_y - tick_y <= 16
