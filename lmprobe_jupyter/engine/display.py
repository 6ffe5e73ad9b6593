"""The engine's one seam to the notebook front end: widgets by name.

Engine objects (``Probe.show_tokens``, ``SweepResult.show``, ``BatteryResults.show``)
describe *what* to show; the front end decides *how*. The engine never imports the
notebook layer statically (it must run in plain Python with no IPython or anywidget): it
names the front-end function for each kind here, and imports it only when asked to show
something. A missing front end is an ``ImportError`` that names the extra to install.

Static HTML needs no seam: the renderers of :mod:`lmprobe_jupyter.presentation` import
no IPython or widget code, and the engine's ``_repr_html_`` methods call them directly.
"""

from __future__ import annotations

import importlib

__all__ = ["widget"]

#: kind -> (module, function) building an anywidget widget
WIDGETS = {
    "tokens": ("lmprobe_jupyter.jupyter.widgets", "show_tokens"),
    "sweep": ("lmprobe_jupyter.jupyter.widgets", "show_sweep"),
    "battery": ("lmprobe_jupyter.jupyter.widgets", "show_battery"),
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
