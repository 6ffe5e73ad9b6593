"""The activation cache: every pooled (or per-token) activation computed once is kept.

Entries are keyed by (model key, prompt text, layer, pooling key); the model key is
``LoadedModel.key`` (name plus a weights fingerprint), so two different local models never
share entries. A refit, a layer sweep or a re-score of the same prompts reads the cache
instead of running the model.

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
- **Compaction keeps the file count low.** Small shards of a group are merged in
  size tiers (8 shards of a tier become one of the next), so a long session of small
  stores leaves O(log n) files per group and each byte is rewritten O(log n) times.
- **A sqlite index.** One ``SELECT ... WHERE key IN (...)`` finds 1,000 entries at once;
  the data is then read with one ``mmap`` per shard. Transactions (``BEGIN IMMEDIATE``)
  make every index change atomic and serialise writers across processes, and WAL mode
  lets readers run while a writer commits. A shard becomes visible only when its index
  rows commit, after its file is complete on disk.
- **Checksums on read.** Each array's CRC32 (kept in the index and in the shard header)
  is checked when a process first reads it (again if the file's size or mtime changes); a truncated or corrupted shard is dropped with a
  :class:`CacheWarning` and its entries read as misses, so the caller recomputes them.
- **LRU by shard.** A logical clock records when each shard was last read or written;
  ``set_cache_limit`` evicts the least recently used shards until the total fits. The
  shard just written is never evicted, so the cache exceeds the limit by at most one
  shard.
- **Storage dtype.** Arrays are stored as float32, float16 or bfloat16
  (``set_cache_dtype``); lookups always return float32.
- **S3 mirror.** With ``set_cache_backend("s3://bucket/prefix")`` every shard is also
  uploaded (write-through) and kept locally; a lookup that misses locally lists the
  group's shards on S3 and ingests the new ones. An unreachable bucket gives one warning
  and the cache carries on locally; shards stored meanwhile are queued
  (``pending_upload``) and uploaded when the backend reconnects (:meth:`sync_up`).
- **A shared bucket is untrusted input.** Only keys of the exact shape this module
  writes (``shards/<16 hex>/<32 hex>.safetensors``, see :data:`SHARD_PATH`) are
  downloaded; anything else is rejected with a warning naming the key. Every local path
  built from a relative shard path is resolved and checked to lie inside the cache root,
  and a download replaces nothing until its header, CRCs and group are verified.
- **A damaged index heals itself.** When opening the index, or any later query, reports
  a damaged file ("not a database", "database disk image is malformed"), the index is
  moved aside (``index-v1.sqlite.corrupt-<time>``), rebuilt from the shard headers, and
  the operation retried, with one :class:`CacheWarning`.
- **Read-only caches are read.** A folder that cannot be written is opened read-only
  (the index as an immutable file, or, without a usable one, an in-memory index built
  from the shards); lookups are served, stores are skipped, and ``clear_cache`` or an
  evicting ``set_cache_limit`` raise :class:`CacheReadOnlyError`.

Settings are per process: ``set_cache_backend``, ``set_cache_dtype``, ``set_cache_limit``
and ``set_cache_enabled``; ``$LMPROBE_CACHE_DTYPE`` and ``$LMPROBE_CACHE_LIMIT_GB`` give
defaults (useful for worker processes).

The index must live on a local disk (sqlite's WAL mode needs shared memory; network
filesystems are not supported for the local store; share through S3 instead).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import mmap
import os
import re
import sqlite3
import threading
import time
import warnings
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..extraction.profiling import profile
from ..probes.pooling import UNCACHED_PREFIX  # callables that cannot be keyed: never cached
from . import _events, _shard
from ._shard import DTYPES, ShardError

__all__ = [
    "ActivationCache",
    "CacheInfo",
    "CacheReadOnlyError",
    "CacheWarning",
    "ModelCacheInfo",
    "cache_info",
    "clear_cache",
    "get_cache",
    "reset_cache",
    "set_cache_backend",
    "set_cache_dtype",
    "set_cache_enabled",
    "set_cache_limit",
]

INDEX_NAME = "index-v1.sqlite"
#: The only relative paths a shard may have: ``shards/<16 hex group>/<32 hex name>.safetensors``.
#: Anything else (an S3 key with ``..``, a separator, another suffix) is never joined onto
#: the cache root.
SHARD_PATH = re.compile(r"shards/([0-9a-f]{16})/([0-9a-f]{32})\.safetensors")
_GB = 10**9
_SQL_CHUNK = 900  # bound parameters per statement (well under sqlite's limit)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_key TEXT NOT NULL, layer INTEGER NOT NULL, pooling TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE(model_key, layer, pooling));
CREATE TABLE IF NOT EXISTS shards(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL, path TEXT NOT NULL UNIQUE, nbytes INTEGER NOT NULL,
    last_access INTEGER NOT NULL, remote INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS shards_group ON shards(group_id);
CREATE INDEX IF NOT EXISTS shards_lru ON shards(last_access);
CREATE TABLE IF NOT EXISTS entries(
    key BLOB PRIMARY KEY, group_id INTEGER NOT NULL, shard_id INTEGER NOT NULL,
    pos INTEGER NOT NULL, nbytes INTEGER NOT NULL, dtype TEXT NOT NULL,
    shape TEXT NOT NULL, crc INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_shard ON entries(shard_id);
CREATE INDEX IF NOT EXISTS entries_group ON entries(group_id);
CREATE TABLE IF NOT EXISTS remote_seen(path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pending_upload(path TEXT PRIMARY KEY, url TEXT NOT NULL);
"""

