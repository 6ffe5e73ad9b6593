"""Token aggregations: how a row of per-token scores becomes one prompt score.

A per-token score row holds one score per token, with ``NaN`` at tokens that are not
scored (the attention sink at position 0, special tokens, padding). Every aggregation
here skips those positions: it works on the *scored* tokens in order, as if the unscored
ones were not there.

Aggregation specs (strings, as accepted by ``inference_pooling``):

``"max"`` / ``"min"`` / ``"mean"``
    Over the scored tokens.
``"rolling_max:K"``
    The mean over each window of ``K`` consecutive scored tokens, then the max over
    windows. A text with fewer than ``K`` scored tokens has one window: its full mean.
    ``rolling_max:1`` is ``max``. One odd token moves a window by ``1/K`` of its score, so
    a single outlier no longer flags a whole text (the failure of plain ``max``).
``"ema:A"``
    An exponential moving average with smoothing ``A`` in (0, 1], started at the first
    scored token (``e_0 = x_0``, ``e_t = A x_t + (1 - A) e_{t-1}``; pandas
    ``ewm(alpha=A, adjust=False)``), then the max. ``ema:1`` is ``max``. The streaming
    counterpart of ``rolling_max``: constant memory per monitored stream.

A row with no scored token aggregates to ``NaN``.

Rows are ``(seq,)`` (one score per token) or ``(seq, k)`` (``k`` scores per token, e.g.
one per class or per layer; each column is aggregated on its own). A batch is a list of
such rows of different lengths, or one ``(n, seq[, k])`` array padded with ``NaN``. All
functions are vectorised over the batch: rows are compacted (scored tokens first, order
kept) by one stable argsort, then windows are differences of cumulative sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Valid forms, used in error messages.
AGGREGATION_FORMS = ("max", "min", "mean", "rolling_max:K", "ema:A")
_PLAIN = ("max", "min", "mean")


@dataclass(frozen=True)
class Aggregation:
    """A parsed aggregation spec.

    Attributes
    ----------
    kind : {"max", "min", "mean", "rolling_max", "ema"}
    window : int or None
        ``K`` of ``rolling_max:K``.
    alpha : float or None
        ``A`` of ``ema:A``.
    """

    kind: str
    window: int | None = None
    alpha: float | None = None

    @property
    def spec(self) -> str:
        """The canonical string form (``"rolling_max:16"``, ``"ema:0.3"``, ``"max"``)."""
        if self.kind == "rolling_max":
            return f"rolling_max:{self.window}"
        if self.kind == "ema":
            return f"ema:{self.alpha:g}"
        return self.kind


def _bad(spec, why: str) -> ValueError:
    forms = ", ".join(repr(f) for f in AGGREGATION_FORMS)
    return ValueError(
        f"aggregation {spec!r} {why}; valid forms are {forms} (K a positive int, "
        f"A a float in (0, 1]), e.g. 'rolling_max:16' or 'ema:0.3'"
    )


def parse_aggregation(spec) -> Aggregation:
    """Parse and validate an aggregation spec.

    Parameters
    ----------
    spec : str or Aggregation
        ``"max"``, ``"min"``, ``"mean"``, ``"rolling_max:K"`` or ``"ema:A"``.

    Returns
    -------
    Aggregation

    Raises
    ------
    ValueError
        Naming the bad spec and the valid forms (``"rolling_max:0"``, ``"ema:2"``,
        ``"rolling:3"``).
    """
    if isinstance(spec, Aggregation):
        return spec
    if not isinstance(spec, str):
        raise _bad(spec, "is not a string")
    s = spec.strip()
    if s in _PLAIN:
        return Aggregation(s)
    name, sep, arg = s.partition(":")
    if name == "rolling_max":
        if not sep or not arg.strip():
            raise _bad(spec, "has no window size K")
        try:
            k = int(arg)
        except ValueError:
            raise _bad(spec, f"has window K={arg!r}, which is not an int") from None
        if k < 1:
            raise _bad(spec, f"has window K={k}, which must be >= 1")
        return Aggregation("rolling_max", window=k)
    if name == "ema":
        if not sep or not arg.strip():
            raise _bad(spec, "has no smoothing A")
        try:
            a = float(arg)
        except ValueError:
            raise _bad(spec, f"has smoothing A={arg!r}, which is not a number") from None
        if not (0.0 < a <= 1.0) or math.isnan(a):
            raise _bad(spec, f"has smoothing A={a:g}, which must be in (0, 1]")
        return Aggregation("ema", alpha=a)
    raise _bad(spec, "is not a known aggregation")


def is_aggregation(spec) -> bool:
    """Whether ``spec`` parses as an aggregation (no exception)."""
    try:
        parse_aggregation(spec)
    except ValueError:
        return False
    return True


def is_window_aggregation(spec) -> bool:
    """Whether ``spec`` is a ``rolling_max:K`` or ``ema:A`` string."""
    return is_aggregation(spec) and parse_aggregation(spec).kind in ("rolling_max", "ema")


# ---------------------------------------------------------------- batch layout
def _as_batch(rows) -> tuple[np.ndarray, bool, bool]:
    """Rows -> (n, seq, k) float64 padded with NaN; flags (was_single_row, had_k_axis)."""
    if isinstance(rows, np.ndarray) and rows.dtype != object:
        arr = np.asarray(rows, dtype=np.float64)
        if arr.ndim == 1:
            return arr[None, :, None], True, False
        if arr.ndim == 2:
            return arr[:, :, None], False, False
        if arr.ndim == 3:
            return arr, False, True
        raise ValueError(f"score rows of shape {arr.shape} are not (n, seq) or (n, seq, k)")
    rows = [np.asarray(r, dtype=np.float64) for r in rows]
    if not rows:
        return np.zeros((0, 0, 1)), False, False
    nd = {r.ndim for r in rows}
    if nd - {1, 2} or len(nd) > 1:
        raise ValueError(
            f"score rows have ndims {sorted(nd)}; give rows all of shape (seq,) or all (seq, k)"
        )
    has_k = nd == {2}
    ks = {r.shape[1] for r in rows} if has_k else {1}
    if len(ks) > 1:
        raise ValueError(f"score rows have different widths k={sorted(ks)}")
    k = ks.pop()
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width, k), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r.reshape(len(r), k)
    return out, False, has_k


def _compact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move scored (non-NaN) entries first along axis 1, keeping their order.

    Returns the compacted (n, seq, k) array (NaN after each column's count), the counts
    (n, k), and ``order`` (n, seq, k): compacted position j holds original position
    ``order[..., j, :]``.
    """
    unscored = np.isnan(x)
    order = np.argsort(unscored, axis=1, kind="stable")
    xc = np.take_along_axis(x, order, axis=1)
    counts = (~unscored).sum(axis=1)
    return xc, counts, order


