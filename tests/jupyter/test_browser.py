"""Real-browser test: JupyterLab + Debian chromium run a notebook of magics and widgets."""

from __future__ import annotations

import re
import time

import pytest

from lmprobe_jupyter.presentation import score_color

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
    assert (
        sweep.locator(".lmpj-best-label").text_content()
        == "best by CV: layer 2 (CV 0.900 \u00b7 test 0.950)"
    )

    # clicking layer 3 marks it in the view, and Python's observer sees it
    sweep.locator('circle.lmpj-point[data-layer="3"][data-series="test"]').click()
    page.wait_for_selector(".lmpj-echo-layer:has-text('picked layer 3')", timeout=20000)
    assert sweep.locator(".lmpj-selected-line").get_attribute("visibility") == "visible"
    assert sweep.locator(".lmpj-point.lmpj-selected").count() == 2


# ---------------------------------------------------------------- dark theme, reload


def theme_notebook_cells(model: str) -> list[str]:
    """Every kind of output, with progress bars on (a bar must leave nothing behind)."""
    return [
        "%load_ext lmprobe_jupyter\nimport os\nos.environ['LMPROBE_PROGRESS'] = '1'\n"
        "P = ['Who wants to go for a walk?', 'Fetch the ball!', 'Good boy, sit!']\n"
        "N = ['Purring, stalking, pouncing.', 'Uses a litterbox.', 'Chasing the laser dot.']\n"
        "X = ['Let us go to the park, buddy!', 'Curled up in a box, purring.']\ny = [1, 0]",
        f"%%probe_fit dog_probe --model {model} --layers 2 --random-state 0 --batch-size 1\n"
        "+ Who wants to go for a walk?\n+ Fetch the ball!\n"
        "- Purring, stalking, pouncing, scratching.\n- Uses a litterbox, throws sand.\n",
        "%probe_tokens dog_probe Who's a good boy?",
        "%probe_eval dog_probe --test X --labels y",
        "%probe_battery dog_probe --positive P --negative N --test X --labels y "
        "--include bow,majority",
        f"%probe_sweep --positive P --negative N --test X --labels y --cv 3 --model {model} "
        "--batch-size 1 --random-state 0",
        "%probe_cache",
        "%probe_monitor dog_probe Hello there --max-new-tokens 4 --threshold 0.0",
        "print('selected:', sweep.selected_layer, sweep.selected_probe is sweep[2])",
    ]


OUTPUT_KINDS = {  # root class of each output -> the cell that makes it
    "lmpj-card": 1,
    "lmpj-tokens": 2,
    "lmpj-metrics": 3,
    "lmpj-battery": 4,
    "lmpj-sweep": 5,
    "lmpj-cache": 6,
    "lmpj-monitor": 7,
}

# WCAG contrast of every visible text element of our outputs against the colour behind it
# (alpha-composited up the ancestors); SVG text is coloured by `fill`.
CONTRAST_JS = """
(kinds) => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || "");
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const out = [];
  for (const kind of kinds) {
    for (const root of document.querySelectorAll(".jp-OutputArea-output ." + kind)) {
      const widget = root.closest(".lmpj-widget") || root;
      for (const el of [widget, ...widget.querySelectorAll("*")]) {
        const tag = el.tagName.toUpperCase();
        if (tag === "STYLE" || tag === "TITLE" || tag === "SCRIPT") continue;
        if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
        if (!el.getClientRects().length) continue;
        const cs = getComputedStyle(el);
        if (cs.visibility === "hidden" || cs.display === "none") continue;
        const svg = el instanceof SVGElement;
        const bg = background(el);
        const fg = over(parse(svg ? cs.fill : cs.color), bg);
        const a = lum(fg), b = lum(bg);
        out.push({kind, text: el.textContent.trim().slice(0, 40), fg: svg ? cs.fill : cs.color,
                  bg: bg.slice(0, 3).map(Math.round).join(","),
                  ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)});
      }
    }
  }
  return out;
}
"""


