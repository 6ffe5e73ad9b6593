"""The activation cache's S3 mirror: write-through uploads, an outage's queue, ingesting.

- **S3 mirror.** With ``set_cache_backend("s3://bucket/prefix")`` every shard is also
  uploaded (write-through) and kept locally; a lookup that misses locally lists the
  group's shards on S3 and ingests the new ones. An unreachable bucket gives one warning
  and the cache carries on locally; shards stored meanwhile are queued
  (``pending_upload``) and uploaded when the backend reconnects (:meth:`S3Mirror.sync_up`).
- **A shared bucket is untrusted input.** Only keys of the exact shape the cache
  writes (``shards/<16 hex>/<32 hex>.safetensors``, see :data:`.keys.SHARD_PATH`) are
  downloaded; anything else is rejected with a warning naming the key. Every local path
  built from a relative shard path is resolved and checked to lie inside the cache root,
  and a download replaces nothing until its header, CRCs and group are verified.

The S3 client itself (listing, get, put, the offline state) is :mod:`._s3`.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
import warnings

from . import _shard
from ._shard import ShardError
from .errors import CacheWarning
from .index import SQL_CHUNK, CacheIndex
from .keys import group_hash, is_shard_path

__all__ = ["S3Mirror"]


class S3Mirror(CacheIndex):
    """The S3 side of :class:`~.store.ActivationCache` (a base class of it).

    ``self.remote`` is the :class:`~._s3.S3Remote` (None: no mirror). Shards ingested
    from S3 count toward the size limit (``_enforce_limit``, from
    :class:`~.upkeep.StoreUpkeep`, the other base class of the cache).
    """

    #: Seconds between two listings of one group on S3 (per process).
    remote_sync_interval = 10.0

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
        for i in range(0, len(rels), SQL_CHUNK):
            chunk = rels[i : i + SQL_CHUNK]
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
