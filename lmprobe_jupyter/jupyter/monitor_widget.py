"""Live generation monitor: tokens appear as the model writes them, coloured by score.

:class:`MonitorWidget` follows the other widgets' pattern (see :mod:`.widgets`): Python
renders the markup (:func:`render_monitor`, synced as ``_html``) and the view mounts
it, so the live view and the static ``text/html`` fallback in the mimebundle are the
same picture. During generation :meth:`MonitorWidget.push` is the engine's
``on_token`` callback; every token's span is rendered once and the markup is rebuilt
by joining them, so each update costs one string join, not a re-render.

Once a token scores over the threshold the widget switches to its alarm state: a red
frame and a banner naming the first flagged token.
"""

from __future__ import annotations

import html
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import traitlets

from . import render
from .widgets import HTMLBackedWidget

__all__ = ["MonitorWidget", "monitor_live", "monitor_magic_target", "render_monitor"]

_STATIC = pathlib.Path(__file__).parent / "static"

STATUSES = ("idle", "running", "done", "stopped", "error")
ALARM_COLOR = "#b2182b"

_MONITOR_CSS = (
    ".lmpj-monitor{border:2px solid #d0d0d0;border-radius:4px;padding:6px 8px}"
    ".lmpj-monitor.lmpj-alarm{border-color:" + ALARM_COLOR + "}"
    ".lmpj-monitor .lmpj-banner{background:" + ALARM_COLOR + ";color:#ffffff;font-weight:600;"
    "padding:2px 6px;border-radius:3px;margin:2px 0 6px 0}"
    ".lmpj-monitor .lmpj-prompt-body{opacity:.75}"
    ".lmpj-monitor .lmpj-tok.lmpj-flag{outline:2px solid " + ALARM_COLOR + ";outline-offset:1px}"
    ".lmpj-monitor .lmpj-tok.lmpj-over{font-weight:600}"
    ".lmpj-monitor .lmpj-cursor{color:#888888}"
)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _visible(token: str) -> str:
    return token.replace("\r\n", "\n").replace("\n", "\u21b5\n")