def _contrast(page) -> dict[str, list[dict]]:
    rows = page.evaluate(CONTRAST_JS, list(OUTPUT_KINDS))
    by_kind: dict[str, list[dict]] = {k: [] for k in OUTPUT_KINDS}
    for r in rows:
        by_kind[r["kind"]].append(r)
    return by_kind


def _assert_readable(page, theme: str) -> None:
    by_kind = _contrast(page)
    for kind, rows in by_kind.items():
        assert rows, f"{theme}: no text measured in {kind}"
        low = [r for r in rows if r["ratio"] < 4.5]
        assert not low, f"{theme}: {kind} text below 4.5:1: {low[:5]}"


def _wait_for_outputs(page) -> None:
    for kind, cell in OUTPUT_KINDS.items():
        _wait(page, _cell(page, cell).locator(f".{kind}"))
    # the monitor is sent again once generation ends: wait for its final state
    _wait(page, _cell(page, 7).locator('.lmpj-monitor[data-status="done"]'))


def _theme(page) -> tuple[str | None, str | None]:
    return (
        page.locator("body").get_attribute("data-jp-theme-name"),
        page.locator("body").get_attribute("data-jp-theme-light"),
    )


def _save(page, path, timeout_s: float = 30) -> None:
    """Ctrl+S in the notebook, then wait until the file on disk holds the outputs."""
    import nbformat

    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nb = nbformat.read(str(path), as_version=4)
        if all(c.get("outputs") for c in nb.cells[1:] if c.source.strip()):
            return
        page.wait_for_timeout(300)
    raise AssertionError(f"{path.name} was not saved with its outputs")


def test_dark_theme_contrast_and_reload(lab, browser, tmp_path, notebook_writer, tiny_model_path):
    notebook_writer(lab.root / "theme.ipynb", theme_notebook_cells(tiny_model_path))
    page = browser.new_page(viewport={"width": 1280, "height": 3200})
    try:
        _open_and_run(page, lab, "theme.ipynb")
        _wait_for_outputs(page)
        assert _theme(page) == ("JupyterLab Light", "true")
        _assert_readable(page, "light")
        # %probe_tokens took the question mark as text, not as IPython's help
        toks = _cell(page, 2).locator(".lmpj-tok").all_text_contents()
        assert "".join(toks).strip() == "Who's a good boy?"
        # the finished progress bars of the fit and the sweep left no text behind
        assert "batch/s" not in page.locator(".jp-NotebookPanel").inner_text()
        # the sweep's best layer is chosen by CV and says so
        label = _cell(page, 5).locator(".lmpj-best-label").text_content()
        assert label.startswith("best by CV: layer ")

        # a click on layer 2 of the curve is `sweep.selected_layer` in the kernel
        echo = _cell(page, 8)
        _wait(page, echo.locator(".jp-OutputArea-output:has-text('selected: None False')"))
        _cell(page, 5).locator('circle.lmpj-point[data-layer="2"][data-series="train"]').click()
        _wait(page, _cell(page, 5).locator(".lmpj-status:has-text('selected: layer 2')"))
        echo.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Control+Enter")  # run in place: no new cell below
        _wait(page, echo.locator(".jp-OutputArea-output:has-text('selected: 2 True')"), 60)

        # save (a reload shows what the file holds), then dark theme and a reload: every
        # output comes back, readable, no error box
        _save(page, lab.root / "theme.ipynb")
        lab.put(
            "/lab/api/settings/@jupyterlab/apputils-extension:themes",
            {"raw": '{"theme": "JupyterLab Dark"}'},
        )
        page.reload()
        page.wait_for_selector(
            'body[data-jp-theme-name="JupyterLab Dark"]', state="attached", timeout=60000
        )
        assert _theme(page) == ("JupyterLab Dark", "false")
        _wait_for_outputs(page)
        page.wait_for_timeout(1500)  # any widget that cannot be restored says so by now
        text = page.locator(".jp-NotebookPanel").inner_text()
        assert "Error displaying widget" not in text and "model not found" not in text
        assert "probe dog_probe" in _cell(page, 1).inner_text()
        assert _cell(page, 5).locator("circle.lmpj-point").count() > 0
        _assert_readable(page, "dark")
    finally:
        page.screenshot(path=str(tmp_path / "dark.png"), full_page=True)
