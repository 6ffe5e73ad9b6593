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
    from .scan_magic import ScanMagics

    ip.register_magics(ScanMagics)
    _register_figure_formatter(ip)


def _register_figure_formatter(ip: Any) -> None:
    """Show matplotlib Figures returned by ``.plot()`` as PNGs without ``%matplotlib``.

    Our plots build Figures without pyplot (no global state, no backend switch), so
    IPython would otherwise print only their repr. Registered by type name: matplotlib
    is imported only when a Figure is actually displayed.
    """
    formatter = getattr(getattr(ip, "display_formatter", None), "formatters", {}).get("image/png")
    if formatter is None:
        return

    def png(fig) -> bytes:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", dpi=100)
        return buf.getvalue()

    formatter.for_type_by_name("matplotlib.figure", "Figure", png)


def unload_ipython_extension(ip: Any) -> None:
    """Nothing to undo: IPython has no API to unregister magics one class at a time."""
