"""The versioned JSON payload of every rich output (``application/vnd.lmprobe.v1+json``).

One payload, three drawings: the live anywidget, the project's JupyterLab / Notebook 7
mime renderer (``lmprobe_jupyter/labextension_src``, drawing from the JSON saved in the
notebook, no kernel needed) and the self-contained ``text/html`` fallback. A payload is

``{"version": 1, "kind": "<kind>", "data": {...}, "notes": ["..."]}``

``data`` holds plain JSON (no NaN: a missing number is ``null``); ``notes`` says what was
cut to keep the output small (``"showing the first 20,000 of 2,500,000 tokens"``), and the
renderer prints them. Each kind is one builder function registered with :func:`kind`::

    @kind("error_table")
    def _error_table(rows, title="errors"):
        return {"title": str(title), "rows": [...]}, []

Builders validate their input (a clear ``ValueError`` naming the field and the fix) and
return ``(data, notes)``. :func:`payload` wraps the result, :func:`mimebundle` adds the
``text/html`` and ``text/plain`` copies, :func:`validate` checks a payload read back from a
notebook. Kinds the renderer does not know yet are drawn as their ``text/plain`` with a
one-line note, so a new Python kind never blanks a cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "KINDS",
    "MAX_STRING",
    "MAX_TOKENS",
    "MIME_TYPE",
    "SCHEMA_VERSION",
    "kind",
    "mimebundle",
    "payload",
    "repr_bundle",
    "validate",
]

#: The schema version, also spelled in the mime type (a breaking change bumps both).
SCHEMA_VERSION = 1
MIME_TYPE = f"application/vnd.lmprobe.v{SCHEMA_VERSION}+json"
#: Tokens kept per output (all texts together); the rest is cut with a note. 20,000
#: coloured spans draw in well under a second in chromium; 10 MB of tokens froze the tab.
MAX_TOKENS = 20_000
#: Characters kept per string (a token, a label, a table cell).
MAX_STRING = 2_000
#: Rows kept in a table or battery, points kept on a curve.
MAX_ROWS = 5_000

Builder = Callable[..., tuple[dict[str, Any], list[str]]]
#: kind name -> builder; :func:`kind` fills it.
KINDS: dict[str, Builder] = {}


def kind(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder`` as the payload builder of kind ``name`` (a decorator).

    Parameters
    ----------
    name : str
        The kind, as the renderer dispatches on it (lower case, ``[a-z_]``).
    """
    if not name or not all(c.islower() or c == "_" for c in name):
        raise ValueError(f"kind name {name!r} must be lower-case letters and '_'")

    def register(builder: Builder) -> Builder:
        if name in KINDS:
            raise ValueError(f"kind {name!r} is registered twice")
        KINDS[name] = builder
        return builder

    return register


def payload(kind_name: str, **fields: Any) -> dict[str, Any]:
    """The versioned payload of kind ``kind_name`` built from ``fields``.

    Raises
    ------
    ValueError
        ``kind_name`` is unknown, or a field is missing or malformed (the message names it).
    """
    if kind_name not in KINDS:
        raise ValueError(
            f"kind={kind_name!r} is not one of {', '.join(map(repr, sorted(KINDS)))}; "
            "register a builder with @payload.kind(name)"
        )
    try:
        data, notes = KINDS[kind_name](**fields)
    except TypeError as exc:  # a missing or unexpected keyword
        raise ValueError(f"{kind_name} payload: {exc}") from None
    return {"version": SCHEMA_VERSION, "kind": kind_name, "data": data, "notes": list(notes)}


def mimebundle(kind_name: str, html: str, text: str, **fields: Any) -> dict[str, Any]:
    """``{MIME_TYPE: payload, "text/html": html, "text/plain": text}`` for one output."""
    return {MIME_TYPE: payload(kind_name, **fields), "text/html": html, "text/plain": text}


