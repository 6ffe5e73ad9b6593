"""Activation extraction on the transformers backend.

This is where nearly all of the engine's time goes, so it follows DESIGN.md's rules:

- the forward pass stops right after the deepest requested layer (a hook raises
  :class:`_StopForward`), so deeper blocks, the final norm and the LM head never run;
- prompts are sorted by token length and batched, so little time is spent on padding;
- pooling happens on the model's device inside the layer hooks, and only pooled
  ``(batch, hidden)`` vectors cross to the CPU;
- explicit ``position_ids`` derived from the attention mask make a prompt's activations
  independent of its batch neighbours and of the padding side;
- every pooled vector is looked up in, and written to, the activation cache, so refits,
  sweeps and re-scoring never recompute.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .cache import get_cache, tokens_cached
from .models import LoadedModel, decoder_layers
from .pooling import pool_batch, pooling_key
from .profiling import profile

#: Cache "layer" of pooled input embeddings (real layers are always >= 0 there).
EMBEDDINGS_LAYER = -1


class _StopForward(Exception):
    """Raised by the deepest layer's hook to end the forward pass early."""


@dataclass
class TokenActs:
    """Per-token activations of one prompt."""

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    acts: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (seq, hidden)


def progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    return os.environ.get("LMPROBE_PROGRESS", "1") not in ("0", "false", "False")


