"""Which tokens get a token-level score: the attention sink and special tokens do not.

Position 0 of a causal LM is an attention sink: every later token attends to it heavily,
and its hidden state has outsized norms unrelated to the text (SmolLM2-135M, StrongREJECT
prompts: its norm is 5x the median token's at layer 8 and 170x at layer 12). Any probe applied to it
scores noise, saturated to 0 or 1 (issue 14: the first token of every text scored 0.000
with a last-token probe, 1.000 with a mean-pooled one). Special tokens (BOS/EOS, padding,
chat-template control tokens such as ``<|im_start|>``) carry no text either.

So by default token-level scores are ``NaN`` there (skipped by every aggregation in
:mod:`.windows`, greyed in highlights); ``include_sink=True`` / ``include_special=True``
score them anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def special_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokenizer's special tokens (BOS/EOS/PAD/UNK and added control tokens)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for tid, tok in added.items():
        if getattr(tok, "special", False):
            ids.add(int(tid))
    return frozenset(int(i) for i in ids if i is not None)


def scored_token_mask(
    token_ids: Sequence[int],
    special_ids: frozenset[int] | set[int] = frozenset(),
    include_sink: bool = False,
    include_special: bool = False,
) -> np.ndarray:
    """True at the tokens a token-level score is given to.

    Parameters
    ----------
    token_ids : sequence of int of length seq
    special_ids : set of int
        From :func:`special_token_ids`.
    include_sink : bool, default False
        Score position 0 (the attention sink).
    include_special : bool, default False
        Score special tokens.

    Returns
    -------
    bool ndarray of shape (seq,)
    """
    ids = np.asarray(list(token_ids), dtype=np.int64)
    mask = np.ones(len(ids), dtype=bool)
    if not include_special and len(special_ids):
        mask &= ~np.isin(ids, np.fromiter(special_ids, dtype=np.int64))
    if not include_sink and len(ids):
        mask[0] = False
    return mask


def scored_token_masks(
    tokenizer, sequences: Sequence[Sequence[int]], include_sink=False, include_special=False
) -> list[np.ndarray]:
    """:func:`scored_token_mask` of each token-id sequence."""
    special = special_token_ids(tokenizer)
    return [
        scored_token_mask(s, special, include_sink=include_sink, include_special=include_special)
        for s in sequences
    ]


def mask_scores(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-token scores with ``NaN`` where ``mask`` is False (shape kept, float64)."""
    out = np.asarray(scores, dtype=np.float64).copy()
    m = np.asarray(mask, dtype=bool)
    if out.shape[: m.ndim] != m.shape:
        raise ValueError(f"scores of shape {out.shape} do not match a mask of shape {m.shape}")
    out[~m] = np.nan
    return out
