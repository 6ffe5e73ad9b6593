"""The presentation layer: every HTML/SVG renderer of the project, with no IPython import.

Pure functions from plain Python data (lists, dicts, floats, the engine's result
objects read through their public attributes) to self-contained HTML: inline CSS
(``static/*.css``, read once) and inline SVG, no script, no CDN, no network, so an
output survives nbconvert, nbviewer and GitHub. The engine's ``_repr_html_`` methods
and the notebook widgets (:mod:`lmprobe_jupyter.jupyter.widgets`, whose JavaScript
lies in ``static/`` beside the CSS) both call these, so the live view and the
exported view agree.

Colours follow JupyterLab's theme variables (light or dark), with fallbacks for plain
HTML. Element ids come from a process-wide counter (:func:`new_uid`) or are passed
in (``uid=...``) so tests can compare exact output.
"""

from __future__ import annotations

from ._base import (
    BASELINE_COLOR,
    BEST_COLOR,
    MID_COLOR,
    NAN_COLOR,
    NEG_COLOR,
    POS_COLOR,
    STATIC_DIR,
    TEST_COLOR,
    TRAIN_COLOR,
    contrast_ratio,
    css,
    esc,
    fmt,
    format_bytes,
    format_seconds,
    is_missing,
    new_uid,
    num,
    plural,
    reset_uids,
    score_color,
    text_color,
    token_span,
    visible_token,
)
from .charts import (
    normalize_battery_rows,
    render_battery,
    render_metrics,
    render_sweep_curve,
    render_sweep_table,
)
from .monitor import STATUSES, check_status, monitor_markup, prompt_block, render_monitor
from .tables import (
    CARD_FIELDS,
    cache_info_dict,
    cache_model_rows,
    cache_rows,
    cache_text,
    card_rows,
    layers_text,
    render_cache_info,
    render_probe_card,
    text_table,
)
from .tokens import normalize_token_texts, render_token_highlights

__all__ = [
    "BASELINE_COLOR",
    "BEST_COLOR",
    "CARD_FIELDS",
    "MID_COLOR",
    "NAN_COLOR",
    "NEG_COLOR",
    "POS_COLOR",
    "STATIC_DIR",
    "STATUSES",
    "TEST_COLOR",
    "TRAIN_COLOR",
    "cache_info_dict",
    "cache_model_rows",
    "cache_rows",
    "cache_text",
    "card_rows",
    "check_status",
    "contrast_ratio",
    "css",
    "esc",
    "fmt",
    "format_bytes",
    "format_seconds",
    "is_missing",
    "layers_text",
    "monitor_markup",
    "new_uid",
    "normalize_battery_rows",
    "normalize_token_texts",
    "num",
    "plural",
    "prompt_block",
    "render_battery",
    "render_cache_info",
    "render_metrics",
    "render_monitor",
    "render_probe_card",
    "render_sweep_curve",
    "render_sweep_table",
    "render_token_highlights",
    "reset_uids",
    "score_color",
    "text_color",
    "text_table",
    "token_span",
    "visible_token",
]
