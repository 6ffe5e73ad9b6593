"""Real-browser test: JupyterLab + Debian chromium run a notebook of magics and widgets."""

from __future__ import annotations

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


def test_magics_and_widgets_in_jupyterlab(
    lab, browser, open_and_run, tmp_path, notebook_writer, tiny_model_path
):
    notebook_writer(lab.root / "probe.ipynb", notebook_cells(tiny_model_path))
    page = browser.new_page(viewport={"width": 1280, "height": 2200})
    try:
        open_and_run(page, lab, "probe.ipynb")
        _check_notebook(page)
    finally:
        page.screenshot(path=str(tmp_path / "notebook.png"), full_page=True)
    assert (tmp_path / "notebook.png").stat().st_size > 10_000


def _check_notebook(page) -> None:
    # %%probe_fit: the summary card, drawn by the extension from its JSON payload
    card = _wait(page, _cell(page, 1).locator(".lmpx-kind-table"))
    assert "probe dog_probe" in card.inner_text()
    rows = dict(
        card.locator("tr").evaluate_all(
            "els => els.map(e => [...e.children].map(c => c.textContent))"
        )
    )
    assert rows["positive prompts"] == "2"
    assert rows["layers"] == "2"

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
    # static outputs are drawn by the extension (lmpx-*); the cache table is cell 6
    "lmpx-kind-table": 1,
    "lmpj-tokens": 2,
    "lmpx-kind-metrics": 3,
    "lmpj-battery": 4,
    "lmpj-sweep": 5,
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
    assert (
        "activation cache" in _wait(page, _cell(page, 6).locator(".lmpx-kind-table")).inner_text()
    )
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
    deadline = saved = time.monotonic()
    deadline += timeout_s
    while time.monotonic() < deadline:
        nb = nbformat.read(str(path), as_version=4)
        if all(c.get("outputs") for c in nb.cells[1:] if c.source.strip()):
            return
        page.wait_for_timeout(300)
        if time.monotonic() - saved > 5:  # an output that arrived after the save
            page.keyboard.press("Control+s")
            saved = time.monotonic()
    raise AssertionError(f"{path.name} was not saved with its outputs")


def test_dark_theme_contrast_and_reload(
    lab, browser, open_and_run, tmp_path, notebook_writer, tiny_model_path
):
    notebook_writer(lab.root / "theme.ipynb", theme_notebook_cells(tiny_model_path))
    page = browser.new_page(viewport={"width": 1280, "height": 3200})
    try:
        open_and_run(page, lab, "theme.ipynb")
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


# ---------------------------------------------------------------- reopened without a kernel

LMPX_MIME = "application/vnd.lmprobe.v1+json"
IMAGES = REPO_IMAGES = (
    __import__("pathlib").Path(__file__).resolve().parents[2] / "notebooks/images"
)
# token strings that would run script if a renderer parsed notebook text as HTML
HOSTILE = [
    '<img src=x onerror="window.__lmpx_pwned=1">',
    "</script><script>window.__lmpx_pwned=2</script>",
    " plain",
]


def reopen_cells(model: str) -> list[str]:
    """One output of every kind the extension draws (the tiny model keeps it fast)."""
    return [
        "%load_ext lmprobe_jupyter\n"
        "from lmprobe_jupyter.jupyter.widgets import show_sweep, show_tokens, show_battery\n"
        "X = ['Let us go to the park, buddy!', 'Curled up in a box, purring.']\ny = [1, 0]",
        f"%%probe_fit dog_probe --model {model} --layers 2 --random-state 0\n"
        "+ Who wants to go for a walk?\n+ Fetch the ball!\n"
        "- Purring, stalking, pouncing, scratching.\n- Uses a litterbox, throws sand.\n",
        "%probe_tokens dog_probe Who's a good boy?",
        "%probe_eval dog_probe --test X --labels y",
        "show_sweep([0, 1, 2, 3], train_scores=[0.5, 0.7, 0.9, 0.8],\n"
        "           test_scores=[0.45, 0.65, 0.95, 0.7])",
        "show_battery([{'name': 'bag of words', 'score': 0.7, 'fit_s': 0.01},\n"
        "              {'name': 'majority', 'score': 0.5},\n"
        "              {'name': 'probe', 'score': 0.9, 'is_probe': True}])",
        f"show_tokens([({HOSTILE!r}, [0.9, float('nan'), 0.1])], threshold=0.5)",
        "%probe_monitor dog_probe Hello there --max-new-tokens 4 --threshold 0.0",
        "%probe_errors dog_probe X --labels y --highlight 2",
        "dog_probe.robustness_report(X * 3, y * 3, ['uppercase', 'leetspeak'], n_bootstrap=50)",
    ]