# sqlite result codes that mean the index file itself is damaged (not busy, not read-only).
_CORRUPT_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
# ... and those that mean it cannot be written here (read-only disk or folder).
_READONLY_CODES = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR")

_NEXT_CLOCK = "(SELECT COALESCE(MAX(last_access), 0) + 1 FROM shards)"


class CacheWarning(UserWarning):
    """The activation cache hit a problem it worked around (damaged shard, S3 offline)."""


class CacheReadOnlyError(PermissionError):
    """A cache operation needs to write, but the cache folder is read-only."""


def _sqlite_code(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def _is_corrupt(exc: BaseException) -> bool:
    """Whether a sqlite error says the index file is damaged ("malformed", "not a database")."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    code = _sqlite_code(exc)
    if code:
        return code.startswith(_CORRUPT_CODES)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _is_readonly(exc: BaseException) -> bool:
    """Whether a sqlite error says the index cannot be written here."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = _sqlite_code(exc)
    text = str(exc).lower()
    return code.startswith(_READONLY_CODES) or "readonly" in text or "unable to open" in text


def is_shard_path(rel: str, group: str | None = None) -> bool:
    """Whether ``rel`` has the exact shape of a shard path (optionally of ``group``)."""
    m = SHARD_PATH.fullmatch(rel) if isinstance(rel, str) else None
    return m is not None and (group is None or m.group(1) == group)


def default_cache_dir() -> Path:
    """Local activation store: ``$LMPROBE_CACHE_DIR/activations`` or ``~/.cache/lmprobe/...``."""
    env = os.environ.get("LMPROBE_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "lmprobe"
    return root / "activations"


def _group_id_text(model_key: str, layer: int, pooling: str) -> str:
    return f"{model_key}\x00{int(layer)}\x00{pooling}"


def group_hash(model_key: str, layer: int, pooling: str) -> str:
    """Folder name of a (model, layer, pooling) group: 16 hex digits."""
    text = _group_id_text(model_key, layer, pooling).encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def entry_keys(model_key: str, layer: int, pooling: str, prompts: list[str]) -> list[bytes]:
    """16-byte key of each (model, layer, pooling, prompt) entry."""
    base = hashlib.blake2b(digest_size=16)
    base.update(_group_id_text(model_key, layer, pooling).encode())
    base.update(b"\x00")
    out = []
    for p in prompts:
        h = base.copy()
        h.update(str(p).encode("utf-8", "surrogatepass"))
        out.append(h.digest())
    return out


@functools.lru_cache(maxsize=4096)
def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",")) if text else ()


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype={dtype!r} is not one of {list(DTYPES)}")
    return dtype


# --------------------------------------------------------------------------- info
@dataclass
class ModelCacheInfo:
    """Cache contents for one model key."""

    model: str
    entries: int
    bytes: int
    data_bytes: int = 0
    layers: list[int] = field(default_factory=list)
    poolings: list[str] = field(default_factory=list)


