"""A monitored generation as HTML: tokens coloured by score, an alarm once one is flagged.

:func:`render_monitor` draws a finished (or running) generation; the live widget builds
the same markup from the same pieces (:func:`monitor_markup`, :func:`prompt_block`,
:func:`token_span` rendered once per token), so the live view and the static
``text/html`` of ``MonitorResult`` are the same picture.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

from ._base import ALARM_COLOR, FONT, fmt, new_uid, plural, style_block, token_span

__all__ = ["STATUSES", "monitor_markup", "prompt_block", "render_monitor"]

STATUSES = ("idle", "running", "done", "stopped", "error")
_STATE_TEXT = {
    "idle": "waiting",
    "running": "generating\u2026",
    "done": "done",
    "stopped": "stopped at the flagged token",
    "error": "failed",
}


def check_status(status: str) -> str:
    """Return ``status`` if it is one of :data:`STATUSES`, else raise ``ValueError``."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r} is not one of {', '.join(map(repr, STATUSES))}")
    return status


def _head(n, threshold, max_score, status, flagged_at, tokens, scores) -> str:
    head = (
        f'<div class="lmpj-monitor-head lmpj-muted">{_STATE_TEXT[status]} &#183; '
        f'<span class="lmpj-n-tokens">{n}</span> {"token" if n == 1 else "tokens"} &#183; '
        f'max score <span class="lmpj-max">{fmt(max_score)}</span> &#183; threshold '
        f'<span class="lmpj-threshold-value">{fmt(threshold, 2)}</span></div>'
    )
    if flagged_at is not None and flagged_at < len(tokens):
        # counted from 1, like the "N tokens" beside it and MonitorResult's repr
        head += (
            '<div class="lmpj-banner" role="alert">&#9888; flagged at token '
            f"{flagged_at + 1} of {n} "
            f"({html.escape(json.dumps(tokens[flagged_at], ensure_ascii=False))}, "
            f"score {fmt(scores[flagged_at])} &gt; {fmt(threshold)})</div>"
        )
    return head


def prompt_block(
    prompt_tokens, prompt_scores, threshold: float, chat_template: bool = False
) -> str:
    """The prompt's tokens in a collapsed ``<details>`` block ("" without a prompt).

    With ``chat_template`` the summary says the prompt was rendered with the model's
    chat template (and how to turn that off).
    """
    if not prompt_tokens:
        return ""
    scores = list(prompt_scores) if prompt_scores is not None else [None] * len(prompt_tokens)
    spans = "".join(token_span(t, s, threshold) for t, s in zip(prompt_tokens, scores))
    chat = (
        ", with the model's chat template; chat_template=False turns it off"
        if chat_template
        else ""
    )
    return (
        f'<details class="lmpj-prompt"><summary class="lmpj-muted">prompt '
        f"({plural(len(prompt_tokens), 'token')}{chat})</summary>"
        '<div class="lmpj-text-body lmpj-prompt-body" style="white-space:pre-wrap;'
        f'word-break:break-word;line-height:1.9">{spans}</div></details>'
    )


def monitor_markup(
    uid: str,
    spans: Sequence[str],
    prompt_html: str,
    threshold: float,
    status: str,
    flagged_at: int | None,
    tokens: Sequence[str],
    scores: Sequence[float],
) -> str:
    """Assemble the monitor's HTML from already rendered token ``spans``.

    The live widget keeps one span per token and calls this on every new token, so an
    update costs a string join, not a re-render of every token.
    """
    finite = [s for s in scores if not math.isnan(s)]
    max_score = max(finite) if finite else None
    alarm = flagged_at is not None
    cls = "lmpj lmpj-monitor" + (" lmpj-alarm" if alarm else "")
    border = ALARM_COLOR if alarm else "#d0d0d0"
    cursor = '<span class="lmpj-cursor">&#9612;</span>' if status == "running" else ""
    body = (
        '<div class="lmpj-text-body lmpj-generated" style="white-space:pre-wrap;'
        f'word-break:break-word;line-height:1.9">{"".join(spans)}{cursor}</div>'
    )
    return (
        f'<div id="{html.escape(uid)}" class="{cls}" data-status="{status}" '
        f'data-threshold="{threshold!r}" data-flagged-at="{"" if flagged_at is None else flagged_at}" '
        f'style="{FONT};font-size:13px;border:2px solid {border};border-radius:4px;'
        f'padding:6px 8px">{style_block("monitor")}'
        f"{_head(len(tokens), threshold, max_score, status, flagged_at, tokens, scores)}"
        f"{prompt_html}{body}</div>"
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
    chat_template: bool = False,
) -> str:
    """Render a monitored generation as self-contained HTML.

    Parameters
    ----------
    tokens, scores : sequence
        Generated token pieces and their scores (same length).
    threshold : float
        Tokens strictly over it are marked.
    flagged_at : int, optional
        Index (from 0) of the first flagged token: adds the alarm frame and a banner
        that counts from 1.
    prompt_tokens, prompt_scores : sequence, optional
        Shown in a collapsed ``<details>`` block above the generation.
    status : {"idle", "running", "done", "stopped", "error"}
    uid : str, optional
        Root element id (a fresh one when omitted).
    chat_template : bool
        The prompt was rendered with the model's chat template (said in its summary).
    """
    check_status(status)
    tokens = [str(t) for t in tokens]
    scores = [float(s) for s in scores]
    if len(tokens) != len(scores):
        raise ValueError(f"got {len(tokens)} tokens but {len(scores)} scores; they must match")
    spans = [
        token_span(t, s, threshold, flagged=i == flagged_at)
        for i, (t, s) in enumerate(zip(tokens, scores))
    ]
    return monitor_markup(
        uid or new_uid("lmpj-monitor"),
        spans,
        prompt_block(prompt_tokens, prompt_scores, threshold, chat_template),
        threshold,
        status,
        flagged_at,
        tokens,
        scores,
    )