def validate(obj: object) -> dict[str, Any]:
    """Check a payload read back from a notebook; return it unchanged.

    Raises
    ------
    ValueError
        Not a mapping, another schema version, an unknown kind, or ``data`` not a mapping.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"a payload is a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("version", "kind", "data") if k not in obj]
    if missing:
        raise ValueError(f"payload is missing {', '.join(missing)}; it needs version, kind, data")
    if obj["version"] != SCHEMA_VERSION:
        raise ValueError(
            f"payload version {obj['version']!r} is not {SCHEMA_VERSION}; this lmprobe_jupyter "
            "reads only its own version (upgrade the package that wrote it or this one)"
        )
    if obj["kind"] not in KINDS:
        raise ValueError(f"kind={obj['kind']!r} is not one of {', '.join(sorted(KINDS))}")
    if not isinstance(obj["data"], Mapping):
        raise ValueError(f"payload data must be a JSON object, got {type(obj['data']).__name__}")
    return dict(obj)


# ---------------------------------------------------------------- field helpers


def _num(value: object, field: str) -> float | None:
    """A finite float, or None for missing/NaN (JSON has no NaN)."""
    if value is None:
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r} is not a number") from None
    return None if math.isnan(f) or math.isinf(f) else f


def _str(value: object) -> str:
    s = str(value)
    return s if len(s) <= MAX_STRING else s[:MAX_STRING] + "…"


def _cut(items: Sequence[Any], limit: int, what: str, notes: list[str]) -> list[Any]:
    items = list(items)
    if len(items) > limit:
        notes.append(f"showing the first {limit:,} of {len(items):,} {what}")
        return items[:limit]
    return items


def _series(values: Sequence[object] | None, n: int, field: str) -> list[float | None] | None:
    if values is None or len(values) == 0:
        return None
    if len(values) != n:
        raise ValueError(f"{field} has {len(values)} values for {n} layers; give one per layer")
    return [_num(v, field) for v in values]


# ---------------------------------------------------------------- kinds


@kind("sweep")
def _sweep(
    layers: Sequence[int],
    train_scores: Sequence[object] | None = None,
    test_scores: Sequence[object] | None = None,
    best_layer: int | None = None,
    best_by: str | None = None,
    selected_layer: int | None = None,
    metric: str = "accuracy",
) -> tuple[dict[str, Any], list[str]]:
    """Score per layer; ``best_by`` names how ``best_layer`` was chosen ("cv"/"test")."""
    layers = [int(x) for x in layers]
    if not layers:
        raise ValueError("sweep payload: layers is empty; a sweep needs at least one layer")
    train = _series(train_scores, len(layers), "train_scores")
    test = _series(test_scores, len(layers), "test_scores")
    if train is None and test is None:
        raise ValueError("sweep payload: give train_scores or test_scores (or both)")
    if best_by not in (None, "cv", "test"):
        raise ValueError(f"best_by={best_by!r} is not one of None, 'cv', 'test'")
    for name, value in (("best_layer", best_layer), ("selected_layer", selected_layer)):
        if value is not None and int(value) not in layers:
            raise ValueError(f"{name}={value!r} is not one of the swept layers {layers}")
    notes: list[str] = []
    order = sorted(range(len(layers)), key=layers.__getitem__)
    order = _cut(order, MAX_ROWS, "layers", notes)
    return {
        "layers": [layers[i] for i in order],
        "train_scores": None if train is None else [train[i] for i in order],
        "test_scores": None if test is None else [test[i] for i in order],
        "best_layer": None if best_layer is None else int(best_layer),
        "best_by": best_by,
        "selected_layer": None if selected_layer is None else int(selected_layer),
        "metric": _str(metric),
    }, notes


@kind("battery")
def _battery(rows: Iterable[object], metric: str = "accuracy") -> tuple[dict[str, Any], list[str]]:
    """Baseline rows (any form :func:`normalize_battery_rows` takes), best first."""
    from .charts import normalize_battery_rows

    notes: list[str] = []
    clean = _cut(normalize_battery_rows(rows), MAX_ROWS, "rows", notes)
    for r in clean:
        r["name"] = _str(r["name"])
    return {"rows": clean, "metric": _str(metric)}, notes


@kind("metrics")
def _metrics(
    metrics: Mapping[str, object],
    roc: Mapping[str, Sequence[float]] | None = None,
    title: str = "evaluation",
) -> tuple[dict[str, Any], list[str]]:
    """An evaluation report: metric rows (numbers or text) and an optional ROC curve."""
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"metrics must be a mapping of name to value, got {type(metrics).__name__}"
        )
    notes: list[str] = []
    rows = []
    for k, v in list(metrics.items())[:MAX_ROWS]:
        if isinstance(v, bool) or not isinstance(v, int | float):
            rows.append({"name": _str(k), "value": None, "text": _str(v)})
        else:
            rows.append({"name": _str(k), "value": _num(v, str(k)), "text": None})
    curve = None
    if roc is not None:
        if "fpr" not in roc or "tpr" not in roc:
            raise ValueError(f"roc needs 'fpr' and 'tpr', got {sorted(roc)}")
        fpr, tpr = list(roc["fpr"]), list(roc["tpr"])
        if len(fpr) != len(tpr):
            raise ValueError(f"roc has {len(fpr)} fpr values but {len(tpr)} tpr values")
        step = max(1, math.ceil(len(fpr) / MAX_ROWS))
        if step > 1:
            notes.append(f"ROC curve thinned to every {step}th of {len(fpr):,} points")
        curve = {
            "fpr": [_num(v, "fpr") for v in fpr[::step]],
            "tpr": [_num(v, "tpr") for v in tpr[::step]],
        }
    return {"title": _str(title), "rows": rows, "roc": curve}, notes


def _token_list(
    tokens: Sequence[object], scores: Sequence[object], budget: int, where: str
) -> tuple[list[str], list[float | None]]:
    if len(tokens) != len(scores):
        raise ValueError(
            f"{where} has {len(tokens)} tokens but {len(scores)} scores; they must match"
        )
    n = min(len(tokens), budget)
    return [_str(t) for t in tokens[:n]], [_num(s, "score") for s in scores[:n]]


@kind("tokens")
def _tokens(
    texts: object,
    threshold: float = 0.5,
    vmin: float = 0.0,
    vmax: float = 1.0,
    note: str = "",
) -> tuple[dict[str, Any], list[str]]:
    """Per-token scores; ``null`` scores (sink, special tokens) are drawn greyed."""
    from .tokens import normalize_token_texts

    if _num(vmax, "vmax") is None or _num(vmin, "vmin") is None or vmax <= vmin:
        raise ValueError(f"vmax={vmax!r} must be a number greater than vmin={vmin!r}")
    items = normalize_token_texts(texts)
    notes: list[str] = []
    total = sum(len(it["tokens"]) for it in items)
    budget = MAX_TOKENS
    out = []
    for i, it in enumerate(items):
        if budget <= 0:
            break
        toks, scs = _token_list(it["tokens"], it["scores"], budget, f"text {i}")
        budget -= len(toks)
        out.append(
            {"tokens": toks, "scores": scs, "max": _num(it["max"], "max"), "n": len(it["tokens"])}
        )
    if total > MAX_TOKENS:
        notes.append(f"showing the first {MAX_TOKENS:,} of {total:,} tokens")
    if len(out) < len(items):
        notes.append(f"showing {len(out):,} of {len(items):,} texts")
    return {
        "texts": out,
        "threshold": _num(threshold, "threshold"),
        "vmin": float(vmin),
        "vmax": float(vmax),
        "note": _str(note),
    }, notes


@kind("monitor")
def _monitor(
    tokens: Sequence[object],
    scores: Sequence[object],
    threshold: float = 0.5,
    flagged_at: int | None = None,
    prompt_tokens: Sequence[object] | None = None,
    prompt_scores: Sequence[object] | None = None,
    status: str = "done",
    chat_template: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """A monitored generation: generated tokens, the alarm, the prompt (collapsed)."""
    from .monitor import check_status

    check_status(status)
    notes: list[str] = []
    toks, scs = _token_list(tokens, scores, MAX_TOKENS, "the generation")
    if len(tokens) > MAX_TOKENS:
        notes.append(f"showing the first {MAX_TOKENS:,} of {len(tokens):,} generated tokens")
    ptoks, pscs = _token_list(prompt_tokens or [], prompt_scores or [], MAX_TOKENS, "the prompt")
    if prompt_tokens is not None and len(prompt_tokens) > MAX_TOKENS:
        notes.append(f"showing the first {MAX_TOKENS:,} of {len(prompt_tokens):,} prompt tokens")
    if flagged_at is not None and not 0 <= int(flagged_at) < len(tokens):
        raise ValueError(f"flagged_at={flagged_at!r} is outside the {len(tokens)} tokens")
    return {
        "tokens": toks,
        "scores": scs,
        "n": len(tokens),
        "threshold": _num(threshold, "threshold"),
        "flagged_at": None if flagged_at is None else int(flagged_at),
        "prompt_tokens": ptoks,
        "prompt_scores": pscs,
        "status": status,
        "chat_template": bool(chat_template),
    }, notes


@kind("scan")
def _scan(props: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A SampleScan picture: ``ScanImage.to_props()`` (tokens, 1-px-per-cell PNG, top 3)."""
    need = ("tokens", "n_layers", "png", "signal")
    missing = [k for k in need if k not in props]
    if missing:
        raise ValueError(f"scan props miss {', '.join(missing)}; pass ScanImage.to_props()")
    png = str(props["png"])
    if not png.startswith("data:image/png;base64,"):
        raise ValueError("scan props 'png' must be a data:image/png;base64 URI")
    notes: list[str] = []
    tokens = [_str(t) for t in props["tokens"]]
    if len(tokens) > MAX_TOKENS:
        raise ValueError(f"scan of {len(tokens):,} tokens is over {MAX_TOKENS:,}; scan less text")
    return {
        "prompt": props.get("prompt"),
        "signal": _str(props["signal"]),
        "tokens": tokens,
        "n_layers": int(props["n_layers"]),
        "png": png,
        "surprise": [_num(v, "surprise") for v in props.get("surprise") or []],
        "top": props.get("top") or [],
    }, notes


