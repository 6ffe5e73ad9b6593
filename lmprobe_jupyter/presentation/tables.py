"""Tables: the fitted probe's card and the activation cache's state.

Each table comes as rows first (``card_rows``, ``cache_rows``: label and display text,
used for the plain-text repr too) and as self-contained HTML (``render_*``), so the
notebook and the terminal show the same facts in the same words.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from ._base import esc, fmt, format_bytes, format_seconds, new_uid, root

__all__ = [
    "CARD_FIELDS",
    "cache_info_dict",
    "cache_model_rows",
    "cache_rows",
    "cache_text",
    "card_rows",
    "layers_text",
    "render_cache_info",
    "render_probe_card",
    "text_table",
]

#: Known probe-card keys and their labels, in display order.
CARD_FIELDS = (
    ("model", "model"),
    ("layers", "layers"),
    ("pooling", "pooling"),
    ("classifier", "classifier"),
    ("dtype", "compute dtype"),
    ("n_positive", "positive prompts"),
    ("n_negative", "negative prompts"),
    ("n_samples", "prompts"),
    ("train_accuracy", "training accuracy"),
    ("cv_accuracy", "cross-validated accuracy"),
    ("train_r2", "training R\u00b2"),
    ("cv_r2", "cross-validated R\u00b2"),
    ("fit_time_s", "fit time"),
    ("cache_hits", "cache hits"),
    ("cache_misses", "cache misses"),
)


def text_table(title: str, rows: list[tuple[str, str]]) -> str:
    """Plain-text table: a title line, then ``label  value`` lines aligned."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([title, *(f"  {k:<{width}}  {v}" for k, v in rows)])


def _card_value(key: str, value: object) -> str:
    if value is None:
        return "n/a"
    if key == "fit_time_s":
        return format_seconds(float(value))  # type: ignore[arg-type]
    if isinstance(value, float):
        return fmt(value, 3)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def card_rows(summary: Mapping[str, object]) -> list[tuple[str, str, str]]:
    """``(key, label, text)`` per card row: known keys first, in order, then the rest."""
    known = {k for k, _ in CARD_FIELDS} | {"name"}
    rows = [(k, label, summary[k]) for k, label in CARD_FIELDS if k in summary]
    rows += [(k, k, v) for k, v in summary.items() if k not in known]
    return [(k, label, _card_value(k, v)) for k, label, v in rows]


def render_probe_card(summary: Mapping[str, object], uid: str | None = None) -> str:
    """Render a fitted probe's summary as a small card.

    Parameters
    ----------
    summary : mapping
        Known keys (shown in this order with readable labels, see :data:`CARD_FIELDS`):
        ``name``, ``model``, ``layers``, ``pooling``, ``classifier``, ``n_positive``,
        ``n_negative``, ``n_samples``, ``train_accuracy``, ``cv_accuracy``,
        ``fit_time_s``, ``cache_hits``, ``cache_misses``. Other keys follow as they are.
    uid : str, optional
        Root element id.
    """
    uid = uid or new_uid("lmpj-card")
    name = summary.get("name")
    trs = "".join(
        f'<tr data-field="{esc(k)}"><th>{esc(label)}</th><td>{esc(text)}</td></tr>'
        for k, label, text in card_rows(summary)
    )
    head = f"probe <code>{esc(name)}</code>" if name else "probe"
    body = f'<div class="lmpj-panel"><div class="lmpj-title">{head}</div><table>{trs}</table></div>'
    return root("card", uid, body)


# ---------------------------------------------------------------- cache


def cache_info_dict(info: Any) -> dict[str, Any]:
    """``cache_info()``'s result (a dataclass or a mapping) as a plain dict.

    Per-model entries become dicts too; ``hit_rate`` is added when the object has it.
    """
    if dataclasses.is_dataclass(info) and not isinstance(info, type):
        data = dataclasses.asdict(info)
        rate = getattr(info, "hit_rate", None)
        if rate is not None:
            data["hit_rate"] = rate
        return data
    if isinstance(info, Mapping):
        return dict(info)
    raise TypeError(f"cache info must be a dataclass or a mapping, got {type(info).__name__}")


def layers_text(layers: list[int]) -> str:
    """``[0, 1, 2]`` -> ``"0, 1, 2"``; more than 8 layers -> ``"0..29 (30)"``."""
    layers = [int(x) for x in layers]
    if len(layers) > 8:
        return f"{layers[0]}..{layers[-1]} ({len(layers)})"
    return ", ".join(map(str, layers))


