"""Cache tools: per-prompt listing and discovery, evict, model memo, logging, threads."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from lmprobe_jupyter.engine.cache import settings as cache_mod
from lmprobe_jupyter.engine.cache import tools as cache_tools
from lmprobe_jupyter.engine.cache.errors import CacheWarning
from lmprobe_jupyter.engine.cache.settings import clear_cache, get_cache
from lmprobe_jupyter.engine.cache.tools import (
    clear_model_cache,
    discover_cached,
    enable_cache_logging,
    evict,
    list_cached_prompts,
    set_max_threads,
)
from lmprobe_jupyter.engine.extraction import models
from lmprobe_jupyter.engine.extraction.extractor import Extractor

PROMPTS = ["the dog barks", "a cat sleeps", "birds sing at dawn"]


@pytest.fixture
def tiny(tiny_model_path):
    return models.load_model(tiny_model_path, device="cpu")


@pytest.fixture
def filled(tiny):
    """Layers 1 and 3 last_token for all prompts, layer 1 mean and tokens for the first."""
    ext = Extractor(tiny, progress=False)
    ext.pooled(PROMPTS, [1, 3], "last_token")
    ext.pooled(PROMPTS[:1], [1], "mean")
    cache_mod.set_cache_tokens(True)
    try:
        ext.per_token(PROMPTS[:1], [1])
    finally:
        cache_mod.set_cache_tokens(False)
    return tiny


def test_discover_cached_reports_layers_poolings_and_tokens(filled):
    first = discover_cached(filled.name, PROMPTS[0])
    assert first.model == filled.key
    assert first.layers == [1, 3]
    assert first.poolings == ["last_token", "mean", "tokens"]
    assert first.has_tokens is True
    assert sorted(first.entries) == [
        (1, "last_token"),
        (1, "mean"),
        (1, "tokens"),
        (3, "last_token"),
    ]
    second = discover_cached(filled.key, PROMPTS[1])
    assert (second.layers, second.poolings, second.has_tokens) == ([1, 3], ["last_token"], False)
    # two float32 vectors of hidden size 32
    assert second.nbytes == 2 * 32 * 4
    assert discover_cached(filled.name, "never extracted") is None
    assert discover_cached("some/other-model", PROMPTS[0]) is None


def test_list_cached_prompts_one_entry_per_prompt(filled):
    listed = list_cached_prompts(filled.name)
    assert [x.prompt for x in listed] == sorted(PROMPTS)
    by = {x.prompt: x for x in listed}
    assert by[PROMPTS[2]].entries == [(1, "last_token"), (3, "last_token")]
    assert by[PROMPTS[2]].verified is None
    n_tok = len(filled.tokenizer(PROMPTS[0])["input_ids"])
    assert by[PROMPTS[0]].nbytes == (3 * 32 + n_tok * 32) * 4
    import hashlib

    assert by[PROMPTS[1]].prompt_hash == hashlib.sha256(PROMPTS[1].encode()).hexdigest()
    clear_cache(filled.name)
    assert list_cached_prompts(filled.name) == []


def test_list_cached_prompts_verify_flags_a_damaged_shard(tiny):
    Extractor(tiny, progress=False).pooled(PROMPTS, [2], "mean")
    assert all(x.verified for x in list_cached_prompts(tiny.name, verify=True))
    cache_mod.reset_cache()  # a new process: checksums are checked again on first read
    (shard,) = Path(get_cache().path, "shards").glob("*/*.safetensors")
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match="damaged"):
        listed = list_cached_prompts(tiny.name, verify=True)
    # Entries are checked one by one: those read before the damaged one pass; the damaged
    # one fails and its shard (holding every entry) is dropped, so nothing is left.
    assert [x.verified for x in listed][-1] is False
    assert all(x.verified for x in listed[:-1])
    assert listed[-1].entries == []
    assert list_cached_prompts(tiny.name) == []


def test_evict_applies_the_limit_now(tiny):
    ext = Extractor(tiny, progress=False)
    for i, p in enumerate(PROMPTS):
        ext.pooled([p], [i], "last_token")  # three groups, three shards
    cache = get_cache()
    before = cache.info()
    assert before.shards == 3
    cache.limit_bytes = 1  # set without evicting
    assert cache.info().shards == 3
    evict()
    after = cache.info()
    assert after.shards == 1  # the most recently used shard always stays
    assert discover_cached(tiny.name, PROMPTS[2]).layers == [2]
    assert discover_cached(tiny.name, PROMPTS[0]) is None


def test_clear_model_cache_forgets_loaded_models(tiny_model_path, monkeypatch):
    # on a copy of the process's model memo: other tests' session models stay loaded
    monkeypatch.setattr(models, "_LOADED", dict(models._LOADED))
    a = models.load_model(tiny_model_path, device="cpu")
    assert models.load_model(tiny_model_path, device="cpu") is a
    count = models.LOAD_COUNT
    clear_model_cache()
    b = models.load_model(tiny_model_path, device="cpu")
    assert b is not a
    assert models.LOAD_COUNT == count + 1


@pytest.fixture
def lmprobe_logger():
    logger = logging.getLogger("lmprobe")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    enable_cache_logging(None)
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_enable_cache_logging_logs_hits_and_misses(tiny, lmprobe_logger, caplog):
    ext = Extractor(tiny, progress=False)
    enable_cache_logging("INFO")
    with caplog.at_level(logging.INFO, logger="lmprobe"):
        ext.pooled(PROMPTS, [1], "mean")
        ext.pooled(PROMPTS[:2], [1], "mean")
    msgs = [r.getMessage() for r in caplog.records if r.name == "lmprobe"]
    assert msgs[0].startswith("cache miss: 0 hits, 3 misses")
    assert "layer=1 pooling=mean" in msgs[0]
    assert msgs[1].startswith("cache store: 3 prompts")
    assert msgs[2].startswith("cache hit: 2 hits, 0 misses")
    assert all(r.levelno == logging.INFO for r in caplog.records)
    caplog.clear()
    enable_cache_logging(None)
    with caplog.at_level(logging.DEBUG, logger="lmprobe"):
        ext.pooled(PROMPTS, [1], "mean")
    assert not [r for r in caplog.records if r.name == "lmprobe"]


@pytest.mark.parametrize(
    "level, exc, match",
    [("LOUD", ValueError, "is not one of 'DEBUG'"), (2.5, TypeError, "level name, an int")],
    ids=["bad-name", "float"],
)
def test_enable_cache_logging_rejects_bad_levels(level, exc, match, lmprobe_logger):
    with pytest.raises(exc, match=match):
        enable_cache_logging(level)


def test_set_max_threads_caps_torch_and_blas(monkeypatch):
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "2")
    with threadpool_limits(limits=None):  # restores the BLAS limits on exit
        try:
            set_max_threads(1)
            assert torch.get_num_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpool_info())
            assert cache_tools.os.environ["OMP_NUM_THREADS"] == "1"
        finally:
            torch.set_num_threads(before)
    with pytest.raises(ValueError, match="positive int"):
        set_max_threads(0)


def test_ledger_failure_does_not_break_stores(tiny, monkeypatch):
    from lmprobe_jupyter.engine.cache import _events as _cache_events

    def broken(path):
        import sqlite3

        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(_cache_events, "ledger", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = Extractor(tiny, progress=False).pooled(PROMPTS, [1], "mean")
    again = get_cache().lookup(tiny.key, PROMPTS, 1, "mean")
    np.testing.assert_array_equal(np.stack(again), got[1])
