"""Per-token activations on disk, read back one minibatch at a time.

Sequence probes (``Probe(classifier="mil" | "attention" | "multimax")``) and every-token
logistic probes (``train_pooling="all"``, :mod:`.token_linear`) read every token of every
prompt, many times over (standardizer, warm start, each epoch or solver step). Holding all
``(n, seq, hidden)`` in RAM does not scale: 1,000 prompts of 600 tokens of a 576-wide
model are 1.4 GB per layer in float32, 18 GB for a 4096-wide one. So per-token
activations are written to disk as they are extracted (a chunk of prompts at a time) and
training, ``predict`` and ``token_scores`` read them back through a
:class:`StoredTokenSource`, ``batch_size`` prompts per read: the peak is one chunk while
extracting and one minibatch while training, not the whole set.

Storage is the activation cache itself (:mod:`.cache`), under pooling key
:data:`TOKENS_KEY` (the key ``set_cache_tokens(True)`` uses for per-token entries, so both
share them). That gives this store everything the pooled cache already has, without a
second implementation:

- keys: (model key with its weights fingerprint and compute dtype, layer, prompt text);
- atomic writes (temporary file, fsync, ``os.replace``; a killed writer leaves no file
  that any reader sees), a CRC32 per array checked on first read (a damaged shard is
  dropped with a ``CacheWarning`` and its prompts are extracted again);
- ``set_cache_enabled(False)`` turns it off (per-token data is then held in RAM, as
  before), ``set_cache_limit`` bounds it together with the pooled entries (LRU),
  ``clear_cache`` and ``cache_info`` include it, an S3 backend mirrors it.

Entries are stored as float16 (:func:`storage_dtype`; a cache set to bfloat16 keeps
bfloat16), half the disk of float32 with a relative rounding error of at most 2**-11; an
array with a value beyond float16's range (65504) is stored as float32 instead. Reads
return float32, and freshly extracted prompts are returned rounded the same way, so a
cold and a warm call give identical numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CHUNK_BYTES",
    "LazyTokenActs",
    "TOKENS_KEY",
    "StoredTokenSource",
    "StoredTokens",
    "TokenStore",
    "chunk_plan",
    "storage_dtype",
]

#: Pooling key of per-token entries in the activation cache (shared with
#: ``set_cache_tokens(True)``).
TOKENS_KEY = "tokens"
#: Float32 bytes of per-token activations one extraction chunk may hold in RAM before it
#: is written: 64 MiB is ~190 prompts of 150 tokens at hidden 576, or 4 prompts of 1,000
#: tokens at hidden 4096, and one shard per chunk and layer keeps the file count low.
CHUNK_BYTES = 64 * 2**20
_FLOAT16_MAX = 65504.0


def storage_dtype(cache) -> str:
    """The dtype per-token entries are written in: float16, unless the cache is set to a
    16-bit dtype already (then that one)."""
    return "float16" if cache.dtype == "float32" else cache.dtype


def chunk_plan(lengths: Sequence[int], width: int, budget: int | None = None) -> list[list[int]]:
    """Chunks of prompt indices for extraction, longest first.

    Sorting by length keeps each chunk's forward batches free of padding; a chunk grows
    while its float32 activations (``sum(lengths) * width * 4`` bytes) fit ``budget``.

    Parameters
    ----------
    lengths : sequence of int
        Tokens per prompt.
    width : int
        Float32 values per token (hidden size times layers).
    budget : int, optional
        Bytes per chunk (default :data:`CHUNK_BYTES`); a prompt longer than the budget is
        a chunk of its own.
    """
    budget = CHUNK_BYTES if budget is None else int(budget)
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    chunks, cur, used = [], [], 0
    for i in order:
        size = int(lengths[i]) * int(width) * 4
        if cur and used + size > budget:
            chunks.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += size
    if cur:
        chunks.append(cur)
    return chunks


class TokenSource:
    """Per-prompt token activations, handed out by index.

    Subclasses implement ``__len__`` and :meth:`take`. ``n_features`` may be ``None``
    until the first :meth:`take`.
    """

    n_features: int | None = None

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def take(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Activations and masks of the prompts at ``indices``.

        Returns
        -------
        list of (ndarray of shape (seq_i, hidden), bool ndarray of shape (seq_i,))
            The mask is True at the tokens the probe may score.
        """
        raise NotImplementedError  # pragma: no cover - interface


