"""Progress bars of long loops (extraction batches, per-layer fits), one place to choose them.

By default a ``tqdm.auto`` bar with ``leave=False``. The notebook layer swaps in a bar
that removes its own output once finished (``%load_ext lmprobe_jupyter`` calls
:func:`set_progress_factory`), so a saved or exported notebook holds no stale
"extracting: 0%" line and no closed widget that a reload would show as "model not
found". The engine itself never imports IPython or widget code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["progress_bar", "set_progress_factory"]

_factory: Callable[..., Any] | None = None


def set_progress_factory(factory: Callable[..., Any] | None) -> None:
    """Use ``factory(iterable, desc=..., unit=...)`` for every bar (None: ``tqdm.auto``)."""
    global _factory
    _factory = factory


def progress_bar(iterable: Iterable, *, desc: str, unit: str) -> Iterable:
    """Wrap ``iterable`` in a progress bar that leaves nothing behind when done."""
    if _factory is not None:
        return _factory(iterable, desc=desc, unit=unit)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, leave=False)
