"""Activation cache: keys, dtypes, LRU limit, compaction, faults, several processes."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sqlite3
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from lmprobe_jupyter.engine.cache import settings as C
from lmprobe_jupyter.engine.cache.errors import CacheReadOnlyError, CacheWarning
from lmprobe_jupyter.engine.cache.index import INDEX_NAME
from lmprobe_jupyter.engine.cache.keys import entry_keys, group_hash
from lmprobe_jupyter.engine.cache.store import ActivationCache

HIDDEN = 64


def vec(prompt: str, layer: int = 0, n: int = HIDDEN) -> np.ndarray:
    """A deterministic activation for a prompt (so any process can check values)."""
    seed = int.from_bytes(entry_keys("check", layer, "p", [prompt])[0][:4], "little")
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def shard_files(root: Path) -> list[Path]:
    return sorted((root / "shards").glob("*/*.safetensors"))


# ---------------------------------------------------------------- basics and keys
def test_default_dir_is_read_from_env_at_get_cache_time(cache_dir, tmp_path, monkeypatch):
    assert C.get_cache().path == cache_dir / "activations"
    other = tmp_path / "elsewhere"
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(other))
    assert C.get_cache().path == cache_dir / "activations"  # the singleton keeps its dir
    C.reset_cache()
    assert C.get_cache().path == other / "activations"


def test_roundtrip_exact_float32_and_misses_are_none():
    c = C.get_cache()
    prompts = [f"prompt {i}" for i in range(20)]
    arrays = [vec(p) for p in prompts]
    c.store("m@1", prompts, 3, "mean", arrays)
    got = c.lookup("m@1", ["unknown"] + prompts + [prompts[0]], 3, "mean")
    assert got[0] is None
    for a, b in zip(got[1:], arrays + [arrays[0]]):
        assert a.dtype == np.float32 and a.flags.writeable
        np.testing.assert_array_equal(a, b)
    assert got[1] is not got[-1]  # a duplicate prompt gets its own copy
    info = C.cache_info()
    assert (info.entries, info.hits, info.misses) == (20, 21, 1)


def test_variable_shaped_per_token_entries():
    c = C.get_cache()
    arrays = [np.arange(n * 8, dtype=np.float32).reshape(n, 8) for n in (1, 5, 17)]
    c.store("m@1", ["a", "bb", "ccc"], 2, "tokens", arrays)
    got = c.lookup("m@1", ["ccc", "a", "bb"], 2, "tokens")
    assert [g.shape for g in got] == [(17, 8), (1, 8), (5, 8)]
    np.testing.assert_array_equal(got[0], arrays[2])


@pytest.mark.parametrize(
    "other",
    [("m@2", 3, "mean"), ("other@1", 3, "mean"), ("m@1", 4, "mean"), ("m@1", 3, "last_token")],
    ids=["fingerprint", "model", "layer", "pooling"],
)
def test_keys_differ_for_models_layers_poolings(other):
    c = C.get_cache()
    c.store("m@1", ["p"], 3, "mean", [np.ones(4)])
    assert c.lookup(*other[:1], ["p"], *other[1:]) == [None]
    c.store(other[0], ["p"], other[1], other[2], [np.full(4, 2.0)])
    np.testing.assert_array_equal(c.lookup("m@1", ["p"], 3, "mean")[0], np.ones(4))
    np.testing.assert_array_equal(c.lookup(other[0], ["p"], other[1], other[2])[0], 2.0)
    assert (
        len(
            {
                entry_keys("m@1", 3, "mean", ["p"])[0],
                entry_keys(*other[:1], other[1], other[2], ["p"])[0],
            }
        )
        == 2
    )


def test_store_skips_prompts_already_cached():
    c = C.get_cache()
    c.store("m", ["a", "b"], 0, "mean", [np.ones(4), np.ones(4)])
    c.store("m", ["a", "b"], 0, "mean", [np.zeros(4), np.zeros(4)])
    assert C.cache_info().shards == 1
    np.testing.assert_array_equal(c.lookup("m", ["a"], 0, "mean")[0], np.ones(4))


def test_store_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 prompts but 1 arrays"):
        C.get_cache().store("m", ["a", "b"], 0, "mean", [np.ones(3)])


def test_disabled_cache_neither_stores_nor_hits():
    C.set_cache_enabled(False)
    c = C.get_cache()
    c.store("m", ["a"], 0, "mean", [np.ones(3)])
    assert c.lookup("m", ["a"], 0, "mean") == [None]
    C.set_cache_enabled(True)
    assert c.lookup("m", ["a"], 0, "mean") == [None] and C.cache_info().entries == 0


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype,tol", [("float16", 1e-3), ("bfloat16", 8e-3)], ids=str)
def test_half_precision_halves_bytes_and_returns_float32(tmp_path, dtype, tol):
    prompts = [f"p{i}" for i in range(200)]
    arrays = [vec(p, n=576) for p in prompts]
    full = ActivationCache(tmp_path / "f32")
    half = ActivationCache(tmp_path / dtype, dtype=dtype)
    full.store("m", prompts, 0, "mean", arrays)
    half.store("m", prompts, 0, "mean", arrays)
    f, h = full.info(), half.info()
    assert h.data_bytes * 2 == f.data_bytes == 200 * 576 * 4
    assert h.bytes / f.bytes < 0.55  # headers included
    got = half.lookup("m", prompts, 0, "mean")
    for g, a in zip(got, arrays):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, a, rtol=tol, atol=tol)


def test_set_cache_dtype_applies_to_new_entries_only():
    c = C.get_cache()
    c.store("m", ["old"], 0, "mean", [np.full(100, 1 / 3)])
    C.set_cache_dtype("float16")
    c.store("m", ["new"], 0, "mean", [np.full(100, 1 / 3)])
    old, new = c.lookup("m", ["old", "new"], 0, "mean")
    assert old[0] == np.float32(1 / 3) and new[0] == np.float32(np.float16(1 / 3))
    assert C.cache_info().dtype == "float16"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_as_stored_matches_what_lookup_returns(dtype):
    C.set_cache_dtype(dtype)
    c = C.get_cache()
    arrays = [vec("a"), np.linspace(-3, 3, 12).reshape(3, 4)]
    c.store("m", ["a", "b"], 0, "mean", arrays)
    for want, got in zip(c.as_stored(arrays), c.lookup("m", ["a", "b"], 0, "mean")):
        assert want.dtype == np.float32
        np.testing.assert_array_equal(want, got)


def test_bad_settings_name_the_valid_choices(tmp_path):
    with pytest.raises(ValueError, match=r"'float8'.*'float32', 'float16', 'bfloat16'"):
        C.set_cache_dtype("float8")
    with pytest.raises(ValueError, match="gb=-1"):
        C.set_cache_limit(-1)
    with pytest.raises(ValueError, match="neither a local directory nor an 's3://' URL"):
        C.set_cache_backend("http://example.com/x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        C.set_cache_backend(tmp_path / "f")


def test_environment_defaults_for_dtype_and_limit(monkeypatch):
    monkeypatch.setenv("LMPROBE_CACHE_DTYPE", "bfloat16")
    monkeypatch.setenv("LMPROBE_CACHE_LIMIT_GB", "0.5")
    C.reset_cache()
    info = C.cache_info()
    assert (info.dtype, info.limit_bytes) == ("bfloat16", 500_000_000)
    C.set_cache_limit(None)
    assert C.cache_info().limit_bytes is None
    monkeypatch.setenv("LMPROBE_CACHE_LIMIT_GB", "lots")
    C.reset_cache()
    with pytest.raises(ValueError, match="LMPROBE_CACHE_LIMIT_GB='lots'"):
        C.get_cache()


def test_s3_url_needs_a_bucket():
    with pytest.raises(ValueError, match="'s3:///x' is not an 's3://bucket/prefix' URL"):
        C.set_cache_backend("s3:///x")


def test_local_backend_directory(tmp_path):
    C.set_cache_backend(tmp_path / "mine")
    C.get_cache().store("m", ["a"], 0, "mean", [np.ones(2)])
    assert C.cache_info().path == str(tmp_path / "mine")
    assert len(shard_files(tmp_path / "mine")) == 1
    C.set_cache_backend(None)
    assert C.get_cache().lookup("m", ["a"], 0, "mean") == [None]


# ---------------------------------------------------------------- LRU limit
def test_limit_evicts_least_recently_used_shard(tmp_path):
    c = ActivationCache(tmp_path / "c")
    c.touch_interval = 0.0
    # one store per layer: separate groups, so compaction never merges them
    for layer, name in enumerate("ABC"):
        c.store("m", [f"{name}{i}" for i in range(10)], layer, "mean", [np.ones(256)] * 10)
    size = c.info().bytes // 3
    c.lookup("m", ["A0"], 0, "mean")  # A is now more recent than B and C
    c.set_limit(2 * size + size // 2)  # room for two shards
    assert c.lookup("m", ["B0"], 1, "mean") == [None]  # B was least recently used
    assert c.lookup("m", ["A0"], 0, "mean")[0] is not None
    assert c.lookup("m", ["C0"], 2, "mean")[0] is not None
    c.store("m", [f"D{i}" for i in range(10)], 3, "mean", [np.ones(256)] * 10)
    # A was read before C in the lines above, so now A is the least recently used
    assert c.lookup("m", ["A0"], 0, "mean") == [None]
    assert c.lookup("m", ["C0"], 2, "mean")[0] is not None
    assert c.lookup("m", ["D0"], 3, "mean")[0] is not None
    assert c.info().bytes <= 2 * size + size // 2


def test_limit_never_exceeded_by_more_than_one_shard(cache_dir):
    C.set_cache_limit(0.0002)  # 200 kB
    limit = 200_000
    c = C.get_cache()
    rng = np.random.default_rng(0)
    biggest = 0
    for i in range(60):
        n = int(rng.integers(1, 40))
        layer = int(rng.integers(0, 4))
        c.store("m", [f"{i}-{j}" for j in range(n)], layer, "mean", [np.ones(300)] * n)
        if i % 3 == 0:
            c.lookup("m", [f"{i // 2}-0"], layer, "mean")
        sizes = [p.stat().st_size for p in shard_files(c.path)]
        biggest = max([biggest, *sizes])
        info = c.info()
        assert info.bytes == sum(sizes)
        assert info.bytes <= limit + max(sizes)
    assert biggest < limit and info.bytes <= limit


def test_a_single_shard_bigger_than_the_limit_stays_until_the_next_store():
    C.set_cache_limit(0.00001)  # 10 kB
    c = C.get_cache()
    c.store("m", ["big"], 0, "mean", [np.ones(10_000)])
    assert c.lookup("m", ["big"], 0, "mean")[0] is not None
    c.store("m", ["next"], 1, "mean", [np.ones(10)])
    assert c.lookup("m", ["big"], 0, "mean") == [None]


# ---------------------------------------------------------------- compaction
def test_many_small_stores_are_compacted_into_few_files(tmp_path):
    c = ActivationCache(tmp_path / "c")
    for i in range(100):
        c.store(
            "m", [f"p{i}-{j}" for j in range(3)], 0, "mean", [vec(f"p{i}-{j}") for j in range(3)]
        )
    files = shard_files(c.path)
    assert len(files) < 2 * c.COMPACT_FANIN
    info = c.info()
    assert info.entries == 300 and info.shards == len(files)
    prompts = [f"p{i}-{j}" for i in range(100) for j in range(3)]
    for p, g in zip(prompts, c.lookup("m", prompts, 0, "mean")):
        np.testing.assert_array_equal(g, vec(p))


def test_reader_retries_when_another_process_merges_its_shards(tmp_path):
    reader, writer = ActivationCache(tmp_path / "c"), ActivationCache(tmp_path / "c")
    for i in range(7):
        writer.store("m", [f"p{i}"], 0, "mean", [vec(f"p{i}")])
    real_rows = reader._rows
    calls = []

    def rows_then_compact(keys):
        out = real_rows(keys)
        if not calls:  # after the reader found the old shards, merge them away
            writer.store("m", ["p7"], 0, "mean", [vec("p7")])
        calls.append(len(out))
        return out

    reader._rows = rows_then_compact
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = reader.lookup("m", [f"p{i}" for i in range(7)], 0, "mean")
    assert len(shard_files(tmp_path / "c")) == 1 and calls == [7, 7]
    for i, g in enumerate(got):
        np.testing.assert_array_equal(g, vec(f"p{i}"))


# ---------------------------------------------------------------- damaged files
def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 7)


@pytest.mark.parametrize(
    "damage,reason",
    [(_corrupt, "checksum mismatch"), (_truncate, "truncated"), (Path.unlink, "missing")],
    ids=["corrupted", "truncated", "deleted"],
)
def test_damaged_shard_is_dropped_with_a_warning_and_recomputable(damage, reason):
    c = C.get_cache()
    c.store("m", ["a", "b"], 0, "mean", [vec("a"), vec("b")])
    c.store("m", ["c"], 1, "mean", [vec("c")])
    (victim,) = [p for p in shard_files(c.path) if p.parent.name == group_hash("m", 0, "mean")]
    damage(victim)
    with pytest.warns(CacheWarning, match=reason):
        assert c.lookup("m", ["a", "b"], 0, "mean") == [None, None]
    assert not victim.exists() and C.cache_info().entries == 1
    np.testing.assert_array_equal(c.lookup("m", ["c"], 1, "mean")[0], vec("c"))
    c.store("m", ["a", "b"], 0, "mean", [vec("a"), vec("b")])  # the caller recomputes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(c.lookup("m", ["b"], 0, "mean")[0], vec("b"))


def test_damage_after_a_successful_read_is_still_detected():
    c = C.get_cache()
    c.store("m", ["a"], 0, "mean", [vec("a")])
    np.testing.assert_array_equal(c.lookup("m", ["a"], 0, "mean")[0], vec("a"))
    (victim,) = shard_files(c.path)
    time.sleep(0.01)
    _corrupt(victim)  # same size; the new mtime makes the process check again
    with pytest.warns(CacheWarning, match="checksum mismatch"):
        assert c.lookup("m", ["a"], 0, "mean") == [None]


def test_a_full_disk_warns_once_and_caching_is_skipped(monkeypatch):
    import errno

    from lmprobe_jupyter.engine.cache import _shard

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    c = C.get_cache()
    monkeypatch.setattr(_shard, "write_shard", full)
    with pytest.warns(CacheWarning, match="could not write to the activation cache") as record:
        c.store("m", ["a"], 0, "mean", [np.ones(3)])
        c.store("m", ["b"], 0, "mean", [np.ones(3)])
    assert len(record) == 1
    assert c.lookup("m", ["a", "b"], 0, "mean") == [None, None]
    assert list(c.path.glob("shards/*/*")) == []


def test_unreadable_index_is_rebuilt_from_the_shards(tmp_path):
    c = ActivationCache(tmp_path / "c")
    c.store("m", ["a", "b"], 0, "mean", [vec("a"), vec("b")])
    c.store("m2", ["a"], 5, "tokens", [np.ones((3, 4))])
    c.close()
    for p in tmp_path.glob("c/index-v1.sqlite*"):
        p.write_bytes(b"this is not a database" * 100)
    fresh = ActivationCache(tmp_path / "c")
    with pytest.warns(CacheWarning, match="rebuilt the index"):
        got = fresh.lookup("m", ["a", "b"], 0, "mean")
    np.testing.assert_array_equal(got[1], vec("b"))
    assert fresh.lookup("m2", ["a"], 5, "tokens")[0].shape == (3, 4)
    assert fresh.info().entries == 3


def test_deleted_index_is_rebuilt_silently(tmp_path):
    c = ActivationCache(tmp_path / "c")
    c.store("m", ["a"], 0, "mean", [vec("a")])
    c.close()
    for p in tmp_path.glob("c/index-v1.sqlite*"):
        p.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(
            ActivationCache(tmp_path / "c").lookup("m", ["a"], 0, "mean")[0], vec("a")
        )


def test_leftovers_of_a_killed_writer_are_invisible_and_cleaned(tmp_path):
    c = ActivationCache(tmp_path / "c")
    c.store("m", ["a"], 0, "mean", [vec("a")])
    folder = shard_files(c.path)[0].parent
    # a shard written but never indexed, and a half-written temp file
    from lmprobe_jupyter.engine.cache import _shard

    meta = {"model_key": "m", "layer": 0, "pooling": "mean"}
    key = entry_keys("m", 0, "mean", ["b"])[0].hex()
    _shard.write_shard(folder / "orphan.safetensors", meta, [(key, "F32", (2,), b"\0" * 8)])
    (folder / ".tmp-deadbeef").write_bytes(b"partial")
    assert c.lookup("m", ["b"], 0, "mean") == [None]
    old = time.time() - 2 * ActivationCache.ORPHAN_AGE
    for p in folder.iterdir():
        os.utime(p, (old, old))
    ActivationCache(tmp_path / "c").info()  # opening cleans old leftovers
    assert [p.name for p in folder.iterdir()] == [shard_files(c.path)[0].name]
    assert len(list(folder.iterdir())) == 1


# ---------------------------------------------------------------- several processes
def _writer(root: str, worker: int, n_batches: int) -> None:
    c = ActivationCache(root, dtype="float16" if worker % 2 else "float32")
    for b in range(n_batches):
        # every worker also writes prompts shared with the others
        prompts = [f"w{worker}-b{b}-{j}" for j in range(4)] + [f"shared-b{b}"]
        for layer in (0, 1):
            c.store("m@1", prompts, layer, "mean", [vec(p, layer) for p in prompts])
        if b % 5 == 0:
            c.lookup("m@1", prompts, 0, "mean")


def _endless_writer(root: str) -> None:
    c = ActivationCache(root)
    i = 0
    while True:
        prompts = [f"k{i}-{j}" for j in range(50)]
        c.store("m", prompts, 0, "mean", [vec(p, n=2048) for p in prompts])
        i += 1


def test_concurrent_processes_lose_and_corrupt_nothing(tmp_path):
    root = str(tmp_path / "shared")
    ctx = mp.get_context("spawn")
    n_workers, n_batches = 4, 30
    procs = [ctx.Process(target=_writer, args=(root, w, n_batches)) for w in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * n_workers
    c = ActivationCache(root)
    expected = [
        f"w{w}-b{b}-{j}" for w in range(n_workers) for b in range(n_batches) for j in range(4)
    ]
    expected += [f"shared-b{b}" for b in range(n_batches)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for layer in (0, 1):
            got = c.lookup("m@1", expected, layer, "mean")
            for p, g in zip(expected, got):
                assert g is not None, p
                np.testing.assert_allclose(g, vec(p, layer), rtol=1e-3, atol=1e-3)
    info = c.info()
    assert info.entries == 2 * len(expected)
    indexed = {r[0] for r in c._db().execute("SELECT path FROM shards")}
    on_disk = {p.relative_to(c.path).as_posix() for p in shard_files(c.path)}
    assert indexed == on_disk  # nothing orphaned, nothing missing
    assert len(on_disk) < 2 * 2 * c.COMPACT_FANIN  # compaction kept the file count low
    assert c._db().execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_killed_writer_leaves_nothing_half_written_visible(tmp_path):
    root = tmp_path / "killed"
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_endless_writer, args=(str(root),))
    proc.start()
    deadline = time.time() + 120
    while time.time() < deadline and len(shard_files(root)) < 3:
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    c = ActivationCache(root)
    rows = c._db().execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    assert rows >= 100
    prompts = [f"k{i}-{j}" for i in range(rows // 50 + 5) for j in range(50)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no damaged shard may be visible
        got = c.lookup("m", prompts, 0, "mean")
    hits = [(p, g) for p, g in zip(prompts, got) if g is not None]
    assert len(hits) == rows
    for p, g in hits:
        np.testing.assert_array_equal(g, vec(p, n=2048))
    assert sqlite3.connect(root / INDEX_NAME).execute("PRAGMA integrity_check").fetchone() == (
        "ok",
    )


# ---------------------------------------------------------------- management and info
def test_clear_one_model_by_name_or_key_then_everything():
    c = C.get_cache()
    c.store("gpt@aaa", ["a"], 0, "mean", [np.ones(2)])
    c.store("gpt@bbb", ["a"], 0, "mean", [np.ones(2)])
    c.store("gpt-2@aaa", ["a"], 0, "mean", [np.ones(2)])
    c.store("llama@ccc", ["a", "b"], 1, "mean", [np.ones(2)] * 2)
    assert C.clear_cache("gpt@aaa") == 1
    assert C.clear_cache("gpt") == 1  # gpt@bbb only, not gpt-2
    assert set(C.cache_info().models) == {"gpt-2@aaa", "llama@ccc"}
    assert C.clear_cache() == 3
    info = C.cache_info()
    assert (info.entries, info.bytes, info.shards) == (0, 0, 0)
    assert shard_files(c.path) == []


def test_cache_info_breakdown_and_reprs():
    c = C.get_cache()
    c.store("m@1", ["a", "b"], 3, "mean", [np.ones(10)] * 2)
    c.store("m@1", ["a"], 7, "last_token", [np.ones(10)])
    c.store("<other>@2", ["a"], 0, "mean", [np.ones(10)])
    c.lookup("m@1", ["a", "zzz"], 3, "mean")
    info = C.cache_info()
    assert (info.entries, info.data_bytes, info.hits, info.misses) == (4, 160, 1, 1)
    m = info.models["m@1"]
    assert (m.entries, m.data_bytes, m.layers, m.poolings) == (
        3,
        120,
        [3, 7],
        ["mean", "last_token"],
    )
    assert m.bytes == sum(
        p.stat().st_size
        for p in shard_files(c.path)
        if p.parent.name in {group_hash("m@1", 3, "mean"), group_hash("m@1", 7, "last_token")}
    )
    text = repr(info)
    assert "entries        4" in text and "1 / 1 (50%)" in text
    assert "m@1: 3 entries" in text and "layers [3, 7]" in text
    html = info._repr_html_()
    assert "<table" in html and "&lt;other&gt;@2" in html and "<td>3</td>" in html


# ---------------------------------------------------------------- through the extractor
@pytest.fixture
def tiny(tiny_model_path):
    from lmprobe_jupyter.engine.extraction.models import load_model

    return load_model(tiny_model_path, device="cpu")


PROMPTS = ["Hello there", "The cat sat on the mat.", "A third, longer prompt about dogs", "Hi"]


def test_cache_hits_run_no_forward_pass(tiny):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    first = Extractor(tiny, batch_size=2).pooled(PROMPTS, [1, 3], "mean")
    calls = Extractor.forward_calls
    again = Extractor(tiny, batch_size=3).pooled(PROMPTS[::-1], [3, 1], "mean")
    assert Extractor.forward_calls == calls
    np.testing.assert_array_equal(again[3], first[3][::-1])
    Extractor(tiny).pooled(PROMPTS, [1], "last_token")  # another pooling: computed
    assert Extractor.forward_calls > calls
    assert C.cache_info().models[tiny.key].layers == [1, 3]


def test_corrupted_shard_is_recomputed_through_the_extractor(tiny):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    ref = Extractor(tiny).pooled(PROMPTS, [2], "mean")[2]
    for p in shard_files(C.get_cache().path):
        _corrupt(p)
    calls = Extractor.forward_calls
    with pytest.warns(CacheWarning, match="damaged"):
        got = Extractor(tiny).pooled(PROMPTS, [2], "mean")[2]
    assert Extractor.forward_calls > calls
    np.testing.assert_allclose(got, ref, atol=1e-5)
    calls = Extractor.forward_calls
    Extractor(tiny).pooled(PROMPTS, [2], "mean")
    assert Extractor.forward_calls == calls  # the recomputed values were cached again


def test_probe_warmup_then_predict_hits_the_cache(tiny_model_path):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor
    from lmprobe_jupyter.engine.probes.probe import Probe

    probe = Probe(model=tiny_model_path, layers=[1, 2], device="cpu", random_state=0)
    probe.fit(["good day", "lovely weather", "nice work"], ["bad day", "awful rain", "poor work"])
    tests = [f"test prompt number {i}" for i in range(6)]
    probe.warmup(tests, batch_size=4)
    calls = Extractor.forward_calls
    first = probe.predict_proba(tests)
    assert Extractor.forward_calls == calls
    C.set_cache_dtype("float16")
    refit = Probe(model=tiny_model_path, layers=[1, 2], device="cpu", random_state=0)
    refit.fit(["good day", "lovely weather", "nice work"], ["bad day", "awful rain", "poor work"])
    assert Extractor.forward_calls == calls  # a refit of the same prompts recomputes nothing
    np.testing.assert_allclose(refit.predict_proba(tests), first)


# ---------------------------------------------------------------- damaged index pages
_FRESH_PROCESS = r"""
import json, sys, warnings
from lmprobe_jupyter.engine.cache import settings as C
from lmprobe_jupyter.engine.cache.errors import CacheWarning
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.probes.probe import Probe

