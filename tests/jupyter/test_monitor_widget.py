"""The live generation monitor: markup, streaming updates, alarm state, static fallback."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from lmprobe_jupyter.jupyter.monitor_widget import MonitorWidget, monitor_live
from lmprobe_jupyter.presentation import STATIC_DIR, render_monitor, token_span


def _tok_classes(html: str) -> list[list[str]]:
    """Class lists of the token spans, in order."""
    return [c.split() for c in re.findall(r'<span class="(lmpj-tok[^"]*)"', html)]


def _alarm(html: str) -> bool:
    """Whether the root element is in the alarm state."""
    return "lmpj-alarm" in re.match(r'<div id="[^"]*" class="([^"]*)"', html).group(1).split()


def _n_over(html: str) -> int:
    return sum("lmpj-over" in c for c in _tok_classes(html))


TOKENS = [" The", " gas", " is", "\n", " toxic"]
SCORES = [0.1, 0.4, 0.95, 0.7, 0.99]


def test_render_monitor_marks_tokens_and_the_first_flag():
    html = render_monitor(TOKENS, SCORES, threshold=0.9, flagged_at=2, uid="m")
    assert html.startswith('<div id="m" class="lmpj lmpj-monitor lmpj-alarm"')
    assert 'data-flagged-at="2"' in html and 'data-status="done"' in html
    assert len(_tok_classes(html)) == 5
    assert _n_over(html) == 2  # 0.95 and 0.99
    assert [i for i, c in enumerate(_tok_classes(html)) if "lmpj-flag" in c] == [2]
    assert "flagged at token 3 of 5 (&quot; is&quot;, score 0.950 &gt; 0.900)" in html
    assert "\u21b5\n" in html  # newlines stay visible
    assert "<script" not in html


def test_render_monitor_without_flag_has_no_alarm():
    html = render_monitor(TOKENS, SCORES, threshold=0.999, uid="m", status="running")
    assert 'class="lmpj lmpj-monitor"' in html and 'class="lmpj-banner"' not in html
    assert "generating" in html and "lmpj-cursor" in html


def test_render_monitor_shows_the_prompt_collapsed():
    html = render_monitor(
        TOKENS, SCORES, prompt_tokens=["Hi", " there"], prompt_scores=[0.2, 0.3], uid="m"
    )
    assert "<details" in html and "prompt (2 tokens)" in html
    assert len(_tok_classes(html)) == 7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tokens": ["a"], "scores": [0.1, 0.2]}, "1 tokens but 2 scores"),
        ({"tokens": ["a"], "scores": [0.1], "status": "paused"}, "status='paused' is not one"),
    ],
    ids=["lengths", "status"],
)
def test_render_monitor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        render_monitor(**kwargs)


def test_token_span_missing_score_is_grey():
    assert "#e0e0e0" in token_span("x", float("nan"), 0.5)
    assert 'data-score="nan"' in token_span("x", None, 0.5)


def test_widget_streams_tokens_and_raises_the_alarm():
    w = MonitorWidget()
    w.reset(prompt_tokens=["Hi"], prompt_scores=[0.2], threshold=0.9)
    htmls = []
    w.observe(lambda c: htmls.append(c["new"]), names="_html")
    for i, (t, s) in enumerate(zip(TOKENS, SCORES)):
        w.push(i, t, s)
        assert w.tokens == TOKENS[: i + 1] and w.scores == SCORES[: i + 1]
        assert (w.flagged_at is not None) == (i >= 2)
    assert len(htmls) == 5  # one render per token
    assert not _alarm(htmls[1]) and _alarm(htmls[2])
    assert w.flagged_at == 2 and w.status == "running"
    assert len(_tok_classes(htmls[-1])) == 6
    with pytest.raises(ValueError, match="position 9 does not follow the 5 shown"):
        w.push(9, "x", 0.1)


def test_widget_static_fallback_is_the_live_markup():
    w = MonitorWidget(threshold=0.9)
    w.reset(threshold=0.9)
    for i, (t, s) in enumerate(zip(TOKENS, SCORES)):
        w.push(i, t, s)
    data, _ = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/html"] == w._html
    assert data["text/html"] == render_monitor(
        TOKENS, SCORES, 0.9, flagged_at=2, prompt_tokens=[], status="running", uid=w._uid
    )


def test_widget_rerenders_when_threshold_changes():
    w = MonitorWidget(tokens=TOKENS, scores=SCORES, threshold=0.9)
    assert _n_over(w._html) == 2
    w.threshold = 0.3
    assert _n_over(w._html) == 4


@pytest.fixture(scope="module")
def tiny_probe(tiny_model_path):
    from lmprobe_jupyter.engine.probes.probe import Probe

    return Probe(model=tiny_model_path, layers=[1, 2], device="cpu", random_state=0).fit(
        ["bad thing one", "evil plan now"], ["nice sunny day", "kind words said"]
    )


def test_widget_run_streams_a_real_generation(tiny_probe):
    w = MonitorWidget()
    seen = []
    w.observe(lambda c: seen.append(len(w.tokens)), names="_html")
    result = w.run(tiny_probe, "Tell me a story about", max_new_tokens=5, threshold=2.0)
    assert w.result is result
    assert w.tokens == result.tokens and np.allclose(w.scores, result.scores)
    assert w.prompt_tokens == result.prompt_tokens
    assert w.status == "done" and w.flagged_at is None
    # the view was updated token by token while generating
    assert [1, 2, 3, 4, 5] == sorted(set(seen) - {0})[:5]


def test_widget_run_shows_errors(tiny_probe):
    w = MonitorWidget()
    with pytest.raises(ValueError, match="max_new_tokens"):
        w.run(tiny_probe, "Hello", max_new_tokens=0)
    assert w.status == "error"


def test_magic_target_returns_the_result_and_displays_the_widget(tiny_probe, monkeypatch):
    shown, updated = [], []

    class Handle:
        def update(self, obj):
            # the saved output is refreshed once generation is over
            updated.append((obj, obj.status))

    def display(obj, display_id=False):
        shown.append(obj)
        assert display_id is True
        return Handle()

    monkeypatch.setattr("IPython.display.display", display)
    widget = monitor_live(tiny_probe, "Hello there", max_new_tokens=3, threshold=0.0)
    result = widget.result
    assert len(shown) == 1 and isinstance(shown[0], MonitorWidget)
    assert updated == [(shown[0], "done")]
    assert shown[0].result is result
    assert result.flagged_at == 0 and len(result.tokens) == 3
    assert shown[0].status == "done" and _alarm(shown[0]._html)


def test_view_mounts_updates_and_mirrors_the_alarm_in_a_browser():
    """monitor.js in headless Chromium, driven by a stand-in for the anywidget model."""
    import base64
    import json

    from playwright.sync_api import sync_playwright

    w = MonitorWidget()
    w.reset(threshold=0.9)
    states = []
    for i, (t, s) in enumerate(zip(TOKENS[:3], SCORES[:3])):
        w.push(i, t, s)
        states.append({"_html": w._html, "flagged_at": w.flagged_at, "status": w.status})
    final = SimpleNamespace(
        threshold=0.9,
        prompt_tokens=[],
        prompt_scores=[],
        tokens=TOKENS[:3],
        scores=SCORES[:3],
        flagged_at=2,
        stopped_early=True,
    )
    w.finish(final)
    states.append({"_html": w._html, "flagged_at": w.flagged_at, "status": w.status})
    js = (STATIC_DIR / "monitor.js").read_bytes()
    page = (
        "<html><body><div id=host></div><script type=module>"
        f"const mod = (await import('data:text/javascript;base64,{base64.b64encode(js).decode()}'))"
        f".default; const states = {json.dumps(states)}; let state = states[0]; const on = {{}};"
        "const model = {get: k => state[k], on: (e, f) => { on[e] = f; }, off: () => {}};"
        "mod.render({model, el: document.getElementById('host')});"
        "window.step = i => { state = states[i]; on['change:_html'](); }; window.ready = true;"
        "</script></body></html>"
    )
    probe_js = (
        "e => [e.classList.contains('lmpj-monitor-alarm'), e.dataset.status,"
        " e.querySelectorAll('.lmpj-generated .lmpj-tok').length,"
        " !!e.querySelector('.lmpj-banner')]"
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.set_content(page)
            tab.wait_for_function("window.ready === true")
            seen = [tab.eval_on_selector("#host", probe_js)]
            for i in range(1, len(states)):
                tab.evaluate("i => window.step(i)", i)
                seen.append(tab.eval_on_selector("#host", probe_js))
        finally:
            browser.close()
    assert seen == [
        [False, "running", 1, False],
        [False, "running", 2, False],
        [True, "running", 3, True],
        [True, "stopped", 3, True],
    ]


def test_unscored_tokens_sync_as_none_and_show_grey():
    """The monitor gives NaN to the sink and special tokens; JSON has no NaN."""
    w = MonitorWidget()
    w.reset(prompt_tokens=["<|im_start|>", "Hi"], prompt_scores=[float("nan"), 0.2], threshold=0.5)
    assert w.prompt_scores == [None, 0.2]
    w.push(0, "<|im_end|>", float("nan"))
    w.push(1, " x", 0.9)
    assert w.scores == [None, 0.9] and w.flagged_at == 1
    html = w._html
    assert html.count('data-score="nan"') == 2  # one in the prompt, one generated
    assert 'max score <span class="lmpj-max">0.900' in html
