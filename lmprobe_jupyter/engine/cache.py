"""Activation cache (placeholder in-memory version; replaced by the on-disk store of issue 3)."""

from __future__ import annotations

import numpy as np


class ActivationCache:
    def __init__(self) -> None:
        self.enabled = True
        self._mem: dict[tuple[str, str, int, str], np.ndarray] = {}

    def lookup(self, model_key: str, prompts: list[str], layer: int, pooling: str):
        return [self._mem.get((model_key, p, layer, pooling)) for p in prompts]

    def store(self, model_key, prompts, layer, pooling, arrays) -> None:
        for p, a in zip(prompts, arrays):
            self._mem[(model_key, p, layer, pooling)] = np.asarray(a, dtype=np.float32)


_CACHE: ActivationCache | None = None


def get_cache() -> ActivationCache:
    global _CACHE
    if _CACHE is None:
        _CACHE = ActivationCache()
    return _CACHE


def reset_cache() -> None:
    global _CACHE
    _CACHE = None