model, pos, neg = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}
with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    p = Probe(model=model, layers=[1, 2], device="cpu", random_state=0).fit(pos, neg)
    out["proba"] = p.predict_proba(pos + neg)[:, 1].tolist()
    out["forward_calls"] = Extractor.forward_calls
    out["entries"] = C.cache_info().entries
    out["cleared"] = C.clear_cache()
    out["after_clear"] = C.cache_info().entries
out["warnings"] = [str(w.message) for w in record if issubclass(w.category, CacheWarning)]
print("RESULT" + json.dumps(out))
"""


def _run_fresh(model: str, pos, neg, env_dir: Path) -> dict:
    import json
    import subprocess
    import sys

    env = dict(os.environ, LMPROBE_CACHE_DIR=str(env_dir), PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, model, json.dumps(pos), json.dumps(neg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def _zero_page_headers(index: Path, tables: tuple[str, ...]) -> list[int]:
    """Zero the b-tree page header of each table's root page (a torn write, a bad sector)."""
    con = sqlite3.connect(index)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    roots = [
        r
        for (r,) in con.execute(
            f"SELECT rootpage FROM sqlite_master WHERE name IN ({','.join('?' * len(tables))})",
            tables,
        )
    ]
    con.close()
    data = bytearray(index.read_bytes())
    for page in roots:
        start = (page - 1) * page_size
        data[start : start + 12] = bytes(12)
    index.write_bytes(bytes(data))
    return roots


