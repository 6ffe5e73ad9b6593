"""anywidget widgets for token highlights, layer-sweep curves and baseline batteries.

Each widget syncs only summaries (tokens and scores, curve points, bar rows) plus the
markup :mod:`lmprobe_jupyter.presentation` builds from them (``_html``). The
JavaScript in ``presentation/static/`` mounts that markup and adds the interaction (threshold
slider, clickable layers), so the live view and the static ``text/html`` fallback
that every widget also puts in its mimebundle are the same picture. The mimebundle also
carries the versioned JSON payload (:mod:`lmprobe_jupyter.presentation.payload`), which the
project's JupyterLab extension draws when the notebook is reopened without a kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anywidget
import traitlets

from .. import presentation
from ..presentation import payload as schema

__all__ = [
    "BatteryWidget",
    "add_static_copies",
    "SweepCurveWidget",
    "TokenHighlightWidget",
    "best_by_cv",
    "show_battery",
    "show_sweep",
    "show_tokens",
]

_STATIC = presentation.STATIC_DIR


def add_static_copies(
    bundle: tuple[dict, dict] | None, html: str, extra: dict | None = None
) -> tuple[dict, dict] | None:
    """A widget's mimebundle plus the copies that show without its live model: the
    self-contained ``text/html`` and ``extra`` (the JSON payload the JupyterLab extension
    draws, a PNG)."""
    if bundle is None:
        return None
    data, metadata = bundle
    return {**data, "text/html": html, **(extra or {})}, metadata


class HTMLBackedWidget(anywidget.AnyWidget):
    """Widget whose view mounts ``_html``; ``_repr_mimebundle_`` adds a static copy."""

    _css = _STATIC / "widgets.css"
    _html = traitlets.Unicode("").tag(sync=True)
    #: Traits whose change re-renders ``_html``.
    _render_on: tuple[str, ...] = ()

    def __init__(self, *, uid: str | None = None, **kwargs: Any) -> None:
        self._uid = uid or presentation.new_uid("lmpj-w")
        super().__init__(**kwargs)
        self._refresh()
        if self._render_on:
            self.observe(lambda _change: self._refresh(), names=list(self._render_on))

    def _render(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _payload(self) -> dict | None:
        """The versioned JSON payload of the current state (None: nothing to draw yet)."""
        return None

    def _static_html(self) -> str:
        """The self-contained HTML fallback for the widget's current state."""
        return self._render()

    def _refresh(self) -> None:
        self._html = self._render()

    def _repr_html_(self) -> str:
        return self._static_html()

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:
        saved = self._payload()
        return add_static_copies(
            super()._repr_mimebundle_(**kwargs),
            self._static_html(),
            None if saved is None else {schema.MIME_TYPE: saved},
        )


class TokenHighlightWidget(HTMLBackedWidget):
    """Per-token probe scores coloured on a diverging scale, with a threshold slider.

    Parameters
    ----------
    texts : list of dict
        ``[{"tokens": [...], "scores": [...], "max": float}, ...]``; any form accepted
        by :func:`presentation.normalize_token_texts` is coerced.
    threshold : float
        Tokens scoring strictly above it are marked (class ``lmpj-over``). The slider
        in the view writes it back, so Python sees the user's choice.
    vmin, vmax : float
        Ends of the colour scale; white is their midpoint.
    note : str
        A line under the legend (what the scores mean for this probe).
    """

    _esm = _STATIC / "tokens.js"
    texts = traitlets.List().tag(sync=True)
    threshold = traitlets.Float(0.5).tag(sync=True)
    vmin = traitlets.Float(0.0).tag(sync=True)
    vmax = traitlets.Float(1.0).tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
    # the threshold is applied by the view itself; moving the slider re-renders nothing
    _render_on = ("texts", "vmin", "vmax", "note")

    @traitlets.validate("texts")
    def _valid_texts(self, proposal: dict) -> list[dict]:
        items = presentation.normalize_token_texts(proposal["value"])
        # JSON has no NaN: missing scores travel as None
        return [
            {
                "tokens": it["tokens"],
                "scores": [None if math.isnan(s) else s for s in it["scores"]],
                "max": it["max"],
            }
            for it in items
        ]

    @traitlets.validate("vmax")
    def _valid_vmax(self, proposal: dict) -> float:
        if proposal["value"] <= self.vmin:
            raise traitlets.TraitError(
                f"vmax={proposal['value']!r} must be greater than vmin={self.vmin!r}"
            )
        return proposal["value"]

    def _payload(self) -> dict:
        return schema.payload(
            "tokens",
            texts=self.texts,
            threshold=self.threshold,
            vmin=self.vmin,
            vmax=self.vmax,
            note=self.note,
        )

    def _render(self) -> str:
        return presentation.render_token_highlights(
            self.texts, self.threshold, self.vmin, self.vmax, uid=self._uid, note=self.note
        )