def _window_means(xc: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Mean of each K-window ending at compacted position j (NaN where not a full window).

    A column with fewer than K scored tokens gets its full mean at its last position.
    """
    n, seq, m = xc.shape
    z = np.where(np.isnan(xc), 0.0, xc)
    c = np.concatenate([np.zeros((n, 1, m)), np.cumsum(z, axis=1)], axis=1)
    out = np.full_like(xc, np.nan)
    if seq >= k:
        out[:, k - 1 :] = (c[:, k:] - c[:, : seq - k + 1]) / k
    j = np.arange(seq)[None, :, None]
    out[j >= counts[:, None, :]] = np.nan
    short = (counts < k) & (counts > 0)
    if short.any():
        ii, kk = np.nonzero(short)
        last = counts[ii, kk] - 1
        out[ii, last, kk] = c[ii, counts[ii, kk], kk] / counts[ii, kk]
    return out


def _ema(xc: np.ndarray, counts: np.ndarray, alpha: float) -> np.ndarray:
    """EMA along compacted positions (NaN after each column's count)."""
    n, seq, m = xc.shape
    out = np.full_like(xc, np.nan)
    if seq == 0:
        return out
    e = xc[:, 0].copy()
    out[:, 0] = e
    for t in range(1, seq):
        x = xc[:, t]
        e = np.where(np.isnan(x), e, alpha * x + (1.0 - alpha) * e)
        out[:, t] = e
    out[np.arange(seq)[None, :, None] >= counts[:, None, :]] = np.nan
    return out


def _series_compact(x: np.ndarray, agg: Aggregation):
    xc, counts, order = _compact(x)
    if agg.kind == "rolling_max":
        s = _window_means(xc, counts, agg.window)
    elif agg.kind == "ema":
        s = _ema(xc, counts, agg.alpha)
    else:
        s = xc
    return s, counts, order


def _reduce(s: np.ndarray, kind: str) -> np.ndarray:
    """NaN-skipping reduction over axis 1 without all-NaN warnings."""
    empty = np.isnan(s).all(axis=1)
    if kind == "min":
        out = np.where(empty, np.nan, np.nanmin(np.where(empty[:, None], 0, s), axis=1))
    elif kind == "mean":
        out = np.where(empty, np.nan, np.nanmean(np.where(empty[:, None], 0, s), axis=1))
    else:
        out = np.where(empty, np.nan, np.nanmax(np.where(empty[:, None], 0, s), axis=1))
    return out


def _unbatch(out: np.ndarray, single: bool, has_k: bool):
    if not has_k:
        out = out[..., 0]
    if single:
        out = out[0]
        return float(out) if np.ndim(out) == 0 else out
    return out


# ---------------------------------------------------------------- public API
def aggregate_rows(rows, spec) -> np.ndarray:
    """Aggregate a batch of per-token score rows to one score per row.

    Parameters
    ----------
    rows : list of array-like of shape (seq_i,) or (seq_i, k), or ndarray of shape (n, seq) or (n, seq, k)
        Per-token scores; ``NaN`` marks unscored tokens (and padding).
    spec : str
        An aggregation spec (see the module docstring).

    Returns
    -------
    ndarray of shape (n,) or (n, k)
        ``NaN`` for a row (column) with no scored token.
    """
    agg = parse_aggregation(spec)
    x, _, has_k = _as_batch(rows)
    if x.shape[0] == 0:
        return np.zeros((0, x.shape[2])) if has_k else np.zeros(0)
    if agg.kind in _PLAIN:
        out = _reduce(x, agg.kind)
    else:
        s, _, _ = _series_compact(x, agg)
        out = _reduce(s, "max")
    return out if has_k else out[:, 0]


def aggregate(row, spec):
    """Aggregate one per-token score row.

    Parameters
    ----------
    row : array-like of shape (seq,) or (seq, k)
    spec : str

    Returns
    -------
    float, or ndarray of shape (k,)
    """
    row = np.asarray(row, dtype=np.float64)
    if row.ndim not in (1, 2):
        raise ValueError(f"a score row has shape (seq,) or (seq, k), got {row.shape}")
    out = aggregate_rows(row[None], spec)
    return float(out[0]) if row.ndim == 1 else out[0]


def smoothed_rows(rows, spec):
    """The per-token series whose max is the aggregate, at the tokens' own positions.

    For ``rolling_max:K`` position t holds the mean of the window of K scored tokens that
    *ends* at t (NaN for the first K-1 scored tokens, except that a row shorter than K
    holds its full mean at its last scored token); for ``ema:A`` the moving average at t;
    for ``max``/``min``/``mean`` the scores themselves. Unscored positions are NaN. This
    is what a highlight of a window-aggregated probe shows, and ``argmax`` of it is the
    token that ends the top window.

    Parameters
    ----------
    rows : as in :func:`aggregate_rows`, or one row of shape (seq,) or (seq, k)
    spec : str

    Returns
    -------
    ndarray shaped like ``rows`` (padded to (n, seq[, k]) for a list)
    """
    agg = parse_aggregation(spec)
    single_in = isinstance(rows, np.ndarray) and rows.dtype != object and rows.ndim == 1
    x, single, has_k = _as_batch(rows)
    if agg.kind in _PLAIN:
        out = x.copy()
    else:
        s, _, order = _series_compact(x, agg)
        out = np.full_like(x, np.nan)
        np.put_along_axis(out, order, s, axis=1)
    return _unbatch(out, single and single_in, has_k)


def prefix_scores(row, spec) -> np.ndarray:
    """The aggregate of every prefix of a row: the streaming score after each token.

    ``prefix_scores(row, spec)[t] == aggregate(row[: t + 1], spec)`` for every t (NaN
    while no token is scored yet). For ``rolling_max:K`` a prefix shorter than K scores
    its mean; for ``ema`` and ``max`` this is a running max.

    Parameters
    ----------
    row : array-like of shape (seq,) or (seq, k)
    spec : str

    Returns
    -------
    ndarray of the row's shape
    """
    agg = parse_aggregation(spec)
    x = np.asarray(row, dtype=np.float64)
    has_k = x.ndim == 2
    if x.ndim not in (1, 2):
        raise ValueError(f"a score row has shape (seq,) or (seq, k), got {x.shape}")
    x2 = x.reshape(len(x), -1)
    valid = ~np.isnan(x2)
    n_seen = np.cumsum(valid, axis=0)
    z = np.where(valid, x2, 0.0)
    if agg.kind == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.cumsum(z, axis=0) / n_seen
    elif agg.kind in ("max", "min"):
        fill = -np.inf if agg.kind == "max" else np.inf
        acc = np.maximum if agg.kind == "max" else np.minimum
        out = acc.accumulate(np.where(valid, x2, fill), axis=0)
    elif agg.kind == "ema":
        s = smoothed_rows(x2.T, spec).T
        out = np.fmax.accumulate(np.where(np.isnan(s), -np.inf, s), axis=0)
    else:
        k = agg.window
        full = smoothed_rows(x2.T, spec).T  # window means at the positions that end them
        ends = np.where(n_seen >= k, full, np.nan)
        run = np.fmax.accumulate(np.where(np.isnan(ends), -np.inf, ends), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            prefix_mean = np.cumsum(z, axis=0) / n_seen
        out = np.where(n_seen >= k, run, prefix_mean)
    out = np.where(n_seen > 0, out, np.nan)
    return out if has_k else out[:, 0]


def top_positions(rows, spec) -> np.ndarray:
    """Index of the token where each row's aggregate is attained.

    For ``rolling_max:K`` the *last* token of the top window; for ``ema`` the token where
    the moving average peaks; for ``max``/``min`` the arg-max/min token; for ``mean`` the
    highest-scoring token. ``-1`` for a row with no scored token.

    Parameters
    ----------
    rows : as in :func:`aggregate_rows` (one column: shape (seq,) rows)
    spec : str

    Returns
    -------
    ndarray of int of shape (n,)
    """
    agg = parse_aggregation(spec)
    x, _, has_k = _as_batch(rows)
    if has_k and x.shape[2] != 1:
        raise ValueError("top_positions takes rows of one score per token, shape (seq,)")
    s = smoothed_rows(x[..., 0], spec) if agg.kind not in _PLAIN else x[..., 0]
    if s.ndim == 1:
        s = s[None]
    empty = np.isnan(s).all(axis=1)
    if agg.kind == "min":
        pos = np.argmin(np.where(np.isnan(s), np.inf, s), axis=1)
    else:
        pos = np.argmax(np.where(np.isnan(s), -np.inf, s), axis=1)
    return np.where(empty, -1, pos)


def top_window(row, spec) -> tuple[int, int]:
    """``(start, stop)`` token positions (stop exclusive) of the span behind the aggregate.

    For ``rolling_max:K`` the top window's first and past-last positions (it spans K
    scored tokens, possibly with unscored ones between them); for the other kinds the
    single top token. ``(-1, -1)`` for a row with no scored token.
    """
    agg = parse_aggregation(spec)
    x = np.asarray(row, dtype=np.float64)
    end = int(top_positions(x[None], spec)[0])
    if end < 0:
        return -1, -1
    if agg.kind != "rolling_max":
        return end, end + 1
    scored = np.flatnonzero(~np.isnan(x))
    j = int(np.searchsorted(scored, end))
    start = int(scored[max(0, j - agg.window + 1)])
    return start, end + 1
