"""Live generation monitor: tokens appear as the model writes them, coloured by score.

:class:`MonitorWidget` follows the other widgets' pattern (see :mod:`.widgets`): Python
renders the markup (:func:`lmprobe_jupyter.presentation.render_monitor`, synced as
``_html``) and the view mounts
it, so the live view and the static ``text/html`` fallback in the mimebundle are the
same picture. During generation :meth:`MonitorWidget.push` is the engine's
``on_token`` callback; every token's span is rendered once and the markup is rebuilt
by joining them, so each update costs one string join, not a re-render.

Once a token scores over the threshold the widget switches to its alarm state: a red
frame and a banner naming the first flagged token.
"""

from __future__ import annotations

import math
from typing import Any

import traitlets

from .. import presentation
from ..presentation import payload as schema
from .widgets import HTMLBackedWidget

__all__ = ["MonitorWidget", "monitor_live"]

_STATIC = presentation.STATIC_DIR


def _synced(scores) -> list:
    """Scores as a JSON-safe list: ``None`` for NaN (an unscored token)."""
    out = []
    for s in scores:
        s = None if s is None else float(s)
        out.append(None if s is None or math.isnan(s) else s)
    return out


class MonitorWidget(HTMLBackedWidget):
    """Live view of a monitored generation.

    Parameters
    ----------
    threshold : float
        Scores strictly above it are marked; the first such token raises the alarm.
    tokens, scores : list
        Generated pieces and their scores so far (filled by :meth:`push`); an unscored
        token (the attention sink, a special token) has ``None`` (JSON has no NaN).
    prompt_tokens, prompt_scores : list
        The prompt, shown collapsed.
    flagged_at : int or None
        Index of the first flagged token.
    status : {"idle", "running", "done", "stopped", "error"}

    Examples
    --------
    >>> w = MonitorWidget(threshold=0.9)            # doctest: +SKIP
    >>> display(w); result = w.run(probe, "prompt")  # doctest: +SKIP
    """

    _esm = _STATIC / "monitor.js"
    _css = _STATIC / "widgets.css"
    tokens = traitlets.List().tag(sync=True)
    scores = traitlets.List().tag(sync=True)
    prompt_tokens = traitlets.List().tag(sync=True)
    prompt_scores = traitlets.List().tag(sync=True)
    threshold = traitlets.Float(0.5).tag(sync=True)
    flagged_at = traitlets.Int(None, allow_none=True).tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)
    chat_template = traitlets.Bool(False).tag(sync=True)
    # every change re-renders through _state_changed; push() renders only the new span
    _render_on = ()

    def __init__(self, **kwargs: Any) -> None:
        self._spans: list[str] = []
        self._holding = False
        self.result = None
        super().__init__(**kwargs)

    @traitlets.validate("status")
    def _valid_status(self, proposal: dict) -> str:
        try:
            return presentation.check_status(proposal["value"])
        except ValueError as exc:
            raise traitlets.TraitError(str(exc)) from None

    @traitlets.observe(
        "tokens",
        "scores",
        "flagged_at",
        "status",
        "threshold",
        "prompt_tokens",
        "prompt_scores",
        "chat_template",
    )
    def _state_changed(self, _change: dict) -> None:
        if not self._holding and len(self.tokens) == len(self.scores):
            self._rebuild_spans()
            self._refresh()

    def _rebuild_spans(self) -> None:
        self._spans = [
            presentation.token_span(t, s, self.threshold, flagged=i == self.flagged_at)
            for i, (t, s) in enumerate(zip(self.tokens, self._float_scores()))
        ]

    def _float_scores(self) -> list[float]:
        return [float("nan") if s is None else float(s) for s in self.scores]

    def _refresh(self) -> None:
        if len(self._spans) != len(self.tokens):
            self._rebuild_spans()
        self._html = presentation.monitor_markup(
            self._uid,
            self._spans,
            presentation.prompt_block(
                self.prompt_tokens, self.prompt_scores, self.threshold, self.chat_template
            ),
            self.threshold,
            self.status,
            self.flagged_at,
            self.tokens,
            self._float_scores(),
        )

    def _render(self) -> str:
        self._refresh()
        return self._html

    def _payload(self) -> dict | None:
        if len(self.tokens) != len(self.scores):
            return None  # mid-update; the next display carries the full state
        return schema.payload(
            "monitor",
            tokens=self.tokens,
            scores=self.scores,
            threshold=self.threshold,
            flagged_at=self.flagged_at,
            prompt_tokens=self.prompt_tokens,
            prompt_scores=self.prompt_scores,
            status=self.status,
            chat_template=self.chat_template,
        )

    # ---------------------------------------------------------------- driving it
    def _set(self, rebuild: bool = True, **values: Any) -> None:
        """Change several traits, then render and sync once."""
        self._holding = True
        try:
            with self.hold_sync():
                for k, v in values.items():
                    setattr(self, k, v)
                if rebuild:
                    self._rebuild_spans()
                self._refresh()
        finally:
            self._holding = False

    def reset(self, prompt_tokens=(), prompt_scores=(), threshold: float | None = None) -> None:
        """Clear the generation and show a new prompt."""
        self.result = None
        values: dict[str, Any] = {
            "tokens": [],
            "scores": [],
            "flagged_at": None,
            "status": "running",
            "prompt_tokens": [str(t) for t in prompt_tokens],
            "prompt_scores": _synced(prompt_scores),
        }
        if threshold is not None:
            values["threshold"] = float(threshold)
        self._set(**values)

    def push(self, position: int, token: str, score: float) -> None:
        """Append one scored token (the ``on_token`` callback of ``Probe.monitor``)."""
        if position != len(self.tokens):
            raise ValueError(
                f"token position {position} does not follow the {len(self.tokens)} shown"
            )
        score = float("nan") if score is None else float(score)
        flagged_at = self.flagged_at
        if flagged_at is None and score > self.threshold:
            flagged_at = position
        self._spans.append(
            presentation.token_span(
                str(token), score, self.threshold, flagged=position == flagged_at
            )
        )
        self._set(
            rebuild=False,
            tokens=[*self.tokens, str(token)],
            scores=[*self.scores, *_synced([score])],
            flagged_at=flagged_at,
            status="running",
        )

    def finish(self, result) -> None:
        """Show the final state of a :class:`~lmprobe_jupyter.engine.monitoring.live.MonitorResult`."""
        self.result = result
        self._set(
            threshold=float(result.threshold),
            prompt_tokens=list(result.prompt_tokens),
            prompt_scores=_synced(result.prompt_scores),
            tokens=list(result.tokens),
            scores=_synced(result.scores),
            flagged_at=result.flagged_at,
            status="stopped" if result.stopped_early else "done",
            chat_template=bool(getattr(result, "chat_template", False)),
        )

    def run(self, probe, prompt, **kwargs: Any):
        """Run ``probe.monitor(prompt, **kwargs)``, streaming tokens into this widget.

        Returns the :class:`~lmprobe_jupyter.engine.monitoring.live.MonitorResult` (also
        kept as ``self.result``).
        """
        user_on_token = kwargs.pop("on_token", None)
        threshold = kwargs.get("threshold")
        if threshold is None:
            threshold = getattr(probe, "threshold_", None)
        self.reset(threshold=0.5 if threshold is None else float(threshold))

        def on_token(position: int, token: str, score: float) -> None:
            self.push(position, token, score)
            if user_on_token is not None:
                user_on_token(position, token, score)

        try:
            result = probe.monitor(prompt, on_token=on_token, **kwargs)
        except BaseException:
            self._set(status="error")
            raise
        self.finish(result)
        return result


def monitor_live(probe, prompt, *, display: bool = True, **kwargs: Any) -> MonitorWidget:
    """Show a :class:`MonitorWidget` and fill it while ``probe.monitor`` generates.

    Parameters
    ----------
    probe : Probe
    prompt : str or list of dict
    display : bool, default True
        Display the widget before generating (so tokens appear live); with False the
        widget is only returned, in its final state.
    **kwargs
        Passed to ``probe.monitor`` (``max_new_tokens``, ``threshold``, ...).

    Returns
    -------
    MonitorWidget
        With the :class:`MonitorResult` as ``.result``.
    """
    widget = MonitorWidget()
    handle = None
    if display:
        from IPython.display import display as ipy_display

        handle = ipy_display(widget, display_id=True)
    widget.run(probe, prompt, **kwargs)
    if handle is not None:
        # the saved output's static fallback must show the final state, not "waiting"
        handle.update(widget)
    return widget
