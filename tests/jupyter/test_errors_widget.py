"""The error-analysis widget (through its Python model) and %probe_errors (real shell)."""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError
from lmtest_helpers import NEG, POS

from lmprobe_jupyter.engine.evaluation.error_analysis import ErrorAnalysis
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.jupyter.errors_widget import ErrorsWidget

HELD = ["alpha beta beta", "omega alpha", "delta delta", "alpha", "sigma omega"]
HELD_Y = [1, 1, 0, 1, 0]


@pytest.fixture
def probe(tiny_probe):
    return tiny_probe().fit(POS, NEG)


@pytest.fixture
def widget(probe):
    return ErrorsWidget(probe.errors(HELD, HELD_Y, n_highlight=2))


def test_props_hold_sorted_rows_and_are_json(widget):
    p = widget.props
    json.dumps(p)  # syncable as is
    assert [r["index"] for r in p["rows"]] == [r.index for r in widget.analysis.rows()]
    assert p["threshold_source"] == "default 0.5" and p["n"] == 5
    assert {"text", "score", "label", "kind", "uncertain", "excluded"} <= set(p["rows"][0])


def test_relabel_exclude_refit_messages_update_the_analysis_and_view(widget):
    a = widget.analysis
    widget.handle_message({"action": "flip", "index": 2})
    assert a.labels[2] == 1
    row = next(r for r in widget.props["rows"] if r["index"] == 2)
    assert row["label"] == "1" and row["original_label"] == "0"
    widget.handle_message({"action": "relabel", "index": 3, "label": "0"})
    assert a.labels[3] == 0
    widget.handle_message({"action": "exclude", "index": 4, "excluded": True})
    assert a.excluded == [4]
    calls = Extractor.forward_calls
    widget.handle_message({"action": "refit"})
    assert Extractor.forward_calls == calls  # from the cache
    ref = widget.props["refit"]
    assert ref["forward_passes"] == 0 and ref["before"]["n"] == 4
    assert ref["changed"] == a.refits[-1].changed
    json.dumps(widget.props)


@pytest.mark.parametrize(
    "msg, match",
    [
        ({"action": "flip", "index": 99}, "unknown example id 99"),
        ({"action": "relabel", "index": "2", "label": "1"}, "unknown example id '2'"),
        ({"action": "relabel", "index": 1, "label": "maybe"}, "unknown label 'maybe'"),
        ({"action": "explode", "index": 1}, "unknown message 'explode'"),
        ({"action": "exclude", "index": 1}, "lacks \\['excluded'\\]"),
        ("flip", "unknown message 'flip'"),
    ],
    ids=["out-of-range", "string-id", "label", "action", "missing-key", "not-a-dict"],
)
def test_bad_messages_one_clear_error_state_unchanged(widget, msg, match):
    props = json.dumps(widget.props, sort_keys=True)
    labels, excluded = widget.analysis.labels, widget.analysis.excluded
    with pytest.raises(ValueError, match=match):
        widget.handle_message(msg)
    assert widget.analysis.labels == labels and widget.analysis.excluded == excluded
    assert json.dumps(widget.props, sort_keys=True) == props
    # through the comm path the error is shown in the view instead of raised
    widget._on_msg(widget, msg, [])
    assert "changed" in widget.error or "unknown" in widget.error


def test_select_shows_highlight_and_neighbours(widget, probe):
    widget.handle_message({"action": "select", "index": 1})
    d = widget.detail
    assert widget.selected == 1 and d["index"] == 1
    (ts,) = probe.token_scores([HELD[1]])
    assert d["tokens"] == list(ts.tokens)
    assert d["scores"][0] is None  # the attention sink is not scored
    assert len(d["neighbours"]) == 5
    sims = [n["similarity"] for n in d["neighbours"]]
    assert sims == sorted(sims, reverse=True)
    json.dumps(d)


