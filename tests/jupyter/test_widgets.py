"""anywidget widgets: synced traits, static text/html fallback, validation, helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import traitlets

from lmprobe_jupyter import presentation as render
from lmprobe_jupyter.jupyter.widgets import (
    BatteryWidget,
    SweepCurveWidget,
    TokenHighlightWidget,
    show_battery,
    show_sweep,
    show_tokens,
)

STATIC = render.STATIC_DIR
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
LMPX_MIME = "application/vnd.lmprobe.v1+json"


def _bundle(widget):
    data, _meta = widget._repr_mimebundle_()
    return data


@pytest.mark.parametrize(
    ("cls", "js"),
    [
        (TokenHighlightWidget, "tokens.js"),
        (SweepCurveWidget, "sweep.js"),
        (BatteryWidget, "battery.js"),
    ],
    ids=["tokens", "sweep", "battery"],
)
def test_esm_and_css_come_from_static_files(cls, js):
    w = cls()
    assert w._esm == (STATIC / js).read_text()
    assert w._css == (STATIC / "widgets.css").read_text()
    assert "export default" in w._esm and "render" in w._esm
    for bad in ("require(", "http://", "https://", "import "):
        assert bad not in w._esm


def test_token_widget_state_and_fallback():
    w = show_tokens([(["Good", " dog", "\n"], np.array([1.0, 0.75, np.nan]))], threshold=0.6)
    assert isinstance(w, TokenHighlightWidget)
    assert w.texts == [{"tokens": ["Good", " dog", "\n"], "scores": [1.0, 0.75, None], "max": 1.0}]
    json.dumps(w.get_state())  # synced state is JSON (no NaN, no arrays)
    data = _bundle(w)
    assert set(data) == {"text/plain", WIDGET_MIME, "text/html", LMPX_MIME}
    assert data[WIDGET_MIME]["model_id"] == w.model_id
    # the saved JSON the JupyterLab extension draws without a kernel: strict JSON
    saved = json.loads(json.dumps(data[LMPX_MIME], allow_nan=False))
    assert saved["kind"] == "tokens" and saved["version"] == 1
    assert saved["data"]["texts"] == [
        {"tokens": ["Good", " dog", "\n"], "scores": [1.0, 0.75, None], "max": 1.0, "n": 3}
    ]
    assert saved["data"]["threshold"] == 0.6
    html = data["text/html"]
    assert html == w._html  # same markup live and static
    assert 'class="lmpj-tok lmpj-over" style="background-color:#b2182b;color:#ffffff"' in html
    assert 'style="background-color:#e0e0e0;color:#000000" data-score="nan"' in html


def test_token_widget_threshold_only_moves_markers():
    w = show_tokens([(["a", "b"], [0.3, 0.9])], threshold=0.5)
    live = w._html
    seen = []
    w.observe(lambda ch: seen.append(ch["new"]), names="threshold")
    w.threshold = 0.2  # what the slider does from the browser
    assert seen == [0.2]
    assert w._html == live  # the view re-marks tokens itself; no re-render round trip
    static = _bundle(w)["text/html"]
    assert static.count("lmpj-tok lmpj-over") == 2
    assert '<span class="lmpj-threshold-value">0.20</span>' in static


def test_token_widget_colour_range_rerenders():
    w = show_tokens([(["a"], [0.0])])
    assert "background-color:#2166ac" in w._html
    w.vmin = -1.0
    assert "background-color:#ffffff" in w._html  # 0 is now the midpoint
    with pytest.raises(traitlets.TraitError, match="vmax=-2.0 must be greater than vmin=-1.0"):
        w.vmax = -2.0


def test_sweep_widget_best_layer_and_selection():
    w = show_sweep(
        [0, 1, 2, 3], train_scores=[0.5, 0.7, 0.9, 0.8], test_scores=[0.4, 0.6, 0.95, 0.7]
    )
    assert isinstance(w, SweepCurveWidget)
    assert w.best_layer == 2  # highest test score
    assert w.layers == [0, 1, 2, 3] and w.test_scores == [0.4, 0.6, 0.95, 0.7]
    picked = []
    w.observe(lambda ch: picked.append(ch["new"]), names="selected_layer")
    w.selected_layer = 3  # what a click in the view does
    assert picked == [3]
    with pytest.raises(
        traitlets.TraitError,
        match=r"selected_layer=7 is not one of the swept layers \[0, 1, 2, 3\]",
    ):
        w.selected_layer = 7
    # the view moves the selection line itself; the static copy shows the current choice
    assert 'class="lmpj-selected-line" x1="52.0"' in w._html
    static = _bundle(w)["text/html"]
    assert 'class="lmpj-selected-line" x1="504.0"' in static and 'visibility="visible"' in static
    assert 'class="lmpj-best-line" data-layer="2"' in static


def test_sweep_widget_best_from_train_and_numpy_inputs():
    w = show_sweep(np.arange(3), train_scores=np.array([0.9, 0.5, 0.9], dtype=np.float32))
    assert w.best_layer == 0  # first of the ties
    assert w.layers == [0, 1, 2] and w.test_scores == []
    assert "lmpj-series-test" not in w._html
    json.dumps(w.get_state())


def test_sweep_widget_rerenders_on_new_scores():
    w = show_sweep([0, 1], train_scores=[0.5, 0.6])
    w.test_scores = [0.7, 0.8]
    assert "lmpj-series-test" in w._html


def test_show_sweep_errors():
    with pytest.raises(ValueError, match="give train_scores or test_scores"):
        show_sweep([0, 1])
    with pytest.raises(ValueError, match="test_scores has 1 values but there are 2 layers"):
        show_sweep([0, 1], test_scores=[0.5])


def test_battery_widget_rows_sorted():
    w = show_battery(
        [
            {"name": "bow", "score": 0.6, "fit_s": 0.01, "predict_s": 0.001},
            {"name": "probe", "score": 0.9, "fit_s": 1.0, "predict_s": 0.1, "is_probe": True},
        ]
    )
    assert isinstance(w, BatteryWidget)
    assert [r["name"] for r in w.rows] == ["probe", "bow"]
    html = _bundle(w)["text/html"]
    assert 'class="lmpj-ref-line"' in html and html == w._html


def test_empty_widgets_render_placeholders():
    assert "no layers yet" in SweepCurveWidget()._html
    assert "no baselines yet" in BatteryWidget()._html
    assert "no texts" in TokenHighlightWidget()._html


def test_sweep_and_battery_bundles_carry_the_payload():
    w = show_sweep([2, 0, 1], train_scores=[0.9, 0.5, 0.7], test_scores=[0.95, 0.45, 0.65])
    d = _bundle(w)[LMPX_MIME]["data"]
    assert d["layers"] == [0, 1, 2]
    assert d["train_scores"] == [0.5, 0.7, 0.9]
    assert d["test_scores"] == [0.45, 0.65, 0.95]
    assert (d["best_layer"], d["best_by"], d["metric"]) == (2, "cv", "accuracy")
    b = show_battery(
        [{"name": "bow", "score": 0.7}, {"name": "probe", "score": 0.9, "is_probe": True}]
    )
    rows = _bundle(b)[LMPX_MIME]["data"]["rows"]
    assert [(r["name"], r["is_probe"]) for r in rows] == [("probe", True), ("bow", False)]


def test_empty_widgets_carry_no_payload():
    assert LMPX_MIME not in _bundle(SweepCurveWidget())
    assert LMPX_MIME not in _bundle(BatteryWidget())


def test_views_carry_payload_html_and_text():
    from lmprobe_jupyter.jupyter.views import evaluation_view

    v = evaluation_view({"auroc": 0.75, "n": 8}, roc={"fpr": [0, 0.5, 1], "tpr": [0, 1, 1]})
    bundle = v._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain", LMPX_MIME}
    assert bundle["text/html"] == v._repr_html_()
    p = bundle[LMPX_MIME]
    assert p["kind"] == "metrics"
    assert p["data"]["rows"][0] == {"name": "auroc", "value": 0.75, "text": None}
    assert p["data"]["roc"] == {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 1.0, 1.0]}
