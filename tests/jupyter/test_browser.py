"""Real-browser test: JupyterLab + Debian chromium run a notebook of magics and widgets."""

from __future__ import annotations

import re
import time

import pytest

from lmprobe_jupyter.jupyter.render import score_color

pytestmark = pytest.mark.browser

FIXED_TOKENS = [(["Good", " dog", "\n", "bad", " cat"], [1.0, 0.75, 0.5, 0.25, 0.0])]
FIXED_COLORS = {  # score -> the rgb() chromium reports for the span background
    1.0: "rgb(178, 24, 43)",
    0.75: "rgb(217, 140, 149)",
    0.5: "rgb(255, 255, 255)",
    0.25: "rgb(144, 179, 214)",
    0.0: "rgb(33, 102, 172)",
}


def _rgb(hex_color: str) -> str:
    h = hex_color.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[i : i + 2], 16) for i in (0, 2, 4)))


def test_fixed_colors_match_renderer():
    assert {s: _rgb(score_color(s)) for s in FIXED_COLORS} == FIXED_COLORS


WIDGET_CELLS = [
    "import ipywidgets\nfrom lmprobe_jupyter.jupyter.widgets import show_sweep, show_tokens",
    # a widget from fixed data; a Label echoes the threshold Python receives from the slider
    f"tok = show_tokens({FIXED_TOKENS!r}, threshold=0.6)\n"
    "echo = ipywidgets.Label('threshold unset', layout={'border': '1px solid'})\n"
    "echo.add_class('lmpj-echo-threshold')\n"
    "tok.observe(lambda ch: setattr(echo, 'value', f\"threshold {ch['new']:.2f}\"), names='threshold')\n"
    "display(tok, echo)",
    "sweep = show_sweep([0, 1, 2, 3], train_scores=[0.5, 0.7, 0.9, 0.8],\n"
    "                   test_scores=[0.45, 0.65, 0.95, 0.7])\n"
    "picked = ipywidgets.Label('none picked')\n"
    "picked.add_class('lmpj-echo-layer')\n"
    "sweep.observe(lambda ch: setattr(picked, 'value', f\"picked layer {ch['new']}\"), names='selected_layer')\n"
    "display(sweep, picked)",
]


def _open_and_run(page, lab, name: str, timeout_s: float = 120) -> None:
    """Open ``name`` in a fresh workspace, wait for the kernel, then Run All Cells."""
    kernel_ready = {"seen": False}

    def on_ws(ws):
        def on_frame(payload):
            data = payload if isinstance(payload, bytes) else payload.encode()
            if b"kernel_info_reply" in data:
                kernel_ready["seen"] = True

        ws.on("framereceived", on_frame)

    page.on("websocket", on_ws)
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while not kernel_ready["seen"]:
        if time.monotonic() > deadline:
            raise AssertionError("no kernel_info_reply frame: the kernel never became ready")
        page.wait_for_timeout(200)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def _kernel_errors(page) -> list[str]:
    return page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    ).all_inner_texts()


def _wait(page, selector: str, timeout_s: float = 120):
    try:
        page.wait_for_selector(selector, timeout=timeout_s * 1000)
    except Exception as exc:  # show what the notebook printed instead of a bare timeout
        raise AssertionError(
            f"{selector!r} never appeared; stderr outputs: {_kernel_errors(page)}"
        ) from exc
    return page.locator(selector)


def _assert_token_colors(page, scope: str) -> list[dict]:
    spans = page.locator(f"{scope} .lmpj-tok").evaluate_all(
        "els => els.map(e => ({score: e.dataset.score, bg: getComputedStyle(e).backgroundColor,"
        " over: e.classList.contains('lmpj-over'), text: e.textContent}))"
    )
    assert spans, f"no token spans under {scope}"
    for s in spans:
        score = float(s["score"])
        assert s["bg"] == _rgb(score_color(score)), s
    return spans


def test_widgets_in_jupyterlab(lab, browser, tmp_path, notebook_writer):
    notebook_writer(lab.root / "widgets.ipynb", WIDGET_CELLS)
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    _open_and_run(page, lab, "widgets.ipynb")

    # token widget: the live anywidget view (slider present), exact colours per score
    _wait(page, ".lmpj-token-widget .lmpj-threshold-slider")
    spans = _assert_token_colors(page, ".lmpj-token-widget")
    assert {float(s["score"]): s["bg"] for s in spans} == FIXED_COLORS
    assert [s["text"] for s in spans] == ["Good", " dog", "\u21b5\n", "bad", " cat"]
    assert [s["over"] for s in spans] == [True, True, False, False, False]

    # move the slider: marker classes follow, and Python receives the new threshold
    page.locator(".lmpj-token-widget .lmpj-threshold-slider").fill("0.2")
    over = page.locator(".lmpj-token-widget .lmpj-tok").evaluate_all(
        "els => els.map(e => e.classList.contains('lmpj-over'))"
    )
    assert over == [True, True, True, True, False]
    assert page.locator(".lmpj-token-widget .lmpj-n-over").inner_text() == "4"
    page.wait_for_selector(".lmpj-echo-threshold:has-text('threshold 0.20')", timeout=20000)

    # sweep widget: both series with their colours, best layer 2 marked
    _wait(page, ".lmpj-sweep-widget svg.lmpj-sweep-svg")
    strokes = page.locator(".lmpj-sweep-widget polyline.lmpj-series").evaluate_all(
        "els => els.map(e => [e.getAttribute('class'), getComputedStyle(e).stroke])"
    )
    assert strokes == [
        ["lmpj-series lmpj-series-train", "rgb(31, 119, 180)"],
        ["lmpj-series lmpj-series-test", "rgb(214, 39, 40)"],
    ]
    assert page.locator(".lmpj-sweep-widget .lmpj-point").count() == 8
    best = page.locator(".lmpj-sweep-widget circle.lmpj-best")
    assert best.get_attribute("data-layer") == "2"
    assert (
        "best: layer 2 (0.950)"
        in page.locator(".lmpj-sweep-widget .lmpj-best-label").text_content()
    )

    # click layer 3: the view marks it and Python's observer sees it
    page.locator('.lmpj-sweep-widget circle.lmpj-point[data-layer="3"][data-series="test"]').click()
    page.wait_for_selector(".lmpj-echo-layer:has-text('picked layer 3')", timeout=20000)
    assert (
        page.locator(".lmpj-sweep-widget .lmpj-selected-line").get_attribute("visibility")
        == "visible"
    )
    assert page.locator(".lmpj-sweep-widget .lmpj-point.lmpj-selected").count() == 2

    shot = tmp_path / "widgets.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
