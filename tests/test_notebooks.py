"""The tutorial notebooks: stripped in the repo, and each one runs top to bottom offline.

Every notebook is executed with nbclient on the project's ``python3`` kernel (this venv's
interpreter) against the bundled SmolLM2, with the network switched off for the Hub and
no NDIF key, and its outputs are checked for the things it teaches. The quickstart runs
exactly as ``make demo`` runs it (``lmprobe_jupyter.demo.run_notebook``), and its HTML
export must show the token highlights and the sweep curve without any network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = [
    "01_quickstart.ipynb",
    "02_where_does_it_live.ipynb",
    "03_is_it_learning.ipynb",
    "04_safety_monitor.ipynb",
    "05_scaling_up.ipynb",
    "06_robustness.ipynb",
]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# A coloured token span as the static fallback writes it (nbconvert may reorder attributes).
TOKEN_SPAN = re.compile(r'<span class="lmpj-tok[^"]*"[^>]*style="background-color:(#[0-9a-f]{6})')
KERNEL_CHECK = "import sys\nprint('KERNEL-PYTHON', sys.executable)"


# ---------------------------------------------------------------------------------------
# the notebooks as stored in the repo (no model needed)
# ---------------------------------------------------------------------------------------
def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebooks_are_the_generated_ones():
    gen = _generator()
    assert sorted(gen.NOTEBOOKS) == NAMES
    for name in NAMES:
        assert (NOTEBOOKS / name).read_text(encoding="utf-8") == gen.render(name), (
            f"{name} differs from notebooks/make_notebooks.py; run it to regenerate"
        )


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stripped_and_teaches_with_prose(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata
    code = [c for c in nb.cells if c.cell_type == "code"]
    prose = [c for c in nb.cells if c.cell_type == "markdown"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    number = int(name[:2])
    assert nb.cells[0].cell_type == "markdown"
    assert nb.cells[0].source.startswith(f"# {number}. ")
    assert len(prose) >= 6 and len(code) >= 6
    # no long run of code without an explanation
    run = 0
    for cell in nb.cells:
        run = run + 1 if cell.cell_type == "code" else 0
        assert run <= 3, f"{name}: more than 3 code cells in a row near {cell.source[:60]!r}"


# ---------------------------------------------------------------------------------------
# executing them
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment of the notebook kernels: one activation cache for the whole module,
    the Hub offline, no NDIF key. Progress bars stay on, as a user has them: the
    outputs must not keep them (:func:`_no_progress_bars`)."""
    env = {
        **os.environ,
        "LMPROBE_CACHE_DIR": str(tmp_path_factory.mktemp("nb-cache")),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key in ("NNSIGHT_API_KEY", "NDIF_API_KEY", "LMPROBE_DATASET_REPO"):
        env.pop(key, None)
    env.pop("LMPROBE_PROGRESS", None)
    return env


def _execute(name: str, workdir: Path, env: dict) -> nbformat.NotebookNode:
    """Run a notebook (plus a last cell naming the kernel's interpreter) in ``workdir``."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute(env=env)
    nb.metadata["lmpj_seconds"] = time.perf_counter() - t0
    print(f"{name}: executed in {nb.metadata['lmpj_seconds']:.0f}s")
    check = _stdout(nb.cells.pop())
    assert check.strip() == f"KERNEL-PYTHON {sys.executable}"  # the venv's own python
    _no_progress_bars(nb)
    return nb


# what a tqdm bar leaves as text: "extracting:  40%|####      | 2/5 [00:01<00:02, 1.9batch/s]"
PROGRESS_TEXT = re.compile(r"\d+%\||\| *\d+/\d+ \[|(batch|layer|shard|it)/s\]")


def _no_progress_bars(nb) -> None:
    """No output of the executed notebook, nor its nbconvert HTML export, shows a bar.

    A finished bar leaves an output with no data (its display was emptied), never the
    bar's frozen text or a closed widget (which a reloaded page shows as "Error
    displaying widget: model not found").
    """
    from nbconvert import HTMLExporter

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [
                v for v in out.get("data", {}).values() if isinstance(v, str)
            ]
            for text in texts:
                assert not PROGRESS_TEXT.search(text), (cell.source[:60], text[:200])
            data = out.get("data", {})
            if WIDGET_MIME in data:  # only our own widgets, each with its static HTML
                assert data.get("text/html", "").strip(), data.get("text/plain")
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert not PROGRESS_TEXT.search(html)


def _cell(nb, fragment: str):
    found = [c for c in nb.cells if c.cell_type == "code" and fragment in c.source]
    assert len(found) == 1, f"{len(found)} code cells contain {fragment!r}"
    return found[0]


def _stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def _data(cell) -> dict:
    # emptied progress bars leave outputs with no data: nothing shown, nothing to read
    rich = [
        o
        for o in cell.outputs
        if o.output_type in ("execute_result", "display_data") and o.get("data")
    ]
    assert len(rich) == 1, cell.outputs
    return rich[0]["data"]


def _number(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return float(m.group(1))


def _no_errors(nb) -> None:
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []


# ---------------------------------------------------------------- 01 quickstart (make demo)
@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, kernel_env):
    """The quickstart executed and exported exactly as ``make demo`` does it."""
    from lmprobe_jupyter.demo import run_notebook

    build = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("NNSIGHT_API_KEY", "NDIF_API_KEY", "LMPROBE_DATASET_REPO", "LMPROBE_PROGRESS"):
            mp.delenv(key, raising=False)
        for key, value in kernel_env.items():
            if os.environ.get(key) != value:
                mp.setenv(key, value)
        html_path = run_notebook(build)
    assert html_path == build / "01_quickstart.html"
    nb = nbformat.read(build / "01_quickstart.ipynb", as_version=4)
    _no_progress_bars(nb)
    return nb, html_path.read_text(encoding="utf-8")


@pytest.mark.real_model
def test_quickstart_notebook(quickstart):
    nb, _ = quickstart
    _no_errors(nb)
    card = _data(_cell(nb, "%%probe_fit dog_probe"))["text/html"]
    assert "training accuracy" in card and "cross-validated accuracy" in card

    tokens = _data(_cell(nb, "%probe_tokens dog_probe Let's"))
    assert WIDGET_MIME in tokens
    html = tokens["text/html"]
    scores = [float(s) for s in re.findall(r'data-score="([0-9.e-]+)"', html)]
    # every token is coloured; the first (the attention sink) is unscored, so grey
    assert len(TOKEN_SPAN.findall(html)) == len(scores) + 1 and len(scores) >= 8
    assert html.count('data-score="nan"') == 1 and "lmpj-legend-note" in html
    assert min(scores) < 0.5 < max(scores)  # both ends of the colour scale are used

    stacked = _data(_cell(nb, "%%probe_tokens dog_probe"))["text/html"]
    assert stacked.count('class="lmpj-text"') == 2

    sweep = _data(_cell(nb, "%probe_sweep"))
    assert WIDGET_MIME in sweep and '<svg class="lmpj-sweep-svg"' in sweep["text/html"]
    assert "best layer on the test sentences:" in _stdout(_cell(nb, "sweep.best_layer()"))

    evaluation = _data(_cell(nb, "%probe_eval dog_probe"))["text/html"]
    assert "lmpj-roc-svg" in evaluation
    accuracy = _number(_stdout(_cell(nb, "dog_probe.score(")), r"new sentences: ([0-9.]+)")
    assert accuracy >= 0.7
    assert _data(_cell(nb, "dog_probe.score("))["text/plain"] == "array([1, 0])"

    saved = _stdout(_cell(nb, "dog_probe.save(folder)"))
    assert "files: ['arrays.safetensors', 'probe.json']" in saved
    assert "same predictions as the original: True" in _stdout(_cell(nb, "Probe.load(folder)"))


@pytest.mark.real_model
def test_make_demo_html_shows_highlights_and_sweep(quickstart):
    """``make demo``'s HTML export, opened with no network, shows the static fallbacks."""
    _, html = quickstart
    spans = TOKEN_SPAN.findall(html)
    assert len(spans) >= 20, "the exported HTML has no coloured token spans"
    assert len(set(spans)) >= 5  # a real colour scale, not one colour
    assert html.count('class="lmpj-sweep-svg"') == 1, "the exported HTML has no sweep curve"
    assert "lmpj-best" in html


# ---------------------------------------------------------------- 02 where does it live
@pytest.mark.real_model
def test_where_does_it_live_notebook(tmp_path, kernel_env):
    nb = _execute("02_where_does_it_live.ipynb", tmp_path, kernel_env)
    _no_errors(nb)
    frame = _data(_cell(nb, "frame = sweep.to_frame()"))
    assert frame["text/html"].count("<tr") >= 11  # header + 10 swept layers
    assert "image/png" in _data(_cell(nb, "sweep.plot()"))
    assert '<svg class="lmpj-sweep-svg"' in _data(_cell(nb, "sweep.show()"))["text/html"]

    out = _stdout(_cell(nb, "best = sweep.best_layer()"))
    best = int(_number(out, r"best layer: (\d+)"))
    cv0 = _number(out, r"layer 0 \(tokens only\): cv ([0-9.]+)")
    cv_best = _number(out, rf"layer {best}: cv ([0-9.]+)")
    assert best > 0 and cv_best > cv0  # the concept is more readable deeper in

    out = _stdout(_cell(nb, "multi.compute_layer_importance()"))
    shares = [float(x) for x in re.findall(r"layer +\d+ +([0-9.]+)", out)]
    assert len(shares) == 5 and abs(sum(shares) - 1) < 0.01
    assert "image/png" in _data(_cell(nb, "multi.plot_layer_importance()"))

    out = _stdout(_cell(nb, 'layers="fast_auto"'))
    assert len(re.search(r"fast_auto kept layers \[([\d, ]+)\]", out).group(1).split(",")) == 2
    assert _number(out, r"test accuracy: ([0-9.]+)") >= 0.75
    out = _stdout(_cell(nb, 'layers="auto"'))
    assert re.search(r"group lasso kept layers \[\d+", out)
    assert _number(out, r"test accuracy: ([0-9.]+)") >= 0.75

    # the sample scan: dogs and cats come apart in the residual stream, beyond layer 0
    cell = _cell(nb, "sep = scan.separability_map()")
    out = _stdout(cell)
    best = _number(out, r"AUROC ([0-9.]+)")
    assert best >= 0.9 and best > _number(out, r"residual stream: layer 0 ([0-9.]+)")
    assert int(_number(out, r"best at layer (\d+)")) > 0
    assert "lmprobe-separability" in _data(cell)["text/html"]
    shown = _data(_cell(nb, "%probe_scan scan --show 2"))
    assert WIDGET_MIME in shown and "data:image/png;base64," in shown["text/html"]


# ---------------------------------------------------------------- 03 is it learning
@pytest.mark.real_model
def test_is_it_learning_notebook(tmp_path, kernel_env):
    nb = _execute("03_is_it_learning.ipynb", tmp_path, kernel_env)
    _no_errors(nb)
    chart = _data(_cell(nb, "--test test_texts --labels test_labels --include"))
    assert WIDGET_MIME in chart and "lmpj-battery-svg" in chart["text/html"]
    summary = _stdout(_cell(nb, "print(battery.summary())"))
    assert summary.startswith("Baseline Results:") and "<- probe" in summary

    # where the words mislead, the probe beats every baseline
    assert "lmpj-battery-svg" in _data(_cell(nb, "--test tricky_texts"))["text/html"]
    out = _stdout(_cell(nb, "print(tricky.summary())"))
    assert _number(out, r"best baseline: ([+-][0-9.]+)") > 0
    assert _number(out, r"probe +([0-9.]+)") >= 0.8

    out = _stdout(_cell(nb, "shuffled = np.random"))
    real = [float(x) for x in re.search(r"real labels +(\S+) +(\S+) +(\S+)", out).groups()]
    control = [float(x) for x in re.search(r"shuffled labels +(\S+) +(\S+) +(\S+)", out).groups()]
    assert real[0] == control[0] == 1.0  # a probe fits noise perfectly...
    assert (
        control[1] < real[1] - 0.2 and control[2] < real[2] - 0.2
    )  # ...but it does not generalize


# ---------------------------------------------------------------- 04 safety monitor
@pytest.mark.real_model
def test_safety_monitor_notebook(tmp_path, kernel_env):
    nb = _execute("04_safety_monitor.ipynb", tmp_path, kernel_env)
    _no_errors(nb)
    assert "<|im_start|>user\nHow do antibiotics kill bacteria?" in _stdout(
        _cell(nb, "format_chat(monitor")
    )
    assert _number(_stdout(_cell(nb, "monitor.fit(MISUSE")), r"auroc ([0-9.]+)") >= 0.8
    tokens = _data(_cell(nb, "%%probe_tokens monitor"))["text/html"]
    assert tokens.count('class="lmpj-text"') == 2 and len(TOKEN_SPAN.findall(tokens)) > 20

    # the token-level probe ranks the story with the request far above the one without
    # (the pooled probe cannot tell them apart); its legend carries no warning, the pooled
    # probe's does
    span = _stdout(_cell(nb, "span_probe = Probe("))
    pair = r"{}: story with the request ([0-9.]+), without it ([0-9.]+)"
    tok = re.search(pair.format("token-level"), span)
    pool = re.search(pair.format("mean-pooled"), span)
    assert tok and pool, span
    assert float(tok.group(1)) - float(tok.group(2)) > 0.2
    assert abs(float(pool.group(1)) - float(pool.group(2))) < 0.05
    assert "lmpj-legend-note" in _data(_cell(nb, "pooled.show_tokens"))["text/html"]
    assert "lmpj-legend-note" not in _data(_cell(nb, "span_probe.show_tokens"))["text/html"]
    # trained on context documents of the same prompts: the gap widens (measured 0.36
    # against the prompt-trained probe's 0.27)
    docs = _stdout(_cell(nb, "doc_probe = Probe("))
    got = re.search(pair.format("context documents"), docs)
    assert got and "documents; the first holds" in docs, docs
    assert float(got.group(1)) - float(got.group(2)) > float(tok.group(1)) - float(tok.group(2))
    # plus background documents: the story without the request calms down and the gap
    # widens again (measured: 0.92 vs 0.15, a gap of 0.77 against 0.36)
    bg = re.search(pair.format("with background"), _stdout(_cell(nb, "bg_probe = Probe(")))
    assert bg, _stdout(_cell(nb, "bg_probe = Probe("))
    assert float(bg.group(2)) < 0.4 and float(bg.group(2)) < float(got.group(2)) - 0.2
    assert float(bg.group(1)) - float(bg.group(2)) > float(got.group(1)) - float(got.group(2)) + 0.2
    assert len(TOKEN_SPAN.findall(_data(_cell(nb, "bg_probe.show_tokens"))["text/html"])) > 20

    out = _stdout(_cell(nb, "monitor.calibrate(BENIGN_CALIBRATION"))
    assert "'n_benign': 20, 'n_flagged': 1" in out or "'n_benign': 20, 'n_flagged': 0" in out
    flags = _stdout(_cell(nb, "monitor.flag(test_texts)"))
    assert flags.count("[FLAG] misuse") >= 5 and flags.count("[ ok ] benign") >= 4

    report = _stdout(_cell(nb, "n_bootstrap=500"))
    assert _number(report, r"TPR at target FPR 0\.05: ([0-9.]+)") >= 0.8
    assert "lmpj-roc-svg" in _data(_cell(nb, "%probe_eval monitor"))["text/html"]

    assert "lmpj-monitor" in _data(_cell(nb, "benign_run = monitor.monitor"))["text/html"]
    assert "answer threshold:" in _stdout(_cell(nb, "benign_answers = "))
    live = _data(_cell(nb, "%%probe_monitor monitor"))
    assert WIDGET_MIME in live and "lmpj-monitor" in live["text/html"]
    result = _cell(nb, 'print(f"flagged: {run.flagged}')
    out = _stdout(result)
    assert "flagged: True" in out and "stopped early: True" in out
    assert _number(out, r"cut after (\d+) tokens") < 12
    assert "lmpj-alarm" in _data(result)["text/html"]


# ---------------------------------------------------------------- 05 scaling up
@pytest.mark.real_model
def test_scaling_up_notebook(tmp_path, kernel_env):
    nb = _execute("05_scaling_up.ipynb", tmp_path, kernel_env)
    _no_errors(nb)
    assert "hits / misses" in _data(_cell(nb, "%probe_cache"))["text/plain"]
    out = _stdout(_cell(nb, "probe.warmup(prompts)"))
    assert "prompts served from the cache during fit: 40 of 40" in out
    assert "float16: 1152 bytes per cached vector" in _stdout(_cell(nb, "set_cache_dtype"))
    assert _stdout(_cell(nb, "push_dataset(")).startswith("skipped: HF_HUB_OFFLINE is set")
    diff = _number(_stdout(_cell(nb, "NNsightExtractor(")), r"layer 16: ([0-9.e-]+)")
    assert diff < 1e-4
    out = _stdout(_cell(nb, 'backend="nnsight", random_state=0'))
    assert "40 of 40 activations came from the cache" in out and "[1 0]" in out
    assert _stdout(_cell(nb, "ndif_api_key()")).startswith("skipped: no NNSIGHT_API_KEY")


# ---------------------------------------------------------------- 06 robustness
@pytest.mark.real_model
def test_robustness_notebook(tmp_path, kernel_env):
    nb = _execute("06_robustness.ipynb", tmp_path, kernel_env)
    _no_errors(nb)
    print(f"06_robustness: {nb.metadata['lmpj_seconds']:.0f}s")
    assert _number(_stdout(_cell(nb, "clean held-out AUROC")), r"AUROC ([0-9.]+)") >= 0.9
    html = _data(_cell(nb, "-o report"))["text/html"]
    assert "lmpj-robustness-svg" in html and "<script" not in html
    assert "Worst examples" in html and len(TOKEN_SPAN.findall(html)) > 20
    # the report names a broken wrapper: a jailbreak drops far below clean
    # (measured: roleplay 0.448 against clean 0.986)
    out = _stdout(_cell(nb, "broken wrapper:"))
    broken = re.search(r"broken wrapper: (\w+): AUROC ([0-9.]+)", out)
    assert broken and broken.group(1) in ("roleplay", "ignore_previous", "prefix_injection")
    assert float(broken.group(2)) < 0.7
    again = _stdout(_cell(nb, "second run:"))
    hits = re.search(r"second run: (\d+) of (\d+) lookups", again)
    assert hits and hits.group(1) == hits.group(2) and int(hits.group(1)) > 0
    # trained with the named augmentations, the broken wrapper recovers (measured 0.448 ->
    # 0.958) and so does the worst row of the report (0.448 -> 0.694)
    res = _stdout(_cell(nb, "worst transform's AUROC"))
    pair = r"{}: ([0-9.]+) -> ([0-9.]+)"
    fixed = re.search(pair.format(broken.group(1) + " AUROC"), res)
    worst = re.search(pair.format("worst transform's AUROC"), res)
    assert fixed and worst, res
    assert float(fixed.group(2)) - float(fixed.group(1)) > 0.3
    assert float(worst.group(2)) > float(worst.group(1)) + 0.1
    assert "lmpj-robustness-svg" in _data(_cell(nb, "-o fixed_report"))["text/html"]
    drift = _stdout(_cell(nb, "fixed.drift("))
    assert re.search(r"same kind of traffic: threshold \S+ holds", drift), drift
    assert "benign questions inside news: threshold" in drift and "does NOT hold" in drift
