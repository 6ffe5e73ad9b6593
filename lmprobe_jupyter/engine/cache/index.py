"""The activation cache's sqlite index: opening, transactions, read-only mode, self-repair.

On disk (inside the cache root, see :mod:`.store`)::

    index-v1.sqlite            sqlite index (WAL mode): groups, shards, entries

- **A sqlite index.** One ``SELECT ... WHERE key IN (...)`` finds 1,000 entries at once;
  the data is then read with one ``mmap`` per shard. Transactions (``BEGIN IMMEDIATE``)
  make every index change atomic and serialise writers across processes, and WAL mode
  lets readers run while a writer commits. A shard becomes visible only when its index
  rows commit, after its file is complete on disk.
- **A damaged index heals itself.** When opening the index, or any later query, reports
  a damaged file ("not a database", "database disk image is malformed"), the index is
  moved aside (``index-v1.sqlite.corrupt-<time>``), rebuilt from the shard headers, and
  the operation retried, with one :class:`CacheWarning`.
- **Read-only caches are read.** A folder that cannot be written is opened read-only
  (the index as an immutable file, or, without a usable one, an in-memory index built
  from the shards); lookups are served, stores are skipped, and ``clear_cache`` or an
  evicting ``set_cache_limit`` raise :class:`CacheReadOnlyError`.

The index must live on a local disk (sqlite's WAL mode needs shared memory; network
filesystems are not supported for the local store; share through S3 instead).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sqlite3
import time
import warnings
from pathlib import Path

from . import _events, _shard
from ._shard import ShardError
from .errors import CacheReadOnlyError, CacheWarning
from .keys import group_hash, is_shard_path

__all__ = ["INDEX_NAME", "SQL_CHUNK", "CacheIndex", "parse_shape"]

INDEX_NAME = "index-v1.sqlite"
SQL_CHUNK = 900  # bound parameters per statement (well under sqlite's limit)

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


@functools.lru_cache(maxsize=4096)
def parse_shape(text: str) -> tuple[int, ...]:
    """An entry's shape from its ``shape`` column (``"3,64"``; ``""`` for a scalar)."""
    return tuple(int(d) for d in text.split(",")) if text else ()


class CacheIndex:
    """The index half of :class:`~.store.ActivationCache`: connection, transactions, repair.

    A base class, not used on its own: :class:`~.store.ActivationCache` sets the state
    (``path``, ``_conn``, ``_groups``, ...) in its ``__init__``. Here: opening the index
    (read-only when the folder cannot be written), quarantining and rebuilding a damaged
    one, write transactions, groups, registering shards and their entries, finding
    entries by key, the LRU clock, and dropping damaged shards.
    """

    #: Stray files older than this (seconds) are removed by the cleanup at open.
    ORPHAN_AGE = 3600.0
    #: A shard's access time is recorded at most once per this many seconds per process.
    touch_interval = 1.0

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
        for i in range(0, len(keys), SQL_CHUNK):
            chunk = keys[i : i + SQL_CHUNK]
            q = ",".join("?" * len(chunk))
            for row in db.execute(
                "SELECT e.key, s.id, s.path, e.pos, e.nbytes, e.dtype, e.shape, e.crc "
                f"FROM entries e JOIN shards s ON s.id = e.shard_id WHERE e.key IN ({q})",
                chunk,
            ):
                if row[1] not in self._bad_shards:
                    out[row[0]] = row[1:]
        return out

    # ------------------------------------------------------- shard bookkeeping
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

    def _io_failed(self, what: str, exc: BaseException) -> None:
        if what not in self._io_warned:
            self._io_warned.add(what)
            warnings.warn(
                f"could not {what} the activation cache at {self.path} "
                f"({type(exc).__name__}: {exc}); carrying on without it",
                CacheWarning,
                stacklevel=4,
            )
