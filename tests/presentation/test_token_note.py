"""The highlight legend says what a probe's per-token scores mean."""

from __future__ import annotations

from lmprobe_jupyter import presentation as render
from lmprobe_jupyter.jupyter.widgets import show_tokens

TEXTS = [{"tokens": ["<s>", "a", "b"], "scores": [float("nan"), 0.2, 0.9]}]


def test_note_under_the_legend_is_escaped():
    html = render.render_token_highlights(TEXTS, 0.5, uid="u1", note="trained on <last_token>")
    assert '<div class="lmpj-legend-note lmpj-muted">trained on &lt;last_token&gt;</div>' in html
    assert "lmpj-legend-note" not in render.render_token_highlights(TEXTS, 0.5, uid="u1")


def test_widget_carries_the_note_and_rerenders_on_change():
    w = show_tokens(TEXTS, note="first")
    assert w.note == "first" and "first" in w._repr_mimebundle_()[0]["text/html"]
    w.note = "second"
    html = w._repr_mimebundle_()[0]["text/html"]
    assert "second" in html and "first" not in html
