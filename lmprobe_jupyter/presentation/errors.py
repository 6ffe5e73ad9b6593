"""HTML of an error analysis (table of mistakes, per-token highlights, before/after
metrics) and of a cascade report.

Self-contained (inline styles, no script, no network), so an exported notebook still
shows the table and highlights. Relabeling needs the live widget and a kernel; the
static view says so. Reads the engine's objects through their public attributes only.
"""

from __future__ import annotations

import math

from ._base import esc, fmt, new_uid, root
from .tokens import render_token_highlights

__all__ = ["cascade_table", "render_cascade", "render_errors", "render_metrics_pair"]

KIND_NAMES = {
    "fp": "false positive",
    "fn": "false negative",
    "tp": "true positive",
    "tn": "true negative",
}
NEEDS_KERNEL = (
    "Static view: relabeling, excluding and refitting need a running kernel "
    "(run the cell again, or use errors.relabel(i, label) / errors.refit())."
)


def _ci(m: dict, key: str, lo: str, hi: str) -> str:
    v = m.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    a, b = m.get(lo), m.get(hi)
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return fmt(v)
    return f"{fmt(v)} [{fmt(a)}, {fmt(b)}]"


def render_metrics_pair(before: dict, after: dict | None = None, title: str = "") -> str:
    """A table of AUROC, TPR@FPR (95% CI) and the confusion matrix, before and after."""
    cols = [("before", before)] + ([("after", after)] if after is not None else [])
    head = "".join(f"<th>{esc(n)}</th>" for n, _ in cols)
    fpr = before.get("fpr", 0.01)
    lines = [
        ("AUROC", lambda m: _ci(m, "auroc", "auroc_lo", "auroc_hi")),
        (f"TPR@{fpr:g} FPR", lambda m: _ci(m, "tpr_at_fpr", "tpr_lo", "tpr_hi")),
        ("TP / FP", lambda m: f"{m['confusion']['tp']} / {m['confusion']['fp']}"),
        ("FN / TN", lambda m: f"{m['confusion']['fn']} / {m['confusion']['tn']}"),
        ("n", lambda m: str(m.get("n", ""))),
    ]
    body = "".join(
        f"<tr><th>{esc(name)}</th>" + "".join(f"<td>{esc(f(m))}</td>" for _, m in cols) + "</tr>"
        for name, f in lines
    )
    cap = f"<caption>{esc(title)}</caption>" if title else ""
    return (
        f'<table class="lmpj-table lmpj-errors-metrics">{cap}<tr><th></th>{head}</tr>{body}</table>'
    )


def render_errors(analysis, max_rows: int = 50, uid: str | None = None) -> str:
    """The error table (mistakes first), highlights of the rows computed so far, metrics.

    Parameters
    ----------
    analysis : ErrorAnalysis
    max_rows : int, default 50
    uid : str, optional
        Root element id (fixed in tests).
    """
    uid = uid or new_uid("lmpj-errors")
    rows = analysis.rows()
    shown = rows[:max_rows]
    hl = analysis.computed_highlights
    n_fp = sum(r.kind == "fp" for r in rows)
    n_fn = sum(r.kind == "fn" for r in rows)
    n_unc = sum(r.uncertain for r in rows)
    head = (
        f'<div class="lmpj-title">Error analysis: {len(rows)} examples, '
        f"{n_fp} false positives, {n_fn} false negatives, {n_unc} uncertain "
        f"(|score - threshold| &le; {fmt(analysis.band, 2)})</div>"
        f'<div class="lmpj-muted">threshold {fmt(analysis.threshold)} '
        f"({esc(analysis.threshold_source)}); positive class {esc(analysis.positive)!s}</div>"
        f'<div class="lmpj-muted lmpj-needs-kernel">{esc(NEEDS_KERNEL)}</div>'
    )
    cols = list(analysis.metadata)
    th = "".join(f"<th>{esc(c)}</th>" for c in ["#", "kind", "score", "label", *cols, "text"])
    trs = []
    for r in shown:
        label = esc(r.label)
        if r.relabeled:
            label = f'{label} <span class="lmpj-muted">(was {esc(r.original_label)})</span>'
        kind = KIND_NAMES[r.kind] + (" · uncertain" if r.uncertain else "")
        if r.excluded:
            kind += " · excluded"
        if r.index in hl:
            text = render_token_highlights(
                [hl[r.index]], threshold=analysis.threshold, uid=f"{uid}-t{r.index}"
            )
        else:
            text = esc(r.text[:300] + ("…" if len(r.text) > 300 else ""))
        meta = "".join(f"<td>{esc(r.metadata[c])}</td>" for c in cols)
        trs.append(
            f'<tr class="lmpj-err-{r.kind}" data-index="{r.index}"><td>{r.index}</td>'
            f"<td>{esc(kind)}</td><td>{fmt(r.score)}</td><td>{label}</td>{meta}"
            f"<td>{text}</td></tr>"
        )
    more = (
        f'<div class="lmpj-muted">{len(rows) - len(shown)} more rows not shown</div>'
        if len(rows) > len(shown)
        else ""
    )
    note = f'<div class="lmpj-legend-note lmpj-muted">{esc(analysis.highlight_note)}</div>'
    table = f'<table class="lmpj-table lmpj-errors-table"><tr>{th}</tr>{"".join(trs)}</table>'
    metrics = render_metrics_pair(analysis.metrics(), title="metrics on the current labels")
    if analysis.refits:
        last = analysis.refits[-1]
        metrics = render_metrics_pair(last.before, last.after, title="before / after refit")
        metrics += (
            f'<div class="lmpj-muted">changed side: {len(last.changed)} '
            f"({', '.join(map(str, last.changed[:20]))}); forward passes "
            f"{last.forward_passes}; {'in-sample' if last.in_sample else 'held out'}</div>"
        )
    return root("errors", uid, head + metrics + note + table + more)


def cascade_table(report) -> tuple[list[str], list[list[str]], str, str]:
    """(columns, rows of text, title, note) of a cascade report: what both its HTML and
    its saved JSON (the ``table`` payload) show."""
    columns = ["system", "AUROC", f"TPR@{report.fpr:g} FPR", "judge calls", "judge s", "probe s"]
    rows = [
        [
            r["system"],
            _ci(r, "auroc", "auroc_lo", "auroc_hi"),
            _ci(r, "tpr_at_fpr", "tpr_lo", "tpr_hi"),
            str(r["judge_calls"]),
            fmt(r["judge_seconds"]),
            fmt(r["probe_seconds"]),
        ]
        for r in report.rows
    ]
    title = (
        f"Cascade: budget {report.budget:g}, band [{fmt(report.band[0])}, "
        f"{fmt(report.band[1])}] around {fmt(report.threshold)} ({report.threshold_source})"
    )
    note = (
        f"routed {report.calibration_routed:.1%} of {report.n_calibration} calibration prompts "
        f"(where the band was chosen), {report.test_routed:.1%} of {report.n_test} test prompts"
    )
    return columns, rows, title, note


def render_cascade(report, uid: str | None = None) -> str:
    """Probe alone, judge alone and the cascade: AUROC, TPR@FPR (95% CI), compute."""
    uid = uid or new_uid("lmpj-cascade")
    columns, rows, title, note = cascade_table(report)
    th = "".join(f"<th>{esc(c)}</th>" for c in columns)
    trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    head = f'<div class="lmpj-title">{esc(title)}</div><div class="lmpj-muted">{esc(note)}</div>'
    return root("cascade", uid, head + f'<table class="lmpj-table"><tr>{th}</tr>{trs}</table>')
