"""What a baseline battery returns: :class:`BaselineResult` rows and :class:`BatteryResults`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._common import (
    quoted,
)


@dataclass
class BaselineResult:
    """One row of a battery: a baseline (or the probe) scored on the test set.

    Attributes
    ----------
    name : str
    score : float
        Test accuracy.
    fit_seconds, predict_seconds : float
        Wall time of fitting (features included) and of predicting the test set.
    metrics : dict
        ``accuracy``, ``f1``, ``precision``, ``recall``, ``auroc`` (and ``n``).
    kind : {"text", "activation", "probe"}
    detail : str
        What the row was computed on (e.g. ``"tfidf features"``, ``"layer 29"``).
    """

    name: str
    score: float
    fit_seconds: float
    predict_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    kind: str = "text"
    detail: str = ""

    @property
    def is_probe(self) -> bool:
        """True for the probe's own row."""
        return self.kind == "probe"

    # aliases read by the notebook renderers
    @property
    def fit_time(self) -> float:
        return self.fit_seconds

    @property
    def predict_time(self) -> float:
        return self.predict_seconds


def score_key(r: BaselineResult) -> tuple[bool, float]:
    missing = r.score is None or np.isnan(r.score)
    return (missing, -(0.0 if missing else r.score))


class BatteryResults:
    """Results of :meth:`BaselineBattery.fit`.

    Attributes
    ----------
    results : list of BaselineResult
        In run order (the probe's row, when there is one, first).
    skipped : dict
        Baselines left out of a default battery, with the reason.
    """

    def __init__(
        self,
        results: list[BaselineResult],
        skipped: dict[str, str] | None = None,
        train: tuple[list[str], np.ndarray] | None = None,
        test: tuple[list[str], np.ndarray] | None = None,
    ) -> None:
        self.results = list(results)
        self.skipped = dict(skipped or {})
        self._train = train
        self._test = test

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, name: str) -> BaselineResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no result named {name!r}; have {quoted([r.name for r in self.results])}")

    @property
    def probe_result(self) -> BaselineResult | None:
        """The probe's row, if a probe was added."""
        return next((r for r in self.results if r.is_probe), None)

    @property
    def probe_margin(self) -> float | None:
        """Probe accuracy minus the best baseline's (None without a probe or baselines)."""
        probe, best = self.probe_result, self.get_best()
        if probe is None or not best:
            return None
        return float(probe.score - best[0].score)

    def get_best(self, include_probe: bool = False) -> list[BaselineResult]:
        """Rows sorted by score, best first (the probe's row only if ``include_probe``)."""
        rows = [r for r in self.results if include_probe or not r.is_probe]
        return sorted(rows, key=score_key)

    def summary(self) -> str:
        """The reference's text table: one row per baseline, best first.

        The probe's row, when present, is marked ``<- probe``.
        """
        lines = ["Baseline Results:", "-" * 60]
        for r in self.get_best(include_probe=True):
            line = (
                f"  {r.name:<30} {r.score:.4f}  "
                f"(fit: {r.fit_seconds:.2f}s, predict: {r.predict_seconds:.2f}s)"
            )
            if r.is_probe:
                line += "  <- probe"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return self.summary()

    def to_rows(self) -> list[dict[str, Any]]:
        """Rows for the notebook renderers: ``{name, score, fit_s, predict_s, is_probe, kind}``."""
        return [
            {
                "name": r.name,
                "score": r.score,
                "fit_s": r.fit_seconds,
                "predict_s": r.predict_seconds,
                "is_probe": r.is_probe,
                "kind": r.kind,
            }
            for r in self.get_best(include_probe=True)
        ]

    def to_frame(self):
        """A ``pandas.DataFrame``, one row per result, best first.

        Columns: name, kind, score, fit_seconds, predict_seconds, accuracy, f1, precision,
        recall, auroc, detail.
        """
        import pandas as pd

        cols = ["accuracy", "f1", "precision", "recall", "auroc"]
        records = [
            {
                "name": r.name,
                "kind": r.kind,
                "score": r.score,
                "fit_seconds": r.fit_seconds,
                "predict_seconds": r.predict_seconds,
                **{c: r.metrics.get(c, float("nan")) for c in cols},
                "detail": r.detail,
            }
            for r in self.get_best(include_probe=True)
        ]
        columns = ["name", "kind", "score", "fit_seconds", "predict_seconds", *cols, "detail"]
        return pd.DataFrame.from_records(records, columns=columns)

    def plot(self, ax: Any = None, title: str | None = None):
        """Horizontal bar chart of the scores, best on top; the probe's bar is highlighted.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw here instead of on a new figure.
        title : str, optional

        Returns
        -------
        matplotlib.figure.Figure
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:  # pragma: no cover - matplotlib is in the plot extra
            raise ImportError(
                "BatteryResults.plot() needs matplotlib: `pip install lmprobe-jupyter[plot]`"
            ) from exc
        rows = self.get_best(include_probe=True)[::-1]  # barh draws bottom-up
        if ax is None:
            # A bare Figure (not pyplot) so notebooks show it once, as the returned value.
            fig = Figure(figsize=(7.0, 0.45 * max(len(rows), 1) + 1.2), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        scores = [0.0 if np.isnan(r.score) else r.score for r in rows]
        colors = ["#d9480f" if r.is_probe else "#4c6ef5" for r in rows]
        y = np.arange(len(rows))
        ax.barh(y, scores, color=colors)
        labels = [f"{r.name} (probe)" if r.is_probe and r.name != "probe" else r.name for r in rows]
        ax.set_yticks(y, labels)
        for yi, s in zip(y, scores):
            ax.text(s + 0.01, yi, f"{s:.3f}", va="center", fontsize=8)
        probe = self.probe_result
        if probe is not None and not np.isnan(probe.score):
            # The reference line makes "which baselines reach the probe" readable at a glance.
            ax.axvline(probe.score, color="#d9480f", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("test accuracy")
        ax.set_title(title or "Baselines")
        return fig

    def show(self, metric: str = "accuracy"):
        """Interactive bar chart (needs the ``jupyter`` extra)."""
        from ... import display

        return display.widget("battery", self.to_rows(), metric=metric)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        if not self.results:
            return None
        from ....presentation.payload import repr_bundle

        return repr_bundle("battery", rows=self.to_rows())

    def _repr_html_(self) -> str | None:
        if not self.results:
            return None
        from ....presentation import render_battery

        return render_battery(self.to_rows())

    def add_probe(self, probe: Any, name: str = "probe") -> BatteryResults:
        """Score ``probe`` on this battery's test set and add it as a marked row.

        An unfitted probe is first fitted on the battery's training data.
        """
        if self._train is None or self._test is None:
            raise ValueError("these results carry no train/test data; use BaselineBattery.fit")
        row = score_probe(probe, name, *self._train, *self._test)
        self.results = [r for r in self.results if r.name != name]
        self.results.insert(0, row)
        return self


def timed(fn, *args):
    import time

    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def score_probe(
    probe: Any,
    name: str,
    train_prompts: list[str],
    y: np.ndarray,
    test_prompts: list[str],
    y_test: np.ndarray,
) -> BaselineResult:
    if hasattr(probe, "pipeline_"):
        fit_seconds = float(getattr(probe, "fit_seconds_", float("nan")))
    else:
        _, fit_seconds = timed(probe.fit, train_prompts, y)
    metrics, predict_seconds = timed(probe.evaluate, test_prompts, y_test)
    layers = getattr(probe, "layers_", None)
    return BaselineResult(
        name=name,
        score=float(metrics["accuracy"]),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        metrics=dict(metrics),
        kind="probe",
        detail=f"layers {layers}" if layers is not None else "",
    )


def result_from(
    name: str,
    kind: str,
    detail: str,
    baseline: Any,
    fit_seconds: float,
    predict_both,
    y_test: np.ndarray,
) -> BaselineResult:
    from ...probes.scoring import compute_metrics

    (pred, proba), predict_seconds = timed(predict_both)
    metrics = compute_metrics(y_test, pred, proba, "classification", baseline.classes_)
    return BaselineResult(
        name=name,
        score=float(metrics["accuracy"]),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        metrics=metrics,
        kind=kind,
        detail=detail,
    )
