"""The versioned payload: every kind's fields, validation, truncation, the mimebundles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmprobe_jupyter.presentation import payload as schema

MIME = "application/vnd.lmprobe.v1+json"


def _roundtrip(p: dict) -> dict:
    """The payload as a notebook stores it: strict JSON (NaN would fail here)."""
    return json.loads(json.dumps(p, allow_nan=False))


def test_mime_type_spells_the_schema_version():
    assert schema.MIME_TYPE == MIME
    assert schema.SCHEMA_VERSION == 1


def test_sweep_payload_sorts_layers_and_maps_nan_to_null():
    p = schema.payload(
        "sweep",
        layers=[3, 1, 2],
        train_scores=[0.8, float("nan"), 0.9],
        test_scores=np.array([0.7, 0.5, 0.95]),
        best_layer=2,
        best_by="cv",
        metric="auroc",
    )
    assert _roundtrip(p) == {
        "version": 1,
        "kind": "sweep",
        "data": {
            "layers": [1, 2, 3],
            "train_scores": [None, 0.9, 0.8],
            "test_scores": [0.5, 0.95, 0.7],
            "best_layer": 2,
            "best_by": "cv",
            "selected_layer": None,
            "metric": "auroc",
        },
        "notes": [],
    }


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"layers": []}, "layers is empty"),
        ({"layers": [0, 1]}, "give train_scores or test_scores"),
        ({"layers": [0, 1], "train_scores": [0.5]}, "train_scores has 1 values for 2 layers"),
        ({"layers": [0, 1], "test_scores": [0.5, 0.6], "best_layer": 7}, "best_layer=7"),
        ({"layers": [0], "test_scores": [0.5], "best_by": "train"}, "best_by='train'"),
        ({"layers": [0], "test_scores": ["high"]}, "test_scores='high' is not a number"),
        ({"layers": [0], "test_scores": [0.5], "colour": "red"}, "unexpected keyword"),
    ],
    ids=["empty", "no-scores", "length", "best", "best-by", "not-number", "unknown-field"],
)
def test_sweep_payload_rejects_bad_fields(fields, match):
    with pytest.raises(ValueError, match=match):
        schema.payload("sweep", **fields)


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match=r"kind='heatmap' is not one of 'battery', "):
        schema.payload("heatmap", rows=[])


def test_tokens_payload_keeps_hostile_text_as_data_and_greys_nan():
    hostile = ['<img src=x onerror="alert(1)">', "</script>"]
    p = _roundtrip(schema.payload("tokens", texts=[(hostile, [0.9, float("nan")])]))
    assert p["data"]["texts"] == [{"tokens": hostile, "scores": [0.9, None], "max": 0.9, "n": 2}]
    assert p["notes"] == []


def test_ten_megabytes_of_tokens_are_cut_with_a_note():
    tokens = ["token-" + "x" * 4] * 1_000_000  # 10 MB of token text
    scores = np.linspace(0, 1, len(tokens))
    p = schema.payload("tokens", texts=[(tokens, scores)])
    text = p["data"]["texts"][0]
    assert len(text["tokens"]) == len(text["scores"]) == schema.MAX_TOKENS
    assert text["n"] == 1_000_000
    assert p["notes"] == ["showing the first 20,000 of 1,000,000 tokens"]
    assert len(json.dumps(p)) < 1_000_000


def test_token_budget_is_shared_across_texts():
    many = [(["a"] * 15_000, [0.1] * 15_000), (["b"] * 15_000, [0.2] * 15_000), (["c"], [0.3])]
    p = schema.payload("tokens", texts=many)
    assert [len(t["tokens"]) for t in p["data"]["texts"]] == [15_000, 5_000]
    assert p["notes"] == ["showing the first 20,000 of 30,001 tokens", "showing 2 of 3 texts"]


def test_long_strings_are_cut():
    p = schema.payload("tokens", texts=[(["y" * 10_000], [0.5])])
    assert p["data"]["texts"][0]["tokens"][0] == "y" * schema.MAX_STRING + "…"


def test_tokens_payload_rejects_bad_scale():
    with pytest.raises(ValueError, match="vmax=0.0 must be a number greater than vmin=1.0"):
        schema.payload("tokens", texts=[], vmin=1.0, vmax=0.0)


def test_battery_payload_sorts_best_first():
    p = schema.payload(
        "battery",
        rows=[
            {"name": "bow", "score": 0.7, "fit_time": 0.5},
            {"name": "probe", "score": 0.9, "is_probe": True},
        ],
    )
    assert [(r["name"], r["score"], r["is_probe"]) for r in p["data"]["rows"]] == [
        ("probe", 0.9, True),
        ("bow", 0.7, False),
    ]
    assert p["data"]["rows"][1]["fit_s"] == 0.5


def test_metrics_payload_keeps_numbers_and_text_apart_and_thins_roc():
    n = 12_001
    fpr = np.linspace(0, 1, n)
    p = schema.payload(
        "metrics",
        metrics={"auroc": 0.91, "n": 40, "model": "tiny", "tpr@1%fpr": float("nan")},
        roc={"fpr": fpr, "tpr": np.sqrt(fpr)},
    )
    rows = p["data"]["rows"]
    assert rows == [
        {"name": "auroc", "value": 0.91, "text": None},
        {"name": "n", "value": 40.0, "text": None},
        {"name": "model", "value": None, "text": "tiny"},
        {"name": "tpr@1%fpr", "value": None, "text": None},
    ]
    roc = p["data"]["roc"]
    assert len(roc["fpr"]) == math.ceil(n / 3) and roc["fpr"][0] == 0.0
    assert p["notes"] == ["ROC curve thinned to every 3th of 12,001 points"]


def test_metrics_payload_needs_fpr_and_tpr():
    with pytest.raises(ValueError, match=r"roc needs 'fpr' and 'tpr', got \['fpr'\]"):
        schema.payload("metrics", metrics={"auroc": 0.5}, roc={"fpr": [0, 1]})


def test_monitor_payload():
    p = schema.payload(
        "monitor",
        tokens=["Hi", " there"],
        scores=[None, 0.8],
        threshold=0.5,
        flagged_at=1,
        prompt_tokens=["<s>"],
        prompt_scores=[float("nan")],
        status="stopped",
    )
    d = _roundtrip(p)["data"]
    assert (d["tokens"], d["scores"], d["flagged_at"], d["status"]) == (
        ["Hi", " there"],
        [None, 0.8],
        1,
        "stopped",
    )
    assert d["prompt_scores"] == [None]
    with pytest.raises(ValueError, match="flagged_at=5 is outside the 2 tokens"):
        schema.payload("monitor", tokens=["a", "b"], scores=[0.1, 0.2], flagged_at=5)
    with pytest.raises(ValueError, match="status"):
        schema.payload("monitor", tokens=[], scores=[], status="paused")


def test_scan_payload_accepts_only_inline_png():
    props = {"tokens": ["a"], "n_layers": 2, "signal": "residual", "png": "https://x/y.png"}
    with pytest.raises(ValueError, match="data:image/png;base64"):
        schema.payload("scan", props=props)
    with pytest.raises(ValueError, match="scan props miss n_layers, png"):
        schema.payload("scan", props={"tokens": [], "signal": "residual"})


def test_table_payload_checks_row_width():
    p = schema.payload("table", rows=[("layers", 2), ("pooling", None)], title="probe")
    assert p["data"]["rows"] == [["layers", "2"], ["pooling", ""]]
    with pytest.raises(ValueError, match="table row 0 has 1 cells for 2 columns"):
        schema.payload("table", rows=[("a",)], columns=("k", "v"))


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([], "a payload is a JSON object, got list"),
        ({"version": 1, "kind": "sweep"}, "payload is missing data"),
        ({"version": 2, "kind": "sweep", "data": {}}, "payload version 2 is not 1"),
        ({"version": 1, "kind": "pie", "data": {}}, "kind='pie' is not one of"),
        ({"version": 1, "kind": "sweep", "data": []}, "data must be a JSON object"),
    ],
    ids=["not-object", "missing", "version", "kind", "data"],
)
def test_validate_rejects(obj, match):
    with pytest.raises(ValueError, match=match):
        schema.validate(obj)


_ERROR_PROPS = {
    "threshold": 0.5,
    "threshold_source": "calibrated",
    "positive": "1",
    "n": 2,
    "metrics": {"auroc": 0.75, "auroc_lo": float("nan"), "confusion": {"tp": 1, "fp": 1}},
    "refit": None,
    "highlight_note": "per-token scores",
    "rows": [
        {
            "index": 1,
            "kind": "fp",
            "score": 0.9,
            "label": "0",
            "original_label": "0",
            "uncertain": False,
            "excluded": False,
            "text": "<b>x</b>",
        },
        {
            "index": 0,
            "kind": "tp",
            "score": float("nan"),
            "label": "1",
            "original_label": "0",
            "uncertain": True,
            "excluded": True,
            "text": "y",
        },
    ],
}
_ROBUST_ROW = {
    "transform": "clean",
    "family": "identity",
    "n": 4,
    "auroc": 0.9,
    "auroc_lo": 0.8,
    "auroc_hi": 1.0,
    "tpr_at_fpr": 0.5,
    "tpr_lo": float("nan"),
    "tpr_hi": 1.0,
    "auroc_drop": 0.0,
}


def test_errors_payload_keeps_rows_highlights_and_maps_nan_to_null():
    from types import SimpleNamespace

    hl = {1: SimpleNamespace(tokens=["<b>", "x"], scores=[float("nan"), 0.8])}
    d = _roundtrip(schema.payload("errors", props=_ERROR_PROPS, highlights=hl))["data"]
    assert [r["index"] for r in d["rows"]] == [1, 0]
    assert d["rows"][0]["highlight"] == {"tokens": ["<b>", "x"], "scores": [None, 0.8], "n": 2}
    assert d["rows"][1]["highlight"] is None and d["rows"][1]["score"] is None
    assert d["rows"][1]["original_label"] == "0" and d["rows"][1]["excluded"] is True
    assert d["metrics"] == {"auroc": 0.75, "auroc_lo": None, "confusion": {"tp": 1, "fp": 1}}
    with pytest.raises(ValueError, match="errors props miss rows"):
        schema.payload("errors", props={"threshold": 0.5, "metrics": {}})


def test_robustness_payload_cuts_worst_highlights_at_the_token_budget():
    from types import SimpleNamespace

    n = schema.MAX_TOKENS + 5
    worst = [
        SimpleNamespace(
            transform="roleplay",
            label=1,
            positive=True,
            score=0.1,
            clean_score=0.9,
            text="t",
            tokens=["a"] * n,
            token_scores=[0.5] * n,
        ),
        SimpleNamespace(
            transform="casing",
            label=0,
            positive=False,
            score=0.7,
            clean_score=0.2,
            text="u",
            tokens=None,
            token_scores=None,
        ),
    ]
    d = _roundtrip(schema.payload("robustness", rows=[_ROBUST_ROW], worst=worst, fpr=0.01))["data"]
    assert d["rows"][0]["tpr_lo"] is None and d["rows"][0]["auroc"] == 0.9
    first = d["worst"][0]["highlight"]
    assert len(first["tokens"]) == schema.MAX_TOKENS and first["n"] == n
    assert d["worst"][1]["highlight"] is None and d["worst"][1]["label"] == "0"
    with pytest.raises(ValueError, match="rows is empty"):
        schema.payload("robustness", rows=[])


@pytest.mark.parametrize("kind_name", sorted(schema.KINDS))
def test_every_kind_validates_after_a_json_roundtrip(kind_name):
    examples = {
        "sweep": {"layers": [0, 1], "test_scores": [0.5, 0.6]},
        "battery": {"rows": [{"name": "bow", "score": 0.6}]},
        "metrics": {"metrics": {"auroc": 0.8}},
        "tokens": {"texts": [(["a"], [0.2])]},
        "monitor": {"tokens": ["a"], "scores": [0.4]},
        "scan": {
            "props": {
                "tokens": ["a"],
                "n_layers": 1,
                "signal": "residual",
                "png": "data:image/png;base64,AA==",
            }
        },
        "table": {"rows": [("a", "b")]},
        "errors": {"props": _ERROR_PROPS},
        "robustness": {"rows": [_ROBUST_ROW]},
    }
    p = _roundtrip(schema.payload(kind_name, **examples[kind_name]))
    assert schema.validate(p) == p and p["kind"] == kind_name


def test_adding_a_kind_is_one_function():
    @schema.kind("test_only_kind")
    def _build(rows):
        return {"rows": list(rows)}, []

    try:
        assert schema.payload("test_only_kind", rows=[1, 2])["data"] == {"rows": [1, 2]}
        with pytest.raises(ValueError, match="registered twice"):
            schema.kind("test_only_kind")(_build)
    finally:
        del schema.KINDS["test_only_kind"]
    with pytest.raises(ValueError, match="lower-case"):
        schema.kind("Bad-Name")


def test_mimebundle_and_repr_bundle():
    b = schema.mimebundle("table", html="<table></table>", text="t", rows=[("a", "b")])
    assert set(b) == {MIME, "text/html", "text/plain"}
    assert schema.repr_bundle("sweep", layers=[]) is None  # rejected state: no payload
    assert set(schema.repr_bundle("table", rows=[])) == {MIME}


def test_engine_results_carry_the_payload():
    from lmprobe_jupyter.engine.profiling import ProfileReport

    prof = ProfileReport(
        name="fit", total=2.0, steps={"extract": 1.5, "fit": 0.5}, calls={"extract": 3}
    )
    bundle = prof._repr_mimebundle_()
    d = bundle[MIME]["data"]
    assert d["columns"] == ["step", "s", "calls", "share"]
    assert d["rows"] == [["extract", "1.500", "3", "75%"], ["fit", "0.500", "", "25%"]]
