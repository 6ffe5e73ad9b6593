"""Token aggregations: hand-computed windows, NaN skipping, streaming prefixes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter.engine.extraction.windows import (
    Aggregation,
    aggregate,
    aggregate_rows,
    is_window_aggregation,
    parse_aggregation,
    prefix_scores,
    smoothed_rows,
    top_positions,
    top_window,
)

NAN = np.nan


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("max", Aggregation("max")),
        ("mean", Aggregation("mean")),
        ("rolling_max:16", Aggregation("rolling_max", window=16)),
        (" rolling_max:3 ", Aggregation("rolling_max", window=3)),
        ("ema:0.3", Aggregation("ema", alpha=0.3)),
        ("ema:1", Aggregation("ema", alpha=1.0)),
    ],
    ids=["max", "mean", "rolling16", "spaces", "ema0.3", "ema1"],
)
def test_parse(spec, parsed):
    assert parse_aggregation(spec) == parsed
    assert parse_aggregation(parsed.spec) == parsed


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("rolling_max:0", r"'rolling_max:0' has window K=0, which must be >= 1.*'rolling_max:K'"),
        ("rolling_max:x", r"K='x', which is not an int"),
        ("rolling_max", r"has no window size K"),
        ("ema:2", r"'ema:2' has smoothing A=2, which must be in \(0, 1\].*'ema:A'"),
        ("ema:0", r"A=0, which must be in"),
        ("ema:nan", r"A=nan, which must be in"),
        ("ema:", r"has no smoothing A"),
        ("rolling:3", r"'rolling:3' is not a known aggregation; valid forms are 'max', 'min'"),
        (3, r"3 is not a string"),
    ],
    ids=["k0", "k-not-int", "no-k", "ema2", "ema0", "ema-nan", "ema-empty", "unknown", "int"],
)
def test_parse_errors_name_the_valid_forms(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_aggregation(spec)


def test_is_window_aggregation():
    assert is_window_aggregation("rolling_max:4") and is_window_aggregation("ema:0.5")
    assert not is_window_aggregation("max") and not is_window_aggregation("rolling:3")


ROW = [0.0, 1.0, 4.0, 1.0, 0.0, 6.0]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("max", 6.0),
        ("min", 0.0),
        ("mean", 2.0),
        ("rolling_max:1", 6.0),
        # windows of 2: 0.5, 2.5, 2.5, 0.5, 3.0
        ("rolling_max:2", 3.0),
        # windows of 3: 5/3, 2, 5/3, 7/3
        ("rolling_max:3", 7.0 / 3.0),
        ("rolling_max:6", 2.0),
        ("rolling_max:50", 2.0),  # shorter than K: the full mean
        # e: 0, .5, 2.25, 1.625, .8125, 3.40625
        ("ema:0.5", 3.40625),
        ("ema:1", 6.0),
    ],
    ids=["max", "min", "mean", "r1", "r2", "r3", "r6", "r-short", "ema.5", "ema1"],
)
def test_hand_computed(spec, expected):
    assert aggregate(ROW, spec) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("rolling_max:2", 3.0), ("rolling_max:3", 7.0 / 3.0), ("ema:0.5", 3.40625), ("mean", 2.0)],
    ids=["r2", "r3", "ema", "mean"],
)
def test_nan_tokens_are_skipped_not_zeroed(spec, expected):
    """Unscored tokens (NaN) between scored ones change nothing: the windows close over them."""
    with_gaps = [NAN, 0.0, 1.0, NAN, NAN, 4.0, 1.0, NAN, 0.0, 6.0, NAN]
    assert aggregate(with_gaps, spec) == pytest.approx(expected, abs=1e-12)


def test_all_nan_row_is_nan_and_batch_padding():
    rows = [ROW, [NAN, NAN], [2.0], []]
    out = aggregate_rows(rows, "rolling_max:3")
    assert out[0] == pytest.approx(7.0 / 3.0)
    assert np.isnan(out[1]) and np.isnan(out[3])
    assert out[2] == 2.0
    padded = np.full((2, 8), NAN)
    padded[0, :6] = ROW
    padded[1, 3:5] = [1.0, 3.0]
    np.testing.assert_allclose(aggregate_rows(padded, "rolling_max:3"), [7.0 / 3.0, 2.0])
    np.testing.assert_allclose(aggregate_rows(padded, "ema:0.5"), [3.40625, 2.0])


def test_k_columns_are_aggregated_each_on_its_own():
    row = np.column_stack([ROW, -np.asarray(ROW)])
    row[2, 1] = NAN  # the second column skips token 2 only
    out = aggregate(row, "rolling_max:2")
    # second column scored: 0,-1,-1,0,-6 -> windows -.5,-1,-.5,-3
    np.testing.assert_allclose(out, [3.0, -0.5])
    batch = aggregate_rows([row, row[:2]], "max")
    np.testing.assert_allclose(batch, [[6.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize(
    "spec", ["max", "min", "mean", "rolling_max:1", "rolling_max:3", "ema:0.3"], ids=str
)
def test_prefix_scores_equal_aggregates_of_prefixes(spec):
    rng = np.random.default_rng(0)
    row = rng.normal(size=20)
    row[[0, 5, 6, 13]] = NAN
    got = prefix_scores(row, spec)
    want = [aggregate(row[: t + 1], spec) for t in range(len(row))]
    np.testing.assert_allclose(got, want, equal_nan=True)


def test_smoothed_rows_and_top_window():
    row = np.asarray([NAN, 0.0, 1.0, NAN, 4.0, 1.0, 0.0, 6.0])
    s = smoothed_rows(row, "rolling_max:2")
    np.testing.assert_allclose(s, [NAN, NAN, 0.5, NAN, 2.5, 2.5, 0.5, 3.0], equal_nan=True)
    assert np.nanmax(s) == aggregate(row, "rolling_max:2")
    assert top_positions(row[None], "rolling_max:2").tolist() == [7]
    assert top_window(row, "rolling_max:2") == (6, 8)
    # the window of 3 ending at 5 spans scored tokens 2, 4, 5 (position 3 unscored)
    row2 = np.asarray([NAN, 0.0, 5.0, NAN, 4.0, 3.0, 0.0, 0.0])
    assert top_window(row2, "rolling_max:3") == (2, 6)
    assert top_window(row2, "max") == (2, 3)
    assert top_window([NAN, NAN], "ema:0.5") == (-1, -1)
    short = smoothed_rows(np.asarray([1.0, NAN, 3.0]), "rolling_max:5")
    np.testing.assert_allclose(short, [NAN, NAN, 2.0], equal_nan=True)


def test_one_outlier_does_not_flag_a_window_aggregate():
    """The motivating case: one odd token among 40 low ones flags ``max`` but not windows."""
    row = np.full(40, 0.05)
    row[17] = 0.99
    assert aggregate(row, "max") == pytest.approx(0.99)
    assert aggregate(row, "rolling_max:16") == pytest.approx((15 * 0.05 + 0.99) / 16)
    assert aggregate(row, "rolling_max:16") < 0.2
    span = row.copy()
    span[20:36] = 0.9  # a real 16-token span
    assert aggregate(span, "rolling_max:16") == pytest.approx(0.9)
