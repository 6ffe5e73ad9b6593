"""The notebook layer: magics, widgets and self-contained HTML renderers.

``%load_ext lmprobe_jupyter`` calls :func:`load_ipython_extension`, which registers
:class:`~lmprobe_jupyter.jupyter.magics.ProbeMagics`. Widgets live in
:mod:`.widgets` (imported lazily: anywidget is only needed when one is shown).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ip: Any) -> None:
    """Register the ``%probe_*`` magics on the IPython shell ``ip``."""
    from .magics import ProbeMagics

    ip.register_magics(ProbeMagics)


def unload_ipython_extension(ip: Any) -> None:
    """Nothing to undo: IPython has no API to unregister magics one class at a time."""