def test_damaged_index_pages_are_quarantined_and_rebuilt_in_a_fresh_process(
    tmp_path, tiny_model_path, monkeypatch
):
    """Reproduces issue 15 #4: a few zeroed page headers in the sqlite index made fit,
    predict, cache_info and clear_cache raise ``sqlite3.DatabaseError: database disk image
    is malformed`` in every new process. Now the first query that meets the damage moves
    the index aside, rebuilds it from the shards (warning once), and the recovered entries
    are served with no forward pass."""
    from lmprobe_jupyter.engine.probes.probe import Probe

    pos = ["good day", "lovely weather", "nice work", "great news"]
    neg = ["bad day", "awful rain", "poor work", "sad news"]
    C.reset_cache()
    monkeypatch.setenv("LMPROBE_CACHE_DIR", str(tmp_path / "root"))
    p = Probe(model=tiny_model_path, layers=[1, 2], device="cpu", random_state=0).fit(pos, neg)
    ref = p.predict_proba(pos + neg)[:, 1]
    n_entries = C.cache_info().entries
    C.reset_cache()  # closes the index (checkpoints the WAL into the file)
    index = tmp_path / "root" / "activations" / INDEX_NAME
    assert not index.with_name(INDEX_NAME + "-wal").exists()
    tables = ("entries", "entries_shard", "entries_group", "shards", "shards_group", "shards_lru")
    assert len(_zero_page_headers(index, tables)) == 6
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        sqlite3.connect(index).execute("SELECT COUNT(*) FROM entries").fetchone()

    out = _run_fresh(tiny_model_path, pos, neg, tmp_path / "root")
    assert out["forward_calls"] == 0  # fit and predict were served from the rebuilt index
    np.testing.assert_allclose(out["proba"], ref, atol=1e-6)
    assert out["entries"] == n_entries and out["cleared"] == n_entries
    assert out["after_clear"] == 0
    assert len(out["warnings"]) == 1 and "rebuilt the index" in out["warnings"][0]
    assert list(index.parent.glob(INDEX_NAME + ".corrupt-*"))  # kept for inspection
    # and the next process finds a healthy index: no warning at all
    again = _run_fresh(tiny_model_path, pos, neg, tmp_path / "root")
    assert again["warnings"] == [] and again["forward_calls"] > 0


