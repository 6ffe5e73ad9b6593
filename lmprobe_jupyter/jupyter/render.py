"""Self-contained HTML/SVG renderers for the notebook layer's rich outputs.

Every function here is pure: it takes plain Python data (lists, dicts, floats) and
returns an HTML string with inline CSS and inline SVG. No CDN, no requirejs, no
script tags, no network, so the output survives nbconvert, nbviewer and GitHub.
The same strings are the static ``text/html`` fallback of the widgets and the body
the widgets' JavaScript mounts, so the live view and the exported view agree.

Element ids come from a process-wide counter (:func:`new_uid`), or are passed in
(``uid=...``) so tests can compare exact output.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "BEST_COLOR",
    "NAN_COLOR",
    "NEG_COLOR",
    "MID_COLOR",
    "POS_COLOR",
    "TEST_COLOR",
    "TRAIN_COLOR",
    "new_uid",
    "normalize_battery_rows",
    "normalize_token_texts",
    "render_battery",
    "render_cache_info",
    "render_metrics",
    "render_probe_card",
    "render_sweep_curve",
    "render_token_highlights",
    "reset_uids",
    "score_color",
    "text_color",
]

# Diverging scale (ColorBrewer RdBu end points): low scores blue, the midpoint white,
# high scores red. The JavaScript side never recomputes colours: it mounts this HTML.
NEG_COLOR = "#2166ac"
MID_COLOR = "#ffffff"
POS_COLOR = "#b2182b"
NAN_COLOR = "#e0e0e0"
TRAIN_COLOR = "#1f77b4"
TEST_COLOR = "#d62728"
BEST_COLOR = "#1a9850"
BASELINE_COLOR = "#8c9db5"
PROBE_COLOR = POS_COLOR
DARK_TEXT = "#111111"
LIGHT_TEXT = "#ffffff"
FONT = "font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif"

_uid_counter = itertools.count()


def new_uid(prefix: str = "lmpj") -> str:
    """Return a fresh element id ``f"{prefix}-{n}"`` from the process-wide counter."""
    return f"{prefix}-{next(_uid_counter)}"


def reset_uids(start: int = 0) -> None:
    """Restart the id counter (tests use this to get reproducible output)."""
    global _uid_counter
    _uid_counter = itertools.count(start)


# ---------------------------------------------------------------- small helpers


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def is_missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def fmt(value: object, digits: int = 3) -> str:
    """Format a number for display; missing values read ``n/a``."""
    if is_missing(value):
        return "n/a"
    v = float(value)  # type: ignore[arg-type]
    if v == int(v) and abs(v) < 1e15 and isinstance(value, int):
        return str(int(v))
    return f"{v:.{digits}f}"


def _num(x: float) -> str:
    """Format an SVG coordinate: one decimal, no ``-0.0``."""
    s = f"{x:.1f}"
    return "0.0" if s == "-0.0" else s


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _rgb_to_hex(rgb: Iterable[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def _mix(a: str, b: str, t: float) -> str:
    ra, rb = _hex_to_rgb(a), _hex_to_rgb(b)
    return _rgb_to_hex(_round_half_up(x + (y - x) * t) for x, y in zip(ra, rb))


def score_color(score: float | None, vmin: float = 0.0, vmax: float = 1.0) -> str:
    """Map a score to a hex colour on the blue-white-red diverging scale.

    The midpoint ``(vmin + vmax) / 2`` is white, ``vmin`` (and below) the full blue
    ``#2166ac``, ``vmax`` (and above) the full red ``#b2182b``. Missing scores (None,
    NaN) are light grey.

    Parameters
    ----------
    score : float or None
        The score, e.g. a probability of the positive class.
    vmin, vmax : float
        The ends of the scale; ``vmin < vmax``.

    Returns
    -------
    str
        ``"#rrggbb"``.
    """
    if vmax <= vmin:
        raise ValueError(f"vmax={vmax!r} must be greater than vmin={vmin!r}")
    if is_missing(score):
        return NAN_COLOR
    t = (float(score) - vmin) / (vmax - vmin)  # type: ignore[arg-type]
    t = min(1.0, max(0.0, t))
    if t >= 0.5:
        return _mix(MID_COLOR, POS_COLOR, (t - 0.5) * 2.0)
    return _mix(MID_COLOR, NEG_COLOR, (0.5 - t) * 2.0)


def text_color(background: str) -> str:
    """Return a readable text colour (near-black or white) for ``background``."""

    def channel(c: int) -> float:
        s = c / 255.0
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _hex_to_rgb(background))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return LIGHT_TEXT if luminance < 0.3 else DARK_TEXT


_BASE_CSS = (
    ".lmpj{" + FONT + ";font-size:13px;line-height:1.5;color:#111111;max-width:100%}"
    ".lmpj table{border-collapse:collapse}"
    ".lmpj th,.lmpj td{padding:2px 10px 2px 0;text-align:left;vertical-align:top}"
    ".lmpj th{font-weight:600;color:#444444}"
    ".lmpj .lmpj-title{font-weight:600;margin:0 0 4px 0}"
    ".lmpj .lmpj-muted{color:#666666}"
    ".lmpj-tok{border-radius:2px;padding:0 1px;outline-offset:-1px}"
    ".lmpj-tok.lmpj-over{outline:2px solid #111111;font-weight:600}"
    ".lmpj-text-body{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,"
    "SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;line-height:1.9}"
    ".lmpj-text{margin:6px 0 10px 0}"
    ".lmpj-colorbar{display:inline-block;width:120px;height:10px;vertical-align:middle;"
    "border:1px solid #999999;margin:0 4px}"
    ".lmpj svg text{" + FONT + "}"
)


def _style_block() -> str:
    return f"<style>{_BASE_CSS}</style>"


def _root(kind: str, uid: str, body: str, extra_attrs: str = "") -> str:
    attrs = f' id="{_esc(uid)}" class="lmpj lmpj-{kind}"'
    if extra_attrs:
        attrs += " " + extra_attrs
    return f'<div{attrs} style="{FONT};font-size:13px">{_style_block()}{body}</div>'


# ---------------------------------------------------------------- token highlights


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


def _visible_token(token: str) -> str:
    """Token text as displayed: newlines become a visible ``↵`` then a real line break."""
    return token.replace("\r\n", "\n").replace("\n", "\u21b5\n")


def _token_span(token: str, score: float, threshold: float, vmin: float, vmax: float) -> str:
    bg = score_color(score, vmin, vmax)
    fg = text_color(bg)
    over = not math.isnan(score) and score > threshold
    cls = "lmpj-tok lmpj-over" if over else "lmpj-tok"
    shown = fmt(score)
    title = f"{json.dumps(token, ensure_ascii=False)} score {shown}"
    data_score = "nan" if math.isnan(score) else repr(float(score))
    return (
        f'<span class="{cls}" style="background-color:{bg};color:{fg}" '
        f'data-score="{data_score}" title="{_esc(title)}">{_esc(_visible_token(token))}</span>'
    )


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
        legend += f'<div class="lmpj-legend-note lmpj-muted">{html.escape(note)}</div>'
    blocks = []
    for i, item in enumerate(items):
        spans = "".join(
            _token_span(t, s, threshold, vmin, vmax) for t, s in zip(item["tokens"], item["scores"])
        )
        m = item["max"]
        mbg = score_color(m, vmin, vmax)
        n_over = sum(1 for s in item["scores"] if not math.isnan(s) and s > threshold)
        head = (
            f'<div class="lmpj-text-head lmpj-muted">text {i + 1} &#183; max '
            f'<span class="lmpj-max" style="background-color:{mbg};color:{text_color(mbg)};'
            f'padding:0 3px;border-radius:2px">{fmt(m)}</span> &#183; '
            f'<span class="lmpj-n-over">{n_over}</span> of {len(item["tokens"])} tokens over '
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
    return _root("tokens", uid, legend + "".join(blocks), attrs)


# ---------------------------------------------------------------- sweep curve


def _nice_ticks(lo: float, hi: float) -> list[float]:
    if hi - lo <= 1.0 + 1e-9 and lo >= -1e-9 and hi <= 1.0 + 1e-9:
        return [0.0, 0.25, 0.5, 0.75, 1.0]
    span = hi - lo
    raw = span / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _layer_ticks(layers: Sequence[int], max_ticks: int = 16) -> list[int]:
    step = max(1, math.ceil(len(layers) / max_ticks))
    ticks = list(layers[::step])
    if layers and ticks[-1] != layers[-1]:
        ticks.append(layers[-1])
    return ticks


def _clean_series(values: Sequence[object] | None, n: int, name: str) -> list[float] | None:
    if values is None:
        return None
    vals = [float("nan") if is_missing(v) else float(v) for v in values]  # type: ignore[arg-type]
    if len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} values but there are {n} layers; they must match")
    return vals


def render_sweep_curve(
    layers: Sequence[int],
    train_scores: Sequence[float | None] | None = None,
    test_scores: Sequence[float | None] | None = None,
    best_layer: int | None = None,
    selected_layer: int | None = None,
    metric: str = "accuracy",
    uid: str | None = None,
    width: int = 520,
    height: int = 280,
) -> str:
    """Render a layer sweep as an SVG line chart: layer on x, score on y.

    Parameters
    ----------
    layers : sequence of int
        The swept layers, in order.
    train_scores, test_scores : sequence of float, optional
        Cross-validated training score and held-out test score per layer (one per
        layer, None/NaN for missing). At least one must be given.
    best_layer : int, optional
        Marked with a dashed green line and a ring.
    selected_layer : int, optional
        Marked with a solid grey line (the widget moves it on click).
    metric : str
        Label of the y axis.
    uid : str, optional
        Root element id.
    width, height : int
        SVG size in pixels.

    Returns
    -------
    str
        Self-contained HTML holding one ``<svg>``.
    """
    layers = [int(x) for x in layers]
    if not layers:
        raise ValueError("layers is empty; a sweep curve needs at least one layer")
    train = _clean_series(train_scores, len(layers), "train_scores")
    test = _clean_series(test_scores, len(layers), "test_scores")
    if train is None and test is None:
        raise ValueError("give train_scores or test_scores (or both)")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers has duplicates: {layers}")
    order = sorted(range(len(layers)), key=layers.__getitem__)
    layers = [layers[i] for i in order]
    train = None if train is None else [train[i] for i in order]
    test = None if test is None else [test[i] for i in order]
    if best_layer is not None and int(best_layer) not in layers:
        raise ValueError(f"best_layer={best_layer!r} is not one of the swept layers {layers}")
    uid = uid or new_uid("lmpj-sweep")

    left, right, top, bottom = 52.0, 16.0, 30.0, 42.0
    pw, ph = width - left - right, height - top - bottom
    finite = [v for s in (train, test) if s for v in s if not math.isnan(v)]
    ylo = min([0.0, *finite])
    yhi = max([1.0, *finite])
    lmin, lmax = min(layers), max(layers)

    def x_of(layer: int) -> float:
        if lmax == lmin:
            return left + pw / 2
        return left + (layer - lmin) / (lmax - lmin) * pw

    def y_of(v: float) -> float:
        return top + (yhi - v) / (yhi - ylo) * ph

    parts: list[str] = [
        f'<svg class="lmpj-sweep-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="layer sweep: {_esc(metric)} per layer">'
    ]
    # grid and y axis
    for tv in _nice_ticks(ylo, yhi):
        y = y_of(tv)
        parts.append(
            f'<line class="lmpj-grid" x1="{_num(left)}" y1="{_num(y)}" x2="{_num(left + pw)}" '
            f'y2="{_num(y)}" stroke="#e6e6e6" stroke-width="1"/>'
            f'<text x="{_num(left - 6)}" y="{_num(y + 4)}" text-anchor="end" font-size="11" '
            f'fill="#555555">{tv:g}</text>'
        )
    # x axis
    base = top + ph
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(base)}" x2="{_num(left + pw)}" y2="{_num(base)}" '
        'stroke="#888888" stroke-width="1"/>'
    )
    for layer in _layer_ticks(layers):
        x = x_of(layer)
        parts.append(
            f'<text class="lmpj-xtick" x="{_num(x)}" y="{_num(base + 15)}" text-anchor="middle" '
            f'font-size="11" fill="#555555">{layer}</text>'
        )
    parts.append(
        f'<text x="{_num(left + pw / 2)}" y="{_num(height - 6)}" text-anchor="middle" '
        'font-size="12" fill="#333333">layer</text>'
        f'<text x="14" y="{_num(top + ph / 2)}" text-anchor="middle" font-size="12" '
        f'fill="#333333" transform="rotate(-90 14 {_num(top + ph / 2)})">{_esc(metric)}</text>'
    )
    # click targets, one transparent column per layer, under the curves so points keep
    # their hover titles
    xs = [x_of(layer) for layer in layers]
    for i, layer in enumerate(layers):
        x0 = left if i == 0 else (xs[i - 1] + xs[i]) / 2
        x1 = left + pw if i == len(layers) - 1 else (xs[i] + xs[i + 1]) / 2
        parts.append(
            f'<rect class="lmpj-hit" data-layer="{layer}" data-x="{_num(xs[i])}" '
            f'x="{_num(x0)}" y="{_num(top)}" width="{_num(x1 - x0)}" height="{_num(ph)}" '
            'fill="transparent" style="cursor:pointer"><title>layer '
            f"{layer}</title></rect>"
        )
    # best layer marker (under the curves)
    ref = test if test is not None else train
    if best_layer is not None:
        bx = x_of(int(best_layer))
        bval = ref[layers.index(int(best_layer))] if ref else float("nan")
        parts.append(
            f'<line class="lmpj-best-line" data-layer="{int(best_layer)}" x1="{_num(bx)}" '
            f'y1="{_num(top)}" x2="{_num(bx)}" y2="{_num(base)}" stroke="{BEST_COLOR}" '
            'stroke-width="1.5" stroke-dasharray="5 3"/>'
            f'<text class="lmpj-best-label" x="{_num(left)}" y="{_num(top - 10)}" font-size="12" '
            f'fill="{BEST_COLOR}">best: layer {int(best_layer)} ({fmt(bval)})</text>'
        )
    # selected layer line (the widget's JS moves/shows it)
    sel_visible = selected_layer is not None and int(selected_layer) in layers
    sx = x_of(int(selected_layer)) if sel_visible else left  # type: ignore[arg-type]
    parts.append(
        f'<line class="lmpj-selected-line" x1="{_num(sx)}" y1="{_num(top)}" x2="{_num(sx)}" '
        f'y2="{_num(base)}" stroke="#555555" stroke-width="1.5" '
        f'visibility="{"visible" if sel_visible else "hidden"}"/>'
    )
    # series
    for key, label, color, values in (
        ("train", "train CV", TRAIN_COLOR, train),
        ("test", "test", TEST_COLOR, test),
    ):
        if values is None:
            continue
        segment: list[str] = []
        segments: list[list[str]] = []
        for layer, v in zip(layers, values):
            if math.isnan(v):
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{_num(x_of(layer))},{_num(y_of(v))}")
        if segment:
            segments.append(segment)
        for seg in segments:
            parts.append(
                f'<polyline class="lmpj-series lmpj-series-{key}" fill="none" stroke="{color}" '
                f'stroke-width="2" points="{" ".join(seg)}"/>'
            )
        for layer, v in zip(layers, values):
            if math.isnan(v):
                continue
            is_best = best_layer is not None and layer == int(best_layer) and values is ref
            cls = "lmpj-point lmpj-best" if is_best else "lmpj-point"
            r = "5.5" if is_best else "3.5"
            stroke = f' stroke="{BEST_COLOR}" stroke-width="2.5"' if is_best else ""
            parts.append(
                f'<circle class="{cls}" data-layer="{layer}" data-series="{key}" '
                f'cx="{_num(x_of(layer))}" cy="{_num(y_of(v))}" r="{r}" fill="{color}"{stroke}>'
                f"<title>layer {layer} &#183; {label} {fmt(v)}</title></circle>"
            )
    # legend
    lx = left + pw - 150
    for i, (label, color, values) in enumerate(
        (("train CV", TRAIN_COLOR, train), ("test", TEST_COLOR, test))
    ):
        if values is None:
            continue
        x0 = lx + i * 80
        parts.append(
            f'<line x1="{_num(x0)}" y1="{_num(top - 14)}" x2="{_num(x0 + 18)}" '
            f'y2="{_num(top - 14)}" stroke="{color}" stroke-width="2"/>'
            f'<text class="lmpj-legend-label" x="{_num(x0 + 22)}" y="{_num(top - 10)}" '
            f'font-size="11" fill="#333333">{label}</text>'
        )
    parts.append("</svg>")
    attrs = f'data-best-layer="{"" if best_layer is None else int(best_layer)}"'
    return _root("sweep", uid, "".join(parts), attrs)


# ---------------------------------------------------------------- baseline battery


def normalize_battery_rows(rows: Iterable[object]) -> list[dict[str, Any]]:
    """Coerce battery rows into dicts ``{name, score, fit_s, predict_s, is_probe}``.

    Rows may be mappings or objects with attributes of those names (``fit_time`` and
    ``predict_time`` are accepted as aliases). Returns them sorted by score, best
    first, missing scores last.
    """
    out = []
    for i, row in enumerate(rows):

        def get(key: str, *aliases: str, row: object = row) -> Any:
            for k in (key, *aliases):
                if isinstance(row, Mapping):
                    if k in row:
                        return row[k]
                elif hasattr(row, k):
                    return getattr(row, k)
            return None

        name = get("name", "method")
        if name is None:
            raise ValueError(f"battery row {i} has no name")
        score = get("score", "accuracy")
        out.append(
            {
                "name": str(name),
                "score": None if is_missing(score) else float(score),
                "fit_s": None
                if is_missing(get("fit_s", "fit_time"))
                else float(get("fit_s", "fit_time")),
                "predict_s": None
                if is_missing(get("predict_s", "predict_time"))
                else float(get("predict_s", "predict_time")),
                "is_probe": bool(get("is_probe")),
            }
        )
    out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0), r["name"]))
    return out


def _seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 0.01:
        return f"{s * 1000:.1f}ms"
    return f"{s:.2f}s"


def render_battery(
    rows: Iterable[object],
    metric: str = "accuracy",
    uid: str | None = None,
    width: int = 640,
) -> str:
    """Render a baseline battery as sorted horizontal SVG bars.

    Parameters
    ----------
    rows : iterable
        Rows accepted by :func:`normalize_battery_rows`; the probe's own row has
        ``is_probe=True`` and its score is drawn as a dashed reference line.
    metric : str
        Name of the score shown in the header.
    uid : str, optional
        Root element id.
    width : int
        SVG width in pixels.

    Returns
    -------
    str
        Self-contained HTML holding one ``<svg>``.
    """
    items = normalize_battery_rows(rows)
    if not items:
        raise ValueError("the battery has no rows to show")
    uid = uid or new_uid("lmpj-battery")
    label_w, bar_w, row_h, top = 170.0, 240.0, 24.0, 26.0
    height = int(top + row_h * len(items) + 26)
    scores = [r["score"] for r in items if r["score"] is not None]
    lo, hi = min([0.0, *scores]), max([1.0, *scores])

    def x_of(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * bar_w

    parts = [
        f'<svg class="lmpj-battery-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="baseline battery: {_esc(metric)} per method">',
        f'<text x="0" y="14" font-size="12" font-weight="600" fill="#333333">method</text>'
        f'<text x="{_num(label_w)}" y="14" font-size="12" font-weight="600" fill="#333333">'
        f"{_esc(metric)}</text>"
        f'<text x="{_num(label_w + bar_w + 56)}" y="14" font-size="12" font-weight="600" '
        'fill="#333333">time</text>',
    ]
    for i, r in enumerate(items):
        y = top + i * row_h
        cls = "lmpj-bar lmpj-probe" if r["is_probe"] else "lmpj-bar"
        color = PROBE_COLOR if r["is_probe"] else BASELINE_COLOR
        weight = ' font-weight="600"' if r["is_probe"] else ""
        row = [
            f'<g class="lmpj-row" data-name="{_esc(r["name"])}" data-rank="{i}">',
            f'<text x="0" y="{_num(y + 15)}" font-size="12" fill="#111111"{weight}>'
            f"{_esc(r['name'])}</text>",
        ]
        if r["score"] is not None:
            x0, x1 = x_of(0.0), x_of(r["score"])
            row.append(
                f'<rect class="{cls}" x="{_num(min(x0, x1))}" y="{_num(y + 4)}" '
                f'width="{_num(abs(x1 - x0))}" height="{_num(row_h - 8)}" fill="{color}">'
                f"<title>{_esc(r['name'])} {fmt(r['score'])}</title></rect>"
            )
        row.append(
            f'<text class="lmpj-score" x="{_num(label_w + bar_w + 6)}" y="{_num(y + 15)}" '
            f'font-size="12" fill="#111111"{weight}>{fmt(r["score"])}</text>'
            f'<text class="lmpj-timing" x="{_num(label_w + bar_w + 56)}" y="{_num(y + 15)}" '
            f'font-size="11" fill="#666666">fit {_seconds(r["fit_s"])} &#183; predict '
            f"{_seconds(r['predict_s'])}</text>"
        )
        row.append("</g>")
        parts.append("".join(row))
    probe = next((r for r in items if r["is_probe"] and r["score"] is not None), None)
    if probe is not None:
        px = x_of(probe["score"])
        bottom = top + row_h * len(items)
        parts.append(
            f'<line class="lmpj-ref-line" x1="{_num(px)}" y1="{_num(top)}" x2="{_num(px)}" '
            f'y2="{_num(bottom)}" stroke="{PROBE_COLOR}" stroke-width="1.5" '
            'stroke-dasharray="5 3"/>'
            f'<text class="lmpj-ref-label" x="{_num(px)}" y="{_num(bottom + 16)}" '
            f'text-anchor="middle" font-size="11" fill="{PROBE_COLOR}">probe '
            f"{fmt(probe['score'])}</text>"
        )
    parts.append("</svg>")
    return _root("battery", uid, "".join(parts))


# ---------------------------------------------------------------- metrics and ROC


def _roc_svg(fpr: Sequence[float], tpr: Sequence[float], auc: float | None, size: int = 240) -> str:
    if len(fpr) != len(tpr) or len(fpr) < 2:
        raise ValueError(
            f"roc needs matching fpr/tpr of length >= 2, got {len(fpr)} and {len(tpr)}"
        )
    pad = 34.0
    side = size - pad - 10

    def xy(f: float, t: float) -> str:
        return f"{_num(pad + f * side)},{_num(10 + (1 - t) * side)}"

    pts = " ".join(xy(float(f), float(t)) for f, t in zip(fpr, tpr))
    ticks = "".join(
        f'<text x="{_num(pad + v * side)}" y="{_num(10 + side + 14)}" text-anchor="middle" '
        f'font-size="10" fill="#555555">{v:g}</text>'
        f'<text x="{_num(pad - 4)}" y="{_num(10 + (1 - v) * side + 3)}" text-anchor="end" '
        f'font-size="10" fill="#555555">{v:g}</text>'
        for v in (0.0, 0.5, 1.0)
    )
    label = f"AUC {fmt(auc)}" if auc is not None else "ROC"
    return (
        f'<svg class="lmpj-roc-svg" xmlns="http://www.w3.org/2000/svg" width="{size}" '
        f'height="{size + 16}" viewBox="0 0 {size} {size + 16}" role="img" aria-label="ROC curve">'
        f'<rect x="{_num(pad)}" y="10" width="{_num(side)}" height="{_num(side)}" fill="none" '
        'stroke="#888888"/>'
        f'<line x1="{_num(pad)}" y1="{_num(10 + side)}" x2="{_num(pad + side)}" y2="10" '
        'stroke="#bbbbbb" stroke-dasharray="4 3"/>'
        f'<polyline class="lmpj-roc" fill="none" stroke="{TEST_COLOR}" stroke-width="2" '
        f'points="{pts}"/>{ticks}'
        f'<text x="{_num(pad + side - 4)}" y="{_num(10 + side - 6)}" text-anchor="end" '
        f'font-size="12" fill="{TEST_COLOR}">{label}</text>'
        f'<text x="{_num(pad + side / 2)}" y="{size + 12}" text-anchor="middle" font-size="11" '
        'fill="#333333">false positive rate</text>'
        f'<text x="10" y="{_num(10 + side / 2)}" text-anchor="middle" font-size="11" '
        f'fill="#333333" transform="rotate(-90 10 {_num(10 + side / 2)})">true positive rate</text>'
        "</svg>"
    )


def render_metrics(
    metrics: Mapping[str, object],
    roc: Mapping[str, Sequence[float]] | None = None,
    title: str = "evaluation",
    uid: str | None = None,
) -> str:
    """Render a metrics dict as a table, with an ROC curve beside it when given.

    Parameters
    ----------
    metrics : mapping
        Metric name to value (numbers shown with 4 decimals; other values as text).
    roc : mapping, optional
        ``{"fpr": [...], "tpr": [...]}``; the AUC shown is ``metrics["auroc"]`` if present.
    title : str
        Header line.
    uid : str, optional
        Root element id.
    """
    uid = uid or new_uid("lmpj-metrics")
    rows = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            shown = _esc(value)
        else:
            shown = fmt(value, 4)
        rows.append(
            f'<tr data-metric="{_esc(key)}"><th>{_esc(key)}</th><td class="lmpj-value">'
            f"{shown}</td></tr>"
        )
    table = f'<table class="lmpj-metrics-table">{"".join(rows)}</table>'
    right = ""
    if roc is not None:
        auc = metrics.get("auroc", metrics.get("auc"))
        auc_f = None if is_missing(auc) else float(auc)  # type: ignore[arg-type]
        right = f'<div style="display:inline-block;vertical-align:top;margin-left:24px">{_roc_svg(roc["fpr"], roc["tpr"], auc_f)}</div>'
    body = (
        f'<div class="lmpj-title">{_esc(title)}</div>'
        f'<div style="display:inline-block;vertical-align:top">{table}</div>{right}'
    )
    return _root("metrics", uid, body)


# ---------------------------------------------------------------- summary card, cache table

CARD_FIELDS = (
    ("model", "model"),
    ("layers", "layers"),
    ("pooling", "pooling"),
    ("classifier", "classifier"),
    ("n_positive", "positive prompts"),
    ("n_negative", "negative prompts"),
    ("n_samples", "prompts"),
    ("train_accuracy", "training accuracy"),
    ("cv_accuracy", "cross-validated accuracy"),
    ("fit_time_s", "fit time"),
    ("cache_hits", "cache hits"),
    ("cache_misses", "cache misses"),
)


def card_value(key: str, value: object) -> str:
    if value is None:
        return "n/a"
    if key == "fit_time_s":
        return _seconds(float(value))  # type: ignore[arg-type]
    if isinstance(value, float):
        return fmt(value, 3)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def render_probe_card(summary: Mapping[str, object], uid: str | None = None) -> str:
    """Render a fitted probe's summary as a small card.

    Parameters
    ----------
    summary : mapping
        Known keys (shown in this order with readable labels): ``name``, ``model``,
        ``layers``, ``pooling``, ``classifier``, ``n_positive``, ``n_negative``,
        ``n_samples``, ``train_accuracy``, ``cv_accuracy``, ``fit_time_s``,
        ``cache_hits``, ``cache_misses``. Other keys follow as they are.
    uid : str, optional
        Root element id.
    """
    uid = uid or new_uid("lmpj-card")
    name = summary.get("name")
    known = {k for k, _ in CARD_FIELDS} | {"name"}
    rows = [(key, label, summary[key]) for key, label in CARD_FIELDS if key in summary] + [
        (k, k, v) for k, v in summary.items() if k not in known
    ]
    trs = "".join(
        f'<tr data-field="{_esc(k)}"><th>{_esc(label)}</th><td>{_esc(card_value(k, v))}</td></tr>'
        for k, label, v in rows
    )
    head = f"probe <code>{_esc(name)}</code>" if name else "probe"
    body = (
        '<div style="border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;'
        'display:inline-block;background:#fafbfc">'
        f'<div class="lmpj-title">{head}</div><table>{trs}</table></div>'
    )
    return _root("card", uid, body)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


def _cache_value(key: str, value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, int | float) and not isinstance(value, bool) and "bytes" in key:
        return _human_bytes(float(value))
    if isinstance(value, float):
        return fmt(value, 3)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def render_cache_info(info: Mapping[str, object], uid: str | None = None) -> str:
    """Render the activation cache's state as a table.

    Parameters
    ----------
    info : mapping
        As returned by ``cache_info()``. Scalar entries become rows; a nested mapping
        (e.g. per-model statistics) becomes a sub-table with one row per entry; keys
        containing ``bytes`` are shown in KB/MB/GB.
    uid : str, optional
        Root element id.
    """
    uid = uid or new_uid("lmpj-cache")
    rows = []
    for key, value in info.items():
        if isinstance(value, Mapping):
            sub = "".join(
                f"<tr><th>{_esc(k)}</th><td>"
                + (
                    _esc(", ".join(f"{kk}={_cache_value(kk, vv)}" for kk, vv in v.items()))
                    if isinstance(v, Mapping)
                    else _esc(_cache_value(k, v))
                )
                + "</td></tr>"
                for k, v in value.items()
            )
            cell = f"<table>{sub}</table>" if sub else '<span class="lmpj-muted">none</span>'
        else:
            cell = _esc(_cache_value(key, value))
        rows.append(f'<tr data-field="{_esc(key)}"><th>{_esc(key)}</th><td>{cell}</td></tr>')
    body = f'<div class="lmpj-title">activation cache</div><table>{"".join(rows)}</table>'
    return _root("cache", uid, body)
