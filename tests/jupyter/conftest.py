"""Fixtures for the notebook layer: an IPython shell, notebooks, a live JupyterLab."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_TOKEN = "lmprobe-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(autouse=True)
def _fixed_uids():
    """Every test starts the renderers' id counter at 0."""
    from lmprobe_jupyter import presentation as render

    render.reset_uids()
    yield
    render.reset_uids()


@pytest.fixture
def ip():
    """A real IPython InteractiveShell with the extension loaded and a clean namespace."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    if "lmprobe_jupyter" not in shell.extension_manager.loaded:
        shell.run_line_magic("load_ext", "lmprobe_jupyter")
    saved = dict(shell.user_ns)
    yield shell
    shell.user_ns.clear()
    shell.user_ns.update(saved)


def write_notebook(path: Path, cells: list[str]) -> Path:
    """Write a notebook of code cells (source strings) to ``path``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="session")
def notebook_writer():
    """``write(path, cells)``: write a notebook of code cells."""
    return write_notebook


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTER_DATA_DIR": str(tmp / "data"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "IPYTHONDIR": str(tmp / "ipython"),
            "LMPROBE_CACHE_DIR": str(tmp / "lmprobe-cache"),
            "LMPROBE_PROGRESS": "0",
            # the kernel runs in the notebook's folder; make the package importable anyway
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    return env


class Lab:
    """A running JupyterLab server: ``url(path)`` builds authenticated URLs."""

    def __init__(self, proc: subprocess.Popen, port: int, root: Path, log: Path) -> None:
        self.proc, self.port, self.root, self.log = proc, port, root, log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> object:
        req = urllib.request.Request(
            f"{self.base}{path}", headers={"Authorization": f"token {LAB_TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def put(self, path: str, body: object) -> None:
        """PUT a JSON body to the server's REST API (e.g. a user setting)."""
        req = urllib.request.Request(
            f"{self.base}{path}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Authorization": f"token {LAB_TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def notebook_url(self, name: str) -> str:
        """A fresh workspace per notebook, reset, so no earlier layout leaks in."""
        return f"{self.base}/lab/workspaces/w{uuid.uuid4().hex[:10]}/tree/{name}?reset&token={LAB_TOKEN}"


@pytest.fixture
def lab(tmp_path):
    """Start JupyterLab from this venv on 127.0.0.1 and stop it by PID afterwards."""
    root = tmp_path / "root"
    root.mkdir()
    env = _kernel_env(tmp_path)
    labconfig = tmp_path / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    port = _free_port()
    log = tmp_path / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={LAB_TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=fh, stderr=subprocess.STDOUT)
    server = Lab(proc, port, root, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{log.read_text()[-3000:]}")
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not answer in 90 s:\n{log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.3)
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def browser():
    """Debian's chromium driven by playwright (never a playwright-downloaded browser)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _open_and_run_all(page, lab, name: str, timeout_s: float = 120) -> None:
    """Open ``name`` in a fresh workspace, wait for the kernel, then Run All Cells."""
    kernel_ready = {"seen": False}

    def on_ws(ws):
        def on_frame(payload):
            data = payload if isinstance(payload, bytes) else payload.encode()
            if b"kernel_info_reply" in data:
                kernel_ready["seen"] = True

        ws.on("framereceived", on_frame)

    page.on("websocket", on_ws)
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while not kernel_ready["seen"]:
        if time.monotonic() > deadline:
            raise AssertionError("no kernel_info_reply frame: the kernel never became ready")
        page.wait_for_timeout(200)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


@pytest.fixture
def open_and_run():
    """``open_and_run(page, lab, name)``: open a notebook in JupyterLab, wait for its
    kernel's ``kernel_info_reply``, then Run All Cells."""
    return _open_and_run_all