class SweepCurveWidget(HTMLBackedWidget):
    """Score per layer of a layer sweep, best layer marked; click a layer to select it.

    Parameters
    ----------
    layers : list of int
        The swept layers.
    train_scores, test_scores : list of float or None
        Cross-validated training score and held-out score per layer; an empty list
        means "not measured".
    best_layer : int or None
        Layer drawn as the best one.
    best_by : {"cv", "test"} or None
        The score ``best_layer`` was chosen by, named in its label.
    selected_layer : int or None
        Set by clicking a layer in the view; observe it from Python with
        ``widget.observe(callback, names="selected_layer")``.
    metric : str
        Name of the score (y-axis label).
    """

    _esm = _STATIC / "sweep.js"
    layers = traitlets.List().tag(sync=True)
    train_scores = traitlets.List().tag(sync=True)
    test_scores = traitlets.List().tag(sync=True)
    best_layer = traitlets.Int(None, allow_none=True).tag(sync=True)
    best_by = traitlets.Enum(("cv", "test"), None, allow_none=True).tag(sync=True)
    selected_layer = traitlets.Int(None, allow_none=True).tag(sync=True)
    metric = traitlets.Unicode("accuracy").tag(sync=True)
    _render_on = ("layers", "train_scores", "test_scores", "best_layer", "best_by", "metric")

    @traitlets.validate("layers")
    def _valid_layers(self, proposal: dict) -> list[int]:
        return [int(v) for v in proposal["value"]]

    @traitlets.validate("train_scores", "test_scores")
    def _valid_scores(self, proposal: dict) -> list[float | None]:
        return [None if presentation.is_missing(v) else float(v) for v in proposal["value"]]

    @traitlets.validate("selected_layer")
    def _valid_selected(self, proposal: dict) -> int | None:
        value = proposal["value"]
        if value is not None and value not in self.layers:
            raise traitlets.TraitError(
                f"selected_layer={value!r} is not one of the swept layers {list(self.layers)}"
            )
        return value

    def _payload(self) -> dict | None:
        if not self.layers:
            return None
        return schema.payload(
            "sweep",
            layers=self.layers,
            train_scores=self.train_scores or None,
            test_scores=self.test_scores or None,
            best_layer=self.best_layer,
            best_by=self.best_by,
            selected_layer=self.selected_layer,
            metric=self.metric,
        )

    def _render(self) -> str:
        if not self.layers:
            return '<div class="lmpj lmpj-muted">no layers yet</div>'
        return presentation.render_sweep_curve(
            self.layers,
            self.train_scores or None,
            self.test_scores or None,
            best_layer=self.best_layer,
            selected_layer=self.selected_layer,
            best_by=self.best_by,
            metric=self.metric,
            uid=self._uid,
        )


class BatteryWidget(HTMLBackedWidget):
    """Baseline battery as sorted horizontal bars, the probe's score as reference line.

    Parameters
    ----------
    rows : list of dict
        ``{"name", "score", "fit_s", "predict_s", "is_probe"}`` per method; objects
        with those attributes are accepted too (see :func:`presentation.normalize_battery_rows`).
    metric : str
        Name of the score.
    """

    _esm = _STATIC / "battery.js"
    rows = traitlets.List().tag(sync=True)
    metric = traitlets.Unicode("accuracy").tag(sync=True)
    _render_on = ("rows", "metric")

    @traitlets.validate("rows")
    def _valid_rows(self, proposal: dict) -> list[dict]:
        return presentation.normalize_battery_rows(proposal["value"])

    def _payload(self) -> dict | None:
        if not self.rows:
            return None
        return schema.payload("battery", rows=self.rows, metric=self.metric)

    def _render(self) -> str:
        if not self.rows:
            return '<div class="lmpj lmpj-muted">no baselines yet</div>'
        return presentation.render_battery(self.rows, metric=self.metric, uid=self._uid)