REOPEN_KINDS = {
    1: "table",
    2: "tokens",
    3: "metrics",
    4: "sweep",
    5: "battery",
    6: "tokens",
    7: "monitor",
    8: "errors",
    9: "robustness",
}


def _shutdown_kernels(lab) -> int:
    import urllib.request

    token = "lmprobe-test-token"  # the lab fixture's (tests/jupyter/conftest.py)
    kernels = lab.api("/api/kernels")
    for k in kernels:
        req = urllib.request.Request(
            f"{lab.base}/api/kernels/{k['id']}",
            method="DELETE",
            headers={"Authorization": f"token {token}"},
        )
        urllib.request.urlopen(req, timeout=30).read()
    return len(kernels)


def _colour_pixels(png: bytes, rgb: tuple[int, int, int], tol: int = 40) -> int:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(1 for p in img.getdata() if all(abs(a - b) <= tol for a, b in zip(p, rgb)))


def _assert_reopened(page, theme: str) -> None:
    for cell, kind in REOPEN_KINDS.items():
        _wait(page, _cell(page, cell).locator(f".lmpx.lmpx-kind-{kind}"), 60)
    page.wait_for_timeout(2500)  # the widget manager gives up on a model after 2 s
    text = page.locator(".jp-NotebookPanel").inner_text()
    assert "model not found" not in text and "Error displaying widget" not in text
    assert page.locator(".lmpx-error").count() == 0, page.locator(".lmpx-error").all_inner_texts()
    # widget outputs are read-only now and say why, in one line
    for cell in (2, 4, 5, 6, 8):
        note = _cell(page, cell).locator(".lmpx-kernel-note")
        assert note.inner_text().endswith("clicking needs a running kernel (re-run the cell).")
    # the error table (both examples, the highlights computed in the kernel) and the
    # robustness chart (clean + two transforms, a dot each) and table
    errors = _cell(page, 8)
    assert errors.locator(".lmpx-errors-table tbody tr").count() == 2
    assert errors.locator(".lmpx-errors-table .lmpx-tok").count() > 2
    notes = errors.locator(".lmpx-note").all_inner_texts()
    assert any(n.startswith("Relabeling, excluding and refitting need a running") for n in notes)
    robust = _cell(page, 9)
    assert robust.locator("svg.lmpx-robust-svg circle").count() == 3
    cells = robust.locator(".lmpx-robust-table tbody tr td:first-child").all_text_contents()
    assert cells == ["clean", "uppercase", "leetspeak"]
    assert "probe dog_probe" in _cell(page, 1).inner_text()
    # the sweep: axes, ticks for every layer, 8 points with hover values, best layer by CV
    sweep = _cell(page, 4).locator("svg.lmpx-chart")
    assert sweep.locator("path.lmpx-axis").count() == 1
    assert sweep.locator("text.lmpx-xtick").all_text_contents() == ["0", "1", "2", "3"]
    assert sweep.locator("circle.lmpx-point").count() == 8
    assert _cell(page, 4).locator(".lmpx-best-label").inner_text() == (
        "best layer 2 (chosen by CV 0.900; test 0.950)"
    )
    sweep.locator("circle.lmpx-test[data-layer='3']").hover()
    assert _cell(page, 4).locator(".lmpx-readout").inner_text() == "layer 3: test accuracy 0.700"
    shot = sweep.screenshot()
    # points and lines in the series colours, axes drawn: the picture is not blank
    assert _colour_pixels(shot, (31, 119, 180)) > 200, "no train (blue) curve in the sweep"
    assert _colour_pixels(shot, (214, 39, 40)) > 200, "no test (red) curve in the sweep"
    assert _colour_pixels(shot, (26, 152, 80)) > 50, "no best-layer (green) marker"
    # the hostile tokens are shown as text and ran nothing
    toks = _cell(page, 6).locator(".lmpx-tokbody .lmpx-tok").all_text_contents()
    assert toks == HOSTILE
    assert page.evaluate("window.__lmpx_pwned") is None
    assert _cell(page, 6).locator("img").count() == 0
    # unscored token greyed, colours as the Python renderer's
    colours = (
        _cell(page, 6)
        .locator(".lmpx-tokbody .lmpx-tok")
        .evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    )
    assert colours == [_rgb(score_color(0.9)), _rgb(score_color(None)), _rgb(score_color(0.1))]
    assert _cell(page, 6).locator(".lmpx-colorbar").count() == 1
    # readable text everywhere in our drawings
    measured = page.evaluate(CONTRAST_JS, ["lmpx"])
    assert len(measured) > 30, measured
    low = [r for r in measured if r["ratio"] < 4.5]
    assert not low, f"{theme}: text below 4.5:1: {low[:5]}"


