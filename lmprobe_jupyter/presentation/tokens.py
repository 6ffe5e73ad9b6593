"""Per-token score highlights: coloured spans, one block per text.

Pure functions from plain data to self-contained HTML (no script, no CDN): the static
``text/html`` of the token widget and of ``Probe.show_tokens`` exports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._base import (
    MID_COLOR,
    NEG_COLOR,
    POS_COLOR,
    esc,
    fmt,
    is_missing,
    new_uid,
    plural,
    root,
    score_color,
    text_color,
    token_span,
)

__all__ = ["normalize_token_texts", "render_token_highlights"]


def normalize_token_texts(texts: object) -> list[dict[str, Any]]:
    """Coerce per-token scores into ``[{"tokens": [...], "scores": [...], "max": m}]``.

    Accepted forms, one entry per text:

    - ``(tokens, scores)`` pairs, as returned by ``Probe.token_scores``;
    - lists of ``(token, score)`` pairs;
    - dicts with ``"tokens"`` and ``"scores"`` (``"max"`` is recomputed);
    - objects with ``tokens`` and ``scores`` attributes (the engine's ``TokenScores``).

    Parameters
    ----------
    texts : sequence
        The texts in one of the forms above.

    Returns
    -------
    list of dict
        ``tokens`` as ``str``, ``scores`` as ``float`` (NaN for missing), ``max`` the
        largest non-missing score or None.
    """
    if isinstance(texts, Mapping) or isinstance(texts, str):
        raise TypeError(
            f"texts must be a list of texts, got {type(texts).__name__}; pass "
            "[(tokens, scores), ...] or [{'tokens': [...], 'scores': [...]}, ...]"
        )
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(texts):  # type: ignore[union-attr]
        if isinstance(entry, Mapping):
            tokens, scores = entry.get("tokens"), entry.get("scores")
            if tokens is None or scores is None:
                raise ValueError(f"text {i} needs both 'tokens' and 'scores', got {sorted(entry)}")
        elif hasattr(entry, "tokens") and hasattr(entry, "scores"):
            tokens, scores = entry.tokens, entry.scores
        elif (
            len(entry) == 2  # type: ignore[arg-type]
            and not isinstance(entry[0], str)  # type: ignore[index]
            and not isinstance(entry[1], str)  # type: ignore[index]
            and all(isinstance(t, str) for t in entry[0])  # type: ignore[index]
        ):
            tokens, scores = entry
        else:
            pairs = list(entry)  # type: ignore[call-overload]
            if not all(isinstance(p, Sequence) and len(p) == 2 for p in pairs):
                raise ValueError(
                    f"text {i}: expected (tokens, scores) or a list of (token, score) pairs"
                )
            tokens = [p[0] for p in pairs]
            scores = [p[1] for p in pairs]
        tokens = [str(t) for t in tokens]
        scores = [float("nan") if is_missing(s) else float(s) for s in scores]
        if len(tokens) != len(scores):
            raise ValueError(
                f"text {i} has {len(tokens)} tokens but {len(scores)} scores; they must match"
            )
        finite = [s for s in scores if not math.isnan(s)]
        out.append({"tokens": tokens, "scores": scores, "max": max(finite) if finite else None})
    return out


def render_token_highlights(
    texts: object,
    threshold: float = 0.5,
    vmin: float = 0.0,
    vmax: float = 1.0,
    uid: str | None = None,
    note: str = "",
) -> str:
    """Render per-token scores as coloured spans, one block per text.

    Parameters
    ----------
    texts : sequence
        Texts in any form accepted by :func:`normalize_token_texts`.
    threshold : float
        Tokens scoring strictly above it get the ``lmpj-over`` marker class.
    vmin, vmax : float
        Ends of the colour scale; the midpoint is white.
    uid : str, optional
        Root element id; a fresh one from :func:`new_uid` when omitted.
    note : str
        A line under the legend about what the scores mean (e.g. a last-token probe's).

    Returns
    -------
    str
        Self-contained HTML.
    """
    items = normalize_token_texts(texts)
    uid = uid or new_uid("lmpj-tokens")
    bar = f"linear-gradient(to right,{NEG_COLOR},{MID_COLOR},{POS_COLOR})"
    legend = (
        '<div class="lmpj-legend lmpj-muted">score '
        f"<span>{fmt(vmin, 2)}</span>"
        f'<span class="lmpj-colorbar" style="background:{bar}"></span>'
        f"<span>{fmt(vmax, 2)}</span> &#183; threshold "
        f'<span class="lmpj-threshold-value">{fmt(threshold, 2)}</span></div>'
    )
    if note:
        legend += f'<div class="lmpj-legend-note lmpj-muted">{esc(note)}</div>'
    blocks = []
    for i, item in enumerate(items):
        spans = "".join(
            token_span(t, s, threshold, vmin, vmax) for t, s in zip(item["tokens"], item["scores"])
        )
        m = item["max"]
        mbg = score_color(m, vmin, vmax)
        n_over = sum(1 for s in item["scores"] if not math.isnan(s) and s > threshold)
        head = (
            f'<div class="lmpj-text-head lmpj-muted">text {i + 1} &#183; max '
            f'<span class="lmpj-max" style="background-color:{mbg};color:{text_color(mbg)};'
            f'padding:0 3px;border-radius:2px">{fmt(m)}</span> &#183; '
            f'<span class="lmpj-n-over">{n_over}</span> of {plural(len(item["tokens"]), "token")} over '
            "threshold</div>"
        )
        body = (
            '<div class="lmpj-text-body" style="white-space:pre-wrap;word-break:break-word;'
            f'line-height:1.9">{spans}</div>'
        )
        blocks.append(f'<div class="lmpj-text" data-index="{i}">{head}{body}</div>')
    if not items:
        blocks.append('<div class="lmpj-muted">no texts</div>')
    attrs = f'data-threshold="{threshold!r}"'
    return root("tokens", uid, legend + "".join(blocks), attrs)


# ---------------------------------------------------------------- sweep curve
