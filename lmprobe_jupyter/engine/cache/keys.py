"""Cache keys: how an entry, a (model, layer, pooling) group and a shard file are named.

Entries are keyed by (model key, prompt text, layer, pooling key); the model key is
``LoadedModel.key`` (name plus a weights fingerprint), so two different local models never
share entries. A refit, a layer sweep or a re-score of the same prompts reads the cache
instead of running the model.

These names are the on-disk format: a cache written by any earlier version is found by
them, so none of the hashes below may ever change.
"""

from __future__ import annotations

import hashlib
import re

#: Key prefix of a callable pooling that cannot be keyed: the cache never stores or serves it.
UNCACHED_PREFIX = "uncached:"

__all__ = ["SHARD_PATH", "entry_keys", "group_hash", "is_shard_path"]

#: The only relative paths a shard may have: ``shards/<16 hex group>/<32 hex name>.safetensors``.
#: Anything else (an S3 key with ``..``, a separator, another suffix) is never joined onto
#: the cache root.
SHARD_PATH = re.compile(r"shards/([0-9a-f]{16})/([0-9a-f]{32})\.safetensors")


def is_shard_path(rel: str, group: str | None = None) -> bool:
    """Whether ``rel`` has the exact shape of a shard path (optionally of ``group``)."""
    m = SHARD_PATH.fullmatch(rel) if isinstance(rel, str) else None
    return m is not None and (group is None or m.group(1) == group)


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
