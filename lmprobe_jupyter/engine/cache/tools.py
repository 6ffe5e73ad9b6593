"""Cache management tools (lmprobe 0.10's names): inspect, evict, log, limit threads, profile.

Everything here goes through the activation cache's public API (:mod:`.cache`); the only
extra state is the prompt ledger of :mod:`._events`, which lets
:func:`list_cached_prompts` say which prompts (not just how many entries) a model has cached.
Entries cached before the ledger existed are counted by :func:`~.cache.cache_info` but not
listed per prompt.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..profiling import is_profiling, last_profile, set_profiling
from . import _events
from .info import ModelCacheInfo
from .settings import get_cache

__all__ = [
    "CachedPromptInfo",
    "ModelCacheInfo",
    "clear_model_cache",
    "discover_cached",
    "enable_cache_logging",
    "evict",
    "is_profiling",
    "last_profile",
    "list_cached_prompts",
    "set_max_threads",
    "set_profiling",
]

#: The pooling key per-token entries are cached under.
TOKENS_POOLING = "tokens"


@dataclass
class CachedPromptInfo:
    """What the cache holds for one prompt of one model.

    Attributes
    ----------
    prompt : str or None
        The prompt text (None when only its hash is known).
    prompt_hash : str
        SHA-256 of the prompt's UTF-8 text.
    model : str
        The model key (``name@fingerprint``).
    layers : list of int
        Layers with a cached entry (``-1``: pooled input embeddings).
    poolings : list of str
        Pooling keys with a cached entry (``"tokens"``: per-token activations).
    nbytes : int
        Stored bytes of all its entries.
    has_tokens : bool
        Whether per-token activations are cached.
    entries : list of (int, str)
        Each cached ``(layer, pooling)`` pair.
    verified : bool or None
        With ``verify=True``: every entry read back with a matching checksum. None: not checked.
    """

    prompt: str | None
    prompt_hash: str
    model: str
    layers: list[int] = field(default_factory=list)
    poolings: list[str] = field(default_factory=list)
    nbytes: int = 0
    has_tokens: bool = False
    entries: list[tuple[int, str]] = field(default_factory=list)
    verified: bool | None = None


def _model_keys(model_name) -> list[str]:
    """Cache model keys (``name@fingerprint``) of a model name, key or LoadedModel."""
    if not isinstance(model_name, str):
        model_name = getattr(model_name, "key", None)
        if not isinstance(model_name, str):
            raise TypeError("model_name must be a model name, a cache key or a LoadedModel")
    keys = list(get_cache().info().models)
    if model_name in keys:
        return [model_name]
    return [k for k in keys if k.rsplit("@", 1)[0] == model_name]


def _entry_info(cache, key: str, prompt: str, pairs, verify: bool) -> CachedPromptInfo | None:
    info = CachedPromptInfo(prompt=prompt, prompt_hash=_events.prompt_hash(prompt), model=key)
    ok = True
    for layer, pooling in sorted(pairs):
        nb = cache.entry_nbytes(key, [prompt], layer, pooling)[0]
        if nb is None:
            continue
        if verify:
            hits, misses = cache.hits, cache.misses
            found = cache.lookup(key, [prompt], layer, pooling)[0]
            cache.hits, cache.misses = hits, misses
            if found is None:  # the damaged shard was dropped (with a CacheWarning)
                ok = False
                continue
        info.entries.append((layer, pooling))
        info.nbytes += nb
    if not info.entries and ok:
        return None
    info.layers = sorted({layer for layer, _ in info.entries})
    info.poolings = sorted({p for _, p in info.entries})
    info.has_tokens = TOKENS_POOLING in info.poolings
    info.verified = ok if verify else None
    return info


def list_cached_prompts(model_name, verify: bool = False) -> list[CachedPromptInfo]:
    """What the cache holds for a model, one entry per prompt.

    Parameters
    ----------
    model_name : str or LoadedModel
        A model name (every fingerprint of it), a cache key ``name@fingerprint`` or a
        loaded model.
    verify : bool, default False
        Read every entry back and check its checksum; a damaged shard is dropped (with a
        :class:`~.cache.CacheWarning`) and the prompt reported with ``verified=False``.

    Returns
    -------
    list of CachedPromptInfo
        Sorted by model key then prompt; empty when nothing is cached for the model.
    """
    cache = get_cache()
    out: list[CachedPromptInfo] = []
    conn = _events.ledger(cache.path)
    for key in _model_keys(model_name):
        by_prompt: dict[str, set] = {}
        for layer, pooling, prompt in conn.execute(
            "SELECT layer, pooling, prompt FROM prompts WHERE model_key=?", (key,)
        ):
            by_prompt.setdefault(prompt, set()).add((int(layer), pooling))
        for prompt in sorted(by_prompt):
            info = _entry_info(cache, key, prompt, by_prompt[prompt], verify)
            if info is not None:
                out.append(info)
    return out


def discover_cached(model_name, prompt: str) -> CachedPromptInfo | None:
    """What is cached for one prompt: layers, poolings, per-token tensors; None if nothing.

    Works for entries written before the prompt ledger existed (it asks the index for
    every (layer, pooling) the model has cached). With several fingerprints of a model
    name cached, the first key holding the prompt is reported.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    cache = get_cache()
    models = cache.info().models
    for key in _model_keys(model_name):
        m = models[key]
        pairs = [(layer, p) for layer in m.layers for p in m.poolings]
        present = [pair for pair in pairs if cache.contains(key, [prompt], pair[0], pair[1])[0]]
        info = _entry_info(cache, key, prompt, present, verify=False)
        if info is not None:
            return info
    return None


def evict() -> None:
    """Apply the cache size limit now (least recently used shards go first)."""
    cache = get_cache()
    cache.set_limit(cache.limit_bytes)


def clear_model_cache() -> None:
    """Forget the models loaded in this process (frees their memory; the disk cache stays)."""
    import gc
    import sys

    from ..extraction.models import unload_all

    unload_all()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_LEVELS = ("DEBUG", "INFO", "WARNING")


def enable_cache_logging(level: str | int | None = "INFO") -> None:
    """Log every cache lookup (hits and misses) and store on the ``lmprobe`` logger.

    Parameters
    ----------
    level : {"DEBUG", "INFO", "WARNING"}, int or None, default "INFO"
        Level of the messages; None turns cache logging off. When the ``lmprobe`` logger
        has no handler yet, one writing to stderr is added so messages show in a notebook.
    """
    if level is None:
        _events.log_level = None
        return
    if isinstance(level, str):
        if level.upper() not in _LEVELS:
            raise ValueError(f"level={level!r} is not one of {', '.join(map(repr, _LEVELS))}")
        level = getattr(logging, level.upper())
    elif isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level={level!r} must be a level name, an int or None")
    logger = logging.getLogger("lmprobe")
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
    _events.log_level = level


def set_max_threads(n: int) -> None:
    """Cap the threads torch and the BLAS/OpenMP libraries (numpy, sklearn) use.

    Also sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for worker processes started later.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_max_threads(n={n!r}) needs a positive int")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return
    threadpool_limits(limits=n)