@dataclass
class CacheInfo:
    """What :func:`cache_info` returns: size, contents per model, hit/miss counts.

    Attributes
    ----------
    path : str
        Local store directory.
    backend : str
        ``"local"`` or the S3 URL with its status.
    dtype : str
        Storage dtype of new entries.
    enabled : bool
    limit_bytes : int or None
        LRU limit (None: unlimited).
    entries : int
        Cached arrays.
    bytes : int
        Bytes of shard files on disk (what the limit counts).
    data_bytes : int
        Bytes of live array data (``bytes`` minus headers and superseded copies).
    shards : int
        Shard files.
    hits, misses : int
        Lookups answered / not answered by the cache in this process.
    models : dict of str to ModelCacheInfo
    """

    path: str
    backend: str
    dtype: str
    enabled: bool
    limit_bytes: int | None
    entries: int
    bytes: int
    data_bytes: int
    shards: int
    hits: int
    misses: int
    models: dict[str, ModelCacheInfo] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        """Fraction of looked-up entries found (nan before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")

    def __repr__(self) -> str:
        from ...presentation import cache_text

        return cache_text(self)

    __str__ = __repr__

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ...presentation import cache_rows
        from ...presentation.payload import repr_bundle

        rows = [(label, text) for _key, label, text in cache_rows(self)]
        return repr_bundle("table", rows=rows, title="activation cache")

    def _repr_html_(self) -> str:
        from ...presentation import render_cache_info

        return render_cache_info(self)


# ------------------------------------------------------------------------- cache
class ActivationCache:
    """On-disk activation store (see the module docstring for the layout).

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

    #: Shards smaller than this are tier 0 for compaction.
    TIER_BASE = 256 * 1024
    #: This many shards of one tier (in one group) are merged into one.
    COMPACT_FANIN = 8
    #: Shards at least this large are never merged again.
    SHARD_MAX = 64 * 2**20
    #: Stray files older than this (seconds) are removed by the cleanup at open.
    ORPHAN_AGE = 3600.0
    #: Seconds between two listings of one group on S3 (per process).
    remote_sync_interval = 10.0
    #: A shard's access time is recorded at most once per this many seconds per process.
    touch_interval = 1.0
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
        self.dtype = _check_dtype(dtype)
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

    # ------------------------------------------------------------ connection
    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # a connection inherited through fork must not be used; open a fresh one
            self._conn, self._groups, self._touched, self._verified = None, {}, {}, {}
            self._readonly, self._bad_shards = False, set()
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._conn = self._open()
            except sqlite3.OperationalError as exc:
                if not _is_readonly(exc) or not self.path.is_dir():
                    raise  # locked, no space...: the index itself is fine
                self._conn = self._open_readonly(exc)
            except sqlite3.DatabaseError as exc:  # "not a database", "malformed"
                if not _is_corrupt(exc):
                    raise
                self._conn = self._recover_index(exc)
            except OSError as exc:  # the folder cannot be created or written
                if not self.path.is_dir():
                    raise
                self._conn = self._open_readonly(exc)
            self._pid = os.getpid()
            self._index_id = None if self._readonly else self._current_index_id()
            if not self._readonly:
                self._remove_orphans()
        return self._conn

    def _recover_index(self, exc: BaseException) -> sqlite3.Connection:
        """Move a damaged index aside and rebuild it from the shards (in memory if read-only)."""
        try:
            self._quarantine_index(exc)
        except OSError as err:  # a read-only folder: rebuild in memory instead
            return self._open_readonly(err, damaged=True)
        try:
            return self._open()
        except sqlite3.OperationalError as err:
            if not _is_readonly(err):
                raise
            return self._open_readonly(err, damaged=True)

    def _open_readonly(self, reason: BaseException, damaged: bool = False) -> sqlite3.Connection:
        """Read a cache that cannot be written: its index as an immutable file, or in memory.

        New activations are not stored, access times are not recorded and nothing is
        evicted or deleted; lookups are served as usual.
        """
        index = self.path / INDEX_NAME
        conn = None
        # Plain read-only first: it sees a live writer's WAL (a cache another user writes
        # to); "immutable" when the WAL side files cannot be opened (nobody can write).
        for mode in ("ro", "ro&immutable=1") if index.is_file() and not damaged else ():
            uri = f"{index.resolve().as_uri()}?mode={mode}"
            try:
                conn = sqlite3.connect(
                    uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False
                )
                conn.execute("SELECT COUNT(*) FROM shards").fetchone()
                break
            except sqlite3.DatabaseError:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is None:  # no usable index on disk: index the shard files in memory
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.executescript(_SCHEMA)
            self._rebuild(conn, remove_bad=False)
        self._readonly = True
        if "readonly" not in self._io_warned:
            self._io_warned.add("readonly")
            warnings.warn(
                f"the activation cache at {self.path} cannot be written "
                f"({type(reason).__name__}: {reason}); reading it as a read-only cache "
                "(new activations are not cached)",
                CacheWarning,
                stacklevel=5,
            )
        return conn

    @property
    def read_only(self) -> bool:
        """Whether the cache folder turned out to be read-only (lookups only)."""
        self._db()
        return self._readonly

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise CacheReadOnlyError(
                f"cannot {what}: the activation cache at {self.path} is read-only. Make the "
                "folder writable, or point LMPROBE_CACHE_DIR / set_cache_backend() at a "
                "writable folder"
            )

    def _file(self, rel: str) -> Path:
        """Local path of shard ``rel``; refuses anything that is not a shard path inside the root."""
        if not is_shard_path(rel):
            raise ShardError(f"{rel!r} is not a shard path of this cache")
        path = self.path / rel
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise ShardError(f"{rel!r} resolves outside the cache folder {self.path}")
        return path

    def _unlink(self, rel: str) -> None:
        with contextlib.suppress(OSError, ShardError):
            self._file(rel).unlink()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path / INDEX_NAME, timeout=60, isolation_level=None, check_same_thread=False
        )
        try:
            for attempt in range(50):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:  # another process is switching it
                    if "locked" not in str(exc) or attempt == 49:
                        raise
                    time.sleep(0.05)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT v FROM meta WHERE k='created'").fetchone() is None:
                    self._rebuild(conn)
                    conn.execute("INSERT INTO meta VALUES ('created', ?)", (str(time.time()),))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _quarantine_index(self, exc: BaseException) -> None:
        stamp = int(time.time())
        for suffix in ("", "-wal", "-shm"):
            p = self.path / (INDEX_NAME + suffix)
            if p.exists():
                os.replace(p, self.path / f"{INDEX_NAME}{suffix}.corrupt-{stamp}")
        warnings.warn(
            f"activation cache index {self.path / INDEX_NAME} is unreadable ({exc}); "
            "moved it aside and rebuilt the index from the shard files",
            CacheWarning,
            stacklevel=4,
        )

    def _rebuild(self, conn: sqlite3.Connection, remove_bad: bool = True) -> None:
        """Index every shard file found on disk (new or lost index). Runs in a transaction."""
        root = self.path / "shards"
        if not root.is_dir():
            return
        bad = 0
        for p in sorted(root.glob(f"*/*{_shard.SUFFIX}")):
            if not is_shard_path(p.relative_to(self.path).as_posix()):
                continue  # not a file this library wrote: leave it alone
            try:
                meta, entries = _shard.read_header(p)
                gid, _ = self._group_in(
                    conn, meta["model_key"], int(meta["layer"]), meta["pooling"]
                )
            except (ShardError, KeyError, ValueError):
                if remove_bad:
                    p.unlink(missing_ok=True)
                bad += 1
                continue
            self._insert_shard(conn, gid, p.relative_to(self.path).as_posix(), entries, p)
        if bad:
            warnings.warn(
                f"dropped {bad} unreadable shard file(s) while rebuilding the cache index",
                CacheWarning,
                stacklevel=5,
            )

    def _remove_orphans(self) -> None:
        """Delete temp files and unindexed shards left by killed writers (old ones only)."""
        root = self.path / "shards"
        if not root.is_dir():
            return
        known = {r[0] for r in self._conn.execute("SELECT path FROM shards")}
        cutoff = time.time() - self.ORPHAN_AGE
        for p in root.glob("*/*"):
            try:
                rel = p.relative_to(self.path).as_posix()
                if rel not in known and p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass

    @contextlib.contextmanager
    def _write(self):
        """A write transaction; BEGIN IMMEDIATE serialises writers across processes."""
        db = self._db()
        if self._readonly:
            raise CacheReadOnlyError(f"the activation cache at {self.path} is read-only")
        if self._index_id is not None and self._current_index_id() != self._index_id:
            # another process quarantined a damaged index and rebuilt it: write to the new
            # one (one stat per write transaction; a shard write costs an fsync anyway)
            self.close()
            db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # keep the first error, not the rollback's
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the index connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            _events.forget(self.path)

    def _recovering(self, fn, *args, **kwargs):
        """Run ``fn``; if the index turns out damaged, quarantine and rebuild it, run again."""
        try:
            return fn(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            with self._lock:
                opened = self._index_id
                with contextlib.suppress(sqlite3.Error):
                    if self._conn is not None:
                        self._conn.close()
                self._conn, self._groups, self._touched, self._verified = None, {}, {}, {}
                if opened is not None and self._current_index_id() not in (opened, None):
                    # another process already moved the damaged file aside and rebuilt
                    # it: use its index rather than quarantining a healthy one
                    self._db()
                else:
                    self._conn = self._recover_index(exc)
                    self._pid = os.getpid()
                    self._index_id = None if self._readonly else self._current_index_id()
            return fn(*args, **kwargs)

    def _current_index_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path / INDEX_NAME)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    # ---------------------------------------------------------------- groups
    def _group_in(self, db, model_key: str, layer: int, pooling: str) -> tuple[int, str]:
        ident = (model_key, int(layer), pooling)
        got = self._groups.get(ident)
        if got is not None:
            return got
        ghash = group_hash(*ident)
        db.execute(
            "INSERT OR IGNORE INTO groups(model_key, layer, pooling, hash) VALUES (?,?,?,?)",
            (*ident, ghash),
        )
        (gid,) = db.execute(
            "SELECT id FROM groups WHERE model_key=? AND layer=? AND pooling=?", ident
        ).fetchone()
        self._groups[ident] = (gid, ghash)
        return gid, ghash

    def _group(self, model_key: str, layer: int, pooling: str) -> tuple[int, str]:
        ident = (model_key, int(layer), pooling)
        got = self._groups.get(ident)
        if got is not None:
            return got
        with self._write() as db:
            return self._group_in(db, *ident)

    @staticmethod
    def _insert_shard(db, gid: int, rel: str, entries, path: Path, remote: bool = False):
        """Register a shard file and its entries; returns the shard id or None if all dup."""
        size = path.stat().st_size
        cur = db.execute(
            "INSERT INTO shards(group_id, path, nbytes, last_access, remote) "
            f"VALUES (?, ?, ?, {_NEXT_CLOCK}, ?)",
            (gid, rel, size, int(remote)),
        )
        sid = cur.lastrowid
        db.executemany(
            "INSERT OR IGNORE INTO entries(key, group_id, shard_id, pos, nbytes, dtype, shape, crc)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    bytes.fromhex(e.name),
                    gid,
                    sid,
                    e.offset,
                    e.nbytes,
                    e.code,
                    ",".join(map(str, e.shape)),
                    e.crc,
                )
                for e in entries
            ],
        )
        if remote:
            db.execute("INSERT OR IGNORE INTO remote_seen(path) VALUES (?)", (rel,))
        live = db.execute("SELECT COUNT(*) FROM entries WHERE shard_id=?", (sid,)).fetchone()[0]
        if live == 0:  # another process stored the same prompts first
            db.execute("DELETE FROM shards WHERE id=?", (sid,))
            return None
        return sid

    # ---------------------------------------------------------------- lookup
    def _rows(self, keys: list[bytes]) -> dict[bytes, tuple]:
        db = self._db()
        out = {}
        for i in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[i : i + _SQL_CHUNK]
            q = ",".join("?" * len(chunk))
            for row in db.execute(
                "SELECT e.key, s.id, s.path, e.pos, e.nbytes, e.dtype, e.shape, e.crc "
                f"FROM entries e JOIN shards s ON s.id = e.shard_id WHERE e.key IN ({q})",
                chunk,
            ):
                if row[1] not in self._bad_shards:
                    out[row[0]] = row[1:]
        return out

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
            dims = _parse_shape(shape)
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

    def _touch(self, sids: list[int]) -> None:
        if self._readonly:
            return
        now = time.monotonic()
        stale = [s for s in sids if now - self._touched.get(s, -math.inf) >= self.touch_interval]
        if not stale:
            return
        with self._write() as db:
            q = ",".join("?" * len(stale))
            db.execute(f"UPDATE shards SET last_access={_NEXT_CLOCK} WHERE id IN ({q})", stale)
        for s in stale:
            self._touched[s] = now

    def _drop_shard(self, sid: int, rel: str, reason: str) -> None:
        if self._readonly:  # nothing can be deleted: just never read it again
            self._bad_shards.add(sid)
            n = self._db().execute("SELECT COUNT(*) FROM entries WHERE shard_id=?", (sid,))
            n = n.fetchone()[0]
        else:
            with self._write() as db:
                n = db.execute("SELECT COUNT(*) FROM entries WHERE shard_id=?", (sid,))
                n = n.fetchone()[0]
                db.execute("DELETE FROM entries WHERE shard_id=?", (sid,))
                db.execute("DELETE FROM shards WHERE id=?", (sid,))
                # a healthy copy may still be on S3: let the next sync fetch it again
                db.execute("DELETE FROM remote_seen WHERE path=?", (rel,))
            self._unlink(rel)
        warnings.warn(
            f"activation cache shard {rel} is damaged ({reason}); dropped it and its "
            f"{n} entries, which will be recomputed",
            CacheWarning,
            stacklevel=5,
        )

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

    def _io_failed(self, what: str, exc: BaseException) -> None:
        if what not in self._io_warned:
            self._io_warned.add(what)
            warnings.warn(
                f"could not {what} the activation cache at {self.path} "
                f"({type(exc).__name__}: {exc}); carrying on without it",
                CacheWarning,
                stacklevel=4,
            )

    def _store(self, model_key, prompts, layer, pooling, arrays, dtype=None) -> None:
        dtype = self.dtype if dtype is None else _check_dtype(dtype)
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
        dtype = self.dtype if dtype is None else _check_dtype(dtype)
        if dtype == "float32":
            return [np.asarray(a, dtype=np.float32) for a in arrays]
        out = []
        for a in arrays:
            a = np.asarray(a, dtype=np.float32)
            code, raw = _shard.encode(a, dtype)
            out.append(_shard.decode(raw, code, a.shape))
        return out

    # ------------------------------------------------------------ compaction
    def _tier(self, nbytes: int) -> int:
        if nbytes < self.TIER_BASE:
            return 0
        return 1 + int(math.log(nbytes / self.TIER_BASE, self.COMPACT_FANIN))

    def _maybe_compact(self, gid: int) -> None:
        rows = (
            self._db()
            .execute(
                "SELECT id, path, nbytes, remote FROM shards WHERE group_id=? AND nbytes<? "
                "ORDER BY id",
                (gid, self.SHARD_MAX),
            )
            .fetchall()
        )
        tiers: dict[int, list[tuple]] = defaultdict(list)
        for row in rows:
            tiers[self._tier(row[2])].append(row)
        for tier in sorted(tiers):
            members = tiers[tier]
            if len(members) < self.COMPACT_FANIN:
                continue
            chosen, total = [], 0
            for row in members:
                if chosen and total + row[2] > self.SHARD_MAX:
                    break
                chosen.append(row)
                total += row[2]
            if len(chosen) >= 2 and self._compact(gid, chosen):
                self._maybe_compact(gid)  # the merged shard may complete the next tier
            return

    def _compact(self, gid: int, sources: list[tuple]) -> bool:
        """Merge ``sources`` (id, path, nbytes, remote) into one shard; True if done."""
        db = self._db()
        sids = [r[0] for r in sources]
        q = ",".join("?" * len(sids))
        model_key, layer, pooling, ghash = db.execute(
            "SELECT model_key, layer, pooling, hash FROM groups WHERE id=?", (gid,)
        ).fetchone()
        live = db.execute(
            "SELECT key, shard_id, pos, nbytes, dtype, shape, crc FROM entries "
            f"WHERE shard_id IN ({q}) ORDER BY shard_id, pos",
            sids,
        ).fetchall()
        paths = {r[0]: r[1] for r in sources}
        items, moved = [], []
        handles: dict[int, object] = {}
        sid = sids[0]
        try:
            for key, sid, pos, nb, code, shape, crc in live:
                f = handles.get(sid)
                if f is None:
                    f = handles[sid] = open(self._file(paths[sid]), "rb")
                f.seek(pos)
                raw = f.read(nb)
                if len(raw) != nb or zlib.crc32(raw) != crc:
                    raise ShardError("checksum mismatch" if len(raw) == nb else "truncated")
                dims = _parse_shape(shape)
                items.append((key.hex(), code, dims, raw))
                moved.append((key, sid))
        except FileNotFoundError:
            return False  # another process merged or evicted them meanwhile
        except (ShardError, OSError) as exc:
            error = exc
        else:
            error = None
        finally:
            for h in handles.values():
                h.close()
        if error is not None:
            self._drop_shard(sid, paths[sid], str(error))
            return False
        if not items:
            return False
        rel = f"shards/{ghash}/{_shard.new_name()}{_shard.SUFFIX}"
        meta = {"model_key": model_key, "layer": layer, "pooling": pooling}
        path = self._file(rel)
        entries = _shard.write_shard(path, meta, items)
        size = path.stat().st_size
        committed = False
        try:
            with self._write() as db:
                still = db.execute(f"SELECT COUNT(*) FROM shards WHERE id IN ({q})", sids)
                if still.fetchone()[0] == len(sids):
                    cur = db.execute(
                        "INSERT INTO shards(group_id, path, nbytes, last_access) VALUES "
                        f"(?, ?, ?, (SELECT MAX(last_access) FROM shards WHERE id IN ({q})))",
                        (gid, rel, size, *sids),
                    )
                    new = cur.lastrowid
                    db.executemany(
                        "UPDATE entries SET shard_id=?, pos=? WHERE key=? AND shard_id=?",
                        [(new, e.offset, key, sid) for e, (key, sid) in zip(entries, moved)],
                    )
                    db.execute(f"DELETE FROM entries WHERE shard_id IN ({q})", sids)
                    db.execute(f"DELETE FROM shards WHERE id IN ({q})", sids)
                    committed = True
        finally:
            if not committed:
                path.unlink(missing_ok=True)
        if not committed:
            return False
        for r in sources:
            self._unlink(r[1])
        if self._upload(new, rel):
            self.remote.delete([r[1] for r in sources if r[3]])
        return True

    # -------------------------------------------------------------- eviction
    def _enforce_limit(self) -> None:
        if self.limit_bytes is None or self._readonly:
            return
        victims = []
        with self._write() as db:
            total = db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM shards").fetchone()[0]
            if total <= self.limit_bytes:
                return
            rows = db.execute(
                "SELECT id, path, nbytes FROM shards ORDER BY last_access, id"
            ).fetchall()
            for sid, rel, nb in rows[:-1]:  # the most recently used shard always stays
                if total <= self.limit_bytes:
                    break
                db.execute("DELETE FROM entries WHERE shard_id=?", (sid,))
                db.execute("DELETE FROM shards WHERE id=?", (sid,))
                db.execute("DELETE FROM remote_seen WHERE path=?", (rel,))
                total -= nb
                victims.append(rel)
        for rel in victims:
            self._unlink(rel)

    def set_limit(self, limit_bytes: int | None) -> None:
        """Change the LRU limit and evict at once if the cache is over it.

        Raises
        ------
        CacheReadOnlyError
            The cache is read-only and already larger than the new limit (nothing can be
            evicted). A limit it already fits is accepted.
        """
        with self._lock:
            self._recovering(self._set_limit, limit_bytes)

    def _set_limit(self, limit_bytes: int | None) -> None:
        if limit_bytes is not None and self.read_only:
            size = self._db().execute("SELECT COALESCE(SUM(nbytes), 0) FROM shards").fetchone()[0]
            if size > limit_bytes:
                from ...presentation import format_bytes

                self._check_writable(
                    f"set a cache limit of {format_bytes(limit_bytes)} (the cache holds "
                    f"{format_bytes(size)} and would have to evict)"
                )
        self.limit_bytes = limit_bytes
        self._enforce_limit()

    # ---------------------------------------------------------------- remote
    def _upload(self, sid: int, rel: str) -> bool:
        """Upload one shard; if S3 is unreachable, remember it for :meth:`sync_up`."""
        if self.remote is None:
            return False
        ok = self.remote.online and self.remote.put(rel, self._file(rel))
        with self._write() as db:
            if ok:
                db.execute("UPDATE shards SET remote=1 WHERE id=?", (sid,))
                db.execute("INSERT OR IGNORE INTO remote_seen(path) VALUES (?)", (rel,))
                db.execute("DELETE FROM pending_upload WHERE path=?", (rel,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO pending_upload(path, url) VALUES (?, ?)",
                    (rel, self.remote.url),
                )
        if ok and not self._backfilled:
            self.sync_up()
        return ok

    def sync_up(self) -> int:
        """Upload the shards written while S3 was unreachable; returns how many went up.

        Runs when an S3 backend is (re)connected (``set_cache_backend``) and after the
        first successful upload of a process, so shards stored during an outage reach the
        bucket on the next sync. Shards evicted or merged meanwhile are skipped (a merged
        shard is pending in their place).
        """
        if self.remote is None or not self.remote.online:
            return 0
        with self._lock:
            try:
                return self._recovering(self._sync_up)
            except (OSError, sqlite3.OperationalError) as exc:
                self._io_failed("write to", exc)
                return 0

    def _sync_up(self) -> int:
        db = self._db()
        if self._readonly:
            return 0
        self._backfilled = True
        rows = db.execute(
            "SELECT p.path, s.id FROM pending_upload p LEFT JOIN shards s ON s.path = p.path "
            "WHERE p.url=? ORDER BY s.id",
            (self.remote.url,),
        ).fetchall()
        done = 0
        for rel, sid in rows:
            if sid is None:  # evicted, merged or cleared since
                with self._write() as db:
                    db.execute("DELETE FROM pending_upload WHERE path=?", (rel,))
                continue
            if not self._upload(sid, rel):
                break  # offline again: the rest stays pending
            done += 1
        return done

    #: Largest S3 object downloaded as a shard (bytes): a planted huge object cannot
    #: fill the disk. Shards this library writes are a few MB to a few hundred MB.
    MAX_DOWNLOAD = 8 * 2**30
    #: Rejected S3 keys warned about one by one; beyond this, one summary warning.
    REJECT_WARNINGS = 5

    def _reject(self, rel: str, why: str) -> None:
        key = self.remote.key(rel)
        if key in self._rejected:
            return
        self._rejected.add(key)
        if len(self._rejected) > self.REJECT_WARNINGS:
            if len(self._rejected) == self.REJECT_WARNINGS + 1:
                warnings.warn(
                    f"more S3 objects in {self.remote.url} were rejected (not shard names "
                    "this library writes); further ones are skipped without a warning",
                    CacheWarning,
                    stacklevel=6,
                )
            return
        warnings.warn(
            f"rejected S3 object {key!r} in {self.remote.url}: {why}; it was not "
            "downloaded (only objects named <prefix>/shards/<16 hex>/<32 hex>.safetensors "
            "are read)",
            CacheWarning,
            stacklevel=6,
        )

    def _sync_group(self, gid: int, ghash: str) -> bool:
        """Ingest the group's shards that are on S3 but not here; True if any were added."""
        now = time.monotonic()
        if now - self._last_sync.get(ghash, -math.inf) < self.remote_sync_interval:
            return False
        self._last_sync[ghash] = now
        listed = self.remote.list(f"shards/{ghash}/")
        if not listed:
            return False
        rels = []
        for rel in listed:  # a shared bucket is untrusted input: exact names only
            if is_shard_path(rel, ghash):
                rels.append(rel)
            else:
                self._reject(rel, "not a shard name this library writes")
        if not rels:
            return False
        db = self._db()
        known = set()
        for i in range(0, len(rels), _SQL_CHUNK):
            chunk = rels[i : i + _SQL_CHUNK]
            q = ",".join("?" * len(chunk))
            known.update(
                r[0] for r in db.execute(f"SELECT path FROM remote_seen WHERE path IN ({q})", chunk)
            )
            known.update(
                r[0] for r in db.execute(f"SELECT path FROM shards WHERE path IN ({q})", chunk)
            )
        added = False
        for rel in rels:
            if rel in known:
                continue
            try:
                dest = self._file(rel)
            except ShardError as exc:  # e.g. the group folder is a link out of the cache
                self._reject(rel, str(exc))
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f"{_shard.TMP_PREFIX}{_shard.new_name()}"
            try:
                got = self.remote.get(rel, tmp, max_bytes=self.MAX_DOWNLOAD)
            except ValueError as exc:  # over MAX_DOWNLOAD
                tmp.unlink(missing_ok=True)
                self._reject(rel, str(exc))
                continue
            if not got:
                tmp.unlink(missing_ok=True)
                if not self.remote.online:
                    break
                continue
            try:
                meta, entries = _shard.read_header(tmp)
                _shard.verify(tmp, entries)
                if group_hash(meta["model_key"], int(meta["layer"]), meta["pooling"]) != ghash:
                    raise ShardError("its header names another group")
            except (ShardError, KeyError, ValueError) as exc:
                tmp.unlink(missing_ok=True)
                with self._write() as db:
                    db.execute("INSERT OR IGNORE INTO remote_seen(path) VALUES (?)", (rel,))
                warnings.warn(
                    f"skipped damaged shard {rel} from {self.remote.url} ({exc})",
                    CacheWarning,
                    stacklevel=5,
                )
                continue
            # only a complete, checked shard of this group replaces anything, and only here
            os.replace(tmp, dest)
            with self._write() as db:
                sid = self._insert_shard(db, gid, rel, entries, dest, remote=True)
            if sid is None:
                dest.unlink(missing_ok=True)
            else:
                added = True
        if added:
            self._enforce_limit()
        return added

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


# ------------------------------------------------------------ process-wide cache
_DEFAULT_SETTINGS: dict[str, object] = {
    "backend": None,
    "endpoint_url": None,
    "local_dir": None,
    "dtype": None,
    "limit_bytes": ...,  # Ellipsis: not set, fall back to $LMPROBE_CACHE_LIMIT_GB
    "enabled": True,
}
_settings: dict[str, object] = dict(_DEFAULT_SETTINGS)
_CACHE: ActivationCache | None = None
_GLOBAL_LOCK = threading.RLock()


def _build() -> ActivationCache:
    backend = _settings["backend"]
    remote = None
    if backend is None:
        path = default_cache_dir()
    elif str(backend).startswith("s3://"):
        from ._s3 import S3Remote

        path = Path(_settings["local_dir"]) if _settings["local_dir"] else default_cache_dir()
        remote = S3Remote(str(backend), _settings["endpoint_url"], warning_category=CacheWarning)
    else:
        path = Path(backend)
    dtype = _settings["dtype"] or os.environ.get("LMPROBE_CACHE_DTYPE") or "float32"
    limit = _settings["limit_bytes"]
    if limit is ...:
        env = os.environ.get("LMPROBE_CACHE_LIMIT_GB", "").strip()
        try:
            limit = _limit_bytes(float(env)) if env else None
        except ValueError:
            raise ValueError(
                f"LMPROBE_CACHE_LIMIT_GB={env!r} is not a number of gigabytes >= 0 (use "
                "'inf' or leave it unset for no limit)"
            ) from None
    cache = ActivationCache(
        path,
        dtype=_check_dtype(str(dtype)),
        limit_bytes=limit,
        remote=remote,
        enabled=bool(_settings["enabled"]),
    )
    if remote is not None and remote.check():
        cache.sync_up()  # shards stored while the bucket was unreachable go up now
    return cache


def _limit_bytes(gb: float) -> int | None:
    """Gigabytes to bytes; ``inf`` means no limit; raises ValueError below 0 or for nan."""
    if not gb >= 0:  # also catches nan
        raise ValueError(gb)
    return None if math.isinf(gb) else int(gb * _GB)


def get_cache() -> ActivationCache:
    """The process-wide activation cache (created on first use from the current settings)."""
    global _CACHE
    with _GLOBAL_LOCK:
        if _CACHE is None:
            _CACHE = _build()
        return _CACHE


def reset_cache() -> None:
    """Forget the process-wide cache and all ``set_cache_*`` settings (tests use this).

    The next :func:`get_cache` re-reads ``$LMPROBE_CACHE_DIR``. Nothing on disk changes.
    """
    global _CACHE, _settings
    with _GLOBAL_LOCK:
        if _CACHE is not None:
            _CACHE.close()
        _CACHE = None
        _settings = dict(_DEFAULT_SETTINGS)


def set_cache_backend(
    path_or_url: str | os.PathLike | None = None,
    *,
    endpoint_url: str | None = None,
    local_dir: str | os.PathLike | None = None,
) -> None:
    """Choose where activations are cached.

    Parameters
    ----------
    path_or_url : str or path-like, optional
        A local directory (used as the store itself), ``"s3://bucket/prefix"`` to share a
        cache across machines, or None for the default
        (``$LMPROBE_CACHE_DIR/activations``, else ``~/.cache/lmprobe/activations``).
    endpoint_url : str, optional
        S3-compatible endpoint (MinIO, moto, ...); default ``$AWS_ENDPOINT_URL``.
    local_dir : path-like, optional
        Where an S3 backend keeps its local copies (default: the default local store).

    Notes
    -----
    With S3, shards are written locally and uploaded (write-through); a local miss looks
    on S3. If the bucket cannot be reached, one :class:`CacheWarning` is issued and the
    cache works locally; call this function again to retry.
    """
    global _CACHE
    if path_or_url is not None:
        text = os.fspath(path_or_url)
        if text.startswith("s3://"):
            from ._s3 import parse_s3_url

            parse_s3_url(text)
        elif "://" in text:
            raise ValueError(
                f"cache backend {text!r} is neither a local directory nor an 's3://' URL"
            )
        elif Path(text).expanduser().is_file():
            raise ValueError(f"cache backend {text!r} is a file, not a directory")
        else:
            text = str(Path(text).expanduser())
        path_or_url = text
    elif endpoint_url is not None or local_dir is not None:
        raise ValueError("endpoint_url= and local_dir= only apply to an 's3://' backend")
    with _GLOBAL_LOCK:
        if _CACHE is not None:
            _CACHE.close()
        _settings.update(backend=path_or_url, endpoint_url=endpoint_url, local_dir=local_dir)
        _CACHE = None
        get_cache()  # checks an S3 bucket now, so an unreachable one warns here


def set_cache_dtype(dtype: str) -> None:
    """Storage dtype of new entries: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.

    float16/bfloat16 halve the disk use; lookups always return float32. Entries already
    cached keep their dtype.
    """
    _check_dtype(dtype)
    with _GLOBAL_LOCK:
        _settings["dtype"] = dtype
        if _CACHE is not None:
            _CACHE.dtype = dtype


def set_cache_limit(gb: float | None) -> None:
    """Limit the local cache to ``gb`` gigabytes (10**9 bytes), evicting LRU shards.

    None or ``float("inf")`` removes the limit. The cache may exceed the limit by at most
    one shard (the one just written is never evicted).

    Raises
    ------
    ValueError
        ``gb`` is negative, nan or not a number.
    CacheReadOnlyError
        The cache folder is read-only and already larger than ``gb`` (nothing can be
        evicted).
    """
    if gb is not None:
        if isinstance(gb, bool) or not isinstance(gb, (int, float)) or not gb >= 0:
            raise ValueError(
                f"cache limit gb={gb!r} must be a number >= 0, float('inf') or None (no limit)"
            )
    limit = None if gb is None else _limit_bytes(float(gb))
    with _GLOBAL_LOCK:
        _settings["limit_bytes"] = limit
        get_cache().set_limit(limit)


def set_cache_enabled(enabled: bool) -> None:
    """Turn the activation cache on or off for this process."""
    with _GLOBAL_LOCK:
        _settings["enabled"] = bool(enabled)
        if _CACHE is not None:
            _CACHE.enabled = bool(enabled)


def set_cache_tokens(enabled: bool) -> None:
    """Also cache per-token activations (``(seq, hidden)`` per prompt and layer).

    Off by default: per-token outputs (highlights, ``inference_pooling="all"``) are
    ``seq_len`` times larger than pooled ones and are usually computed on demand.
    """
    _settings["tokens"] = bool(enabled)


def tokens_cached() -> bool:
    """Whether per-token activations are cached (see :func:`set_cache_tokens`)."""
    return bool(_settings.get("tokens", False))


def clear_cache(model: str | None = None, *, remote: bool = False) -> int:
    """Delete cached activations: all of them, or one model's.

    Parameters
    ----------
    model : str or LoadedModel, optional
        A model key (``name@fingerprint``), a model name (every fingerprint of it) or a
        loaded model. None clears everything.
    remote : bool, default False
        Also delete the S3 copies (they are shared with other machines).

    Returns
    -------
    int
        Number of entries removed locally.
    """
    if model is not None and not isinstance(model, str):
        model = getattr(model, "key", None) or getattr(model, "name", None)
        if not isinstance(model, str):
            raise TypeError("clear_cache(model=...) takes a model name, key or LoadedModel")
    return get_cache().clear(model, remote=remote)


def cache_info() -> CacheInfo:
    """Entries, bytes, per-model breakdown and hit/miss counts of the activation cache."""
    return get_cache().info()
