"""%probe_scan through a real InteractiveShell, and the scan widget's state and fallback."""

from __future__ import annotations

import base64

import pytest
from IPython.core.error import UsageError

from lmprobe_jupyter.engine.evaluation.sample_scan import SampleScan, ScanImage, SeparabilityMap
from lmprobe_jupyter.jupyter.scan_widget import ScanWidget, show_scan

PROMPTS = [
    "the dog fetched the ball",
    "a puppy wagged its tail",
    "the dog barked at the mailman",
    "the cat purred on the sofa",
    "a kitten chased the yarn",
    "the cat knocked over a glass",
]
LABELS = [1, 1, 1, 0, 0, 0]


@pytest.fixture
def shell(ip, tiny_model_path, tmp_path):
    ip.user_ns.update(TINY=tiny_model_path, prompts=list(PROMPTS), labels=list(LABELS))
    ip.user_ns["DIR"] = str(tmp_path / "scan")
    return ip


@pytest.fixture
def scanned(shell, tiny_model_path, tmp_path):
    widget = shell.run_line_magic(
        "probe_scan",
        f"prompts --labels labels --model {tiny_model_path} --dir {tmp_path / 'scan'} "
        "--components 8 -o scan",
    )
    return widget


def test_probe_scan_runs_binds_and_shows_a_widget(scanned, shell):
    scan = shell.user_ns["scan"]
    assert isinstance(scan, SampleScan) and scan.prompts == PROMPTS and scan.labels == LABELS
    assert isinstance(scanned, ScanWidget)
    props = scanned.props
    assert props["tokens"] == scan.tokens[0] and props["n_layers"] == 4
    assert props["signal"] == "residual" and props["png"].startswith("data:image/png;base64,")
    # the synced state is a summary: 3 values per (layer, token), no raw activations
    assert len(props["top"]) == 4 and all(len(row) == len(props["tokens"]) for row in props["top"])


def test_probe_scan_show_signal_map_and_load(scanned, shell, tmp_path):
    w = shell.run_line_magic("probe_scan", "scan --show 4 --signal mlp_delta")
    assert w.props["prompt"] == PROMPTS[4] and w.props["signal"] == "mlp_delta"
    static = shell.run_line_magic("probe_scan", "scan --show 2 --static")
    assert isinstance(static, ScanImage) and static.prompt == PROMPTS[2]
    sep = shell.run_line_magic("probe_scan", "scan --map")
    assert isinstance(sep, SeparabilityMap)
    assert sep.auroc["residual"].shape == (4,)
    assert all(0.5 <= v <= 1.0 for v in sep.auroc["residual"])
    shell.run_line_magic("probe_scan", f"--load {tmp_path / 'scan'} -o again")
    assert shell.user_ns["again"].prompts == PROMPTS


@pytest.mark.parametrize(
    "line, match",
    [
        ("", "needs a list of prompts"),
        ("nothing_here", "no variable named 'nothing_here'"),
        ("scan --show 99", "sample_id=99 is out of range"),
        ("scan -o 1bad", "expects a variable name"),
        ("--load /no/such/dir", "has no scan.json"),
    ],
    ids=["empty", "unknown-var", "bad-index", "bad-out", "bad-dir"],
)
def test_probe_scan_usage_errors(scanned, shell, line, match):
    with pytest.raises(UsageError, match=match):
        shell.run_line_magic("probe_scan", line)


def test_widget_mimebundle_has_static_fallbacks(scanned, shell):
    data, _ = scanned._repr_mimebundle_()
    page = data["text/html"]
    assert page.startswith("<figure class='lmprobe-scan'")
    assert "data:image/png;base64," in page and "<script" not in page and "http" not in page
    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "application/vnd.jupyter.widget-view+json" in data
    w = show_scan(shell.user_ns["scan"], PROMPTS[1], signal="attn_delta")
    assert w.props["prompt"] == PROMPTS[1]


def test_widget_assets_are_files():
    from lmprobe_jupyter.presentation import STATIC_DIR as static

    assert (static / "scan.css").read_text().count(".lmpj-scan") >= 3
    js = (static / "scan.js").read_text()
    assert "export default { render }" in js and "mousemove" in js
