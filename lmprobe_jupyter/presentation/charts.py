"""Charts as inline SVG: the layer-sweep curve, the baseline battery, metrics with ROC.

Pure functions from plain data to self-contained HTML (no script, no CDN). Text takes
the JupyterLab theme's colours through the ``lmpj-fg``/``lmpj-fg2`` classes of
``static/base.css``; the ``fill`` attributes are the fallback where CSS is stripped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._base import (
    BASELINE_COLOR,
    BEST_COLOR,
    FG,
    PROBE_COLOR,
    TEST_COLOR,
    TRAIN_COLOR,
    esc,
    fmt,
    format_seconds,
    is_missing,
    new_uid,
    num,
    root,
)

__all__ = [
    "normalize_battery_rows",
    "render_battery",
    "render_metrics",
    "render_sweep_curve",
    "render_sweep_table",
]


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


def _layer_ticks(layers: Sequence[int], max_ticks: int = 12) -> list[int]:
    """Evenly spaced layer labels: every layer, or every 2nd, 5th, 10th... (never crowded)."""
    step = 1
    for step in (1, 2, 5, 10, 20, 50, 100):  # noqa: B007 - the loop picks the step
        if math.ceil(len(layers) / step) <= max_ticks:
            break
    ticks = list(layers[::step])
    if layers and ticks[-1] != layers[-1] and len(layers) - 1 - layers.index(ticks[-1]) > step / 2:
        ticks.append(layers[-1])
    return ticks


def _clean_series(values: Sequence[object] | None, n: int, name: str) -> list[float] | None:
    if values is None:
        return None
    vals = [float("nan") if is_missing(v) else float(v) for v in values]  # type: ignore[arg-type]
    if len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} values but there are {n} layers; they must match")
    return vals


def _best_text(
    best: int, best_by: str | None, layers: list[int], train: list | None, test: list | None
) -> str:
    i = layers.index(best)
    if best_by == "cv":
        shown = f"CV {fmt(train[i] if train else None)}"
        if test is not None:
            shown += f" \u00b7 test {fmt(test[i])}"
        return f"best by CV: layer {best} ({shown})"
    ref = test if test is not None else train
    value = fmt(ref[i] if ref else None)
    return (
        f"best by test: layer {best} ({value})"
        if best_by == "test"
        else (f"best: layer {best} ({value})")
    )


def render_sweep_curve(
    layers: Sequence[int],
    train_scores: Sequence[float | None] | None = None,
    test_scores: Sequence[float | None] | None = None,
    best_layer: int | None = None,
    selected_layer: int | None = None,
    best_by: str | None = None,
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
    best_by : {"cv", "test"}, optional
        The score the best layer was chosen by, named in its label (with the test
        score beside a CV choice); None: an unlabelled "best".
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
    if best_by not in (None, "cv", "test"):
        raise ValueError(f"best_by={best_by!r} is not one of None, 'cv', 'test'")
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
        f'aria-label="layer sweep: {esc(metric)} per layer">'
    ]
    # grid and y axis
    for tv in _nice_ticks(ylo, yhi):
        y = y_of(tv)
        parts.append(
            f'<line class="lmpj-grid" x1="{num(left)}" y1="{num(y)}" x2="{num(left + pw)}" '
            f'y2="{num(y)}" stroke="#e6e6e6" stroke-width="1"/>'
            f'<text x="{num(left - 6)}" y="{num(y + 4)}" text-anchor="end" font-size="11" '
            f'class="lmpj-fg2" fill="#595959">{tv:g}</text>'
        )
    # x axis
    base = top + ph
    parts.append(
        f'<line x1="{num(left)}" y1="{num(base)}" x2="{num(left + pw)}" y2="{num(base)}" '
        'class="lmpj-axis" stroke="#888888" stroke-width="1"/>'
    )
    for layer in _layer_ticks(layers, max_ticks=max(2, int(pw // 36))):
        x = x_of(layer)
        parts.append(
            f'<text class="lmpj-xtick lmpj-fg2" x="{num(x)}" y="{num(base + 15)}" '
            f'text-anchor="middle" font-size="11" fill="#595959">{layer}</text>'
        )
    parts.append(
        f'<text x="{num(left + pw / 2)}" y="{num(height - 6)}" text-anchor="middle" '
        'font-size="12" class="lmpj-fg" fill="#222222">layer</text>'
        f'<text x="14" y="{num(top + ph / 2)}" text-anchor="middle" font-size="12" '
        f'class="lmpj-fg" fill="#222222" transform="rotate(-90 14 {num(top + ph / 2)})">{esc(metric)}</text>'
    )
    # click targets, one transparent column per layer, under the curves so points keep
    # their hover titles
    xs = [x_of(layer) for layer in layers]
    for i, layer in enumerate(layers):
        x0 = left if i == 0 else (xs[i - 1] + xs[i]) / 2
        x1 = left + pw if i == len(layers) - 1 else (xs[i] + xs[i + 1]) / 2
        parts.append(
            f'<rect class="lmpj-hit" data-layer="{layer}" data-x="{num(xs[i])}" '
            f'x="{num(x0)}" y="{num(top)}" width="{num(x1 - x0)}" height="{num(ph)}" '
            'fill="transparent" style="cursor:pointer"><title>layer '
            f"{layer}</title></rect>"
        )
    # best layer marker (under the curves)
    ref = train if best_by == "cv" or test is None else test
    if best_layer is not None:
        bx = x_of(int(best_layer))
        best_text = _best_text(int(best_layer), best_by, layers, train, test)
        parts.append(
            f'<line class="lmpj-best-line" data-layer="{int(best_layer)}" x1="{num(bx)}" '
            f'y1="{num(top)}" x2="{num(bx)}" y2="{num(base)}" stroke="{BEST_COLOR}" '
            'stroke-width="1.5" stroke-dasharray="5 3"/>'
            f'<text class="lmpj-best-label lmpj-fg" x="{num(left)}" y="{num(top - 10)}" '
            f'font-size="12" fill="{FG}">{esc(best_text)}</text>'
        )
    # selected layer line (the widget's JS moves/shows it)
    sel_visible = selected_layer is not None and int(selected_layer) in layers
    sx = x_of(int(selected_layer)) if sel_visible else left  # type: ignore[arg-type]
    parts.append(
        f'<line class="lmpj-selected-line" x1="{num(sx)}" y1="{num(top)}" x2="{num(sx)}" '
        f'y2="{num(base)}" stroke="#555555" stroke-width="1.5" '
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
            segment.append(f"{num(x_of(layer))},{num(y_of(v))}")
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
                f'cx="{num(x_of(layer))}" cy="{num(y_of(v))}" r="{r}" fill="{color}"{stroke}>'
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
            f'<line x1="{num(x0)}" y1="{num(top - 14)}" x2="{num(x0 + 18)}" '
            f'y2="{num(top - 14)}" stroke="{color}" stroke-width="2"/>'
            f'<text class="lmpj-legend-label lmpj-fg" x="{num(x0 + 22)}" y="{num(top - 10)}" '
            f'font-size="11" fill="#222222">{label}</text>'
        )
    parts.append("</svg>")
    attrs = f'data-best-layer="{"" if best_layer is None else int(best_layer)}"'
    return root("sweep", uid, "".join(parts), attrs)


# ---------------------------------------------------------------- baseline battery


def normalize_battery_rows(rows: Iterable[object]) -> list[dict[str, Any]]:
    """Coerce battery rows into dicts ``{name, score, fit_s, predict_s, is_probe}``.

    Rows may be mappings or objects with attributes of those names (``fit_time`` and
    ``predict_time`` are accepted as aliases). Returns them sorted by score, best
    first, missing scores last; ties keep their given order.
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
    # stable: ties keep the order they came in (BatteryResults.summary()'s order)
    out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
    return out


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
        f'aria-label="baseline battery: {esc(metric)} per method">',
        f'<text x="0" y="14" font-size="12" font-weight="600" class="lmpj-fg" fill="#222222">method</text>'
        f'<text x="{num(label_w)}" y="14" font-size="12" font-weight="600" class="lmpj-fg" fill="#222222">'
        f"{esc(metric)}</text>"
        f'<text x="{num(label_w + bar_w + 56)}" y="14" font-size="12" font-weight="600" '
        'class="lmpj-fg" fill="#222222">time</text>',
    ]
    for i, r in enumerate(items):
        y = top + i * row_h
        cls = "lmpj-bar lmpj-probe" if r["is_probe"] else "lmpj-bar"
        color = PROBE_COLOR if r["is_probe"] else BASELINE_COLOR
        weight = ' font-weight="600"' if r["is_probe"] else ""
        row = [
            f'<g class="lmpj-row" data-name="{esc(r["name"])}" data-rank="{i}">',
            f'<text x="0" y="{num(y + 15)}" font-size="12" class="lmpj-fg" fill="#222222"{weight}>'
            f"{esc(r['name'])}</text>",
        ]
        if r["score"] is not None:
            x0, x1 = x_of(0.0), x_of(r["score"])
            row.append(
                f'<rect class="{cls}" x="{num(min(x0, x1))}" y="{num(y + 4)}" '
                f'width="{num(abs(x1 - x0))}" height="{num(row_h - 8)}" fill="{color}">'
                f"<title>{esc(r['name'])} {fmt(r['score'])}</title></rect>"
            )
        row.append(
            f'<text class="lmpj-score lmpj-fg" x="{num(label_w + bar_w + 6)}" y="{num(y + 15)}" '
            f'font-size="12" fill="#222222"{weight}>{fmt(r["score"])}</text>'
            f'<text class="lmpj-timing lmpj-fg2" x="{num(label_w + bar_w + 56)}" y="{num(y + 15)}" '
            f'font-size="11" fill="#595959">fit {format_seconds(r["fit_s"])} &#183; predict '
            f"{format_seconds(r['predict_s'])}</text>"
        )
        row.append("</g>")
        parts.append("".join(row))
    probe = next((r for r in items if r["is_probe"] and r["score"] is not None), None)
    if probe is not None:
        px = x_of(probe["score"])
        bottom = top + row_h * len(items)
        parts.append(
            f'<line class="lmpj-ref-line" x1="{num(px)}" y1="{num(top)}" x2="{num(px)}" '
            f'y2="{num(bottom)}" stroke="{PROBE_COLOR}" stroke-width="1.5" '
            'stroke-dasharray="5 3"/>'
            f'<text class="lmpj-ref-label lmpj-fg" x="{num(px)}" y="{num(bottom + 16)}" '
            f'text-anchor="middle" font-size="11" fill="{FG}">probe '
            f"{fmt(probe['score'])}</text>"
        )
    parts.append("</svg>")
    return root("battery", uid, "".join(parts))


