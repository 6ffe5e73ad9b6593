"""Activation extraction on the transformers backend.

This is where nearly all of the engine's time goes, so it follows DESIGN.md's rules:

- the forward pass stops right after the deepest requested layer (a hook raises
  :class:`_StopForward`), so deeper blocks, the final norm and the LM head never run;
- prompts are sorted by token length and batched by a *token budget*
  (``max_batch_tokens`` padded tokens per forward pass, at most ``batch_size`` prompts),
  so 8 short prompts are not a batch and 8 long ones are not too many;
- prompts that start with the same tokens (a chat template with a system prompt, a fixed
  instruction) are grouped: the shared prefix runs once per group with batch 1, its KV
  cache is repeated over each batch, and only the suffixes run (positions continuing
  after the prefix, right padding); the prefix's hidden states are put back in front, so
  every pooling and per-token output sees exactly the plain path's positions;
- pooling happens on the model's device inside the layer hooks, and only pooled
  ``(batch, hidden)`` vectors cross to the CPU;
- explicit ``position_ids`` derived from the attention mask make a prompt's activations
  independent of its batch neighbours and of the padding side;
- the hooks live on the shared model, so each forward pass holds the model's lock
  (``LoadedModel.lock``) and the hooks only act for the thread that registered them; a
  layer captured twice or not at all raises instead of being cached;
- every pooled vector is looked up in, and written to, the activation cache, so refits,
  sweeps and re-scoring never recompute.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..cache.settings import get_cache, tokens_cached
from ..profiling import profile
from .models import LoadedModel, decoder_layers
from .pooling import pool_batch, pooling_key

#: Cache "layer" of pooled input embeddings (real layers are always >= 0 there).
EMBEDDINGS_LAYER = -1

#: Default token budget per forward pass (padded tokens), by device type. CPU: 2,048
#: keeps a batch's activations (2,048 x 576 x 4 B = 4.5 MiB per tensor for SmolLM2) within
#: the L2/L3 caches of a small CPU while amortising per-call overhead; time others with
#: ``bench/extraction.py --budgets 512,1024,2048,4096``. CUDA: large batches keep the GPU
#: busy; 16,384 tokens of a 135M model is ~1 GiB of activations at fp32 (not measured here:
#: no GPU was available).
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
#: Shortest shared prefix worth a separate pass (shorter ones cost more than they save).
MIN_PREFIX_TOKENS = 16
#: Fewest prefix tokens a group must save (``(n_prompts - 1) * prefix``) to pay for the
#: extra forward call of its prefix pass.
MIN_PREFIX_SAVING = 64


class _StopForward(Exception):
    """Raised by the deepest layer's hook to end the forward pass early."""


@dataclass
class TokenActs:
    """Per-token activations of one prompt."""

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    acts: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (seq, hidden)


@dataclass
class _Group:
    """Prompts (indices) whose first ``prefix`` tokens are the same; ``prefix=0``: no sharing."""

    members: list[int]
    prefix: int = 0
    state: dict | None = None  # filled on first use: prefix hidden states and KV cache


def progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    return os.environ.get("LMPROBE_PROGRESS", "1") not in ("0", "false", "False")


