"""The process-wide activation cache: its settings and the public cache functions.

Settings are per process: ``set_cache_backend``, ``set_cache_dtype``, ``set_cache_limit``
and ``set_cache_enabled``; ``$LMPROBE_CACHE_DTYPE`` and ``$LMPROBE_CACHE_LIMIT_GB`` give
defaults (useful for worker processes). :func:`get_cache` builds the
:class:`~.store.ActivationCache` from them on first use.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

from .errors import CacheWarning
from .info import CacheInfo
from .store import ActivationCache, check_dtype

__all__ = [
    "cache_info",
    "clear_cache",
    "default_cache_dir",
    "get_cache",
    "reset_cache",
    "set_cache_backend",
    "set_cache_dtype",
    "set_cache_enabled",
    "set_cache_limit",
    "set_cache_tokens",
    "tokens_cached",
]

_GB = 10**9


def default_cache_dir() -> Path:
    """Local activation store: ``$LMPROBE_CACHE_DIR/activations`` or ``~/.cache/lmprobe/...``."""
    env = os.environ.get("LMPROBE_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "lmprobe"
    return root / "activations"


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
        dtype=check_dtype(str(dtype)),
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
    check_dtype(dtype)
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
