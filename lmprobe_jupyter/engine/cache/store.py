"""The activation cache: every pooled (or per-token) activation computed once is kept.

:class:`ActivationCache` looks entries up and stores new ones; its base classes hold
the rest: :mod:`.index` (the sqlite index, read-only mode, repair of a damaged index),
:mod:`.upkeep` (compaction, LRU eviction) and :mod:`.mirror` (the S3 mirror). Keys are
made by :mod:`.keys`; the process-wide cache and the ``set_cache_*`` functions are in
:mod:`.settings`.

On-disk layout (``$LMPROBE_CACHE_DIR/activations`` or ``~/.cache/lmprobe/activations``)::

    index-v1.sqlite            sqlite index (WAL mode): groups, shards, entries
    shards/<group>/<uuid>.safetensors
                               immutable shard files, one folder per (model, layer, pooling)

Why this layout
---------------
- **Append-only, immutable shards.** One ``store()`` call writes one shard holding all
  its arrays, so thousands of prompts never become thousands of tiny files, and no file
  is ever rewritten on insert. A shard is written to a temporary name, fsync-ed and
  ``os.replace``-d into place, so no reader, and no writer that is killed half-way, ever
  leaves a partial shard visible. Shards are valid safetensors files whose header
  records the group and a CRC32 per array, so they can be checked, shipped to S3 as they
  are, and the index can be rebuilt from them.
- **Checksums on read.** Each array's CRC32 (kept in the index and in the shard header)
  is checked when a process first reads it (again if the file's size or mtime changes); a truncated or corrupted shard is dropped with a
  :class:`CacheWarning` and its entries read as misses, so the caller recomputes them.
- **Storage dtype.** Arrays are stored as float32, float16 or bfloat16
  (``set_cache_dtype``); lookups always return float32.

The index, compaction and LRU eviction, and the S3 mirror explain their own choices in
:mod:`.index`, :mod:`.upkeep` and :mod:`.mirror`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..profiling import profile
from . import _events, _shard
from ._shard import DTYPES, ShardError
from .index import parse_shape
from .info import CacheInfo, ModelCacheInfo
from .keys import UNCACHED_PREFIX, entry_keys  # uncached: callables that cannot be keyed
from .mirror import S3Mirror
from .upkeep import StoreUpkeep

__all__ = ["ActivationCache", "check_dtype"]


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is a storage dtype of the cache; raises ValueError otherwise."""
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype={dtype!r} is not one of {list(DTYPES)}")
    return dtype