def test_reopened_notebook_draws_every_output_without_a_kernel(
    lab, browser, open_and_run, tmp_path, notebook_writer, tiny_model_path
):
    path = notebook_writer(lab.root / "reopen.ipynb", reopen_cells(tiny_model_path))
    page = browser.new_page(viewport={"width": 1280, "height": 3000})
    try:
        open_and_run(page, lab, "reopen.ipynb")
        # live: the widgets are the anywidget views (interactive), mounted by our renderer
        _wait(page, _cell(page, 4).locator(".lmpj-sweep-widget svg.lmpj-sweep-svg"))
        _wait(page, _cell(page, 7).locator('.lmpj-monitor[data-status="done"]'))
        _wait(page, _cell(page, 8).locator(".lmpj-errors-widget .lmpj-errors-table"))
        _wait(page, _cell(page, 9).locator(".lmpx-kind-robustness svg.lmpx-robust-svg"))
        assert page.locator(".lmpx-kernel-note:visible").count() == 0
        _save(page, path)
        page.close()
        assert _shutdown_kernels(lab) >= 1

        page = browser.new_page(viewport={"width": 1280, "height": 3000})
        page.goto(lab.notebook_url("reopen.ipynb"))
        _assert_reopened(page, "light")
        IMAGES.mkdir(exist_ok=True)
        page.locator(".jp-NotebookPanel").screenshot(path=str(IMAGES / "reopened_light.png"))

        _shutdown_kernels(lab)
        lab.put(
            "/lab/api/settings/@jupyterlab/apputils-extension:themes",
            {"raw": '{"theme": "JupyterLab Dark"}'},
        )
        page.goto(lab.notebook_url("reopen.ipynb"))
        page.wait_for_selector(
            'body[data-jp-theme-name="JupyterLab Dark"]', state="attached", timeout=60000
        )
        _assert_reopened(page, "dark")
        page.locator(".jp-NotebookPanel").screenshot(path=str(IMAGES / "reopened_dark.png"))

        # high contrast: every drawing still readable at 4.5:1
        lab.put(
            "/lab/api/settings/@jupyterlab/apputils-extension:themes",
            {"raw": '{"theme": "JupyterLab Dark High Contrast"}'},
        )
        page.goto(lab.notebook_url("reopen.ipynb"))
        page.wait_for_selector(
            'body[data-jp-theme-name="JupyterLab Dark High Contrast"]',
            state="attached",
            timeout=60000,
        )
        _assert_reopened(page, "dark high contrast")
    finally:
        if not page.is_closed():
            page.screenshot(path=str(tmp_path / "reopened.png"), full_page=True)


def _saved_output(payload: object, text: str = "text copy") -> dict:
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {LMPX_MIME: payload, "text/plain": text, "text/html": "<b>fallback</b>"},
    }


