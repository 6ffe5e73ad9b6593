"""The error-analysis widget: filter mistakes, relabel by click, exclude, refit, compare.

Synced state is the analysis summary (:meth:`ErrorAnalysis.to_props`: rows with text,
score, label, kind; metrics; the last refit's before/after), never activations. The
front end (``static/errors.js``) builds the table from that data (text set as text, never
as HTML) and sends one message per user action; :meth:`ErrorsWidget.handle_message`
applies it to the :class:`~lmprobe_jupyter.engine.evaluation.error_analysis.ErrorAnalysis`. A
message with an unknown action or example id changes nothing and sets ``error`` (shown in
the view). Exports get the self-contained ``text/html`` of
:func:`~lmprobe_jupyter.presentation.errors.render_errors`, which says that relabeling
needs a kernel.
"""

from __future__ import annotations

import math
from typing import Any

import anywidget
import traitlets

from ..presentation import STATIC_DIR
from ..presentation.payload import repr_bundle
from .widgets import add_static_copies

__all__ = ["ACTIONS", "ErrorsWidget"]

#: Messages the front end may send, with the keys each needs.
ACTIONS = {
    "relabel": ("index", "label"),
    "flip": ("index",),
    "exclude": ("index", "excluded"),
    "select": ("index",),
    "refit": (),
    "reset": (),
}


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class ErrorsWidget(anywidget.AnyWidget):
    """Live view of an :class:`~lmprobe_jupyter.engine.evaluation.error_analysis.ErrorAnalysis`.

    Parameters
    ----------
    analysis : ErrorAnalysis
        What ``probe.errors(prompts, labels)`` returns; the widget edits it in place.
    max_rows : int, default 200
        Rows synced to the view (mistakes first).
    """

    _esm = STATIC_DIR / "errors.js"
    _css = STATIC_DIR / "errors.css"
    props = traitlets.Dict().tag(sync=True)
    selected = traitlets.Int(None, allow_none=True).tag(sync=True)
    detail = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(self, analysis: Any, max_rows: int = 200, **kwargs: Any) -> None:
        self.analysis = analysis
        self.max_rows = max_rows
        super().__init__(props=analysis.to_props(max_rows=max_rows), **kwargs)
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        try:
            self.handle_message(content)
        except (ValueError, TypeError, IndexError) as exc:
            self.error = str(exc)

    def _index(self, content: dict) -> int:
        index = content.get("index")
        n = len(self.analysis)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(
                f"unknown example id {index!r} in a {content.get('action')!r} message; ids "
                f"are 0 to {n - 1}. Nothing was changed"
            )
        return index

    def handle_message(self, content: Any) -> None:
        """Apply one front-end message (``{"action": ..., ...}``, see :data:`ACTIONS`).

        Raises
        ------
        ValueError
            For an unknown action, a missing key, an unknown example id or label; the
            analysis and the synced state are unchanged (``error`` says why).
        """
        if not isinstance(content, dict) or content.get("action") not in ACTIONS:
            action = content.get("action") if isinstance(content, dict) else content
            raise ValueError(
                f"unknown message {action!r}; actions: {', '.join(ACTIONS)}. Nothing was changed"
            )
        action = content["action"]
        missing = [k for k in ACTIONS[action] if k not in content]
        if missing:
            raise ValueError(f"{action!r} message lacks {missing}; nothing was changed")
        a = self.analysis
        if action == "relabel":
            i = self._index(content)
            label = next((c for c in a.classes if str(c) == str(content["label"])), None)
            if label is None:
                raise ValueError(
                    f"unknown label {content['label']!r}; classes: {a.classes}. Nothing was changed"
                )
            a.relabel(i, label)
        elif action == "flip":
            a.flip(self._index(content))
        elif action == "exclude":
            a.exclude(self._index(content), bool(content["excluded"]))
        elif action == "reset":
            a.reset()
        elif action == "select":
            self._select(self._index(content))
            return
        elif action == "refit":
            self.busy = True
            try:
                a.refit()
            finally:
                self.busy = False
        self.error = ""
        self.props = a.to_props(max_rows=self.max_rows)

    def _select(self, index: int) -> None:
        a = self.analysis
        (ts,) = a.highlights([index])
        try:
            near = a.nearest_training(index, k=5)
            near_note = ""
        except ValueError as exc:
            near, near_note = [], str(exc)
        self.detail = {
            "index": index,
            "tokens": list(ts.tokens),
            "scores": [_finite(float(s)) for s in ts.scores],
            "note": a.highlight_note,
            "neighbours": [{**n, "label": str(n["label"])} for n in near],
            "neighbours_note": near_note,
        }
        self.selected = index
        self.error = ""

    def _repr_html_(self) -> str:
        from ..presentation.errors import render_errors

        return render_errors(self.analysis)

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:
        # the JSON is what the JupyterLab extension draws when reopened without a kernel
        saved = repr_bundle(
            "errors",
            props=self.analysis.to_props(max_rows=self.max_rows),
            highlights=self.analysis.computed_highlights,
        )
        return add_static_copies(super()._repr_mimebundle_(**kwargs), self._repr_html_(), saved)