# ------------------------------------------------------------------------- cache
class ActivationCache(StoreUpkeep, S3Mirror):
    """On-disk activation store (see the module docstring for the layout).

    Lookup and store are here; the index, compaction and eviction, and the S3 mirror
    come from its base classes :class:`~.index.CacheIndex`, :class:`~.upkeep.StoreUpkeep`
    and :class:`~.mirror.S3Mirror`, whose tuning constants (``SHARD_MAX``,
    ``touch_interval``, ...) are class attributes of this class too.

    Parameters
    ----------
    path : path-like
        Local store directory (created on first use).
    dtype : {"float32", "float16", "bfloat16"}, default "float32"
        Storage dtype of new entries; lookups always return float32.
    limit_bytes : int, optional
        LRU size limit in bytes (None: unlimited).
    remote : S3Remote, optional
        S3 mirror (write-through, read on local miss).
    enabled : bool, default True
        When False, lookups return all misses and stores do nothing.
    """

    #: Extractions store their vectors every this many prompts (one shard per chunk and
    #: layer), so a warmup killed late loses at most one chunk of work. 256 pooled
    #: vectors of a 576-wide model are ~0.6 MB per layer: big enough that shard and
    #: commit overheads stay negligible, small enough to lose seconds, not an hour.
    commit_prompts = 256

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dtype: str = "float32",
        limit_bytes: int | None = None,
        remote=None,
        enabled: bool = True,
    ) -> None:
        self.path = Path(path).expanduser()
        self.dtype = check_dtype(dtype)
        self.limit_bytes = limit_bytes
        self.remote = remote
        self.enabled = bool(enabled)
        self.hits = 0
        self.misses = 0
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._groups: dict[tuple[str, int, str], tuple[int, str]] = {}
        self._touched: dict[int, float] = {}
        self._last_sync: dict[str, float] = {}
        self._io_warned: set[str] = set()
        self._verified: dict[str, tuple[tuple, set[bytes]]] = {}
        self._readonly = False
        self._bad_shards: set[int] = set()  # damaged shards of a read-only cache
        self._rejected: set[str] = set()  # S3 keys refused (warned once each)
        self._backfilled = False
        self._index_id: tuple[int, int] | None = None  # (dev, inode) of the open index

    def __repr__(self) -> str:
        remote = f", remote={self.remote.url!r}" if self.remote is not None else ""
        return f"ActivationCache({str(self.path)!r}, dtype={self.dtype!r}{remote})"

    # ---------------------------------------------------------------- lookup
    def _read_shard(self, rel: str, items: list[tuple]) -> dict[bytes, np.ndarray]:
        """Decode entries (key, pos, nbytes, dtype, shape, crc) of one shard, checking CRCs.

        Entries of one dtype and shape (all pooled vectors of a group) are decoded with a
        single numpy conversion; the results are rows of one float32 block.
        """
        out = {}
        batches: dict[tuple[str, str], tuple[list[bytes], list[bytes]]] = {}
        with open(self._file(rel), "rb") as f:
            st = os.fstat(f.fileno())
            end = max(pos + nb for _, pos, nb, _, _, _ in items)
            if end > st.st_size:
                raise ShardError(f"truncated: {st.st_size} bytes, an entry ends at byte {end}")
            # Shards are immutable: an entry whose CRC this process has checked is not
            # checked again unless the file changed (any write changes mtime or size).
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            seen = self._verified.get(rel)
            if seen is None or seen[0] != stamp:
                if len(self._verified) > 10_000:
                    self._verified.clear()
                seen = self._verified[rel] = (stamp, set())
            checked = seen[1]
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                for key, pos, nb, code, shape, crc in items:
                    raw = mm[pos : pos + nb]
                    if key not in checked:
                        if zlib.crc32(raw) != crc:
                            raise ShardError("checksum mismatch")
                        checked.add(key)
                    keys, raws = batches.setdefault((code, shape), ([], []))
                    keys.append(key)
                    raws.append(raw)
        for (code, shape), (keys, raws) in batches.items():
            dims = parse_shape(shape)
            block = _shard.decode(b"".join(raws), code, (len(keys), *dims))
            out.update(zip(keys, block))
        return out

    def _read(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        pending = keys
        for attempt in range(2):
            rows = self._rows(pending)
            by_shard: dict[tuple[int, str], list[tuple]] = defaultdict(list)
            for key, (sid, rel, pos, nb, code, shape, crc) in rows.items():
                by_shard[(sid, rel)].append((key, pos, nb, code, shape, crc))
            missing_files: list[bytes] = []
            read_sids = []
            for (sid, rel), items in by_shard.items():
                try:
                    found.update(self._read_shard(rel, items))
                    read_sids.append(sid)
                except FileNotFoundError:
                    if attempt == 0:  # merged or evicted by another process: ask again
                        missing_files.extend(k for k, *_ in items)
                    else:
                        self._drop_shard(sid, rel, "its file is missing")
                except (ShardError, ValueError, OSError) as exc:
                    self._drop_shard(sid, rel, str(exc))
            self._touch(read_sids)
            if not missing_files:
                break
            pending = missing_files
        return found

    def lookup(
        self, model_key: str, prompts: list[str], layer: int, pooling: str
    ) -> list[np.ndarray | None]:
        """Cached arrays for ``prompts`` (float32; None where not cached).

        Parameters
        ----------
        model_key : str
            ``LoadedModel.key``.
        prompts : list of str
        layer : int
        pooling : str
            Pooling key (``pooling.pooling_key``), e.g. ``"mean"`` or ``"tokens"``.

        Returns
        -------
        list of ndarray or None
            One float32 array per prompt, shaped as stored (``(hidden,)`` for pooled,
            ``(seq, hidden)`` for per-token entries).
        """
        prompts = list(prompts)
        out: list[np.ndarray | None] = [None] * len(prompts)
        if not self.enabled or not prompts or pooling.startswith(UNCACHED_PREFIX):
            return out
        with self._lock, profile("cache_read"):
            return self._recovering(self._lookup, model_key, prompts, layer, pooling, out)

    def _lookup(self, model_key, prompts, layer, pooling, out):
        keys = entry_keys(model_key, layer, pooling, prompts)
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, np.ndarray] = {}
        try:
            found = self._read(unique)
            if (
                len(found) < len(unique)
                and self.remote is not None
                and self.remote.online
                and not self._readonly
            ):
                gid, ghash = self._group(model_key, layer, pooling)
                if self._sync_group(gid, ghash):
                    found.update(self._read([k for k in unique if k not in found]))
        except (OSError, sqlite3.OperationalError) as exc:
            self._io_failed("read from", exc)
        given = set()
        for i, k in enumerate(keys):
            a = found.get(k)
            if a is not None:
                out[i] = a.copy() if k in given else a
                given.add(k)
        hits = sum(a is not None for a in out)
        self.hits += hits
        self.misses += len(out) - hits
        _events.on_lookup(model_key, layer, pooling, hits, len(out))
        return out

    def contains(self, model_key: str, prompts: list[str], layer: int, pooling: str) -> list[bool]:
        """Whether each prompt has an index entry (no data is read or verified)."""
        prompts = list(prompts)
        if not self.enabled or not prompts or pooling.startswith(UNCACHED_PREFIX):
            return [False] * len(prompts)
        with self._lock:
            keys = entry_keys(model_key, layer, pooling, prompts)
            rows = self._recovering(self._rows, list(dict.fromkeys(keys)))
        return [k in rows for k in keys]

    # ----------------------------------------------------------------- store
    def store(
        self,
        model_key: str,
        prompts: list[str],
        layer: int,
        pooling: str,
        arrays: list[np.ndarray],
        dtype: str | None = None,
    ) -> None:
        """Cache one array per prompt (any shape; stored in ``dtype``, default the cache
        dtype).

        Prompts already cached are skipped. All new arrays go into one new shard.
        """
        prompts, arrays = list(prompts), list(arrays)
        if len(prompts) != len(arrays):
            raise ValueError(f"store() got {len(prompts)} prompts but {len(arrays)} arrays")
        if not self.enabled or not prompts or pooling.startswith(UNCACHED_PREFIX):
            return
        with self._lock, profile("cache_write"):
            try:
                self._recovering(self._store, model_key, prompts, layer, pooling, arrays, dtype)
                if not self._readonly:  # a read-only cache gets no ledger rows either
                    _events.on_store(self.path, model_key, layer, pooling, prompts)
            except (OSError, sqlite3.OperationalError) as exc:  # disk full, read-only, ...
                self._io_failed("write to", exc)

    def _store(self, model_key, prompts, layer, pooling, arrays, dtype=None) -> None:
        dtype = self.dtype if dtype is None else check_dtype(dtype)
        self._db()
        if self._readonly:
            return  # warned once when the cache was found read-only
        gid, ghash = self._group(model_key, layer, pooling)
        todo = dict(zip(entry_keys(model_key, layer, pooling, prompts), arrays))
        have = self._rows(list(todo))
        items = []
        for key, a in todo.items():
            if key in have:
                continue
            a = np.asarray(a, dtype=np.float32)
            code, raw = _shard.encode(a, dtype)
            items.append((key.hex(), code, a.shape, raw))
        if not items:
            return
        rel = f"shards/{ghash}/{_shard.new_name()}{_shard.SUFFIX}"
        meta = {"model_key": model_key, "layer": int(layer), "pooling": pooling}
        path = self._file(rel)
        entries = _shard.write_shard(path, meta, items)
        try:
            with self._write() as db:
                sid = self._insert_shard(db, gid, rel, entries, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if sid is None:
            path.unlink(missing_ok=True)
            return
        self._touched[sid] = time.monotonic()
        self._upload(sid, rel)
        self._maybe_compact(gid)
        self._enforce_limit()

    def as_stored(self, arrays: list[np.ndarray], dtype: str | None = None) -> list[np.ndarray]:
        """``arrays`` as a later lookup will return them (rounded through ``dtype``,
        default the cache dtype).

        With a float16/bfloat16 cache, returning these for freshly computed entries makes
        a cold call give exactly what the warm calls after it give.
        """
        dtype = self.dtype if dtype is None else check_dtype(dtype)
        if dtype == "float32":
            return [np.asarray(a, dtype=np.float32) for a in arrays]
        out = []
        for a in arrays:
            a = np.asarray(a, dtype=np.float32)
            code, raw = _shard.encode(a, dtype)
            out.append(_shard.decode(raw, code, a.shape))
        return out

    # ------------------------------------------------------------ management
    def clear(self, model: str | None = None, *, remote: bool = False) -> int:
        """Remove all entries, or those of one model; returns the number removed.

        ``model`` is a model key (``name@fingerprint``) or a name (all its fingerprints).
        With ``remote=True`` the S3 copies are deleted too (shared with other machines!).

        Raises
        ------
        CacheReadOnlyError
            The cache folder is read-only.
        """
        with self._lock:
            return self._recovering(self._clear, model, remote)

    def _clear(self, model: str | None, remote: bool) -> int:
        self._check_writable("clear the activation cache")
        with self._write() as db:
            if model is None:
                groups = db.execute("SELECT id, hash FROM groups").fetchall()
            else:
                prefix = f"{model}@"
                groups = db.execute(
                    "SELECT id, hash FROM groups WHERE model_key=? OR substr(model_key, 1, ?)=?",
                    (model, len(prefix), prefix),
                ).fetchall()
            removed, paths = 0, []
            for gid, _ in groups:
                removed += db.execute(
                    "SELECT COUNT(*) FROM entries WHERE group_id=?", (gid,)
                ).fetchone()[0]
                paths += [
                    r[0] for r in db.execute("SELECT path FROM shards WHERE group_id=?", (gid,))
                ]
                db.execute("DELETE FROM entries WHERE group_id=?", (gid,))
                db.execute("DELETE FROM shards WHERE group_id=?", (gid,))
            for rel in paths:
                db.execute("DELETE FROM remote_seen WHERE path=?", (rel,))
        for rel in paths:
            self._unlink(rel)
        for _, ghash in groups:
            with contextlib.suppress(OSError):
                (self.path / "shards" / ghash).rmdir()  # only if now empty
        if remote and self.remote is not None:
            prefixes = ["shards/"] if model is None else [f"shards/{h}/" for _, h in groups]
            for pre in prefixes:
                rels = self.remote.list(pre)
                if rels:
                    self.remote.delete(rels)
            if model is None:
                with self._write() as db:
                    db.execute("DELETE FROM remote_seen")
        self._last_sync.clear()
        return removed

    def info(self) -> CacheInfo:
        """Sizes, per-model contents and this process's hit/miss counts."""
        with self._lock:
            return self._recovering(self._info)

    def _info(self) -> CacheInfo:
        db = self._db()
        models: dict[str, ModelCacheInfo] = {}
        for mk, n, nb in db.execute(
            "SELECT g.model_key, COUNT(*), SUM(e.nbytes) FROM entries e "
            "JOIN groups g ON g.id = e.group_id GROUP BY g.model_key ORDER BY g.model_key"
        ):
            models[mk] = ModelCacheInfo(model=mk, entries=n, bytes=0, data_bytes=nb)
        for mk, nb in db.execute(
            "SELECT g.model_key, SUM(s.nbytes) FROM shards s "
            "JOIN groups g ON g.id = s.group_id GROUP BY g.model_key"
        ):
            if mk in models:
                models[mk].bytes = nb
        for mk, layer, pooling in db.execute(
            "SELECT DISTINCT g.model_key, g.layer, g.pooling FROM groups g "
            "WHERE EXISTS (SELECT 1 FROM shards s WHERE s.group_id = g.id) "
            "ORDER BY g.layer"
        ):
            if mk in models:
                if layer not in models[mk].layers:
                    models[mk].layers.append(layer)
                if pooling not in models[mk].poolings:
                    models[mk].poolings.append(pooling)
        entries, data = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM entries"
        ).fetchone()
        shards, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM shards"
        ).fetchone()
        backend = "local" if self.remote is None else f"s3 {self.remote.status()}"
        return CacheInfo(
            path=str(self.path),
            backend=backend,
            dtype=self.dtype,
            enabled=self.enabled,
            limit_bytes=self.limit_bytes,
            entries=entries,
            bytes=size,
            data_bytes=data,
            shards=shards,
            hits=self.hits,
            misses=self.misses,
            models=models,
        )

    # ------------------------------------------------- entry details (cache_tools)
    def entry_nbytes(
        self, model_key: str, prompts: list[str], layer: int, pooling: str
    ) -> list[int | None]:
        """Stored bytes of each prompt's entry (None where not cached); reads no data."""
        prompts = list(prompts)
        if not prompts:
            return []
        with self._lock:
            keys = entry_keys(model_key, layer, pooling, prompts)
            rows = self._rows(list(dict.fromkeys(keys)))
        return [int(rows[k][3]) if k in rows else None for k in keys]
