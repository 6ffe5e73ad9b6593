"""HTML of a robustness report: a CI chart per transform, the table, the worst examples.

Self-contained (inline SVG and styles, no script, no network), so an exported notebook
still shows it. Reads a :class:`~lmprobe_jupyter.engine.evaluation.robustness.RobustnessReport`
through its public attributes only.
"""

from __future__ import annotations

import math

from ._base import NEG_COLOR, POS_COLOR, esc, fmt, new_uid, root
from .tokens import render_token_highlights

__all__ = ["render_robustness_chart", "render_robustness_report"]

ROW_H = 22
LABEL_W = 130
PLOT_W = 260
GAP = 24
DROP_W = 90


def _x(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else max(0.0, min(1.0, value)) * PLOT_W


def _bar(x0: float, y: float, value, lo, hi, color: str, title: str) -> str:
    w = _x(value)
    parts = [
        f'<rect x="{x0:.1f}" y="{y + 4}" width="{w:.1f}" height="{ROW_H - 8}" fill="{color}" '
        f'opacity="0.75"><title>{esc(title)}</title></rect>'
    ]
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        a, b, m = x0 + _x(lo), x0 + _x(hi), y + ROW_H / 2
        parts.append(
            f'<line class="lmpj-ci" x1="{a:.1f}" x2="{b:.1f}" y1="{m}" y2="{m}" '
            'stroke="currentColor" stroke-width="1.5"/>'
            f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{m - 4}" y2="{m + 4}" stroke="currentColor"/>'
            f'<line x1="{b:.1f}" x2="{b:.1f}" y1="{m - 4}" y2="{m + 4}" stroke="currentColor"/>'
        )
    return "".join(parts)


def render_robustness_chart(rows: list[dict], fpr: float = 0.01) -> str:
    """Inline SVG: per transform, AUROC and TPR@FPR bars with 95% CI whiskers and the
    AUROC drop against clean.

    Parameters
    ----------
    rows : list of dict
        Table rows with ``transform``, ``auroc``, ``auroc_lo``, ``auroc_hi``,
        ``tpr_at_fpr``, ``tpr_lo``, ``tpr_hi``, ``auroc_drop``.
    fpr : float
        The FPR the TPR was read at (for the header).
    """
    x_auc = LABEL_W
    x_tpr = LABEL_W + PLOT_W + GAP
    x_drop = x_tpr + PLOT_W + GAP
    width = x_drop + DROP_W
    height = ROW_H * (len(rows) + 1) + 18
    out = [
        f'<svg class="lmpj-robustness-svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" style="font-size:12px">',
        f'<text x="{x_auc}" y="14" fill="currentColor">AUROC (95% CI)</text>',
        f'<text x="{x_tpr}" y="14" fill="currentColor">TPR at {fpr:.0%} FPR (95% CI)</text>',
        f'<text x="{x_drop}" y="14" fill="currentColor">AUROC drop</text>',
    ]
    for i, r in enumerate(rows):
        y = ROW_H * (i + 1)
        name = str(r["transform"])
        weight = ' font-weight="bold"' if name == "clean" else ""
        out.append(
            f'<text x="{LABEL_W - 6}" y="{y + ROW_H - 7}" text-anchor="end" '
            f'fill="currentColor"{weight}>{esc(name)}</text>'
        )
        for x0 in (x_auc, x_tpr):
            out.append(
                f'<rect x="{x0}" y="{y + 4}" width="{PLOT_W}" height="{ROW_H - 8}" '
                'fill="none" stroke="currentColor" stroke-opacity="0.2"/>'
            )
        out.append(
            _bar(
                x_auc,
                y,
                r["auroc"],
                r.get("auroc_lo"),
                r.get("auroc_hi"),
                POS_COLOR,
                f"{name}: AUROC {fmt(r['auroc'])} [{fmt(r.get('auroc_lo'))}, "
                f"{fmt(r.get('auroc_hi'))}]",
            )
        )
        out.append(
            _bar(
                x_tpr,
                y,
                r["tpr_at_fpr"],
                r.get("tpr_lo"),
                r.get("tpr_hi"),
                NEG_COLOR,
                f"{name}: TPR {fmt(r['tpr_at_fpr'])} [{fmt(r.get('tpr_lo'))}, "
                f"{fmt(r.get('tpr_hi'))}]",
            )
        )
        drop = r.get("auroc_drop", 0.0)
        text = "" if name == "clean" else f"{drop:+.3f}"
        cls = "lmpj-drop-bad" if name != "clean" and drop > 0.02 else "lmpj-drop"
        bold = ' font-weight="bold"' if cls == "lmpj-drop-bad" else ""
        out.append(
            f'<text class="{cls}" x="{x_drop}" y="{y + ROW_H - 7}" fill="currentColor"'
            f"{bold}>{esc(text)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _table(rows: list[dict], calibrated: bool) -> str:
    cols = [
        ("transform", "transform", None),
        ("family", "family", None),
        ("auroc", "AUROC", 3),
        ("auroc_ci", "95% CI", None),
        ("tpr_at_fpr", "TPR@FPR", 2),
        ("tpr_ci", "95% CI", None),
        ("auroc_drop", "AUROC drop", 3),
        ("tpr_drop", "TPR drop", 2),
    ]
    if calibrated:
        cols.append(("tpr_at_threshold", "TPR at threshold", 2))
        cols.append(("fpr_at_threshold", "FPR at threshold", 2))
    head = "".join(f'<th style="text-align:left;padding:2px 8px">{esc(c[1])}</th>' for c in cols)
    body = []
    for r in rows:
        cells = []
        for key, _, digits in cols:
            if key == "auroc_ci":
                v = f"[{fmt(r['auroc_lo'])}, {fmt(r['auroc_hi'])}]"
            elif key == "tpr_ci":
                v = f"[{fmt(r['tpr_lo'], 2)}, {fmt(r['tpr_hi'], 2)}]"
            elif digits is None:
                v = str(r[key])
            else:
                v = fmt(r[key], digits)
            cells.append(f'<td style="padding:2px 8px">{esc(v)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<table class="lmpj-robustness-table" style="border-collapse:collapse">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _worst(report) -> str:
    if not report.worst:
        return ""
    parts = ['<div class="lmpj-worst"><b>Worst examples per transform</b>']
    for w in report.worst:
        kind = "positive" if w.positive else "negative"
        head = (
            f'<div class="lmpj-muted" style="margin-top:6px">{esc(w.transform)} &#183; '
            f"#{w.index} ({esc(kind)}, label {esc(w.label)}): score {fmt(w.score)} "
            f"(clean {fmt(w.clean_score)})</div>"
        )
        if w.tokens is not None:
            finite = [s for s in w.token_scores if not math.isnan(s)]
            scale = {}
            if finite and (min(finite) < 0.0 or max(finite) > 1.0):
                # logit contributions (sequence probes): symmetric around 0
                top = max(abs(s) for s in finite) or 1.0
                scale = {"threshold": 0.0, "vmin": -top, "vmax": top}
            body = render_token_highlights([(w.tokens, list(w.token_scores))], **scale)
        else:
            text = w.text if len(w.text) <= 600 else w.text[:600] + " ..."
            body = f'<pre style="white-space:pre-wrap;margin:2px 0">{esc(text)}</pre>'
        parts.append(head + body)
    parts.append("</div>")
    return "".join(parts)


def render_robustness_report(report, uid: str | None = None) -> str:
    """The whole report: header, chart, table and worst examples, as self-contained HTML."""
    uid = uid or new_uid("lmpj-robustness")
    rows = report.table.to_dict("records")
    n_pos = int(report.is_positive.sum())
    header = (
        f"<div><b>Robustness</b> on {len(report.labels)} held-out prompts ({n_pos} positive) "
        f"&#183; {report.n_bootstrap} bootstrap resamples &#183; {fmt(report.seconds, 1)} s, "
        f"{report.cache_hits} of {report.cache_lookups} activation lookups from the cache</div>"
    )
    weak = report.weakest()
    advice = (
        f"<div>Weakest: {esc(', '.join(weak))}. Train with them: "
        f"<code>augment(prompts, labels, {esc(repr(weak))})</code></div>"
        if weak
        else "<div>No transform lowers the AUROC by more than 0.02.</div>"
    )
    body = header + render_robustness_chart(rows, report.fpr) + advice
    body += _table(rows, report.threshold is not None) + _worst(report)
    return root("robustness", uid, body)
