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


def notebook_cells(model: str) -> list[str]:
    """Magics on a real model, then widgets from fixed data whose colours are known."""
    return [
        "%load_ext lmprobe_jupyter",
        f"%%probe_fit dog_probe --model {model} --layers 2 --random-state 0\n"
        "+ Who wants to go for a walk?\n"
        "+ Fetch the ball!\n"
        "- Purring, stalking, pouncing, scratching.\n"
        "- Uses a litterbox, throws sand all over the room.\n",
        "%probe_tokens dog_probe Fetch the ball, good dog!",
        # fixed scores; a Label echoes the threshold Python receives from the slider
        "import ipywidgets\nfrom lmprobe_jupyter.jupyter.widgets import show_sweep, show_tokens\n"
        f"tok = show_tokens({FIXED_TOKENS!r}, threshold=0.6)\n"
        "echo = ipywidgets.Label('threshold unset')\n"
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


def _wait(page, target, timeout_s: float = 120):
    """Wait for a selector or locator to be visible; on timeout show the notebook's stderr."""
    loc = page.locator(target) if isinstance(target, str) else target
    try:
        loc.first.wait_for(timeout=timeout_s * 1000)
    except Exception as exc:  # a bare timeout says nothing; the kernel's errors do
        raise AssertionError(
            f"{target!r} never appeared; stderr outputs: {_kernel_errors(page)}"
        ) from exc
    return loc


def _assert_token_colors(scope) -> list[dict]:
    """Every token span's computed background is the renderer's colour for its score."""
    spans = scope.locator(".lmpj-tok").evaluate_all(
        "els => els.map(e => ({score: e.dataset.score, bg: getComputedStyle(e).backgroundColor,"
        " over: e.classList.contains('lmpj-over'), text: e.textContent}))"
    )
    assert spans, "no token spans"
    for s in spans:
        assert s["bg"] == _rgb(score_color(float(s["score"]))), s
    return spans


def _cell(page, i: int):
    return page.locator(".jp-NotebookPanel .jp-Cell").nth(i)


def _over_flags(locator) -> list[bool]:
    return locator.evaluate_all("els => els.map(e => e.classList.contains('lmpj-over'))")


def test_magics_and_widgets_in_jupyterlab(lab, browser, tmp_path, notebook_writer, tiny_model_path):
    notebook_writer(lab.root / "probe.ipynb", notebook_cells(tiny_model_path))
    page = browser.new_page(viewport={"width": 1280, "height": 2200})
    try:
        _open_and_run(page, lab, "probe.ipynb")
        _check_notebook(page)
    finally:
        page.screenshot(path=str(tmp_path / "notebook.png"), full_page=True)
    assert (tmp_path / "notebook.png").stat().st_size > 10_000


def _check_notebook(page) -> None:
    # %%probe_fit: the summary card
    card = _wait(page, ".lmpj-card")
    assert "probe dog_probe" in card.inner_text()
    assert card.locator('tr[data-field="n_positive"] td').inner_text() == "2"
    assert card.locator('tr[data-field="layers"] td').inner_text() == "2"

    # %probe_tokens: the live widget (slider present); every span coloured by its score
    magic_tok = _cell(page, 2).locator(".lmpj-token-widget")
    _wait(page, magic_tok.locator(".lmpj-threshold-slider"))
    spans = _assert_token_colors(magic_tok)
    assert "".join(s["text"] for s in spans).endswith("Fetch the ball, good dog!")
    slider = magic_tok.locator(".lmpj-threshold-slider")
    slider.fill("0")
    flags = _over_flags(magic_tok.locator(".lmpj-tok"))
    assert flags[0] is False and all(flags[1:])  # the sink is unscored, never over
    slider.fill("1")
    assert not any(_over_flags(magic_tok.locator(".lmpj-tok")))

    # fixed-score widget: exact colours per score, marker moves with the slider
    fixed = _cell(page, 3).locator(".lmpj-token-widget")
    _wait(page, fixed.locator(".lmpj-threshold-slider"))
    spans = _assert_token_colors(fixed)
    assert {float(s["score"]): s["bg"] for s in spans} == FIXED_COLORS
    assert [s["text"] for s in spans] == ["Good", " dog", "\u21b5\n", "bad", " cat"]
    assert [s["over"] for s in spans] == [True, True, False, False, False]
    fixed.locator(".lmpj-threshold-slider").fill("0.2")
    assert _over_flags(fixed.locator(".lmpj-tok")) == [True, True, True, True, False]
    assert fixed.locator(".lmpj-n-over").inner_text() == "4"
    # ...and Python received the new threshold
    page.wait_for_selector(".lmpj-echo-threshold:has-text('threshold 0.20')", timeout=20000)

    # sweep widget: both series with their colours, best layer 2 marked
    sweep = _wait(page, ".lmpj-sweep-widget svg.lmpj-sweep-svg")
    strokes = sweep.locator("polyline.lmpj-series").evaluate_all(
        "els => els.map(e => [e.getAttribute('class'), getComputedStyle(e).stroke])"
    )
    assert strokes == [
        ["lmpj-series lmpj-series-train", "rgb(31, 119, 180)"],
        ["lmpj-series lmpj-series-test", "rgb(214, 39, 40)"],
    ]
    assert sweep.locator(".lmpj-point").count() == 8
    assert sweep.locator("circle.lmpj-best").get_attribute("data-layer") == "2"
    assert (
        sweep.locator(".lmpj-best-line").evaluate("e => getComputedStyle(e).stroke")
        == "rgb(26, 152, 80)"
    )
    assert "best: layer 2 (0.950)" in sweep.locator(".lmpj-best-label").text_content()

    # clicking layer 3 marks it in the view, and Python's observer sees it
    sweep.locator('circle.lmpj-point[data-layer="3"][data-series="test"]').click()
    page.wait_for_selector(".lmpj-echo-layer:has-text('picked layer 3')", timeout=20000)
    assert sweep.locator(".lmpj-selected-line").get_attribute("visibility") == "visible"
    assert sweep.locator(".lmpj-point.lmpj-selected").count() == 2
