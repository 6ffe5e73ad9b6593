"""The notebook layer: magics, widgets and self-contained HTML renderers.

``%load_ext lmprobe_jupyter`` calls :func:`load_ipython_extension`, which registers
:class:`~lmprobe_jupyter.jupyter.magics.ProbeMagics`. Widgets live in
:mod:`.widgets` (imported lazily: anywidget is only needed when one is shown).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ip: Any) -> None:
    """Register the ``%probe_*`` magics, their input transformer and progress bars."""
    from ..engine.progress import set_progress_factory
    from .input_transform import make_transformer
    from .magics import ProbeMagics
    from .progress import notebook_progress

    ip.register_magics(ProbeMagics)
    from .scan_magic import ScanMagics

    ip.register_magics(ScanMagics)
    from .robustness_magic import RobustnessMagics

    ip.register_magics(RobustnessMagics)
    from .errors_magic import ErrorsMagics

    ip.register_magics(ErrorsMagics)
    magic_classes = (ProbeMagics, ScanMagics, RobustnessMagics, ErrorsMagics)
    names = {n for cls in magic_classes for kind in cls.magics.values() for n in kind}
    _remove_transformer(ip)
    ip.input_transformers_cleanup.append(make_transformer(names))
    _register_figure_formatter(ip)
    if getattr(ip, "kernel", None) is not None:
        # bars that leave no stale output behind (see .progress)
        set_progress_factory(notebook_progress)


def _remove_transformer(ip: Any) -> None:
    ip.input_transformers_cleanup[:] = [
        t for t in ip.input_transformers_cleanup if not getattr(t, "lmprobe_jupyter", False)
    ]


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
    """Remove the input transformer and the notebook progress bars.

    The magics stay: IPython has no API to unregister magics one class at a time.
    """
    from ..engine.progress import set_progress_factory

    _remove_transformer(ip)
    set_progress_factory(None)