def test_static_html_has_table_highlights_and_needs_kernel_note(widget):
    data, _ = widget._repr_mimebundle_()
    html = data["text/html"]
    assert "lmpj-errors-table" in html and "lmpj-tok" in html
    assert "need a running kernel" in html
    assert "<script" not in html and "http" not in html


# ---------------------------------------------------------------------- the magic
@pytest.fixture
def shell(ip, probe):
    ip.user_ns.update(
        probe=probe, held=list(HELD), held_y=list(HELD_Y), meta={"src": list("aabbb")}
    )
    return ip


def test_magic_binds_the_analysis_and_returns_the_widget(shell):
    w = shell.run_line_magic(
        "probe_errors", "probe held --labels held_y --metadata meta --highlight 0 -o errs"
    )
    assert isinstance(w, ErrorsWidget)
    errs = shell.user_ns["errs"]
    assert isinstance(errs, ErrorAnalysis) and w.analysis is errs
    assert errs.metadata == {"src": list("aabbb")}
    direct = shell.user_ns["probe"].errors(HELD, HELD_Y, n_highlight=0)
    assert [r.index for r in errs.rows()] == [r.index for r in direct.rows()]
    static = shell.run_line_magic("probe_errors", "probe held --labels held_y --static")
    assert isinstance(static, ErrorAnalysis)


@pytest.mark.parametrize(
    "line, match",
    [
        ("probe held", "--labels"),
        ("nope held --labels held_y", "no variable named 'nope'"),
        ("held held --labels held_y", "not a Probe"),
        ("probe held --labels held_y -o 1x", "expects a variable name"),
        ("probe held --labels meta", "probe_errors: errors: got 5 prompts but 1 labels"),
        ("probe held --labels held_y --band 2", "band=2.0 must be"),
    ],
    ids=["no-labels", "unknown-var", "not-probe", "bad-out", "wrong-length", "bad-band"],
)
def test_magic_usage_errors(shell, line, match):
    with pytest.raises(UsageError, match=match):
        shell.run_line_magic("probe_errors", line)


# ---------------------------------------------------------------------- real browser
def _errors_cells(model_path: str) -> list[str]:
    return [
        "%load_ext lmprobe_jupyter",
        "from lmprobe_jupyter import Probe\n"
        f"probe = Probe(model={model_path!r}, layers=2, device='cpu', dtype='float32', "
        f"random_state=0).fit({POS!r}, {NEG!r})\n"
        f"held, held_y = {HELD!r}, {HELD_Y!r}",
        "%probe_errors probe held --labels held_y --highlight 0 -o errs",
        "print('LABELS', errs.labels, 'REFITS', len(errs.refits))",
    ]


@pytest.mark.browser
def test_widget_flips_a_label_and_refits_in_jupyterlab(
    lab, browser, open_and_run, notebook_writer, tiny_model_path
):
    notebook_writer(lab.root / "errors.ipynb", _errors_cells(tiny_model_path))
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    try:
        open_and_run(page, lab, "errors.ipynb")
        table = page.locator(".lmpj-errors-widget .lmpj-errors-table")
        table.first.wait_for(timeout=120_000)
        assert table.locator("tr").count() == len(HELD) + 1
        # flip the label of example 2 by clicking it; Python re-syncs the row
        row = table.locator('tr[data-index="2"]')
        row.locator(".lmpj-errors-label").click()
        page.wait_for_selector('.lmpj-errors-table tr[data-index="2"] :text("(was 0)")')
        page.locator(".lmpj-errors-refit").click()
        page.wait_for_selector(".lmpj-errors-widget :text('forward passes: 0')", timeout=60_000)
        assert page.locator(".lmpj-errors-widget .lmpj-errors-metrics th", has_text="after").count()
        # the kernel's object saw the same edits
        page.locator(".jp-Cell").nth(3).click()
        page.keyboard.press("Shift+Enter")
        page.wait_for_selector(":text('LABELS [1, 1, 1, 1, 0] REFITS 1')", timeout=30_000)
    finally:
        page.close()