def cache_rows(info: Any) -> list[tuple[str, str, str]]:
    """``(key, label, text)`` per summary row of the cache table (models excluded)."""
    d = cache_info_dict(info)
    rows: list[tuple[str, str, str]] = []

    def add(key: str, label: str, text: str) -> None:
        rows.append((key, label, text))

    if "path" in d:
        add("path", "location", str(d["path"]))
    if "backend" in d:
        add("backend", "backend", str(d["backend"]))
    if "enabled" in d:
        add("enabled", "enabled", "yes" if d["enabled"] else "no (lookups miss, nothing stored)")
    if "dtype" in d:
        add("dtype", "storage dtype", str(d["dtype"]))
    if "entries" in d:
        add("entries", "entries", f"{int(d['entries']):,}")
    if "bytes" in d:
        shards = d.get("shards")
        tail = (
            f" in {int(shards):,} shard{'s' if shards != 1 else ''}" if shards is not None else ""
        )
        add("bytes", "size on disk", format_bytes(d["bytes"]) + tail)
    if "data_bytes" in d:
        add("data_bytes", "array data", format_bytes(d["data_bytes"]))
    if "limit_bytes" in d:
        limit = d["limit_bytes"]
        add("limit_bytes", "size limit", "unlimited" if limit is None else format_bytes(limit))
    if "hits" in d and "misses" in d:
        total = d["hits"] + d["misses"]
        rate = f" ({d['hits'] / total:.0%})" if total else ""
        add("hits", "hits / misses", f"{int(d['hits']):,} / {int(d['misses']):,}{rate}")
    skip = {"path", "backend", "enabled", "dtype", "entries", "bytes", "data_bytes"}
    skip |= {"limit_bytes", "hits", "misses", "shards", "models", "hit_rate"}
    for key, value in d.items():
        if key in skip or isinstance(value, Mapping):
            continue
        if isinstance(value, float) and not math.isnan(value):
            text = fmt(value, 3)
        elif isinstance(value, int | float) and "bytes" in key:
            text = format_bytes(value)
        else:
            text = str(value)
        add(key, key.replace("_", " "), text)
    return rows


_MODEL_COLUMNS = ("model", "entries", "size", "layers", "pooling")


def cache_model_rows(info: Any) -> list[tuple[str, str, str, str, str]]:
    """One ``(model, entries, size, layers, pooling)`` text row per cached model."""
    models = cache_info_dict(info).get("models") or {}
    out = []
    for key, m in models.items():
        m = cache_info_dict(m) if not isinstance(m, Mapping) else m
        out.append(
            (
                str(m.get("model", key)),
                f"{int(m.get('entries', 0)):,}",
                format_bytes(m.get("bytes")),
                layers_text(list(m.get("layers") or [])),
                ", ".join(m.get("poolings") or []),
            )
        )
    return out


def render_cache_info(info: Any, uid: str | None = None) -> str:
    """Render the activation cache's state: a summary table, then one row per model.

    Parameters
    ----------
    info : CacheInfo or mapping
        As returned by ``cache_info()`` (or its :func:`cache_info_dict`). Sizes are
        shown in KB/MB/GB, keys as readable labels, models as a table of their own.
    uid : str, optional
        Root element id.
    """
    uid = uid or new_uid("lmpj-cache")
    rows = "".join(
        f'<tr data-field="{esc(k)}"><th>{esc(label)}</th><td>{esc(text)}</td></tr>'
        for k, label, text in cache_rows(info)
    )
    body = f'<div class="lmpj-title">activation cache</div><table>{rows}</table>'
    models = cache_model_rows(info)
    if models:
        head = "".join(f"<th>{c}</th>" for c in _MODEL_COLUMNS)
        trs = "".join(
            "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in models
        )
        body += (
            '<div class="lmpj-title" style="margin-top:8px">per model</div>'
            f'<table class="lmpj-cache-models"><thead><tr>{head}</tr></thead>'
            f"<tbody>{trs}</tbody></table>"
        )
    return root("cache", uid, body)


def cache_text(info: Any) -> str:
    """The cache table as plain text (``CacheInfo``'s repr): the same rows and words."""
    lines = [text_table("CacheInfo", [(label, text) for _k, label, text in cache_rows(info)])]
    models = cache_model_rows(info)
    if models:
        lines.append("  per model:")
        for model, entries, size, layers, pooling in models:
            lines.append(
                f"    {model}: {entries} entries, {size}, layers [{layers}], pooling {pooling}"
            )
    return "\n".join(lines)
