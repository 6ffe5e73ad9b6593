"""Notebook progress bars that leave no output behind once they finish.

``tqdm.notebook`` with ``leave=False`` closes its widget when done, but the cell output
that showed it stays in the notebook: exported HTML then reads "extracting: 0%| | 0/2"
(the widget's text fallback, frozen at the start) and a reloaded page shows "Error
displaying widget: model not found". These bars are shown through a display handle
instead, and on close the handle's output is replaced by an empty one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from IPython.display import display
from tqdm.notebook import tqdm as tqdm_notebook

__all__ = ["NotebookProgress", "notebook_progress"]


class NotebookProgress(tqdm_notebook):
    """A ``tqdm.notebook`` bar whose output is emptied when the bar closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["display"] = False
        kwargs.setdefault("leave", False)
        super().__init__(*args, **kwargs)
        self._handle = None
        if not self.disable:
            self._handle = display(self.container, display_id=True)
            self.displayed = True

    def close(self) -> None:
        super().close()
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            # an output with no data: nothing to show, nothing stale to save
            handle.update({}, raw=True)


def notebook_progress(iterable: Iterable, *, desc: str, unit: str) -> NotebookProgress:
    """The factory :func:`lmprobe_jupyter.engine.progress.set_progress_factory` takes."""
    return NotebookProgress(iterable, desc=desc, unit=unit)