# ---------------------------------------------------------------- limits and read-only caches
def test_infinite_limit_means_no_limit():
    """issue 15 (smaller): ``set_cache_limit(inf)`` raised OverflowError; it means no limit."""
    c = C.get_cache()
    c.store("m", ["a"], 0, "mean", [vec("a")])
    C.set_cache_limit(float("inf"))
    assert C.cache_info().limit_bytes is None
    c.store("m", ["b"], 1, "mean", [vec("b")])
    assert C.cache_info().entries == 2
    with pytest.raises(ValueError, match=r"gb=nan must be a number >= 0, float\('inf'\) or None"):
        C.set_cache_limit(float("nan"))


@pytest.mark.parametrize("value", ["-5", "nan", "-inf"], ids=["negative", "nan", "minus-inf"])
def test_bad_limit_in_the_environment_names_the_variable_and_evicts_nothing(monkeypatch, value):
    """issue 15 (smaller): ``LMPROBE_CACHE_LIMIT_GB=-5`` evicted everything; now it is an
    error naming the variable, raised before the cache is touched."""
    c = C.get_cache()
    c.store("m", ["a", "b"], 0, "mean", [vec("a"), vec("b")])
    C.reset_cache()
    monkeypatch.setenv("LMPROBE_CACHE_LIMIT_GB", value)
    with pytest.raises(ValueError, match=rf"LMPROBE_CACHE_LIMIT_GB='{value}'.*>= 0"):
        C.get_cache()
    monkeypatch.setenv("LMPROBE_CACHE_LIMIT_GB", "inf")
    C.reset_cache()
    assert C.cache_info().limit_bytes is None and C.cache_info().entries == 2


