"""ActivationStore (in-memory activations and their folds) and WarmupStats."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter import ActivationStore, Probe, WarmupStats


def _store(n=20, d=3):
    rng = np.random.default_rng(0)
    acts = {4: rng.normal(size=(n, d)), 2: rng.normal(size=(n, d))}
    return ActivationStore(acts, labels=np.arange(n) % 2, prompts=[f"p{i}" for i in range(n)])


def test_matrix_concatenates_layers_in_order():
    s = _store()
    assert s.layers == [2, 4] and len(s) == 20 and s.nbytes == 2 * 20 * 3 * 8
    np.testing.assert_array_equal(
        s.matrix(), np.concatenate([s.activations[2], s.activations[4]], 1)
    )
    np.testing.assert_array_equal(s.matrix(4), s.activations[4])
    with pytest.raises(KeyError, match=r"layer 7 is not in this store \(layers: \[2, 4\]\)"):
        s.matrix([7])


def test_folds_partition_the_rows_stratified():
    s = _store()
    seen = []
    for train, test in s.folds(5, random_state=0):
        assert len(train) == 16 and len(test) == 4
        assert sorted(test.labels.tolist()) == [0, 0, 1, 1]
        assert set(train.prompts).isdisjoint(test.prompts)
        i = [int(p[1:]) for p in test.prompts]
        np.testing.assert_array_equal(test.activations[2], s.activations[2][i])
        seen += test.prompts
    assert sorted(seen) == sorted(s.prompts)


@pytest.mark.parametrize(
    ("acts", "kw", "match"),
    [
        ({}, {}, "non-empty dict"),
        ({1: np.zeros((3, 2)), 2: np.zeros((4, 2))}, {}, "different numbers of prompts"),
        ({1: np.zeros(3)}, {}, r"shape \(3,\); expected \(n, hidden\)"),
        ({1: np.zeros((3, 2))}, {"labels": [0, 1]}, r"labels have shape \(2,\); expected \(3,\)"),
    ],
    ids=["empty", "ragged", "1d", "labels"],
)
def test_bad_stores(acts, kw, match):
    with pytest.raises(ValueError, match=match):
        ActivationStore(acts, **kw)


def test_warmup_records_what_it_extracted(tiny_model_path):
    p = Probe(model=tiny_model_path, layers=[1, 2], pooling="mean", inference_pooling="last_token")
    prompts = ["alpha beta", "gamma", "delta delta"]
    assert p.warmup(prompts) is p
    st = p.warmup_stats_
    assert isinstance(st, WarmupStats)
    assert (st.n_prompts, st.layers, st.poolings) == (3, [1, 2], ["last_token", "mean"])
    assert (st.cache_hits, st.extracted) == (0, 6)
    p.warmup(prompts + ["omega"])
    assert (p.warmup_stats_.cache_hits, p.warmup_stats_.extracted) == (6, 2)
