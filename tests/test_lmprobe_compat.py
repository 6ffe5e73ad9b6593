"""A notebook written for lmprobe 0.10, with only its import line changed, runs here.

``tests/notebooks/lmprobe_compat.ipynb`` uses stage prefixes, ensembles, bulk extraction
with ``load_activations``, the cache tools, profiling and a sample scan on the bundled
SmolLM2; it is executed with nbclient on the project's kernel and its printed results are
checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent / "notebooks" / "lmprobe_compat.ipynb"


def _stdout(cell, name: str = "stdout") -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def _cell(nb, fragment: str):
    (found,) = [c for c in nb.cells if c.cell_type == "code" and fragment in c.source]
    return found


def test_only_the_import_line_differs_from_lmprobe():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert code.count("lmprobe_jupyter") == 1
    assert "from lmprobe_jupyter import (  # was: from lmprobe import (" in code


@pytest.mark.real_model
def test_lmprobe_notebook_runs_here(tmp_path):
    from nbclient import NotebookClient

    env = {
        **os.environ,
        "LMPROBE_CACHE_DIR": str(tmp_path / "cache"),
        "LMPROBE_PROGRESS": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    }
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=env)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []

    out = _stdout(_cell(nb, 'pooling="activation:max"'))
    assert float(re.search(r"activation:max accuracy ([0-9.]+)", out).group(1)) >= 0.5
    assert "score:mean proba shape (4, 2)" in out

    out = _stdout(_cell(nb, "ProbeEnsemble.from_configs"))
    assert float(re.search(r"hard-voting accuracy ([0-9.]+)", out).group(1)) >= 0.5
    assert "bootstrap std positive: True n = 4" in out

    out = _stdout(_cell(nb, "out = extract("))
    assert "complete: True batches: 3" in out
    assert "layers [8, 12] shape (12, 576) labels [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]" in out
    assert "trained from the files: 1.0" in out

    cell = _cell(nb, "enable_cache_logging()")
    out, err = _stdout(cell), _stdout(cell, "stderr")
    assert "profiling: True" in out
    assert re.search(r"profile Probe\.fit: [0-9.]+s = .*forward", err)
    assert "lmprobe: cache miss" in err
    assert int(re.search(r"cached prompts: (\d+)", out).group(1)) >= 12
    assert re.search(r"layers of the first prompt: \[[\d, ]*12[\d, ]*\]", out)
    assert "cache tools done" in out

    out = _stdout(_cell(nb, "SampleScan.run("))
    auroc = float(re.search(r"AUROC ([0-9.]+)", out).group(1))
    assert 0.5 <= auroc <= 1.0
    assert "image (31, " in out  # surprise row + 30 layers
    assert "per_token (" in out and ", 8)" in out
    assert "reloaded 12" in out
