"""Capture for sample scans: every decoder layer's signals and each token's surprise, in one pass.

:func:`capture_signals` runs prompts through the model with forward hooks on each decoder
layer and on its attention and MLP children, and hands the caller, batch by batch,

- ``residual``: the residual stream after the layer (the layer's output),
- ``attn_delta``: what the layer's attention adds to the stream,
- ``mlp_delta``: what the layer's MLP adds,

plus ``-log p(token | previous tokens)`` per token. :class:`~.sample_scan.SampleScan` uses
it both to build a scan and to project a new prompt on a saved one.
"""

from __future__ import annotations

from ..extraction._batching import right_pad

_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "ffn")


def _child(block, names):
    for n in names:
        mod = getattr(block, n, None)
        if mod is not None:
            return mod
    raise ValueError(
        f"cannot find {names[0]!r} in decoder layer {type(block).__name__}; sample scans "
        f"support layers with one of {', '.join(names)}"
    )


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def capture_signals(loaded, prompts, signals, batch_size, max_tokens, sink):
    """Run ``prompts``; call ``sink(rows, lengths, signal_arrays, surprise)`` per batch.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`~.models.load_model`.
    prompts : list of str
    signals : list of {"residual", "attn_delta", "mlp_delta"}
    batch_size : int
    max_tokens : int
        Tokens kept per prompt (also capped by the model's maximum length).
    sink : callable
        Called once per batch with ``rows`` (the prompts' indices), ``lengths`` (their
        token counts), ``signal_arrays`` (``signal_arrays[s]`` of shape
        (batch, n_layers, width, hidden), float32 on the CPU, right-padded) and
        ``surprise`` (batch, width) in nats, NaN at the first position (read each row up
        to its length: the padding after it holds no prompt's tokens).

    Returns
    -------
    list of list of int
        The token ids of each prompt, truncated to ``max_tokens``.
    """
    import torch

    from ..extraction.models import decoder_layers

    tok = loaded.tokenizer
    limit = min(max_tokens, loaded.max_length)
    seqs = [x[:limit] for x in tok(list(prompts), add_special_tokens=True)["input_ids"]]
    blocks = decoder_layers(loaded.model)
    n_layers = len(blocks)
    pad = tok.pad_token_id or 0
    for start in range(0, len(seqs), batch_size):
        rows = list(range(start, min(start + batch_size, len(seqs))))
        ids, mask = right_pad([seqs[i] for i in rows], pad)
        width = ids.shape[1]
        got = {s: [None] * n_layers for s in signals}
        handles = []

        def keep(signal, layer, got=got):
            def hook(_m, _i, output):
                got[signal][layer] = _first(output).detach().float().cpu()

            return hook

        for layer, block in enumerate(blocks):
            if "residual" in signals:
                handles.append(block.register_forward_hook(keep("residual", layer)))
            if "attn_delta" in signals:
                handles.append(
                    _child(block, _ATTN_NAMES).register_forward_hook(keep("attn_delta", layer))
                )
            if "mlp_delta" in signals:
                handles.append(
                    _child(block, _MLP_NAMES).register_forward_hook(keep("mlp_delta", layer))
                )
        dev = loaded.device
        try:
            with torch.inference_mode():
                out = loaded.model(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(dev),
                    use_cache=False,
                )
        finally:
            for h in handles:
                h.remove()
        logp = torch.log_softmax(out.logits.float(), dim=-1).cpu()
        surprise = torch.full((len(rows), width), float("nan"))
        if width > 1:
            nll = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
            surprise[:, 1:] = nll
        arrays = {s: torch.stack(got[s], dim=1).numpy() for s in signals}  # (b, L, w, d)
        lengths = [len(seqs[i]) for i in rows]
        sink(rows, lengths, arrays, surprise.numpy())
    return seqs
