"""Execute a notebook of magics and widgets with nbclient, then export it with nbconvert."""

from __future__ import annotations

import copy
import re
import sys

import nbformat
import pytest

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _cells(tiny: str) -> list[str]:
    return [
        "%load_ext lmprobe_jupyter",
        f"%%probe_fit dog_probe --model {tiny} --layers 2 --random-state 0\n"
        "+ Who wants to go for a walk?\n"
        "+ Fetch the ball!\n"
        "- Purring, stalking, pouncing, scratching.\n"
        "- Uses a litterbox, throws sand all over the room.\n",
        "%probe_tokens dog_probe Fetch the ball -o toks",
        "from lmprobe_jupyter.jupyter.widgets import show_sweep\n"
        "show_sweep([0, 1, 2, 3], train_scores=[0.5, 0.7, 0.9, 0.8], test_scores=[0.4, 0.6, 0.95, 0.7])",
        "import sys\nprint(type(dog_probe).__name__, dog_probe.layers_, len(toks), sys.executable)",
    ]


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_model_path, notebook_writer):
    """The notebook executed once by nbclient with the project's python3 kernel."""
    import os

    from nbclient import NotebookClient

    tmp = tmp_path_factory.mktemp("nb")
    path = notebook_writer(tmp / "magics.ipynb", _cells(tiny_model_path))
    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp)}}
    )
    # the kernel gets its own activation cache, not the user's
    client.execute(env={**os.environ, "LMPROBE_CACHE_DIR": str(tmp / "cache")})
    nbformat.write(nb, str(path))
    return nb


def _data(cell) -> dict:
    out = [o for o in cell.outputs if o.output_type in ("execute_result", "display_data")]
    assert len(out) == 1, cell.outputs
    return out[0]["data"]


def test_notebook_executes_with_project_kernel(executed):
    errors = [o for c in executed.cells for o in c.outputs if o.output_type == "error"]
    assert errors == []
    printed = executed.cells[4].outputs[0]["text"]
    assert printed.startswith("Probe [2] 1 ")
    assert printed.strip().endswith(sys.executable)  # the kernel runs this venv's python


def test_outputs_carry_widget_and_static_html(executed):
    card = _data(executed.cells[1])
    assert set(card) == {"text/plain", "text/html", "application/vnd.lmprobe.v1+json"}
    assert card["application/vnd.lmprobe.v1+json"]["kind"] == "table"
    assert (
        '<tr data-field="n_positive"><th>positive prompts</th><td>2</td></tr>' in card["text/html"]
    )

    tokens = _data(executed.cells[2])
    assert WIDGET_MIME in tokens
    spans = re.findall(
        r'<span class="lmpj-tok[^"]*" style="background-color:(#[0-9a-f]{6})', tokens["text/html"]
    )
    assert len(spans) >= 3
    assert "<script" not in tokens["text/html"]

    sweep = _data(executed.cells[3])
    assert WIDGET_MIME in sweep
    assert 'class="lmpj-series lmpj-series-test" fill="none" stroke="#d62728"' in sweep["text/html"]


def test_nbconvert_export_keeps_static_fallbacks(executed):
    """Saved without widget state (JupyterLab's default), the export shows the static HTML."""
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(executed)
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert body.count('class="lmpj-tok') >= 3
    assert "lmpj-sweep-svg" in body and 'class="lmpj-best-line" data-layer="2"' in body
    assert "positive prompts" in body


def test_saved_widget_state_holds_the_same_markup(executed):
    """With widget state (nbclient's default) a widget renderer mounts the synced ``_html``."""
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    sweep_id = _data(executed.cells[3])[WIDGET_MIME]["model_id"]
    saved = state[sweep_id]["state"]
    assert saved["best_layer"] == 2 and saved["layers"] == [0, 1, 2, 3]
    assert saved["_html"] == _data(executed.cells[3])["text/html"]
    assert "export default" in saved["_esm"]
