"""``make demo``: the main job end to end on the bundled SmolLM2, offline.

1. Finds where "misuse request vs ordinary question" lives with a cross-validated layer
   sweep, then trains a probe there and scores it against text baselines, on new prompts
   and on prompts whose words mislead (where counting words stops working).
2. Calibrates a flagging threshold on benign prompts and shows per-token scores.
3. Executes the quickstart notebook into ``build/`` (notebook + static HTML export), so
   the token highlights and the sweep curve can be looked at without a Jupyter server.

    python -m lmprobe_jupyter.demo [--no-notebook] [--build-dir build]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _bar(score: float, width: int = 20) -> str:
    n = int(round(max(0.0, min(1.0, score)) * width))
    return "#" * n + "." * (width - n)


def margin_text(margin: float | None, best_baseline: str) -> str:
    """One line saying what the probe's margin over the best baseline means."""
    if margin is None:
        return ""
    if abs(margin) < 1e-9:
        return (
            f"  -> a tie with {best_baseline}: on this test set the words alone give the "
            "answer away, so it cannot show what the probe adds"
        )
    if margin > 0:
        return f"  -> the probe beats the best baseline ({best_baseline}) by {margin:+.3f}"
    return f"  -> the best baseline ({best_baseline}) beats the probe by {-margin:.3f}"


def run_engine() -> dict:
    from lmprobe_jupyter import BaselineBattery, Probe
    from lmprobe_jupyter.engine.extraction.models import DEFAULT_MODEL, load_model
    from lmprobe_jupyter.examples import (
        BENIGN,
        BENIGN_CALIBRATION,
        MISUSE,
        SAFETY_TEST,
        SAFETY_TRICKY,
    )

    t0 = time.perf_counter()
    loaded = load_model(DEFAULT_MODEL, device="auto")
    print(
        f"model: {loaded.name} ({loaded.n_layers} layers, hidden {loaded.hidden_size}, "
        f"{loaded.device}) loaded in {time.perf_counter() - t0:.1f}s"
    )
    test_x = [t for t, _ in SAFETY_TEST]
    test_y = [y for _, y in SAFETY_TEST]

    t0 = time.perf_counter()
    sweep = Probe.sweep_layers(
        model=DEFAULT_MODEL,
        positive_prompts=MISUSE,
        negative_prompts=BENIGN,
        layers="sweep:3",
        cv=5,
        random_state=0,
    )
    best = sweep.best_layer()
    print(
        f"\nlayer sweep (5-fold CV accuracy on {len(MISUSE) + len(BENIGN)} prompts, "
        f"{time.perf_counter() - t0:.1f}s):"
    )
    for layer, score in sweep.cv_scores.items():
        mark = "  <- best" if layer == best else ""
        print(f"  layer {layer:2d}  {score:.3f}  {_bar(score)}{mark}")

    probe = Probe(model=DEFAULT_MODEL, layers=best, random_state=0).fit(MISUSE, BENIGN)
    metrics = probe.evaluate(test_x, test_y)
    print(
        f"\nprobe at layer {best} on {len(test_x)} new prompts: "
        + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "n")
    )

    battery = BaselineBattery(
        model=None,
        random_state=0,
        include=["bow", "tfidf", "sentence_length", "random", "majority"],
    )
    results = battery.fit(MISUSE, BENIGN, test_x, test_y)
    results.add_probe(probe, name=f"probe (layer {best})")
    print(f"\non the {len(test_x)} new prompts:\n" + results.summary())
    margin = results.probe_margin
    print(margin_text(margin, results.get_best()[0].name))

    # Where the words mislead (alarming words in harmless questions, harmless words in
    # misuse requests), counting words stops working; reading the model should not.
    tricky_x = [t for t, _ in SAFETY_TRICKY]
    tricky_y = [y for _, y in SAFETY_TRICKY]
    tricky = battery.fit(MISUSE, BENIGN, tricky_x, tricky_y)
    tricky.add_probe(probe, name=f"probe (layer {best})")
    print(f"\non {len(tricky_x)} prompts whose words mislead:\n" + tricky.summary())
    print(margin_text(tricky.probe_margin, tricky.get_best()[0].name))

    # Calibrate on benign prompts the probe never trained on: training prompts score too
    # confidently and would give an optimistic threshold.
    probe.calibrate(BENIGN_CALIBRATION, fpr=0.05)
    flags = probe.flag(test_x)
    print(
        f"\ncalibrated threshold (at most 5% of {len(BENIGN_CALIBRATION)} held-out benign "
        f"prompts flagged): {probe.threshold_:.3f}"
    )
    for text, label, flagged in zip(test_x, test_y, flags):
        print(f"  [{'FLAG' if flagged else ' ok '}] {'misuse' if label else 'benign'}  {text}")

    (ts,) = probe.token_scores([test_x[0]])
    print("\nper-token scores of the first test prompt:")
    print(
        "  "
        + " ".join(f"{tok.strip() or repr(tok)}:{s:.2f}" for tok, s in zip(ts.tokens, ts.scores))
    )
    return {
        "best_layer": best,
        "metrics": metrics,
        "margin": margin,
        "tricky_margin": tricky.probe_margin,
    }


def run_notebook(build: Path) -> Path | None:
    nb_path = Path(__file__).resolve().parent.parent / "notebooks" / "01_quickstart.ipynb"
    if not nb_path.exists():
        print(f"\n(no {nb_path.name} found; skipping the notebook export)")
        return None
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    build.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(nb_path, as_version=4)
    t0 = time.perf_counter()
    # No widget state in the saved notebook: with it, nbconvert would draw widgets with JS
    # from a CDN (blank offline) instead of their self-contained text/html fallbacks.
    NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        store_widget_state=False,
        resources={"metadata": {"path": str(nb_path.parent)}},
    ).execute()
    nb.metadata.pop("widgets", None)
    out_nb = build / nb_path.name
    nbformat.write(nb, out_nb)
    html, _ = HTMLExporter().from_notebook_node(nb)
    out_html = out_nb.with_suffix(".html")
    out_html.write_text(html, encoding="utf-8")
    print(
        f"\nexecuted {nb_path.name} in {time.perf_counter() - t0:.0f}s -> {out_nb} and {out_html}"
    )
    return out_html


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--no-notebook", action="store_true", help="skip executing the quickstart notebook"
    )
    ap.add_argument("--build-dir", default="build")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_engine()
    if not args.no_notebook:
        run_notebook(Path(args.build_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