@pytest.fixture
def read_only():
    """Make a folder (and everything in it) unwritable, even for root; undone afterwards."""
    import shutil
    import subprocess

    made: list[Path] = []

    def apply(root: Path) -> None:
        paths = [root, *root.rglob("*")]
        if os.geteuid() == 0:  # root ignores permission bits: use the immutable attribute
            if shutil.which("chattr") is None:
                pytest.fail("running as root needs chattr to make a read-only folder")
            subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
        else:
            for p in sorted(paths, reverse=True):
                p.chmod(0o555 if p.is_dir() else 0o444)
        made.extend(paths)

    yield apply
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", *map(str, made)], check=False)
    else:
        for p in made:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_read_only_cache_is_read_and_management_fails_clearly(tmp_path, read_only):
    """issue 15 (smaller): a read-only cache folder was never read (every lookup missed
    with "could not read"), and cache_info/clear_cache/set_cache_limit raised raw sqlite
    errors. Now it is opened read-only: lookups are served, cache_info works, stores are
    skipped with one warning, clear_cache and an evicting set_cache_limit raise
    CacheReadOnlyError naming the folder."""
    root = tmp_path / "shared"
    c = ActivationCache(root)
    c.store("m", ["a", "b"], 0, "mean", [vec("a"), vec("b")])
    c.close()
    before = sorted(p.name for p in root.iterdir())
    read_only(root)
    C.set_cache_backend(root)
    with pytest.warns(CacheWarning, match="read-only") as record:
        got = C.get_cache().lookup("m", ["a", "b", "c"], 0, "mean")
        C.get_cache().store("m", ["c"], 0, "mean", [vec("c")])
        info = C.cache_info()
    assert len(record) == 1
    np.testing.assert_array_equal(got[0], vec("a"))
    np.testing.assert_array_equal(got[1], vec("b"))
    assert got[2] is None and info.entries == 2
    with pytest.raises(CacheReadOnlyError, match=rf"cannot clear.*{root}.*is read-only"):
        C.clear_cache()
    with pytest.raises(CacheReadOnlyError, match="would have to evict"):
        C.set_cache_limit(1e-9)
    C.set_cache_limit(1.0)  # a limit it already fits is fine
    assert C.cache_info().limit_bytes == 10**9
    # nothing was written to the read-only folder
    assert "index-v1.sqlite" in before and "shards" in before
    assert sorted(p.name for p in root.iterdir()) == before