# ---------------------------------------------------------------- helpers


def show_tokens(
    texts_scores: object,
    threshold: float = 0.5,
    vmin: float = 0.0,
    vmax: float = 1.0,
    note: str = "",
) -> TokenHighlightWidget:
    """Show per-token scores as a :class:`TokenHighlightWidget`.

    Parameters
    ----------
    texts_scores : sequence
        ``[(tokens, scores), ...]`` as returned by ``Probe.token_scores``, or any form
        accepted by :func:`presentation.normalize_token_texts`.
    threshold : float
        Initial threshold for the marker.
    vmin, vmax : float
        Ends of the colour scale.
    note : str
        A line under the legend (``Probe.token_level_note()``).
    """
    return TokenHighlightWidget(
        texts=texts_scores, threshold=threshold, vmin=vmin, vmax=vmax, note=note
    )


def best_by_cv(layers: Sequence[int], cv_scores: Sequence[float | None]) -> int | None:
    """The layer with the highest cross-validated score, the shallower one on ties.

    None when no layer has a finite score. Choosing on the test set would overstate
    the result on that same test set: the CV score picks, the test score is shown
    beside it.
    """
    scored = [
        (float(s), -int(layer))
        for layer, s in zip(layers, cv_scores)
        if not presentation.is_missing(s)
    ]
    return -max(scored)[1] if scored else None


def show_sweep(
    layers: Sequence[int],
    train_scores: Sequence[float | None] | None = None,
    test_scores: Sequence[float | None] | None = None,
    best_layer: int | None = None,
    metric: str = "accuracy",
    best_by: str | None = None,
    selected_layer: int | None = None,
    on_select: Callable[[int | None], object] | None = None,
) -> SweepCurveWidget:
    """Show a layer sweep as a :class:`SweepCurveWidget`.

    Parameters
    ----------
    layers : sequence of int
        The swept layers.
    train_scores, test_scores : sequence of float, optional
        Cross-validated training score and held-out score per layer (at least one).
    best_layer : int, optional
        Defaults to the best cross-validated layer (the shallower one on ties, see
        :func:`best_by_cv`), or the best test layer when there are no CV scores.
    metric : str
        Name of the score.
    best_by : {"cv", "test"}, optional
        What ``best_layer`` was chosen by (set for you when it is chosen here).
    selected_layer : int, optional
        The layer shown as selected at first.
    on_select : callable, optional
        ``on_select(layer)`` on every change of the widget's ``selected_layer`` (a click
        in the view): ``SweepResult.show`` passes one that writes the click into the
        result, so ``sweep.selected_layer`` follows the widget.
    """
    layers = [int(x) for x in layers]
    if train_scores is None and test_scores is None:
        raise ValueError("give train_scores or test_scores (or both)")
    if best_layer is None:
        if train_scores is not None:
            best_layer = best_by_cv(layers, list(train_scores))
            best_by = "cv" if best_layer is not None else None
        if best_layer is None and test_scores is not None:
            best_layer = best_by_cv(layers, list(test_scores))
            best_by = "test" if best_layer is not None else None
    widget = SweepCurveWidget(
        layers=layers,
        train_scores=[] if train_scores is None else list(train_scores),
        test_scores=[] if test_scores is None else list(test_scores),
        best_layer=best_layer,
        best_by=best_by,
        metric=metric,
        selected_layer=selected_layer,
    )
    if on_select is not None:
        widget.observe(lambda change: on_select(change["new"]), names="selected_layer")
    return widget


def show_battery(rows: Iterable[object], metric: str = "accuracy") -> BatteryWidget:
    """Show baseline results as a :class:`BatteryWidget`.

    Parameters
    ----------
    rows : iterable
        One row per method (mapping or object with ``name``, ``score``, ``fit_s``/
        ``fit_time``, ``predict_s``/``predict_time``, ``is_probe``).
    metric : str
        Name of the score.
    """
    return BatteryWidget(rows=list(rows), metric=metric)
