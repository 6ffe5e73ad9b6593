"""Keeping the local store small: size-tiered compaction of shards, LRU eviction to a limit.

- **Compaction keeps the file count low.** Small shards of a group are merged in
  size tiers (8 shards of a tier become one of the next), so a long session of small
  stores leaves O(log n) files per group and each byte is rewritten O(log n) times.
- **LRU by shard.** A logical clock records when each shard was last read or written;
  ``set_cache_limit`` evicts the least recently used shards until the total fits. The
  shard just written is never evicted, so the cache exceeds the limit by at most one
  shard.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict

from . import _shard
from ._shard import ShardError
from .index import CacheIndex, parse_shape

__all__ = ["StoreUpkeep"]


class StoreUpkeep(CacheIndex):
    """Compaction and eviction of :class:`~.store.ActivationCache` (a base class of it).

    A merged shard is mirrored like any new one (``_upload``, from
    :class:`~.mirror.S3Mirror`, the other base class of the cache).
    """

    #: Shards smaller than this are tier 0 for compaction.
    TIER_BASE = 256 * 1024
    #: This many shards of one tier (in one group) are merged into one.
    COMPACT_FANIN = 8
    #: Shards at least this large are never merged again.
    SHARD_MAX = 64 * 2**20

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
                dims = parse_shape(shape)
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