@kind("table")
def _table(
    rows: Sequence[Sequence[object]],
    columns: Sequence[str] = (),
    title: str = "",
    note: str = "",
) -> tuple[dict[str, Any], list[str]]:
    """A titled table of text cells: probe cards, cache state, sweep tables, new reports."""
    notes: list[str] = []
    rows = _cut(rows, MAX_ROWS, "rows", notes)
    width = len(columns) if columns else None
    clean = []
    for i, row in enumerate(rows):
        cells = ["" if c is None else _str(c) for c in row]
        if width is not None and len(cells) != width:
            raise ValueError(f"table row {i} has {len(cells)} cells for {width} columns")
        clean.append(cells)
    return {
        "title": _str(title),
        "columns": [_str(c) for c in columns],
        "rows": clean,
        "note": _str(note),
    }, notes


def _highlight(
    tokens: Sequence[object] | None, scores: Sequence[object] | None, budget: int, where: str
) -> tuple[dict[str, Any] | None, int]:
    """``{"tokens", "scores", "n"}`` of one highlighted text within ``budget`` tokens."""
    if tokens is None or scores is None or budget <= 0:
        return None, budget
    tokens, scores = list(tokens), list(scores)
    toks, scs = _token_list(tokens, scores, budget, where)
    return {"tokens": toks, "scores": scs, "n": len(tokens)}, budget - len(toks)


