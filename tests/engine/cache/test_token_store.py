"""The per-token store: sequence probes extract to disk once and read minibatches back."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter.engine.cache import settings as cache_mod
from lmprobe_jupyter.engine.cache import token_store
from lmprobe_jupyter.engine.cache.errors import CacheWarning
from lmprobe_jupyter.engine.cache.keys import group_hash
from lmprobe_jupyter.engine.cache.token_store import (
    TOKENS_KEY,
    StoredTokenSource,
    TokenStore,
    chunk_plan,
)
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.extraction.runtime import ModelRuntime
from lmprobe_jupyter.engine.probes.sequence_base import ArrayTokenSource
from lmprobe_jupyter.engine.probes.sequence_probes import MILProbe

POS = [
    "The dog barked at the postman this morning.",
    "A dog ran home through the rain.",
    "My dog is happy when we walk by the river.",
    "Dogs love bones and long walks.",
]
NEG = [
    "The cat purred on the warm windowsill.",
    "A cat sat down next to the fire.",
    "My cat is sleepy after dinner.",
    "Cats love fish and quiet rooms.",
]
TEXTS = POS + NEG
LABELS = np.array([1] * 4 + [0] * 4)
FEW = {"max_epochs": 4, "validation_fraction": 0.0}


def runtime(path, dtype="float32"):
    return ModelRuntime(path, device="cpu", dtype=dtype, progress=False)


def shard_files(cache_dir):
    return sorted((cache_dir / "activations" / "shards").rglob("*.safetensors"))


def token_shards(cache_dir, model_key, layer):
    group = group_hash(model_key, layer, TOKENS_KEY)
    return sorted((cache_dir / "activations" / "shards" / group).glob("*.safetensors"))


def take_all(source):
    return source.take(range(len(source)))


def test_store_round_trip_equals_direct_extraction(tiny_model_path):
    rt = runtime(tiny_model_path)
    direct, keep = rt.token_features(TEXTS, [1, 3], score_special_tokens=False)
    got = rt.token_source(TEXTS, [1, 3], score_special_tokens=False)
    assert isinstance(got.source, StoredTokenSource)
    assert (got.hits, got.extracted) == (0, len(TEXTS))
    pairs = take_all(got.source)
    for (a, m), t, k in zip(pairs, direct, keep):
        want = np.concatenate([t.acts[1], t.acts[3]], axis=1)  # layers side by side
        assert a.dtype == np.float32 and a.shape == want.shape == (len(t.tokens), 64)
        # float16 storage: relative rounding error at most 2**-11
        np.testing.assert_allclose(a, want, rtol=2**-10, atol=1e-6)
        assert not np.array_equal(a, want)  # it really is stored as float16
        np.testing.assert_array_equal(m, k)
        assert not m[0]  # the attention sink is not scored
    # a second call reads the same numbers from disk, running nothing
    before = Extractor.forward_calls
    again = rt.token_source(TEXTS, [1, 3], score_special_tokens=False)
    assert Extractor.forward_calls == before
    assert (again.hits, again.extracted) == (len(TEXTS), 0)
    for (a, _), (b, _) in zip(pairs, take_all(again.source)):
        np.testing.assert_array_equal(a, b)
    pieces = again.pieces()
    assert [p.text for p in pieces] == TEXTS
    assert [len(p.tokens) for p in pieces] == [len(t.tokens) for t in direct]


def test_second_predict_and_token_scores_run_no_forward_pass(tiny_probe):
    probe = tiny_probe(classifier="attention", classifier_kwargs={"n_heads": 2, **FEW})
    probe.fit(POS, NEG)
    before = Extractor.forward_calls
    p_train = probe.predict_proba(TEXTS)  # the training prompts: stored by fit
    assert Extractor.forward_calls == before
    new = ["The dog chased a ball.", "The cat ignored the ball."]
    p_new = probe.predict_proba(new)
    assert Extractor.forward_calls > before
    before = Extractor.forward_calls
    np.testing.assert_array_equal(probe.predict_proba(new), p_new)
    rows = probe.token_scores(new + TEXTS)
    assert Extractor.forward_calls == before
    assert [r.text for r in rows] == new + TEXTS
    assert all(len(r.tokens) == len(r.scores) for r in rows)
    np.testing.assert_array_equal(probe.predict_proba(TEXTS), p_train)
    # a refit of the same prompts reads them all from the store
    refit = tiny_probe(classifier="attention", classifier_kwargs={"n_heads": 2, **FEW})
    refit.fit(POS, NEG)
    assert Extractor.forward_calls == before
    assert refit.train_cache_hits_ == len(TEXTS)
    np.testing.assert_array_equal(refit.predict_proba(TEXTS), p_train)


def test_warmup_fills_the_per_token_store_a_sequence_probe_trains_from(tiny_probe):
    probe = tiny_probe(classifier="mil", classifier_kwargs={"window": 2, **FEW})
    probe.warmup(TEXTS)
    stats = probe.warmup_stats_
    assert (stats.poolings, stats.cache_hits, stats.extracted) == (["tokens"], 0, len(TEXTS))
    before = Extractor.forward_calls
    probe.fit(POS, NEG)  # every prompt is read from the store: no forward pass
    assert Extractor.forward_calls == before and probe.train_cache_hits_ == len(TEXTS)
    again = tiny_probe(classifier="mil", classifier_kwargs={"window": 2, **FEW}).warmup(TEXTS)
    assert (again.warmup_stats_.cache_hits, again.warmup_stats_.extracted) == (len(TEXTS), 0)


def test_corrupt_shard_is_detected_and_re_extracted(tiny_probe, cache_dir):
    probe = tiny_probe(classifier="mil", classifier_kwargs={"window": 2, **FEW}).fit(POS, NEG)
    want = probe.predict_proba(TEXTS)
    files = token_shards(cache_dir, probe.runtime.loaded.key, 2)
    assert files
    for f in files:  # flip bytes in the data section (the header stays readable)
        raw = bytearray(f.read_bytes())
        for i in range(len(raw) - 64, len(raw), 2):
            raw[i] ^= 0xFF
        f.write_bytes(bytes(raw))
    cache_mod.reset_cache()  # as a new process would: nothing verified yet
    before = Extractor.forward_calls
    with pytest.warns(CacheWarning, match="damaged"):
        got = probe.predict_proba(TEXTS)
    assert Extractor.forward_calls > before  # re-extracted, not trusted
    np.testing.assert_allclose(got, want, atol=1e-6)
    before = Extractor.forward_calls
    np.testing.assert_array_equal(probe.predict_proba(TEXTS), got)  # and stored again
    assert Extractor.forward_calls == before


class Killed(BaseException):
    """Stands for the process dying in the middle of writing a shard."""


def test_killed_write_leaves_no_partial_file(tiny_model_path, cache_dir, monkeypatch):
    from lmprobe_jupyter.engine.cache import _shard

    rt = runtime(tiny_model_path)
    real_fsync = _shard.os.fsync

    def die(fd):
        raise Killed

    monkeypatch.setattr(_shard.os, "fsync", die)  # the file is written, not yet durable
    with pytest.raises(Killed):
        rt.token_source(TEXTS, [2])
    leftovers = [p for p in (cache_dir / "activations").rglob("*") if p.is_file()]
    assert not [p for p in leftovers if p.suffix == ".safetensors" or "tmp" in p.name]
    store = TokenStore(cache_mod.get_cache(), rt.loaded.key, [2])
    assert store.held(TEXTS) == [False] * len(TEXTS)
    monkeypatch.setattr(_shard.os, "fsync", real_fsync)
    got = rt.token_source(TEXTS, [2])
    assert got.extracted == len(TEXTS)
    assert store.held(TEXTS) == [True] * len(TEXTS)
    assert len(token_shards(cache_dir, rt.loaded.key, 2)) >= 1


def test_training_reads_minibatches_and_matches_the_in_memory_fit(tiny_probe, store_reads):
    sizes = store_reads
    kwargs = {"window": 2, "batch_size": 3, "max_epochs": 5, "validation_fraction": 0.25}
    probe = tiny_probe(classifier="mil", classifier_kwargs=kwargs).fit(POS, NEG)
    assert sizes and max(sizes) <= 3  # never more than one minibatch of prompts per read
    assert sum(sizes) > 5 * len(TEXTS) * 0.75  # every epoch read its prompts again
    # the same data held in memory, the same random_state: the same estimator
    inputs = probe.runtime.token_source(TEXTS, [2], score_special_tokens=False)
    X, masks = map(list, zip(*inputs.source.take(range(len(TEXTS)))))
    ref = MILProbe(**probe.classifier_.get_params()).fit(ArrayTokenSource(X, masks), LABELS)
    assert ref.loss_curve_ == probe.classifier_.loss_curve_
    for k, v in ref.params_.items():
        np.testing.assert_array_equal(probe.classifier_.params_[k], v)


def test_extraction_writes_chunk_by_chunk(tiny_model_path, monkeypatch):
    calls = []
    real = Extractor.per_token

    def spy(self, prompts, layers):
        out = real(self, prompts, layers)
        calls.append([len(t.tokens) for t in out])
        return out

    monkeypatch.setattr(Extractor, "per_token", spy)
    # room for 40 tokens of one 32-wide layer per chunk (these prompts have 8-13)
    monkeypatch.setattr(token_store, "CHUNK_BYTES", 40 * 32 * 4)
    rt = runtime(tiny_model_path)
    got = rt.token_source(TEXTS, [2])
    assert len(calls) >= 2 and sum(map(len, calls)) == len(TEXTS)
    assert all(sum(c) <= 40 for c in calls)
    assert sorted(sum(calls, []), reverse=True) == sum(calls, [])  # longest first
    assert got.extracted == len(TEXTS)
    assert len(take_all(got.source)) == len(TEXTS)


@pytest.mark.parametrize(
    ("other", "same"),
    [
        ({"dtype": "float32"}, True),
        ({"dtype": "bfloat16"}, False),
        ({"seed": 1}, False),
    ],
    ids=["same-model", "other-dtype", "other-weights"],
)
def test_store_key_changes_with_model_and_dtype(
    tiny_model_path, bundled_dir, tmp_path, other, same
):
    from lmtest_helpers import make_tiny_llama

    rt = runtime(tiny_model_path)
    rt.token_source(TEXTS, [2])
    if "seed" in other:
        path = str(make_tiny_llama(tmp_path / "other", bundled_dir, seed=other["seed"]))
        rt2 = runtime(path)
    else:
        rt2 = runtime(tiny_model_path, dtype=other["dtype"])
    got = rt2.token_source(TEXTS, [2])
    assert got.hits == (len(TEXTS) if same else 0)
    assert (rt2.loaded.key == rt.loaded.key) is same


def test_cache_off_holds_tokens_in_memory_and_writes_nothing(tiny_probe, cache_dir):
    cache_mod.set_cache_enabled(False)
    probe = tiny_probe(classifier="attention", classifier_kwargs=dict(FEW)).fit(POS, NEG)
    inputs = probe.runtime.token_source(TEXTS, [2])
    assert isinstance(inputs.source, ArrayTokenSource)
    assert shard_files(cache_dir) == []
    before = Extractor.forward_calls
    probe.predict_proba(TEXTS)
    assert Extractor.forward_calls > before  # nothing cached: every call runs the model


def test_lost_entries_are_extracted_again_with_a_warning(tiny_model_path):
    rt = runtime(tiny_model_path)
    got = rt.token_source(TEXTS, [2])
    first = take_all(got.source)
    cache_mod.clear_cache()  # e.g. evicted by set_cache_limit while training
    with pytest.warns(CacheWarning, match="extracted again"):
        again = take_all(got.source)
    assert got.source.refetched == len(TEXTS)
    for (a, _), (b, _) in zip(first, again):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_float16_overflow_is_stored_as_float32():
    store = TokenStore(cache_mod.get_cache(), "m@x", [0])
    big = np.array([[1e5, 1.0], [0.5, -7e4]], dtype=np.float32)
    small = np.array([[0.1, 2.0]], dtype=np.float32)
    written = store.write(["big", "small"], [{0: big}, {0: small}])
    read = store.read(["big", "small"])
    np.testing.assert_array_equal(read[0][0], big)  # exact: not rounded to inf
    np.testing.assert_array_equal(written[0][0], big)
    np.testing.assert_array_equal(read[1][0], small.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(written[1][0], read[1][0])
    assert store.read(["small"], lengths=[2]) == [None]  # a length mismatch is not trusted
    assert store.read(["never stored"]) == [None]


@pytest.mark.parametrize(
    ("lengths", "budget", "want"),
    [
        ([5, 100, 50], 10**9, [[1, 2, 0]]),
        ([5, 100, 50], 120 * 4, [[1], [2, 0]]),
        ([10, 10, 10, 10], 20 * 4, [[0, 1], [2, 3]]),
        ([], 100, []),
    ],
    ids=["one-chunk", "longest-first", "pairs", "empty"],
)
def test_chunk_plan_sorts_longest_first_within_budget(lengths, budget, want):
    assert chunk_plan(lengths, 1, budget) == want


def test_cross_validate_refits_a_sequence_probe_per_fold_from_the_store(tiny_probe):
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    probe = tiny_probe(classifier="mil", classifier_kwargs={"window": 2, **FEW}, random_state=1)
    probe.fit(POS, NEG)
    before = Extractor.forward_calls
    got = probe.cross_validate(cv=3)
    assert Extractor.forward_calls == before  # the folds read the stored tokens
    rt = probe.runtime
    prepared = rt.prepare(TEXTS, chat_template=probe.chat_template)
    pairs = rt.token_source(prepared, [2], score_special_tokens=False).source.take(range(8))
    X, keep = [a for a, _ in pairs], [m for _, m in pairs]
    y = np.asarray([1] * len(POS) + [0] * len(NEG))
    accs = []
    for tr, te in StratifiedKFold(3, shuffle=True, random_state=1).split(y, y):
        est = clone(probe.classifier_).fit([X[i] for i in tr], y[tr], mask=[keep[i] for i in tr])
        accs.append(np.mean(est.predict([X[i] for i in te], mask=[keep[i] for i in te]) == y[te]))
    assert got == pytest.approx(np.mean(accs)) and probe.cv_score_ == got