# ---------------------------------------------------------------- metrics and ROC


def _roc_svg(fpr: Sequence[float], tpr: Sequence[float], auc: float | None, size: int = 240) -> str:
    if len(fpr) != len(tpr) or len(fpr) < 2:
        raise ValueError(
            f"roc needs matching fpr/tpr of length >= 2, got {len(fpr)} and {len(tpr)}"
        )
    pad = 34.0
    side = size - pad - 10

    def xy(f: float, t: float) -> str:
        return f"{num(pad + f * side)},{num(10 + (1 - t) * side)}"

    pts = " ".join(xy(float(f), float(t)) for f, t in zip(fpr, tpr))
    ticks = "".join(
        f'<text x="{num(pad + v * side)}" y="{num(10 + side + 14)}" text-anchor="middle" '
        f'font-size="10" class="lmpj-fg2" fill="#595959">{v:g}</text>'
        f'<text x="{num(pad - 4)}" y="{num(10 + (1 - v) * side + 3)}" text-anchor="end" '
        f'font-size="10" class="lmpj-fg2" fill="#595959">{v:g}</text>'
        for v in (0.0, 0.5, 1.0)
    )
    label = f"AUC {fmt(auc)}" if auc is not None else "ROC"
    return (
        f'<svg class="lmpj-roc-svg" xmlns="http://www.w3.org/2000/svg" width="{size}" '
        f'height="{size + 16}" viewBox="0 0 {size} {size + 16}" role="img" aria-label="ROC curve">'
        f'<rect x="{num(pad)}" y="10" width="{num(side)}" height="{num(side)}" fill="none" '
        'stroke="#888888"/>'
        f'<line x1="{num(pad)}" y1="{num(10 + side)}" x2="{num(pad + side)}" y2="10" '
        'stroke="#bbbbbb" stroke-dasharray="4 3"/>'
        f'<polyline class="lmpj-roc" fill="none" stroke="{TEST_COLOR}" stroke-width="2" '
        f'points="{pts}"/>{ticks}'
        f'<text x="{num(pad + side - 4)}" y="{num(10 + side - 6)}" text-anchor="end" '
        f'font-size="12" class="lmpj-fg" fill="{FG}">{label}</text>'
        f'<text x="{num(pad + side / 2)}" y="{num(10 + side + 28)}" text-anchor="middle" font-size="11" '
        'class="lmpj-fg" fill="#222222">false positive rate</text>'
        f'<text x="10" y="{num(10 + side / 2)}" text-anchor="middle" font-size="11" '
        f'class="lmpj-fg" fill="#222222" transform="rotate(-90 10 {num(10 + side / 2)})">true positive rate</text>'
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
            shown = esc(value)
        else:
            shown = fmt(value, 4)
        rows.append(
            f'<tr data-metric="{esc(key)}"><th>{esc(key)}</th><td class="lmpj-value">'
            f"{shown}</td></tr>"
        )
    table = f'<table class="lmpj-metrics-table">{"".join(rows)}</table>'
    right = ""
    if roc is not None:
        auc = metrics.get("auroc", metrics.get("auc"))
        auc_f = None if is_missing(auc) else float(auc)  # type: ignore[arg-type]
        right = f'<div style="display:inline-block;vertical-align:top;margin-left:24px">{_roc_svg(roc["fpr"], roc["tpr"], auc_f)}</div>'
    body = (
        f'<div class="lmpj-title">{esc(title)}</div>'
        f'<div style="display:inline-block;vertical-align:top">{table}</div>{right}'
    )
    return root("metrics", uid, body)


def render_sweep_table(
    layers: Sequence[int],
    columns: Sequence[tuple[str, Mapping[int, float | None]]],
    best_layer: int | None = None,
    metric: str = "accuracy",
    best_by: str | None = None,
    uid: str | None = None,
) -> str:
    """Render a layer sweep's scores as a table, one row per layer, the best row bold.

    Parameters
    ----------
    layers : sequence of int
        The swept layers, in display order.
    columns : sequence of (str, mapping)
        ``(name, {layer: score})`` per column, e.g. ``[("train", ...), ("cv", ...)]``.
    best_layer : int, optional
        The row shown in bold and named in the caption.
    metric : str
        Name of the score (in the caption).
    best_by : str, optional
        The column the best layer was chosen by (named in the caption).
    uid : str, optional
        Root element id.
    """
    uid = uid or new_uid("lmpj-sweep-table")

    def cell(v: object) -> str:
        return "" if is_missing(v) else fmt(float(v))  # type: ignore[arg-type]

    head = "".join(f"<th>{esc(name)}</th>" for name, _ in columns)
    rows = []
    for layer in layers:
        style = ' style="font-weight:bold"' if layer == best_layer else ""
        tds = "".join(f"<td>{cell(scores.get(layer))}</td>" for _, scores in columns)
        rows.append(f"<tr{style}><td>{layer}</td>{tds}</tr>")
    caption = f"Layer sweep ({esc(metric)})"
    if best_layer is not None:
        by = {"cv": " by CV", "test": " by test score"}.get(best_by or "", "")
        caption += f", best layer {best_layer}{by}"
    table = (
        f'<table class="lmpj-sweep-table"><caption>{caption}</caption>'
        f"<thead><tr><th>layer</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return root("sweep-table", uid, table)