def _metric_numbers(m: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    keys = ("auroc", "auroc_lo", "auroc_hi", "tpr_at_fpr", "tpr_lo", "tpr_hi", "fpr", "n")
    out: dict[str, Any] = {k: _num(m.get(k), k) for k in keys if k in m}
    conf = m.get("confusion")
    if isinstance(conf, Mapping):
        out["confusion"] = {k: int(conf[k]) for k in ("tp", "fp", "fn", "tn") if k in conf}
    return out


@kind("errors")
def _errors(
    props: Mapping[str, Any], highlights: Mapping[int, object] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """An error analysis: ``ErrorAnalysis.to_props()`` plus the computed highlights."""
    missing = [k for k in ("rows", "threshold", "metrics") if k not in props]
    if missing:
        raise ValueError(f"errors props miss {', '.join(missing)}; pass ErrorAnalysis.to_props()")
    notes: list[str] = []
    highlights = highlights or {}
    budget = MAX_TOKENS
    rows = []
    for r in _cut(list(props["rows"]), MAX_ROWS, "rows", notes):
        row = {
            "index": int(r["index"]),
            "kind": _str(r["kind"]),
            "score": _num(r["score"], "score"),
            "label": _str(r["label"]),
            "original_label": _str(r["original_label"]),
            "uncertain": bool(r.get("uncertain")),
            "excluded": bool(r.get("excluded")),
            "text": _str(r["text"]),
            "highlight": None,
        }
        ts = highlights.get(row["index"])
        row["highlight"], budget = _highlight(
            getattr(ts, "tokens", None),
            getattr(ts, "scores", None),
            budget,
            f"example {row['index']}",
        )
        rows.append(row)
    if budget <= 0:
        notes.append(f"per-token highlights cut at {MAX_TOKENS:,} tokens")
    refit = props.get("refit")
    if refit:
        refit = {
            "before": _metric_numbers(refit.get("before")),
            "after": _metric_numbers(refit.get("after")),
            "changed": [int(i) for i in refit.get("changed", [])],
            "forward_passes": int(refit.get("forward_passes", 0)),
        }
    return {
        "threshold": _num(props["threshold"], "threshold"),
        "threshold_source": _str(props.get("threshold_source", "")),
        "positive": _str(props.get("positive", "")),
        "n": int(props.get("n", len(rows))),
        "metrics": _metric_numbers(props["metrics"]),
        "refit": refit or None,
        "rows": rows,
        "note": _str(props.get("highlight_note", "")),
    }, notes


@kind("robustness")
def _robustness(
    rows: Sequence[Mapping[str, Any]],
    worst: Sequence[object] = (),
    fpr: float = 0.01,
    n_positive: int = 0,
    n_bootstrap: int = 0,
) -> tuple[dict[str, Any], list[str]]:
    """A robustness report: per-transform AUROC / TPR@FPR with CIs, the worst examples."""
    if not rows:
        raise ValueError("robustness payload: rows is empty; the report has no transforms")
    notes: list[str] = []
    keys = ("auroc", "auroc_lo", "auroc_hi", "tpr_at_fpr", "tpr_lo", "tpr_hi", "auroc_drop")
    clean_rows = [
        {
            "transform": _str(r["transform"]),
            "family": _str(r.get("family", "")),
            "n": int(r.get("n", 0)),
            **{k: _num(r.get(k), k) for k in keys},
        }
        for r in _cut(list(rows), MAX_ROWS, "transforms", notes)
    ]
    budget = MAX_TOKENS
    examples = []
    for w in _cut(list(worst), MAX_ROWS, "worst examples", notes):
        hl, budget = _highlight(w.tokens, w.token_scores, budget, f"worst example {len(examples)}")
        examples.append(
            {
                "transform": _str(w.transform),
                "label": _str(w.label),
                "positive": bool(w.positive),
                "score": _num(w.score, "score"),
                "clean_score": _num(w.clean_score, "clean_score"),
                "text": _str(w.text),
                "highlight": hl,
            }
        )
    return {
        "rows": clean_rows,
        "worst": examples,
        "fpr": _num(fpr, "fpr"),
        "n_positive": int(n_positive),
        "n_bootstrap": int(n_bootstrap),
    }, notes


def repr_bundle(kind_name: str, **fields: Any) -> dict[str, Any] | None:
    """``{MIME_TYPE: payload}`` for an engine object's ``_repr_mimebundle_``, or None.

    IPython merges this with the object's ``_repr_html_`` and ``repr``. A state the schema
    rejects (an empty sweep) gives None: the output then shows its HTML and text as before
    rather than a formatter traceback.
    """
    try:
        return {MIME_TYPE: payload(kind_name, **fields)}
    except ValueError:
        return None
