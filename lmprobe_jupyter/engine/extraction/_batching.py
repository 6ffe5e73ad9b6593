"""Batching token-id lists into model inputs (shared by the engine's own forward loops)."""

from __future__ import annotations


def right_pad(seqs, pad: int):
    """Right-padded input ids and attention mask of token-id lists.

    Parameters
    ----------
    seqs : sequence of list of int
        One token-id list per row (at least one row, at least one token in the longest).
    pad : int
        The id that fills the padding.

    Returns
    -------
    ids, mask : torch.LongTensor of shape (n_rows, longest)
        On the CPU; ``mask`` is 1 on real tokens and 0 on padding.
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    return ids, mask
