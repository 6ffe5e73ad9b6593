"""Sequence probes: learning on planted tokens, exact contributions, state, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmprobe_jupyter.engine.extraction.windows import aggregate_rows
from lmprobe_jupyter.engine.probes.sequence_base import ArrayTokenSource, CallableTokenSource
from lmprobe_jupyter.engine.probes.sequence_probes import (
    AttentionProbe,
    MILProbe,
    MultiMaxProbe,
    make_sequence_probe,
    rolling_max_torch,
    sequence_probe_from_state,
)

D = 12


def planted(n=120, seed=0, lo=20, hi=50, strength=5.0, span=1):
    """Noise sequences; positives carry ``direction`` on ``span`` tokens at a random place.

    Returns sequences, labels, the planted position per prompt (-1 for negatives), masks
    (position 0 unscored, like the attention sink, and given a huge norm to prove it).
    """
    rng = np.random.default_rng(seed)
    direction = np.zeros(D)
    direction[0] = strength
    seqs, ys, where, masks = [], [], [], []
    for i in range(n):
        L = int(rng.integers(lo, hi))
        x = rng.normal(size=(L, D)).astype(np.float32)
        x[0] = 50.0  # a sink-like outlier that is masked out
        y = i % 2
        pos = -1
        if y:
            pos = int(rng.integers(1, L - span + 1))
            x[pos : pos + span] += direction
        m = np.ones(L, dtype=bool)
        m[0] = False
        seqs.append(x)
        ys.append(y)
        where.append(pos)
        masks.append(m)
    return seqs, np.asarray(ys), np.asarray(where), masks


FAST = dict(max_epochs=60, patience=8, learning_rate=0.05, random_state=0)

PROBES = [
    pytest.param(lambda: MILProbe(window=1, **FAST), id="mil-w1"),
    pytest.param(lambda: MILProbe(window=3, **FAST), id="mil-w3"),
    pytest.param(lambda: AttentionProbe(n_heads=2, window=None, **FAST), id="attention"),
    pytest.param(lambda: AttentionProbe(n_heads=2, window=4, **FAST), id="attention-w4"),
    pytest.param(lambda: MultiMaxProbe(n_heads=3, **FAST), id="multimax"),
]


@pytest.fixture(scope="module")
def data():
    train = planted(160, seed=0, span=3)
    test = planted(80, seed=1, span=3)
    return train, test


@pytest.mark.parametrize("factory", PROBES)
def test_learns_and_localizes_the_planted_span(factory, data):
    (xs, y, _, ms), (xt, yt, where, mt) = data
    probe = factory().fit(xs, y, mask=ms)
    acc = float((probe.predict(xt, mask=mt) == yt).mean())
    # Chance is 0.5; the planted span (3 tokens at +5 sd) is obvious to a token-level model.
    assert acc >= 0.9, acc
    rows = probe.token_scores(xt, mask=mt)
    pos = yt == 1
    top = np.asarray([int(np.nanargmax(r)) for r in rows])
    inside = [(w <= t < w + 3) for t, w in zip(top[pos], where[pos])]
    assert np.mean(inside) >= 0.9
    # the masked outlier at position 0 never scores
    assert all(np.isnan(r[0]) for r in rows)


@pytest.mark.parametrize("factory", PROBES)
def test_contributions_reproduce_the_prompt_logit(factory, data):
    (xs, y, _, ms), (xt, _, _, mt) = data
    probe = factory().fit(xs[:60], y[:60], mask=ms[:60])
    z = probe.decision_function(xt, mask=mt)
    rows = probe.token_scores(xt, mask=mt)
    np.testing.assert_allclose(probe.score_from_token_scores(rows), z, atol=1e-5)
    p = probe.predict_proba(xt, mask=mt)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-z)), atol=1e-12)
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_contribution_rules_by_hand(data):
    (xs, y, _, ms), (xt, _, _, mt) = data
    mil = MILProbe(window=4, **FAST).fit(xs[:40], y[:40], mask=ms[:40])
    rows = mil.token_scores(xt[:5], mask=mt[:5])
    # MIL: token logits are w . standardized(x) + b; the prompt is rolling_max:4 of them
    x0 = (xt[0].astype(np.float64) - mil.mean_) / mil.scale_
    z0 = x0 @ mil.params_["w"] + mil.params_["b"][0]
    np.testing.assert_allclose(rows[0][1:], z0[1:], atol=1e-10)
    np.testing.assert_allclose(
        mil.decision_function(xt[:5], mask=mt[:5]), aggregate_rows(rows, "rolling_max:4")
    )
    att = AttentionProbe(n_heads=2, window=None, **FAST).fit(xs[:40], y[:40], mask=ms[:40])
    r = att.token_scores(xt[:1], mask=mt[:1])[0]
    x0 = (xt[0].astype(np.float64) - att.mean_) / att.scale_
    a = x0[1:] @ att.params_["q"]
    alpha = np.exp(a - a.max(0)) / np.exp(a - a.max(0)).sum(0)
    np.testing.assert_allclose(r[1:], (alpha * (x0[1:] @ att.params_["u"])).sum(1), atol=1e-10)
    mm = MultiMaxProbe(n_heads=3, **FAST).fit(xs[:40], y[:40], mask=ms[:40])
    r = mm.token_scores(xt[:1], mask=mt[:1])[0]
    x0 = (xt[0].astype(np.float64) - mm.mean_) / mm.scale_
    s = x0[1:] @ mm.params_["w"] + mm.params_["c"]
    assert np.count_nonzero(r[1:]) <= 3  # at most one token per head
    np.testing.assert_allclose(np.nansum(r), s.max(0) @ mm.params_["beta"], atol=1e-10)


def test_attention_defaults_read_windows_with_a_strong_penalty():
    """Measured best inside long text (bench/token_defaults.py): a softmax within windows
    of 16 tokens, l2=0.1; the other sequence probes keep l2=1e-3."""
    att = AttentionProbe()
    assert (att.window, att.l2, att.n_heads) == (16, 0.1, 4)
    assert MultiMaxProbe().l2 == MILProbe().l2 == 1e-3


def test_rolling_max_torch_matches_windows():
    import torch

    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 9))
    m = rng.random((6, 9)) > 0.3
    m[5] = False
    rows = np.where(m, z, np.nan)
    for k in (1, 2, 4, 20):
        got = rolling_max_torch(torch.from_numpy(z), torch.from_numpy(m), k).numpy()
        want = np.nan_to_num(aggregate_rows(rows, f"rolling_max:{k}"), nan=0.0)
        np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("factory", PROBES)
def test_state_round_trip_is_identical_and_json(factory, data):
    (xs, y, _, ms), (xt, _, _, mt) = data
    probe = factory().fit(xs[:40], y[:40], mask=ms[:40])
    arrays, meta = probe.get_state()
    meta = json.loads(json.dumps(meta))
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    back = sequence_probe_from_state({k: v.copy() for k, v in arrays.items()}, meta)
    assert type(back) is type(probe) and back.get_params() == probe.get_params()
    np.testing.assert_array_equal(
        back.decision_function(xt, mask=mt), probe.decision_function(xt, mask=mt)
    )
    for a, b in zip(back.token_scores(xt, mask=mt), probe.token_scores(xt, mask=mt)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("factory", PROBES)
def test_deterministic_with_random_state(factory, data):
    (xs, y, _, ms), (xt, _, _, mt) = data
    a = factory().fit(xs[:50], y[:50], mask=ms[:50])
    b = factory().fit(xs[:50], y[:50], mask=ms[:50])
    np.testing.assert_array_equal(
        a.decision_function(xt, mask=mt), b.decision_function(xt, mask=mt)
    )
    c = factory().set_params(random_state=7).fit(xs[:50], y[:50], mask=ms[:50])
    assert not np.array_equal(a.decision_function(xt, mask=mt), c.decision_function(xt, mask=mt))


def test_padded_array_float16_and_lazy_source_give_the_same_probe(data):
    (xs, y, _, ms), (xt, _, _, mt) = data
    xs16 = [x.astype(np.float16) for x in xs[:50]]
    width = max(len(x) for x in xs16)
    padded = np.zeros((50, width, D), dtype=np.float16)
    mask = np.zeros((50, width), dtype=bool)
    for i, (x, m) in enumerate(zip(xs16, ms[:50])):
        padded[i, : len(x)] = x
        mask[i, : len(x)] = m
    calls = []

    def fetch(idx):
        calls.append(len(idx))
        return [(xs16[i], ms[i]) for i in idx]

    a = MILProbe(window=3, batch_size=8, **FAST).fit(xs16, y[:50], mask=ms[:50])
    b = MILProbe(window=3, batch_size=8, **FAST).fit(padded, y[:50], mask=mask)
    c = MILProbe(window=3, batch_size=8, **FAST).fit(CallableTokenSource(50, fetch), y[:50])
    za = a.decision_function(xt, mask=mt)
    # Padding changes only the matmul shapes (float32 rounding), never which tokens count.
    np.testing.assert_allclose(za, b.decision_function(xt, mask=mt), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(za, c.decision_function(ArrayTokenSource(xt, mt)))
    assert max(calls) <= 8  # minibatches only: never the whole training set at once


def test_class_weight_and_labels(data):
    (xs, y, _, ms), _ = data
    labels = np.where(y == 1, "harmful", "benign")
    probe = MILProbe(window=2, **FAST).fit(xs[:40], labels[:40], mask=ms[:40])
    assert list(probe.classes_) == ["benign", "harmful"]
    assert set(probe.predict(xs[:40], mask=ms[:40])) <= {"benign", "harmful"}
    arrays, meta = probe.get_state()
    assert list(sequence_probe_from_state(arrays, meta).classes_) == ["benign", "harmful"]
    MILProbe(window=2, class_weight={"harmful": 2.0}, **FAST).fit(xs[:40], labels[:40], ms[:40])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: MILProbe(window=0).fit([np.zeros((3, 2))] * 2, [0, 1]), r"window=0 must be"),
        (lambda: AttentionProbe(n_heads=0).fit([np.zeros((3, 2))] * 2, [0, 1]), r"n_heads=0"),
        (lambda: MILProbe(l2=-1).fit([np.zeros((3, 2))] * 2, [0, 1]), r"l2=-1 must be"),
        (lambda: MILProbe().fit([np.zeros((3, 2))] * 3, [0, 1, 2]), r"binary probe; y has 3"),
        (lambda: MILProbe().fit([np.zeros((3, 2))] * 2, [0]), r"got 1 labels for 2 prompts"),
        (lambda: MILProbe().fit(np.zeros((2, 3)), [0, 1]), r"not \(n, seq, hidden\)"),
        (
            lambda: MILProbe().fit([np.zeros((3, 2))] * 2, [0, 1], mask=[np.ones(2)] * 2),
            r"mask #0 has shape \(2,\); prompt #0 has 3 tokens",
        ),
        (
            lambda: MILProbe(class_weight="even").fit([np.zeros((3, 2))] * 2, [0, 1]),
            r"class_weight='even' is not one of",
        ),
        (lambda: make_sequence_probe("lstm"), r"'lstm' is not one of 'mil', 'attention'"),
        (lambda: make_sequence_probe("mil", heads=2), r"bad classifier_kwargs for 'mil'"),
    ],
    ids=["window", "heads", "l2", "3-classes", "n-labels", "2d", "mask", "cw", "kind", "kwargs"],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