def test_bad_saved_outputs_give_inline_messages(lab, browser, tmp_path):
    """Unknown version, missing fields, an unknown kind, 10 MB of tokens: never blank."""
    import nbformat

    huge = ["tok-" + "y" * 6] * 1_000_000  # 10 MB of token text, written by hand
    outputs = [
        _saved_output({"version": 2, "kind": "sweep", "data": {}}, "v2 text"),
        _saved_output({"version": 1, "kind": "sweep", "data": {"metric": "auroc"}}, "no layers"),
        _saved_output({"version": 1, "kind": "pie", "data": {}}, "pie text"),
        _saved_output(
            {
                "version": 1,
                "kind": "tokens",
                "data": {"texts": [{"tokens": huge, "scores": [0.5] * len(huge)}]},
            }
        ),
    ]
    nb = nbformat.v4.new_notebook()
    for out in outputs:
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = [nbformat.from_dict(out)]
        nb.cells.append(cell)
    nbformat.write(nb, str(lab.root / "bad.ipynb"))
    assert (lab.root / "bad.ipynb").stat().st_size > 10_000_000
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    try:
        page.goto(lab.notebook_url("bad.ipynb"))
        _wait(page, _cell(page, 3).locator(".lmpx-note"), 90)
        errors = [_cell(page, i).locator(".lmpx-error").inner_text() for i in range(3)]
        assert errors[0].startswith(
            "This lmprobe output uses schema version 2; this extension reads version 1."
        )
        assert (
            errors[1]
            == "Could not draw this lmprobe sweep output: the saved output has no 'layers' field."
        )
        assert errors[2].startswith("This extension cannot draw lmprobe outputs of kind 'pie' yet")
        assert [_cell(page, i).locator(".lmpx-plain").inner_text() for i in range(3)] == [
            "v2 text",
            "no layers",
            "pie text",
        ]
        assert _cell(page, 3).locator(".lmpx-note").inner_text() == (
            "showing the first 20000 of 1000000 tokens"
        )
        assert _cell(page, 3).locator(".lmpx-tokbody .lmpx-tok").count() == 20_000
        # the tab still answers
        assert page.evaluate("1 + 1") == 2
    finally:
        page.screenshot(path=str(tmp_path / "bad.png"))


@pytest.mark.browser
def test_notebook7_draws_saved_outputs_without_a_kernel(lab, browser):
    """Notebook 7 (the classic-style UI on the same server) loads the same extension."""
    import nbformat

    from lmprobe_jupyter.presentation import payload as schema

    bundles = [
        schema.mimebundle(
            "sweep",
            html="<b>sweep</b>",
            text="sweep",
            layers=[0, 1, 2],
            test_scores=[0.5, 0.9, 0.7],
            best_layer=1,
            best_by="test",
        ),
        schema.mimebundle(
            "tokens",
            html="<b>tokens</b>",
            text="tokens",
            texts=[(["<b>bold?</b>", " fine"], [0.9, None])],
        ),
        schema.mimebundle(
            "battery", html="<b>b</b>", text="b", rows=[{"name": "bow", "score": 0.6}]
        ),
    ]
    nb = nbformat.v4.new_notebook()
    for bundle in bundles:
        cell = nbformat.v4.new_code_cell("pass")
        out = {"output_type": "display_data", "metadata": {}, "data": bundle}
        cell.outputs = [nbformat.from_dict(out)]
        nb.cells.append(cell)
    nbformat.write(nb, str(lab.root / "nb7.ipynb"))
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    try:
        page.goto(f"{lab.base}/notebooks/nb7.ipynb?token=lmprobe-test-token")
        for kind in ("sweep", "tokens", "battery"):
            _wait(page, page.locator(f".lmpx.lmpx-kind-{kind}"), 90)
        assert page.locator(".lmpx-kind-sweep svg circle.lmpx-point").count() == 3
        toks = page.locator(".lmpx-kind-tokens .lmpx-tokbody .lmpx-tok").all_text_contents()
        assert toks == ["<b>bold?</b>", " fine"]  # shown as text, not parsed as HTML
        assert page.locator(".lmpx-error").count() == 0
        assert "fallback" not in page.locator("body").inner_text()
    finally:
        page.close()
