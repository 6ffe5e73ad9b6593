"""The activation cache's warning and error types (shared by all its modules)."""

from __future__ import annotations

__all__ = ["CacheReadOnlyError", "CacheWarning"]


class CacheWarning(UserWarning):
    """The activation cache hit a problem it worked around (damaged shard, S3 offline)."""


class CacheReadOnlyError(PermissionError):
    """A cache operation needs to write, but the cache folder is read-only."""