def test_read_only_cache_without_an_index_is_indexed_in_memory(tmp_path, read_only):
    root = tmp_path / "shared"
    c = ActivationCache(root)
    c.store("m", ["a"], 3, "mean", [vec("a")])
    c.close()
    for p in root.glob(INDEX_NAME + "*"):
        p.unlink()
    read_only(root)
    fresh = ActivationCache(root)
    with pytest.warns(CacheWarning, match="read-only"):
        np.testing.assert_array_equal(fresh.lookup("m", ["a"], 3, "mean")[0], vec("a"))
    assert fresh.read_only and fresh.info().entries == 1


def test_second_process_meeting_the_damage_uses_the_rebuilt_index(tmp_path):
    """Two processes hold a damaged index open; the first to query it rebuilds it. The
    second must switch to that rebuilt index, not quarantine the healthy new file."""
    root = tmp_path / "c"
    c = ActivationCache(root)
    c.store("m", ["a", "b"], 0, "mean", [vec("a"), vec("b")])
    c.close()
    first, second = ActivationCache(root), ActivationCache(root)
    assert first.info().entries == second.info().entries == 2  # both have it open
    first.close()
    second.close()
    _zero_page_headers(root / INDEX_NAME, ("entries", "entries_shard", "entries_group"))
    first, second = ActivationCache(root), ActivationCache(root)
    first._db(), second._db()
    with pytest.warns(CacheWarning, match="rebuilt the index"):
        np.testing.assert_array_equal(first.lookup("m", ["a"], 0, "mean")[0], vec("a"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second quarantine, no second warning
        np.testing.assert_array_equal(second.lookup("m", ["b"], 0, "mean")[0], vec("b"))
        second.store("m", ["c"], 0, "mean", [vec("c")])
    np.testing.assert_array_equal(first.lookup("m", ["c"], 0, "mean")[0], vec("c"))
    assert len(list(root.glob(INDEX_NAME + ".corrupt-*"))) == 1


def test_a_writer_switches_to_an_index_rebuilt_by_another_process(tmp_path):
    """A process that never met the damage itself still writes into the rebuilt index
    (not into the quarantined file, where its entries would be lost)."""
    root = tmp_path / "c"
    c = ActivationCache(root)
    c.store("m", ["a"], 0, "mean", [vec("a")])
    c.close()
    bystander = ActivationCache(root)
    bystander.info()
    healer = ActivationCache(root)
    healer.info()
    healer.close()
    for suffix in ("", "-wal", "-shm"):  # what a quarantine does
        if (root / f"{INDEX_NAME}{suffix}").exists():
            os.replace(root / f"{INDEX_NAME}{suffix}", root / f"{INDEX_NAME}{suffix}.corrupt-0")
    healer = ActivationCache(root)
    assert healer.info().entries == 1  # rebuilt from the shard
    bystander.store("m", ["b"], 0, "mean", [vec("b")])
    np.testing.assert_array_equal(healer.lookup("m", ["b"], 0, "mean")[0], vec("b"))


def test_an_index_row_pointing_outside_the_cache_is_never_deleted_or_read(tmp_path):
    """An index written by an older version may hold a path ingested from a crafted S3
    key; eviction and clear must not unlink it, and a lookup must not read it."""
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"precious")
    c = ActivationCache(tmp_path / "c")
    c.store("m", ["a"], 0, "mean", [vec("a")])
    db = c._db()
    db.execute("UPDATE shards SET path='shards/0000000000000000/../../../victim.safetensors'")
    with pytest.warns(CacheWarning, match="not a shard path"):
        assert c.lookup("m", ["a"], 0, "mean") == [None]
    c.store("m", ["a"], 0, "mean", [vec("a")])
    db.execute("UPDATE shards SET path='shards/0000000000000000/../../../victim.safetensors'")
    c.limit_bytes = 0
    c.store("m", ["b"], 1, "mean", [vec("b")])  # evicts the older shard
    c.clear()
    assert victim.read_bytes() == b"precious"


# ---------------------------------------------------------------- a warmup killed late
_SLOW_WARMUP = r"""
import sys, time
from lmprobe_jupyter.engine.cache import store as C
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.extraction.models import load_model

C.ActivationCache.commit_prompts = 8
forward = Extractor._forward


def slow(self, *args, **kwargs):
    time.sleep(0.1)  # stands in for a real model: the kill lands mid-run
    return forward(self, *args, **kwargs)


Extractor._forward = slow
prompts = [f"warmup prompt number {i}" for i in range(400)]
Extractor(load_model(sys.argv[1], device="cpu"), batch_size=4).pooled(prompts, [1, 2], "mean")
print("finished")
"""


def test_warmup_killed_late_keeps_the_chunks_it_committed(tmp_path, tiny_model_path, tiny):
    """issue 15 (smaller): a warmup killed late kept 0 of its computed entries (one store
    after all forward passes). Extraction now commits every ``commit_prompts`` prompts, so
    a SIGKILL loses at most one chunk: the committed entries survive, are intact and are
    served with no forward pass."""
    import subprocess
    import sys

    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    root = tmp_path / "root"
    env = dict(os.environ, LMPROBE_CACHE_DIR=str(root), PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WARMUP, tiny_model_path],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    index = root / "activations" / INDEX_NAME
    committed, deadline = 0, time.time() + 240
    while time.time() < deadline and committed < 2 * 3 * 8:  # three chunks, two layers
        time.sleep(0.2)
        if index.exists():
            with contextlib.suppress(sqlite3.Error):
                con = sqlite3.connect(index, timeout=1)
                committed = con.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
                con.close()
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and b"finished" not in out, err[-2000:]
    assert committed >= 48

    C.set_cache_backend(root / "activations")
    prompts = [f"warmup prompt number {i}" for i in range(400)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing half-written is visible
        got = C.get_cache().lookup(tiny.key, prompts, 1, "mean")
    kept = [p for p, g in zip(prompts, got) if g is not None]
    assert 24 <= len(kept) < 400 and len(kept) % 8 == 0  # whole chunks only
    calls = Extractor.forward_calls
    warm = Extractor(tiny, batch_size=4).pooled(kept, [1, 2], "mean")
    assert Extractor.forward_calls == calls  # served from the surviving chunks
    C.set_cache_enabled(False)
    cold = Extractor(tiny, batch_size=4).pooled(kept, [1, 2], "mean")
    np.testing.assert_allclose(warm[2], cold[2], atol=1e-5)
