"""The renderers' shared pieces: CSS read once, theme colours, readable token text."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lmprobe_jupyter import presentation
from lmprobe_jupyter.presentation import (
    contrast_ratio,
    css,
    format_bytes,
    plural,
    render_battery,
    render_metrics,
    render_probe_card,
    render_sweep_curve,
    render_token_highlights,
    score_color,
    text_color,
)


def test_no_ipython_or_widget_import():
    """The engine's reprs import presentation: it must pull in no notebook code."""
    code = (
        "import sys, lmprobe_jupyter.presentation, lmprobe_jupyter.engine.cache.store\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('IPython', 'ipywidgets', 'anywidget', 'traitlets') or m.startswith('lmprobe_jupyter.jupyter')]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_css_files_read_once_and_inlined():
    css.cache_clear()
    html = render_token_highlights([(["a"], [0.2])]) + render_token_highlights([(["b"], [0.9])])
    info = css.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert html.count("<style>") == 2 and css("base") in html
    assert "/*" not in css("base", "monitor")  # comments stripped before inlining
    for name in ("base", "monitor", "widgets"):
        assert (presentation.STATIC_DIR / f"{name}.css").is_file()


@pytest.mark.parametrize(
    "html",
    [
        render_token_highlights([(["a"], [0.2])], uid="t"),
        render_sweep_curve([0, 1], [0.5, 0.7], [0.4, 0.8], best_layer=1, uid="s"),
        render_battery([{"name": "bow", "score": 0.6}], uid="b"),
        render_metrics({"accuracy": 0.9}, roc={"fpr": [0, 1], "tpr": [0, 1]}, uid="m"),
        render_probe_card({"name": "p", "model": "m"}, uid="c"),
    ],
    ids=["tokens", "sweep", "battery", "metrics", "card"],
)
def test_text_follows_the_jupyterlab_theme_with_fallbacks(html):
    assert "var(--jp-content-font-color1,#111111)" in html
    # no fixed near-black text colour outside the SVG fill fallbacks and token spans
    for fixed in ('fill="#111111"', 'fill="#333333"', "color:#444444", "background:#fafbfc"):
        assert fixed not in html


def test_svg_labels_have_theme_classes():
    html = render_sweep_curve([0, 1], [0.5, 0.7], [0.4, 0.8], best_layer=1, best_by="cv")
    import re

    texts = re.findall(r"<text ([^>]*)>", html)
    assert texts and all('class="' in t and "lmpj-fg" in t for t in texts)


def test_token_text_keeps_4_5_contrast_on_the_whole_scale():
    worst = min(
        contrast_ratio(score_color(s), text_color(score_color(s))) for s in np.linspace(0, 1, 201)
    )
    assert worst >= 4.5
    # the old luminance switch (0.3) put white on mid blue at 2.9:1
    assert text_color("#6fa3cf") == "#000000"


def test_format_helpers():
    assert [format_bytes(n) for n in (None, 999, 1500, 2.5e6, 3e9, 4e12)] == [
        "none",
        "999 B",
        "1.5 KB",
        "2.5 MB",
        "3.0 GB",
        "4.0 TB",
    ]
    assert plural(1, "token") == "1 token" and plural(2, "token") == "2 tokens"


def test_one_token_is_singular():
    html = render_token_highlights([(["only"], [0.9])])
    assert "of 1 token over threshold" in html


def test_every_tag_has_at_most_one_class_attribute():
    import re

    from lmprobe_jupyter.presentation import render_cache_info, render_monitor

    outputs = [
        render_battery(
            [{"name": "a", "score": 0.5}, {"name": "p", "score": 0.9, "is_probe": True}]
        ),
        render_sweep_curve([0, 1], [0.5, 0.6], [0.4, 0.7], best_layer=1, best_by="cv"),
        render_metrics({"auroc": 0.8}, roc={"fpr": [0, 1], "tpr": [0, 1]}),
        render_token_highlights([(["a"], [0.3])]),
        render_monitor(["a"], [0.9], flagged_at=0, prompt_tokens=["x"], prompt_scores=[0.1]),
        render_cache_info({"entries": 1}),
        render_probe_card({"name": "x"}),
    ]
    doubled = [t for h in outputs for t in re.findall(r"<[^>]+>", h) if t.count(' class="') > 1]
    assert doubled == []