class TokenStore:
    """Per-token activations of one model's layers, kept in the activation cache.

    Parameters
    ----------
    cache : ActivationCache
        Usually :func:`~.cache.get_cache`.
    model_key : str
        ``LoadedModel.key``: name, weights fingerprint and (when not float32) compute
        dtype, so activations of another model or dtype never match.
    layers : list of int
    """

    def __init__(self, cache, model_key: str, layers) -> None:
        self.cache = cache
        self.model_key = model_key
        self.layers = [int(x) for x in layers]

    def __repr__(self) -> str:
        return (
            f"TokenStore(model_key={self.model_key!r}, layers={self.layers}, "
            f"dtype={self.dtype!r}, path={str(self.cache.path)!r})"
        )

    @property
    def dtype(self) -> str:
        return storage_dtype(self.cache)

    @property
    def usable(self) -> bool:
        """Whether entries can be written and read (cache on and writable)."""
        return bool(self.cache.enabled) and not self.cache.read_only

    def held(self, prompts) -> list[bool]:
        """Whether each prompt has an entry at every layer (index only; no data read)."""
        prompts = list(prompts)
        have = np.ones(len(prompts), dtype=bool)
        for layer in self.layers:
            have &= np.asarray(
                self.cache.contains(self.model_key, prompts, layer, TOKENS_KEY), dtype=bool
            ).reshape(len(prompts))
        return have.tolist()

    def read(self, prompts, lengths=None) -> list[dict[int, np.ndarray] | None]:
        """Stored activations per prompt: ``{layer: (seq, hidden)}`` float32, or None.

        A prompt is None when a layer is missing (never stored, evicted, or in a shard
        found damaged), or its arrays disagree in length with each other or with
        ``lengths`` (a stale entry: it is not trusted).
        """
        prompts = list(prompts)
        per_layer = {
            layer: self.cache.lookup(self.model_key, prompts, layer, TOKENS_KEY)
            for layer in self.layers
        }
        out: list[dict[int, np.ndarray] | None] = []
        for i in range(len(prompts)):
            acts = {layer: per_layer[layer][i] for layer in self.layers}
            ok = all(a is not None and a.ndim == 2 for a in acts.values())
            if ok:
                n = {len(a) for a in acts.values()}
                ok = len(n) == 1 and (lengths is None or n == {int(lengths[i])})
            out.append(acts if ok else None)
        return out

    def write(self, prompts, acts: list[dict[int, np.ndarray]]) -> list[dict[int, np.ndarray]]:
        """Store ``{layer: (seq, hidden)}`` per prompt; returns them as :meth:`read` will
        (float32, rounded through the storage dtype). Prompts already stored are kept as
        they are."""
        prompts = list(prompts)
        if len(prompts) != len(acts):
            raise ValueError(f"write() got {len(prompts)} prompts but {len(acts)} activations")
        dtype = self.dtype
        out = [dict() for _ in prompts]
        for layer in self.layers:
            arrays = [np.asarray(a[layer], dtype=np.float32) for a in acts]
            # float16 overflows to inf past 65504 (outsized attention-sink values can):
            # such an array is stored as float32 rather than corrupted.
            wide = [
                dtype == "float16" and a.size > 0 and float(np.nanmax(np.abs(a))) > _FLOAT16_MAX
                for a in arrays
            ]
            for keep_wide in (False, True):
                idx = [i for i, w in enumerate(wide) if w == keep_wide]
                if not idx:
                    continue
                dt = "float32" if keep_wide else dtype
                part = [arrays[i] for i in idx]
                self.cache.store(
                    self.model_key, [prompts[i] for i in idx], layer, TOKENS_KEY, part, dtype=dt
                )
                for i, a in zip(idx, self.cache.as_stored(part, dtype=dt)):
                    out[i][layer] = a
        return out


