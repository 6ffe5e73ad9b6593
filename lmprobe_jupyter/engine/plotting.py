"""Matplotlib helpers shared by the engine's ``plot()`` methods."""

from __future__ import annotations

__all__ = ["new_axes"]


def new_axes(ax, figsize):
    """Axes to draw on: the given one, or one on a fresh pyplot-free Figure."""
    if ax is not None:
        return ax
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'lmprobe-jupyter[plot]'"
        ) from None
    # A bare Figure (not pyplot) is not shown twice in notebooks and needs no GUI backend.
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()
