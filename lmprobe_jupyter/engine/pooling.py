"""Pooling strategies: how a prompt's token activations become one vector (or scores).

Activation-level poolings (used to build classifier inputs): ``last_token``, ``mean``,
``first_token``, ``max``/``min`` (element-wise over tokens, at training time) and any
callable ``f(hidden: Tensor[seq, hidden]) -> Tensor[hidden]``.

Score-level poolings (inference only): ``all`` returns one score per token, ``max``/``min``
reduce per-token scores to one per prompt ("flag if any token triggers").
"""

from __future__ import annotations

import hashlib

POOLINGS = ("last_token", "mean", "first_token", "all", "max", "min")
TOKEN_LEVEL_INFERENCE = ("all", "max", "min")


def validate_pooling(p, what: str = "pooling") -> None:
    if callable(p):
        return
    if not isinstance(p, str) or p not in POOLINGS:
        raise ValueError(
            f"{what}={p!r} is not one of {', '.join(map(repr, POOLINGS))} or a callable"
        )


def resolve_poolings(pooling, train_pooling=None, inference_pooling=None):
    """Apply the collision rules: explicit train/inference values override ``pooling``."""
    validate_pooling(pooling)
    train = pooling if train_pooling is None else train_pooling
    infer = pooling if inference_pooling is None else inference_pooling
    validate_pooling(train, "train_pooling")
    validate_pooling(infer, "inference_pooling")
    return train, infer


def pooling_key(p) -> str:
    """A stable string naming a pooling, used in cache keys."""
    if isinstance(p, str):
        return p
    code = getattr(p, "__code__", None)
    h = hashlib.sha256()
    h.update(getattr(p, "__qualname__", type(p).__name__).encode())
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
    else:
        h.update(repr(p).encode())
    return "callable:" + h.hexdigest()[:16]


def pool_batch(hidden, mask, pooling):
    """Pool ``hidden`` (batch, seq, d) over valid positions of ``mask`` (batch, seq).

    Runs on whatever device ``hidden`` lives on; returns (batch, d) in float32.
    """
    import torch

    h = hidden.float()
    m = mask.to(h.dtype)
    if pooling == "last_token":
        # Index of the last valid position works for left and right padding alike.
        pos = torch.arange(m.shape[1], device=m.device).expand_as(m)
        idx = (pos * mask.long()).argmax(dim=1)
        return h[torch.arange(h.shape[0], device=h.device), idx]
    if pooling == "first_token":
        idx = mask.long().argmax(dim=1)
        return h[torch.arange(h.shape[0], device=h.device), idx]
    if pooling == "mean":
        return (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
    if pooling == "max":
        return h.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(1)
    if pooling == "min":
        return h.masked_fill(~mask.bool().unsqueeze(-1), float("inf")).amin(1)
    if callable(pooling):
        rows = []
        for i in range(h.shape[0]):
            out = pooling(h[i][mask[i].bool()])
            rows.append(torch.as_tensor(out, device=h.device).float().reshape(-1))
        return torch.stack(rows)
    raise ValueError(f"pooling={pooling!r} cannot pool activations")
