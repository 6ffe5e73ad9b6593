"""The engine's one seam to the notebook front end: widgets and rich HTML by name.

Engine objects (``Probe.show_tokens``, ``SweepResult.show``, ``BatteryResults``, the monitor's
result) describe *what* to show; the front end decides *how*. The engine never imports the
notebook layer statically (it must run in plain Python with no IPython or anywidget): it
names the front-end function for each kind here, and imports it only when asked to show
something. A missing front end is an ``ImportError`` that names the extra to install.
"""

from __future__ import annotations

import importlib

__all__ = ["html", "widget"]

#: kind -> (module, function) building an anywidget widget
WIDGETS = {
    "tokens": ("lmprobe_jupyter.jupyter.widgets", "show_tokens"),
    "sweep": ("lmprobe_jupyter.jupyter.widgets", "show_sweep"),
    "battery": ("lmprobe_jupyter.jupyter.widgets", "show_battery"),
}

#: kind -> (module, function) rendering self-contained HTML (no IPython needed)
HTML = {
    "tokens": ("lmprobe_jupyter.jupyter.render", "render_token_highlights"),
    "battery": ("lmprobe_jupyter.jupyter.render", "render_battery"),
    "monitor": ("lmprobe_jupyter.jupyter.monitor_widget", "render_monitor"),
}


def _resolve(table: dict, kind: str):
    if kind not in table:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(map(repr, sorted(table)))}")
    module, name = table[kind]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(
            f"showing {kind!r} needs the notebook extra ({exc}); "
            "pip install 'lmprobe-jupyter[jupyter]'"
        ) from None


def widget(kind: str, *args, **kwargs):
    """The front end's widget for ``kind`` (``"tokens"``, ``"sweep"``, ``"battery"``)."""
    return _resolve(WIDGETS, kind)(*args, **kwargs)


def html(kind: str, *args, **kwargs) -> str | None:
    """Self-contained HTML for ``kind``, or None when no renderer is installed."""
    try:
        render = _resolve(HTML, kind)
    except ImportError:
        return None
    return render(*args, **kwargs)