class StoredTokenSource(TokenSource):
    """A :class:`~.sequence_base.TokenSource` reading prompts from a :class:`TokenStore`.

    Each :meth:`take` reads only the prompts asked for (the estimators ask for at most
    ``batch_size``), concatenating the store's layers per token (``(seq, hidden *
    n_layers)``, layer order as given). A prompt the store no longer has (evicted by the
    cache's size limit, or in a shard found damaged) is extracted again by ``refetch`` and
    written back; one that still cannot be stored (read-only or failing disk) is then kept
    in memory, with one warning.

    Parameters
    ----------
    store : TokenStore
    prompts : list of str
    masks : list of bool ndarray of shape (seq_i,)
        The tokens a probe may score.
    refetch : callable
        ``refetch(prompts) -> list of {layer: (seq, hidden)}``: a fresh extraction.
    held : dict of int to dict, optional
        Activations of prompts (by index) that are to be served from memory.
    """

    def __init__(
        self,
        store: TokenStore,
        prompts,
        masks,
        refetch: Callable,
        held: dict | None = None,
    ) -> None:
        self.store = store
        self.prompts = list(prompts)
        self.masks = [np.asarray(m, dtype=bool) for m in masks]
        if len(self.masks) != len(self.prompts):
            raise ValueError(f"got {len(self.masks)} masks for {len(self.prompts)} prompts")
        self.refetch = refetch
        self.held = dict(held or {})
        self.reads = 0  # prompts read from disk
        self.refetched = 0  # prompts extracted again because the store had lost them
        self._warned = False
        self.n_features = None

    def __len__(self) -> int:
        return len(self.prompts)

    def _features(self, acts: dict) -> np.ndarray:
        return np.concatenate([acts[layer] for layer in self.store.layers], axis=1)

    def take(self, indices):
        indices = [int(i) for i in indices]
        want = [i for i in indices if i not in self.held]
        got: dict[int, dict] = {}
        if want:
            lengths = [len(self.masks[i]) for i in want]
            for i, acts in zip(want, self.store.read([self.prompts[i] for i in want], lengths)):
                if acts is not None:
                    got[i] = acts
            self.reads += len(got)
        lost = list(dict.fromkeys(i for i in want if i not in got))
        if lost:
            self._recover(lost, got)
        out = []
        for i in indices:
            acts = self.held[i] if i in self.held else got[i]
            a = self._features(acts)
            if self.n_features is None:
                self.n_features = int(a.shape[1])
            out.append((a, self.masks[i]))
        return out

    def _recover(self, lost: list[int], got: dict) -> None:
        fresh = self.refetch([self.prompts[i] for i in lost])
        stored = self.store.write([self.prompts[i] for i in lost], fresh)
        self.refetched += len(lost)
        kept = self.store.held([self.prompts[i] for i in lost])
        for i, acts, ok in zip(lost, stored, kept):
            got[i] = acts
            if not ok:
                self.held[i] = acts
        if not self._warned:
            self._warned = True
            from .errors import CacheWarning

            limit = self.store.cache.limit_bytes
            why = (
                f"the activation cache limit ({limit / 1e9:.3g} GB) may be smaller than "
                "these prompts' per-token activations: raise it with set_cache_limit(gb)"
                if limit is not None
                else "their cache entries were damaged or could not be written"
            )
            warnings.warn(
                f"{len(lost)} prompt(s) were no longer in the per-token store and were "
                f"extracted again; {why}",
                CacheWarning,
                stacklevel=3,
            )


@dataclass
class StoredTokens:
    """Per-token inputs of a sequence probe: what :meth:`.ModelRuntime.token_source` returns.

    Attributes
    ----------
    source : TokenSource
        A :class:`StoredTokenSource` (or, with the cache off, an in-memory source).
    masks : list of bool ndarray of shape (seq_i,)
        The tokens a probe may score.
    hits : int
        Prompts found in the store (no forward pass).
    extracted : int
        Distinct prompts extracted by this call.
    pieces : callable
        ``pieces() -> list of TokenActs`` with the text and token pieces of each prompt
        (``acts`` left empty: the activations are in ``source``); tokenizer work only.
    """

    source: TokenSource
    masks: list
    hits: int
    extracted: int
    pieces: Callable


class LazyTokenActs(Sequence):
    """The list ``pieces()`` returns, computed on first access (``predict`` never needs
    the token pieces that ``token_scores`` shows)."""

    def __init__(self, pieces: Callable) -> None:
        self._pieces = pieces
        self._items = None

    def _get(self) -> list:
        if self._items is None:
            self._items = list(self._pieces())
        return self._items

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, i):
        return self._get()[i]