class Extractor:
    """Pooled and per-token activations of a :class:`LoadedModel`.

    Parameters
    ----------
    loaded : LoadedModel
    batch_size : int, default 8
        Prompts per forward pass.
    progress : bool or None
        Show a ``tqdm.auto`` bar (None: on unless ``LMPROBE_PROGRESS=0``).
    use_cache : bool, default True
    padding_side : {"right", "left"}
        Only matters for speed; results are identical either way.
    """

    #: Forward passes run by all extractors in this process (tests assert cache hits run none).
    forward_calls = 0
    #: ``pooled(token_masks=...)`` restricts pooling to given tokens (``score_roles``).
    supports_token_masks = True
    #: ``pooled_many`` computes several poolings in one forward pass per batch.
    shares_forward_passes = True

    def __init__(
        self,
        loaded: LoadedModel,
        batch_size: int = 8,
        progress: bool | None = None,
        use_cache: bool = True,
        padding_side: str = "right",
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r} is not one of 'left', 'right'")
        self.loaded = loaded
        self.batch_size = batch_size
        self.progress = progress
        self.use_cache = use_cache
        self.padding_side = padding_side
        self.last_hits = 0
        self.last_misses = 0

    # ---------------------------------------------------------------- tokenization
    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids per prompt, truncated (with a warning) to the model's context."""
        tok = self.loaded.tokenizer
        with profile("tokenize"):
            ids = tok(list(prompts), add_special_tokens=True, truncation=False)["input_ids"]
        limit = self.loaded.max_length
        too_long = [i for i, x in enumerate(ids) if len(x) > limit]
        if too_long:
            warnings.warn(
                f"{len(too_long)} prompt(s) exceed the model's context of {limit} tokens "
                f"(first: #{too_long[0]}, {len(ids[too_long[0]])} tokens) and were truncated "
                f"to the first {limit} tokens",
                stacklevel=3,
            )
            ids = [x[:limit] for x in ids]
        return ids

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _collate(self, seqs: list[list[int]]):
        import torch

        pad = self.loaded.tokenizer.pad_token_id or 0
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if self.padding_side == "right":
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            else:
                ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
        return ids, mask

    # ---------------------------------------------------------------- forward
    def _forward(self, ids, mask, layers: list[int], capture) -> None:
        """Run the model up to ``max(layers)``, calling ``capture(layer, hidden, mask)``."""
        import torch

        model = self.loaded.model
        blocks = decoder_layers(model)
        deepest = max(layers)
        wanted = set(layers)
        device = self.loaded.device
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)

        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if layer in wanted:
                    capture(layer, hidden, mask.to(hidden.device))
                if layer == deepest:
                    raise _StopForward

            return hook

        handles = [blocks[i].register_forward_hook(make_hook(i)) for i in sorted(wanted)]
        base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
        Extractor.forward_calls += 1
        try:
            with torch.inference_mode(), profile("forward"):
                base(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()

    def _iter_batches(self, seqs: list[list[int]], desc: str):
        batches = self._batches([len(s) for s in seqs])
        if progress_enabled(self.progress) and len(batches) > 1:
            from .progress import progress_bar

            batches = progress_bar(batches, desc=desc, unit="batch")
        return batches

    # ---------------------------------------------------------------- pooled
    def pooled(
        self,
        prompts: list[str],
        layers: list[int],
        pooling,
        token_masks: list[np.ndarray] | None = None,
        key_suffix: str = "",
    ) -> dict[int, np.ndarray]:
        """Pooled activations, shape (n_prompts, hidden) float32 per layer.

        Parameters
        ----------
        prompts : list of str
        layers : list of int
            Non-negative layer indices.
        pooling : str or callable
            An activation-level pooling (see :mod:`.pooling`).
        token_masks : list of bool ndarray of shape (n_tokens,), optional
            Per prompt, the token positions pooling may use (ANDed with the attention
            mask for pooling only; the forward pass still sees every token). Give
            ``key_suffix`` with it so masked and unmasked vectors never share cache entries.
        key_suffix : str
            Appended to the pooling's cache key.
        """
        prompts = list(prompts)
        layers = sorted(set(int(x) for x in layers))
        n = len(prompts)
        if token_masks is not None and len(token_masks) != n:
            raise ValueError(f"got {len(token_masks)} token masks for {n} prompts")
        pk = pooling_key(pooling) + key_suffix
        out: dict[int, list] = {layer: [None] * n for layer in layers}
        cache = get_cache() if self.use_cache else None
        if cache is not None and cache.enabled:
            for layer in layers:
                out[layer] = list(cache.lookup(self.loaded.key, prompts, layer, pk))
        need = [i for i in range(n) if any(out[layer][i] is None for layer in layers)]
        self.last_hits = n - len(need)
        self.last_misses = len(need)
        if need:
            unique = list(dict.fromkeys(prompts[i] for i in need))
            masks = None
            if token_masks is not None:
                by_prompt = {prompts[i]: token_masks[i] for i in reversed(need)}
                masks = [by_prompt[p] for p in unique]
            computed = self._compute_pooled(unique, layers, pooling, masks)
            if cache is not None and cache.enabled:
                for layer in layers:
                    cache.store(self.loaded.key, unique, layer, pk, list(computed[layer]))
                    if cache.dtype != "float32":
                        # Return what later (warm) calls will return, so a cold and a
                        # warm call never disagree.
                        computed[layer] = np.stack(cache.as_stored(list(computed[layer])))
            if unique == prompts:
                # All fresh and distinct: hand back the arrays as computed, no copy (a
                # sweep's memory stays at one pooled array).
                return computed
            row = {p: j for j, p in enumerate(unique)}
            for i in need:
                for layer in layers:
                    out[layer][i] = computed[layer][row[prompts[i]]]
        hidden = self.loaded.hidden_size
        return {
            layer: (np.stack(v).astype(np.float32, copy=False) if n else np.zeros((0, hidden)))
            for layer, v in out.items()
        }

    def pooled_many(self, prompts: list[str], layers: list[int], poolings) -> dict:
        """Several poolings of the same prompts from one forward pass per batch.

        What a probe ensemble whose members pool differently (or a probe whose train and
        inference poolings differ) needs: the model runs once, each batch's hidden states
        are pooled every way asked for, and every result lands in the activation cache.

        Returns
        -------
        dict
            ``{pooling: {layer: (n_prompts, hidden)}}``, each exactly as :meth:`pooled`
            returns it.
        """
        prompts = list(prompts)
        layers = sorted(set(int(x) for x in layers))
        poolings = list(dict.fromkeys(poolings))
        cache = get_cache() if self.use_cache else None
        if len(poolings) > 1 and cache is not None and cache.enabled and self.shares_forward_passes:
            missing = {}  # (pooling index, layer) -> prompts not cached
            for i, p in enumerate(poolings):
                for layer in layers:
                    hits = cache.lookup(self.loaded.key, prompts, layer, pooling_key(p))
                    missing[i, layer] = {q for q, h in zip(prompts, hits) if h is None}
            todo = list(dict.fromkeys(q for q in prompts if any(q in m for m in missing.values())))
            if todo:
                computed = self._compute_pooled_many(todo, layers, poolings)
                for (i, layer), need in missing.items():
                    rows = [j for j, q in enumerate(todo) if q in need]
                    if rows:
                        cache.store(
                            self.loaded.key,
                            [todo[j] for j in rows],
                            layer,
                            pooling_key(poolings[i]),
                            list(computed[i][layer][rows]),
                        )
        # Every vector is cached now: these read it back (and keep pooled()'s contract).
        return {p: self.pooled(prompts, layers, p) for p in poolings}

    def _compute_pooled_many(self, prompts, layers, poolings) -> list[dict[int, np.ndarray]]:
        """Per pooling (in order), ``{layer: (n, hidden)}`` from one pass per batch."""
        seqs = self.encode(prompts)
        hidden = self.loaded.hidden_size
        result = [
            {layer: np.empty((len(prompts), hidden), np.float32) for layer in layers}
            for _ in poolings
        ]
        for batch in self._iter_batches(seqs, "extracting"):
            ids, mask = self._collate([seqs[i] for i in batch])
            rows = np.asarray(batch)

            def capture(layer, h, m, rows=rows):
                for out, pooling in zip(result, poolings):
                    out[layer][rows] = pool_batch(h, m, pooling).float().cpu().numpy()

            self._forward(ids, mask, layers, capture)
        return result

    def _compute_pooled(self, prompts, layers, pooling, token_masks=None) -> dict[int, np.ndarray]:
        seqs = self.encode(prompts)
        result = {
            layer: np.empty((len(prompts), self.loaded.hidden_size), np.float32) for layer in layers
        }
        for batch in self._iter_batches(seqs, "extracting"):
            ids, mask = self._collate([seqs[i] for i in batch])
            rows = np.asarray(batch)
            keep = None
            if token_masks is not None:
                keep = self._pool_mask(
                    [token_masks[i] for i in batch], [len(seqs[i]) for i in batch]
                )

            def capture(layer, hidden, m, rows=rows, keep=keep):
                if keep is not None:
                    m = m * keep.to(m.device)
                with profile("pool"):
                    result[layer][rows] = pool_batch(hidden, m, pooling).float().cpu().numpy()

            self._forward(ids, mask, layers, capture)
        return result

    def _pool_mask(self, masks, lengths):
        """Token masks laid out like :meth:`_collate`'s attention mask (padding off)."""
        import torch

        width = max(lengths)
        keep = torch.zeros((len(masks), width), dtype=torch.long)
        for r, (mk, n) in enumerate(zip(masks, lengths)):
            row = torch.as_tensor(np.asarray(mk, dtype=bool)[:n], dtype=torch.long)
            start = 0 if self.padding_side == "right" else width - n
            keep[r, start : start + len(row)] = row
        return keep

    # ---------------------------------------------------------------- embeddings
    def embedding_pooled(self, prompts: list[str], pooling) -> np.ndarray:
        """Pooled *input embeddings* (no transformer block runs), shape (n, hidden).

        The layer-0 baseline: what a probe could read before the model does any work.
        Only a table lookup, so it is cheap; cached under :data:`EMBEDDINGS_LAYER`.
        """
        import torch

        prompts = list(prompts)
        pk = pooling_key(pooling)
        cache = get_cache() if self.use_cache else None
        out = [None] * len(prompts)
        if cache is not None and cache.enabled:
            out = list(cache.lookup(self.loaded.key, prompts, EMBEDDINGS_LAYER, pk))
        need = [i for i, v in enumerate(out) if v is None]
        if need:
            todo = [prompts[i] for i in need]
            seqs = self.encode(todo)
            embed = self.loaded.model.get_input_embeddings()
            rows = np.empty((len(todo), self.loaded.hidden_size), np.float32)
            for batch in self._batches([len(s) for s in seqs]):
                ids, mask = self._collate([seqs[i] for i in batch])
                with torch.inference_mode():
                    h = embed(ids.to(self.loaded.device))
                rows[batch] = pool_batch(h, mask.to(h.device), pooling).float().cpu().numpy()
            fresh = list(rows)
            if cache is not None and cache.enabled:
                cache.store(self.loaded.key, todo, EMBEDDINGS_LAYER, pk, fresh)
                fresh = cache.as_stored(fresh)
            for i, v in zip(need, fresh):
                out[i] = v
        hidden = self.loaded.hidden_size
        return np.stack(out).astype(np.float32, copy=False) if out else np.zeros((0, hidden))

    # ---------------------------------------------------------------- per token
    def per_token(self, prompts: list[str], layers: list[int]) -> list[TokenActs]:
        """Per-token activations (and the exact text piece of each token) per prompt."""
        prompts = list(prompts)
        layers = sorted(set(int(x) for x in layers))
        seqs = self.encode(prompts)
        out = [TokenActs(text=p, tokens=[], offsets=[], acts={}) for p in prompts]
        for i, p in enumerate(prompts):
            out[i].offsets, out[i].tokens = self.token_pieces(p, len(seqs[i]))
        cache = get_cache() if self.use_cache and tokens_cached() else None
        todo = list(range(len(prompts)))
        if cache is not None and cache.enabled:
            hits = {
                layer: cache.lookup(self.loaded.key, prompts, layer, "tokens") for layer in layers
            }
            todo = [i for i in todo if any(hits[layer][i] is None for layer in layers)]
            for i in set(range(len(prompts))) - set(todo):
                out[i].acts = {layer: hits[layer][i] for layer in layers}
        self.last_hits, self.last_misses = len(prompts) - len(todo), len(todo)
        if not todo:
            return out
        for batch in self._iter_batches([seqs[i] for i in todo], "extracting tokens"):
            batch = [todo[j] for j in batch]
            ids, mask = self._collate([seqs[i] for i in batch])

            def capture(layer, hidden, m, batch=batch):
                h = hidden.float().cpu().numpy()
                mk = m.bool().cpu().numpy()
                for r, i in enumerate(batch):
                    out[i].acts[layer] = h[r][mk[r]]

            self._forward(ids, mask, layers, capture)
        if cache is not None and cache.enabled:
            for layer in layers:
                rows = [out[i].acts[layer] for i in todo]
                cache.store(self.loaded.key, [prompts[i] for i in todo], layer, "tokens", rows)
                for i, a in zip(todo, cache.as_stored(rows)):
                    out[i].acts[layer] = a
        return out

    def token_pieces(self, text: str, n_tokens: int | None = None):
        """Offsets and exact text pieces of each token (whitespace kept)."""
        tok = self.loaded.tokenizer
        try:
            enc = tok(text, add_special_tokens=True, return_offsets_mapping=True, truncation=False)
            offsets = [tuple(map(int, o)) for o in enc["offset_mapping"]]
            ids = enc["input_ids"]
        except (NotImplementedError, ValueError, TypeError):
            ids = tok(text, add_special_tokens=True)["input_ids"]
            offsets = []
        if n_tokens is not None:
            ids, offsets = ids[:n_tokens], offsets[:n_tokens]
        if offsets and len(offsets) == len(ids):
            pieces = []
            for (a, b), tid in zip(offsets, ids):
                pieces.append(text[a:b] if b > a else tok.convert_ids_to_tokens(tid))
            return offsets, pieces
        pieces = [tok.decode([t]) for t in ids]
        return [(0, 0)] * len(ids), pieces