def token_span(
    token: str,
    score: float | None,
    threshold: float,
    flagged: bool = False,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> str:
    """One coloured ``<span class="lmpj-tok">``, like the token-highlight renderer's."""
    missing = score is None or math.isnan(float(score))
    bg = render.score_color(None if missing else float(score), vmin, vmax)
    fg = render.text_color(bg)
    over = not missing and float(score) > threshold
    cls = "lmpj-tok" + (" lmpj-over" if over else "") + (" lmpj-flag" if flagged else "")
    title = f"{json.dumps(token, ensure_ascii=False)} score {_fmt(score)}"
    data_score = "nan" if missing else repr(float(score))
    return (
        f'<span class="{cls}" style="background-color:{bg};color:{fg}" '
        f'data-score="{data_score}" title="{html.escape(title, quote=True)}">'
        f"{html.escape(_visible(token))}</span>"
    )


def _head(
    n: int, threshold: float, max_score: float | None, status: str, flagged_at, tokens, scores
):
    state = {
        "idle": "waiting",
        "running": "generating\u2026",
        "done": "done",
        "stopped": "stopped at the flagged token",
        "error": "failed",
    }[status]
    head = (
        f'<div class="lmpj-monitor-head lmpj-muted">{state} &#183; '
        f'<span class="lmpj-n-tokens">{n}</span> tokens &#183; max score '
        f'<span class="lmpj-max">{_fmt(max_score)}</span> &#183; threshold '
        f'<span class="lmpj-threshold-value">{_fmt(threshold, 2)}</span></div>'
    )
    if flagged_at is not None and flagged_at < len(tokens):
        head += (
            '<div class="lmpj-banner" role="alert">&#9888; flagged at token '
            f"{flagged_at} ({html.escape(json.dumps(tokens[flagged_at], ensure_ascii=False))}, "
            f"score {_fmt(scores[flagged_at])} &gt; {_fmt(threshold)})</div>"
        )
    return head


def _assemble(
    uid: str,
    spans: Sequence[str],
    prompt_html: str,
    n: int,
    threshold: float,
    max_score: float | None,
    status: str,
    flagged_at: int | None,
    tokens: Sequence[str],
    scores: Sequence[float],
) -> str:
    alarm = flagged_at is not None
    cls = "lmpj lmpj-monitor" + (" lmpj-alarm" if alarm else "")
    border = ALARM_COLOR if alarm else "#d0d0d0"
    cursor = '<span class="lmpj-cursor">&#9612;</span>' if status == "running" else ""
    body = (
        '<div class="lmpj-text-body lmpj-generated" style="white-space:pre-wrap;'
        f'word-break:break-word;line-height:1.9">{"".join(spans)}{cursor}</div>'
    )
    # the renderers' shared token styles, so a monitor looks like a token highlight
    style = f"<style>{getattr(render, '_BASE_CSS', '')}{_MONITOR_CSS}</style>"
    return (
        f'<div id="{html.escape(uid)}" class="{cls}" data-status="{status}" '
        f'data-threshold="{threshold!r}" data-flagged-at="{"" if flagged_at is None else flagged_at}" '
        f'style="{render.FONT};font-size:13px;border:2px solid {border};border-radius:4px;'
        f'padding:6px 8px">{style}'
        f"{_head(n, threshold, max_score, status, flagged_at, tokens, scores)}"
        f"{prompt_html}{body}</div>"
    )


def _prompt_block(prompt_tokens, prompt_scores, threshold) -> str:
    if not prompt_tokens:
        return ""
    scores = list(prompt_scores) if prompt_scores is not None else [None] * len(prompt_tokens)
    spans = "".join(token_span(t, s, threshold) for t, s in zip(prompt_tokens, scores))
    return (
        f'<details class="lmpj-prompt"><summary class="lmpj-muted">prompt '
        f"({len(prompt_tokens)} tokens)</summary>"
        '<div class="lmpj-text-body lmpj-prompt-body" style="white-space:pre-wrap;'
        f'word-break:break-word;line-height:1.9">{spans}</div></details>'
    )


def render_monitor(
    tokens: Sequence[str],
    scores: Sequence[float],
    threshold: float = 0.5,
    flagged_at: int | None = None,
    prompt_tokens: Sequence[str] | None = None,
    prompt_scores: Sequence[float] | None = None,
    status: str = "done",
    uid: str | None = None,
) -> str:
    """Render a monitored generation as self-contained HTML.

    Parameters
    ----------
    tokens, scores : sequence
        Generated token pieces and their scores (same length).
    threshold : float
        Tokens strictly over it are marked.
    flagged_at : int, optional
        Index of the first flagged token: adds the alarm frame and banner.
    prompt_tokens, prompt_scores : sequence, optional
        Shown in a collapsed ``<details>`` block above the generation.
    status : {"idle", "running", "done", "stopped", "error"}
    uid : str, optional
        Root element id (a fresh one when omitted).
    """
    if status not in STATUSES:
        raise ValueError(f"status={status!r} is not one of {', '.join(map(repr, STATUSES))}")
    tokens = [str(t) for t in tokens]
    scores = [float(s) for s in scores]
    if len(tokens) != len(scores):
        raise ValueError(f"got {len(tokens)} tokens but {len(scores)} scores; they must match")
    spans = [
        token_span(t, s, threshold, flagged=i == flagged_at)
        for i, (t, s) in enumerate(zip(tokens, scores))
    ]
    finite = [s for s in scores if not math.isnan(s)]
    return _assemble(
        uid or render.new_uid("lmpj-monitor"),
        spans,
        _prompt_block(prompt_tokens, prompt_scores, threshold),
        len(tokens),
        threshold,
        max(finite) if finite else None,
        status,
        flagged_at,
        tokens,
        scores,
    )


class MonitorWidget(HTMLBackedWidget):
    """Live view of a monitored generation.

    Parameters
    ----------
    threshold : float
        Scores strictly above it are marked; the first such token raises the alarm.
    tokens, scores : list
        Generated pieces and their scores so far (filled by :meth:`push`).
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
    _css = (_STATIC / "widgets.css").read_text() + (_STATIC / "monitor.css").read_text()
    tokens = traitlets.List().tag(sync=True)
    scores = traitlets.List().tag(sync=True)
    prompt_tokens = traitlets.List().tag(sync=True)
    prompt_scores = traitlets.List().tag(sync=True)
    threshold = traitlets.Float(0.5).tag(sync=True)
    flagged_at = traitlets.Int(None, allow_none=True).tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)
    # every change re-renders through _state_changed; push() renders only the new span
    _render_on = ()

    def __init__(self, **kwargs: Any) -> None:
        self._spans: list[str] = []
        self._holding = False
        self.result = None
        super().__init__(**kwargs)

    @traitlets.validate("status")
    def _valid_status(self, proposal: dict) -> str:
        if proposal["value"] not in STATUSES:
            raise traitlets.TraitError(
                f"status={proposal['value']!r} is not one of {', '.join(map(repr, STATUSES))}"
            )
        return proposal["value"]

    @traitlets.observe(
        "tokens", "scores", "flagged_at", "status", "threshold", "prompt_tokens", "prompt_scores"
    )
    def _state_changed(self, _change: dict) -> None:
        if not self._holding and len(self.tokens) == len(self.scores):
            self._rebuild_spans()
            self._refresh()

    def _rebuild_spans(self) -> None:
        self._spans = [
            token_span(t, s, self.threshold, flagged=i == self.flagged_at)
            for i, (t, s) in enumerate(zip(self.tokens, self._float_scores()))
        ]

    def _float_scores(self) -> list[float]:
        return [float("nan") if s is None else float(s) for s in self.scores]

    def _refresh(self) -> None:
        if len(self._spans) != len(self.tokens):
            self._rebuild_spans()
        scores = self._float_scores()
        finite = [s for s in scores if not math.isnan(s)]
        self._html = _assemble(
            self._uid,
            self._spans,
            _prompt_block(self.prompt_tokens, self.prompt_scores, self.threshold),
            len(self.tokens),
            self.threshold,
            max(finite) if finite else None,
            self.status,
            self.flagged_at,
            self.tokens,
            scores,
        )

    def _render(self) -> str:
        self._refresh()
        return self._html

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
            "prompt_scores": [float(s) for s in prompt_scores],
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
        score = float(score)
        flagged_at = self.flagged_at
        if flagged_at is None and score > self.threshold:
            flagged_at = position
        self._spans.append(
            token_span(str(token), score, self.threshold, flagged=position == flagged_at)
        )
        self._set(
            rebuild=False,
            tokens=[*self.tokens, str(token)],
            scores=[*self.scores, score],
            flagged_at=flagged_at,
            status="running",
        )

    def finish(self, result) -> None:
        """Show the final state of a :class:`~lmprobe_jupyter.engine.monitoring.MonitorResult`."""
        self.result = result
        self._set(
            threshold=float(result.threshold),
            prompt_tokens=list(result.prompt_tokens),
            prompt_scores=[float(s) for s in result.prompt_scores],
            tokens=list(result.tokens),
            scores=[float(s) for s in result.scores],
            flagged_at=result.flagged_at,
            status="stopped" if result.stopped_early else "done",
        )

    def run(self, probe, prompt, **kwargs: Any):
        """Run ``probe.monitor(prompt, **kwargs)``, streaming tokens into this widget.

        Returns the :class:`~lmprobe_jupyter.engine.monitoring.MonitorResult` (also
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


def monitor_magic_target(probe, prompt, max_new_tokens: int = 40, threshold: float | None = None):
    """What ``%probe_monitor PROBE "prompt" --max-new-tokens 40 --threshold 0.9`` calls.

    Displays a live :class:`MonitorWidget` (tokens appear as they are generated), runs
    greedy generation with ``probe.monitor`` and returns its ``MonitorResult``. The
    widget is already on screen, so the magic should not hand the result back to
    IPython for display (bind it to a variable instead) or the final state shows twice.
    """
    return monitor_live(
        probe, prompt, display=True, max_new_tokens=max_new_tokens, threshold=threshold
    ).result
