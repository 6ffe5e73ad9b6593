"""What :func:`~.settings.cache_info` reports: the cache's size, contents and hit rate."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CacheInfo", "ModelCacheInfo"]


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