def _common_prefix(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        limit = min(n, len(s))
        while k < limit and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


class Extractor:
    """Pooled and per-token activations of a :class:`LoadedModel`.

    Parameters
    ----------
    loaded : LoadedModel
    batch_size : int, default 8
        Most prompts per forward pass.
    progress : bool or None
        Show a ``tqdm.auto`` bar (None: on unless ``LMPROBE_PROGRESS=0``).
    use_cache : bool, default True
    padding_side : {"right", "left"}
        Only matters for speed; results are identical either way.
    max_batch_tokens : int, "auto" or None, default "auto"
        Token budget per forward pass: a batch of length-sorted prompts grows while
        ``n_prompts * longest <= max_batch_tokens`` (a prompt longer than the budget runs
        alone). ``"auto"``: :data:`DEFAULT_BATCH_TOKENS` for the model's device; ``None``:
        batches of exactly ``batch_size`` prompts.
    share_prefix : bool, default True
        Compute a prefix shared by several prompts (at least :data:`MIN_PREFIX_TOKENS`
        tokens, saving at least :data:`MIN_PREFIX_SAVING`) once and reuse its KV cache. Results equal the plain path within float
        tolerance (atol 1e-4 at float32); cache keys are the same.
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
        max_batch_tokens: int | str | None = "auto",
        share_prefix: bool = True,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r} is not one of 'left', 'right'")
        if max_batch_tokens not in (None, "auto") and (
            not isinstance(max_batch_tokens, int)
            or isinstance(max_batch_tokens, bool)
            or max_batch_tokens < 1
        ):
            raise ValueError(
                f"max_batch_tokens={max_batch_tokens!r} must be a positive int, 'auto' or None "
                "(None: fixed batches of batch_size prompts)"
            )
        self.loaded = loaded
        self.batch_size = batch_size
        self.progress = progress
        self.use_cache = use_cache
        self.padding_side = padding_side
        self.max_batch_tokens = max_batch_tokens
        self.share_prefix = bool(share_prefix)
        self.last_hits = 0
        self.last_misses = 0

    @property
    def token_budget(self) -> int | None:
        """The resolved ``max_batch_tokens`` (None: no budget, fixed-size batches)."""
        if self.max_batch_tokens != "auto":
            return self.max_batch_tokens
        kind = getattr(self.loaded.device, "type", str(self.loaded.device))
        return DEFAULT_BATCH_TOKENS.get(kind, DEFAULT_BATCH_TOKENS["cpu"])

    # ---------------------------------------------------------------- tokenization
    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids per prompt, truncated (with a warning) to the model's context."""
        tok = self.loaded.tokenizer
        # Fast tokenizers are not safe to call from several threads at once ("Already
        # borrowed"); the model's lock is cheap next to a forward pass.
        with self.loaded.lock, profile("tokenize"):
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

    def batch_plan(self, lengths: list[int]) -> list[list[int]]:
        """Batches (lists of indices) for prompts of these token lengths.

        Greedy over the prompts sorted longest first: a batch grows while it has fewer
        than ``batch_size`` prompts and ``n_prompts * longest <= token_budget`` (so the
        padded tokens of a forward pass stay within the budget; a prompt longer than the
        budget runs alone). With a budget, a prompt whose row would be more than half
        padding (and more than 32 padded tokens) starts a new batch.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        budget = self.token_budget
        out: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            # Sorted longest first, so cur[0] is the longest of the batch.
            if cur and (
                len(cur) >= self.batch_size
                or (
                    budget is not None
                    and (
                        (len(cur) + 1) * lengths[cur[0]] > budget
                        # more than half of its row would be padding: start a new batch
                        or lengths[cur[0]] - lengths[i] > max(32, lengths[cur[0]] // 2)
                    )
                )
            ):
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        return out

    def _supports_prefix(self) -> bool:
        # Subclasses with their own forward pass (nnsight) run the plain path only.
        return (
            self.share_prefix
            and type(self)._forward is Extractor._forward
            and not self.loaded.extra.get("no_prefix")
        )

    def _plan(self, seqs: list[list[int]]) -> list[tuple[_Group, list[int]]]:
        """Batches as ``(group, indices)``: shared-prefix groups first, then the rest."""
        groups: list[_Group] = []
        rest = list(range(len(seqs)))
        if self._supports_prefix() and len(seqs) > 1:
            by_head: dict[tuple, list[int]] = {}
            for i, s in enumerate(seqs):
                if len(s) > MIN_PREFIX_TOKENS:
                    by_head.setdefault(tuple(s[:MIN_PREFIX_TOKENS]), []).append(i)
            shared = set()
            for members in by_head.values():
                if len(members) < 2:
                    continue
                # Each suffix keeps at least one token (the prefix pass has no output rows).
                n = min(
                    _common_prefix([seqs[i] for i in members]),
                    min(len(seqs[i]) for i in members) - 1,
                )
                if n >= MIN_PREFIX_TOKENS and (len(members) - 1) * n >= MIN_PREFIX_SAVING:
                    groups.append(_Group(members, n))
                    shared.update(members)
            rest = [i for i in rest if i not in shared]
        plan = []
        for g in groups:
            suffix = [len(seqs[i]) - g.prefix for i in g.members]
            for b in self.batch_plan(suffix):
                plan.append((g, [g.members[j] for j in b]))
        plain = _Group(rest)
        for b in self.batch_plan([len(seqs[i]) for i in rest]):
            plan.append((plain, [rest[j] for j in b]))
        return plan

    def collate(self, seqs: list[list[int]], side: str | None = None):
        """Pad token id lists into ``(ids, mask)`` LongTensors of shape (batch, longest)."""
        import torch

        side = side or self.padding_side
        pad = self.loaded.tokenizer.pad_token_id or 0
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if side == "right":
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            else:
                ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
        return ids, mask

    _collate = collate  # older name, used by bench/sweep.py

    # ---------------------------------------------------------------- forward
    def _hooked_forward(self, layers: list[int], capture, expect_batch: int, **inputs) -> None:
        """Run the base model on ``inputs`` with hooks on ``layers``, stopping after the
        deepest; ``capture(layer, hidden)`` sees each block's output exactly once."""
        import torch

        model = self.loaded.model
        blocks = decoder_layers(model)
        deepest = max(layers)
        wanted = set(layers)
        owner = threading.get_ident()
        seen: dict[int, int] = {}

        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                if threading.get_ident() != owner:
                    return None  # another thread's forward through the shared model
                hidden = output[0] if isinstance(output, tuple) else output
                seen[layer] = seen.get(layer, 0) + 1
                if hidden.shape[0] != expect_batch or seen[layer] > 1:
                    raise RuntimeError(
                        f"layer {layer} produced hidden states of shape {tuple(hidden.shape)} "
                        f"(call #{seen[layer]}) during a forward pass of {expect_batch} prompts: "
                        "another forward pass ran through the same model at the same time; "
                        "nothing was cached"
                    )
                if layer in wanted:
                    capture(layer, hidden)
                if layer == deepest:
                    raise _StopForward

            return hook

        base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
        with self.loaded.lock:
            handles = [blocks[i].register_forward_hook(make_hook(i)) for i in sorted(wanted)]
            Extractor.forward_calls += 1
            try:
                with torch.inference_mode(), profile("forward"):
                    base(**inputs)
            except _StopForward:
                pass
            finally:
                for h in handles:
                    h.remove()
        missing = wanted - set(seen)
        if missing:
            raise RuntimeError(
                f"layers {sorted(missing)} were never reached in the forward pass; nothing was "
                "cached"
            )

    def _forward(self, ids, mask, layers: list[int], capture) -> None:
        """Run the model up to ``max(layers)``, calling ``capture(layer, hidden, mask)``."""
        device = self.loaded.device
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)

        def cap(layer, hidden):
            capture(layer, hidden, mask.to(hidden.device))

        self._hooked_forward(
            layers,
            cap,
            ids.shape[0],
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=False,
        )

    def kv_inputs(self, kv) -> dict:
        """``{name: kv}`` for the base model's KV-cache argument (``cache`` in newer
        transformers, ``past_key_values`` before)."""
        import inspect

        name = self.loaded.extra.get("kv_argument")
        if name is None:
            model = self.loaded.model
            base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
            params = inspect.signature(base.forward).parameters
            name = "cache" if "cache" in params else "past_key_values"
            self.loaded.extra["kv_argument"] = name
        return {name: kv}

    def _new_kv_cache(self):
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.loaded.model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    def _prefix_state(self, group: _Group, seq: list[int], layers: list[int]) -> dict:
        """Run the shared prefix once (batch 1): its hidden states per layer and its KV."""
        import torch

        if group.state is not None:
            return group.state
        device = self.loaded.device
        n = group.prefix
        ids = torch.tensor([seq[:n]], dtype=torch.long, device=device)
        mask = torch.ones_like(ids)
        kv = self._new_kv_cache()
        hidden: dict[int, object] = {}

        def cap(layer, h):
            hidden[layer] = h

        self._hooked_forward(
            layers,
            cap,
            1,
            input_ids=ids,
            attention_mask=mask,
            position_ids=torch.arange(n, device=device)[None],
            use_cache=True,
            **self.kv_inputs(kv),
        )
        deepest = max(layers)
        pairs = []
        for i, item in enumerate(kv):
            if i > deepest:
                break
            pairs.append((item[0], item[1]))
        group.state = {"hidden": hidden, "kv": pairs}
        return group.state

    def _forward_with_prefix(
        self, group: _Group, seqs, layers: list[int], capture, suffix_only: bool = False
    ) -> None:
        """Like :meth:`_forward` for prompts sharing ``group.prefix`` tokens: the prefix comes
        from its one-off pass, only the suffixes run. ``capture`` gets right-padded
        ``(batch, prefix + suffix, hidden)`` states, as the plain path would (with
        ``suffix_only``, only the suffix positions: enough for last-token pooling)."""
        import torch

        state = self._prefix_state(group, seqs[0], layers)
        n = group.prefix
        device = self.loaded.device
        b = len(seqs)
        sids, smask = self.collate([s[n:] for s in seqs], side="right")
        sids, smask = sids.to(device), smask.to(device)
        full_mask = torch.cat([torch.ones((b, n), dtype=smask.dtype, device=device), smask], 1)
        kv = self._new_kv_cache()
        for i, (k, v) in enumerate(state["kv"]):
            kv.update(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1), i)
        position_ids = n + (smask.cumsum(-1) - 1).clamp(min=0)

        def cap(layer, h):
            if suffix_only:
                capture(layer, h, smask.to(h.device))
                return
            pre = state["hidden"][layer].to(h.device, h.dtype).expand(b, -1, -1)
            capture(layer, torch.cat([pre, h], 1), full_mask.to(h.device))

        self._hooked_forward(
            layers,
            cap,
            b,
            input_ids=sids,
            attention_mask=full_mask,
            position_ids=position_ids,
            use_cache=True,
            **self.kv_inputs(kv),
        )

    def _run_batch(self, group: _Group, seqs, layers: list[int], capture, suffix_only=False):
        """Forward one batch on the plain or prefix path; return the padding side used."""
        if group.prefix:
            self._forward_with_prefix(group, seqs, layers, capture, suffix_only)
            return "right"
        ids, mask = self.collate(seqs)
        self._forward(ids, mask, layers, capture)
        return self.padding_side

    def _iter_plan(self, seqs: list[list[int]], desc: str):
        plan = self._plan(seqs)
        if progress_enabled(self.progress) and len(plan) > 1:
            from ..progress import progress_bar

            plan = progress_bar(plan, desc=desc, unit="batch")
        return plan

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
            caching = cache is not None and cache.enabled
            # Commit every `commit_prompts` prompts, so a run killed late keeps its work.
            step = max(1, cache.commit_prompts) if caching else len(unique)
            computed = None
            for start in range(0, len(unique), step):
                part = unique[start : start + step]
                part_masks = None if masks is None else masks[start : start + step]
                got = self._compute_pooled(part, layers, pooling, part_masks)
                if caching:
                    for layer in layers:
                        cache.store(self.loaded.key, part, layer, pk, list(got[layer]))
                        if cache.dtype != "float32":
                            # Return what later (warm) calls will return, so a cold and a
                            # warm call never disagree.
                            got[layer] = np.stack(cache.as_stored(list(got[layer])))
                if len(part) == len(unique):
                    computed = got
                    break
                if computed is None:
                    computed = {
                        layer: np.empty((len(unique), got[layer].shape[1]), np.float32)
                        for layer in layers
                    }
                for layer in layers:
                    computed[layer][start : start + len(part)] = got[layer]
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

    def _compute_pooled_many(
        self, prompts, layers, poolings, token_masks=None
    ) -> list[dict[int, np.ndarray]]:
        """Per pooling (in order), ``{layer: (n, hidden)}``, from one forward pass per batch
        (token-budget batches, shared prefixes run once)."""
        seqs = self.encode(prompts)
        hidden = self.loaded.hidden_size
        result = [
            {layer: np.empty((len(prompts), hidden), np.float32) for layer in layers}
            for _ in poolings
        ]
        # Only the last position is read: prefix groups need not return prefix states.
        last_only = token_masks is None and all(
            isinstance(p, str) and p == "last_token" for p in poolings
        )
        for group, batch in self._iter_plan(seqs, "extracting"):
            rows = np.asarray(batch)
            keep = {}
            pooled = {}

            def capture(layer, hidden, m, batch=batch, keep=keep, pooled=pooled, group=group):
                if token_masks is not None:
                    if "m" not in keep:
                        side = "right" if group.prefix else self.padding_side
                        keep["m"] = self._pool_mask(
                            [token_masks[i] for i in batch], [len(seqs[i]) for i in batch], side
                        ).to(m.device)
                    m = m * keep["m"]
                with profile("pool"):
                    pooled[layer] = [
                        pool_batch(hidden, m, p).float().cpu().numpy() for p in poolings
                    ]

            self._run_batch(group, [seqs[i] for i in batch], layers, capture, suffix_only=last_only)
            # Written only after the whole forward succeeded (a failed one stores nothing).
            for layer in layers:
                for out, vecs in zip(result, pooled[layer]):
                    out[layer][rows] = vecs
        return result

    def _compute_pooled(self, prompts, layers, pooling, token_masks=None) -> dict[int, np.ndarray]:
        return self._compute_pooled_many(prompts, layers, [pooling], token_masks)[0]

    def _pool_mask(self, masks, lengths, side: str | None = None):
        """Token masks laid out like :meth:`_collate`'s attention mask (padding off)."""
        import torch

        side = side or self.padding_side
        width = max(lengths)
        keep = torch.zeros((len(masks), width), dtype=torch.long)
        for r, (mk, n) in enumerate(zip(masks, lengths)):
            row = torch.as_tensor(np.asarray(mk, dtype=bool)[:n], dtype=torch.long)
            start = 0 if side == "right" else width - n
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
            for batch in self.batch_plan([len(s) for s in seqs]):
                ids, mask = self.collate([seqs[i] for i in batch])
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
        for group, batch in self._iter_plan([seqs[i] for i in todo], "extracting tokens"):
            batch = [todo[j] for j in batch]
            got: dict[int, list[np.ndarray]] = {}

            def capture(layer, hidden, m, batch=batch, got=got):
                h = hidden.float().cpu().numpy()
                mk = m.bool().cpu().numpy()
                got[layer] = [h[r][mk[r]] for r in range(len(batch))]

            self._run_batch(group, [seqs[i] for i in batch], layers, capture)
            for layer in layers:
                for r, i in enumerate(batch):
                    out[i].acts[layer] = got[layer][r]
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
            with self.loaded.lock:
                enc = tok(
                    text, add_special_tokens=True, return_offsets_mapping=True, truncation=False
                )
            offsets = [tuple(map(int, o)) for o in enc["offset_mapping"]]
            ids = enc["input_ids"]
        except (NotImplementedError, ValueError, TypeError):
            with self.loaded.lock:
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
