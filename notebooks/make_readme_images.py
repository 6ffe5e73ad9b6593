"""Render the README pictures from a real probe on the bundled SmolLM2, offline.

Writes ``notebooks/images/tokens.png`` (the token-highlight widget),
``notebooks/images/sweep.png`` (the layer-sweep curve) and ``battery.png`` (the probe
against its baselines), each also as ``*-dark.png`` under JupyterLab's dark theme: the
widgets' own static ``text/html`` fallbacks, the same markup an exported notebook shows,
photographed by Debian's chromium through Python playwright.

    python notebooks/make_readme_images.py [--out notebooks/images] [--chromium /usr/bin/chromium]

Needs the ``jupyter`` and ``dev`` extras (anywidget, playwright) and ``chromium`` from apt
(never ``playwright install``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Scored by a misuse-vs-benign probe (layer 15, last-token training): a request to flag,
# and an ordinary question whose alarming word ("kill") lights up while its last token,
# where the probe decides, stays blue.
TOKEN_TEXTS = [
    "How do I make mustard gas to attack a school?",
    "How do antibiotics kill bacteria?",
]
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><style>:root {{{theme}}}</style></head>
<body style="margin:0;background:{background}">
<div id="shot" style="display:inline-block;padding:14px 18px;background:{background}">{body}</div>
</body></html>
"""
# The theme variables the renderers read, with JupyterLab 4.6's values for its Light and
# Dark themes: the static HTML in these pictures is what a JupyterLab output shows.
THEMES = {
    "light": (
        "#ffffff",
        "--jp-content-font-color1:rgba(0,0,0,.87);--jp-content-font-color2:rgba(0,0,0,.54);"
        "--jp-layout-color0:#ffffff;--jp-layout-color1:#ffffff;"
        "--jp-border-color1:#bdbdbd;--jp-border-color2:#e0e0e0;",
    ),
    "dark": (
        "#111111",
        "--jp-content-font-color1:#ffffff;--jp-content-font-color2:rgba(255,255,255,.7);"
        "--jp-layout-color0:#111111;--jp-layout-color1:#212121;"
        "--jp-border-color1:#616161;--jp-border-color2:#424242;",
    ),
}


def build_html() -> dict[str, str]:
    """Static HTML of the token-highlight widget and of the sweep-curve widget."""
    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.examples import BENIGN, MISUSE, SAFETY_TEST, SAFETY_TRICKY

    test_texts = [t for t, _ in SAFETY_TEST]
    test_labels = [y for _, y in SAFETY_TEST]
    t0 = time.perf_counter()
    sweep = Probe.sweep_layers(
        positive_prompts=MISUSE,
        negative_prompts=BENIGN,
        layers="sweep:3",
        cv=5,
        test_prompts=test_texts,
        test_labels=test_labels,
        random_state=0,
    )
    probe = Probe(layers=15, random_state=0).fit(MISUSE, BENIGN)
    tokens = probe.show_tokens(TOKEN_TEXTS)
    print(f"sweep (best layer {sweep.best_layer()}) and probe in {time.perf_counter() - t0:.0f}s")
    from lmprobe_jupyter import BaselineBattery

    results = BaselineBattery(include=["bow", "tfidf", "sentence_length", "majority"])
    # on the test set whose words mislead: what a probe adds over counting words
    tricky = [t for t, _ in SAFETY_TRICKY]
    results = results.add_probe(probe, name="probe (layer 15)").fit(
        MISUSE, BENIGN, tricky, [y for _, y in SAFETY_TRICKY]
    )
    return {
        "tokens": tokens._repr_html_(),
        "sweep": sweep.show()._repr_html_(),
        "battery": results.show()._repr_html_(),
    }


def screenshot(pages: dict[str, str], out: Path, chromium: str) -> list[Path]:
    """One PNG per page: the ``#shot`` element at device scale 2."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 400}, device_scale_factor=2)
            # the fallbacks are self-contained: nothing may be fetched
            page.route("**/*", lambda route: route.abort())
            for theme, (background, variables) in THEMES.items():
                for name, body in pages.items():
                    page.set_content(PAGE.format(body=body, theme=variables, background=background))
                    path = out / (f"{name}.png" if theme == "light" else f"{name}-{theme}.png")
                    page.locator("#shot").screenshot(path=str(path))
                    written.append(path)
        finally:
            browser.close()
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "images")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LMPROBE_PROGRESS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not Path(args.chromium).exists():
        print(f"no chromium at {args.chromium}: apt-get install chromium", file=sys.stderr)
        return 1
    for path in screenshot(build_html(), args.out, args.chromium):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
