"""Displayable result objects for the magics: a probe card, evaluation, cache table.

Each is a plain object with ``_repr_html_`` (self-contained HTML from
:mod:`.render`) and a readable text ``repr``, so it shows in a notebook, in an
exported notebook, and in a terminal IPython alike. Building one reads only
public engine attributes and never runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .. import presentation
from ..presentation import payload as schema

__all__ = ["HTMLView", "cache_view", "evaluation_view", "probe_card", "probe_summary"]


class HTMLView:
    """A rich output: ``html`` for notebooks, ``text`` for terminals, ``data`` for code.

    Parameters
    ----------
    html : str
        Self-contained HTML.
    text : str
        Plain-text rendering.
    data : object, optional
        The summary the view was built from (a dict), for programmatic use.
    payload : dict, optional
        The versioned JSON payload (:mod:`lmprobe_jupyter.presentation.payload`) the
        JupyterLab extension draws; put in the mimebundle beside ``html`` and ``text``.
    """

    def __init__(self, html: str, text: str, data: Any = None, payload: Any = None) -> None:
        self.html = html
        self.text = text
        self.data = data
        self.payload = payload

    def _repr_html_(self) -> str:
        return self.html

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/html": self.html, "text/plain": self.text}
        if self.payload is not None:
            bundle[schema.MIME_TYPE] = self.payload
        return bundle

    def __repr__(self) -> str:
        return self.text


def _classifier_name(classifier: object) -> str:
    return classifier if isinstance(classifier, str) else type(classifier).__name__


def _pooling_text(probe: Any) -> str:
    train = getattr(probe, "train_pooling_", probe.pooling)
    infer = getattr(probe, "inference_pooling_", probe.pooling)
    name = lambda p: p if isinstance(p, str) else getattr(p, "__name__", "callable")  # noqa: E731
    if name(train) == name(infer):
        return name(train)
    return f"{name(train)} (train), {name(infer)} (inference)"


def probe_summary(
    probe: Any,
    name: str | None = None,
    n_positive: int | None = None,
    n_negative: int | None = None,
    train_accuracy: float | None = None,
    cv_accuracy: float | None = None,
) -> dict[str, Any]:
    """The facts a probe card shows, read from a fitted probe's public attributes.

    Parameters
    ----------
    probe : Probe
        A fitted probe.
    name : str, optional
        The variable it is bound to.
    n_positive, n_negative : int, optional
        Class counts of contrastive training data.
    train_accuracy, cv_accuracy : float, optional
        Scores measured by the caller.

    Returns
    -------
    dict
        Keys understood by :func:`lmprobe_jupyter.presentation.render_probe_card`.
    """
    summary: dict[str, Any] = {}
    if name:
        summary["name"] = name
    summary["model"] = getattr(probe, "model_name", None) or probe.model
    summary["layers"] = list(getattr(probe, "layers_", None) or [])
    summary["pooling"] = _pooling_text(probe)
    summary["classifier"] = _classifier_name(probe.classifier)
    if getattr(probe, "compute_dtype_", None):
        summary["dtype"] = probe.compute_dtype_
    if n_positive is not None and n_negative is not None:
        summary["n_positive"] = n_positive
        summary["n_negative"] = n_negative
    else:
        summary["n_samples"] = getattr(probe, "n_train_", None)
    summary["train_accuracy"] = train_accuracy
    summary["cv_accuracy"] = None if cv_accuracy is None or math.isnan(cv_accuracy) else cv_accuracy
    summary["fit_time_s"] = getattr(probe, "fit_seconds_", None)
    hits = getattr(probe, "train_cache_hits_", None)
    n = getattr(probe, "n_train_", None)
    if hits is not None and n is not None:
        summary["cache_hits"] = f"{hits} of {n} prompts"
    return summary


def probe_card(summary: Mapping[str, Any]) -> HTMLView:
    """A probe summary card from :func:`probe_summary`'s dict."""
    rows = [(label, text) for _k, label, text in presentation.card_rows(summary)]
    title = f"probe {summary['name']}" if summary.get("name") else "probe"
    return HTMLView(
        presentation.render_probe_card(summary),
        presentation.text_table(title, rows),
        dict(summary),
        schema.payload("table", rows=rows, title=title),
    )


def evaluation_view(
    metrics: Mapping[str, Any],
    roc: Mapping[str, Sequence[float]] | None = None,
    title: str = "evaluation",
) -> HTMLView:
    """Metrics table (plus ROC curve when ``roc={"fpr": ..., "tpr": ...}`` is given)."""
    rows = [
        (k, presentation.fmt(v, 4) if isinstance(v, float) else str(v)) for k, v in metrics.items()
    ]
    return HTMLView(
        presentation.render_metrics(metrics, roc=roc, title=title),
        presentation.text_table(title, rows),
        dict(metrics),
        schema.payload("metrics", metrics=metrics, roc=roc, title=title),
    )


def cache_view(info: Any, removed: int | None = None) -> HTMLView:
    """The activation cache's state as a table (the same one ``CacheInfo`` shows).

    Parameters
    ----------
    info : CacheInfo or mapping
    removed : int, optional
        Entries just deleted by ``--clear``, reported above the table.
    """
    data = presentation.cache_info_dict(info)
    html = presentation.render_cache_info(info)
    text = repr(info)
    if removed is not None:
        note = "removed 1 entry" if removed == 1 else f"removed {removed:,} entries"
        html = f'<div class="lmpj lmpj-muted">{presentation.esc(note)}</div>{html}'
        text = f"{note}\n{text}"
        data["removed"] = removed
    rows = [(label, value) for _k, label, value in presentation.cache_rows(info)]
    table = schema.payload(
        "table", rows=rows, title="activation cache", note=note if removed is not None else ""
    )
    return HTMLView(html, text, data, table)
