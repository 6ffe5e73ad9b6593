"""Mixture-of-experts models: detect them from a config, read their router logits.

:func:`detect_moe_info` reads only a model's ``config.json`` (no weights are loaded or
downloaded) and says which decoder layers route tokens to experts. :func:`router_forward`
runs one forward pass that captures, at once, pooled hidden states of the requested layers
and every MoE layer's router logits (which experts each token is sent to); bulk extraction
(:func:`.bulk.extract` with ``extract_router=True``) calls it.

Router modules are found by structure, not by class name: in each decoder layer, a
submodule called ``gate`` or ``router`` whose parent also holds ``experts`` (Mixtral,
Qwen-MoE, OLMoE, DeepSeek-MoE and their relatives in transformers).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._batching import right_pad

__all__ = ["ActivationType", "MoEInfo", "NotMoEError", "detect_moe_info", "router_forward"]

# config keys holding the number of routed experts, by architecture family
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_TOPK_KEYS = ("num_experts_per_tok", "moe_top_k", "top_k")


class ActivationType(str, enum.Enum):
    """Kinds of tensor an extraction can hold."""

    HIDDEN = "hidden"  #: residual-stream hidden states (pooled per prompt)
    LOGITS = "logits"  #: next-token logits
    ROUTER = "router"  #: MoE router logits, one row of ``n_experts`` per token


class NotMoEError(ValueError):
    """A mixture-of-experts feature was asked of a dense model."""


@dataclass
class MoEInfo:
    """What a model's config says about its experts.

    Attributes
    ----------
    is_moe : bool
        Always True for a returned info (dense models give None).
    n_experts : int
        Routed experts per MoE layer.
    n_experts_per_token : int or None
        Experts each token is sent to (top-k).
    moe_layers : list of int
        Decoder layers with a router.
    n_layers : int
    model_type : str
        The config's ``model_type`` (``"mixtral"``, ``"qwen2_moe"``, ...).
    n_shared_experts : int
        Always-on shared experts (Qwen-MoE, DeepSeek), 0 when none.
    """

    is_moe: bool
    n_experts: int
    n_experts_per_token: int | None
    moe_layers: list[int] = field(default_factory=list)
    n_layers: int = 0
    model_type: str = ""
    n_shared_experts: int = 0


def _read_config(model_name: str) -> dict:
    from .models import BUNDLED_MODELS, resolve_model

    local = Path(str(model_name)).expanduser()
    if local.is_dir():
        path = local / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"model path {str(local)!r} has no config.json")
    elif model_name in BUNDLED_MODELS:
        path = Path(resolve_model(model_name)[1]) / "config.json"
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model_name, "config.json"))
        except Exception as exc:  # noqa: BLE001 - any hub failure means "config not available"
            raise FileNotFoundError(
                f"cannot read the config of {model_name!r} ({type(exc).__name__}); pass a local "
                "folder saved with save_pretrained() or a hub ID reachable from here"
            ) from None
    cfg = json.loads(path.read_text())
    return cfg.get("text_config", cfg)


def _moe_layers(cfg: dict, n_layers: int) -> list[int]:
    layers = list(range(n_layers))
    if "decoder_sparse_step" in cfg or "mlp_only_layers" in cfg:  # Qwen-MoE
        step = int(cfg.get("decoder_sparse_step") or 1)
        dense = set(cfg.get("mlp_only_layers") or [])
        layers = [i for i in layers if i not in dense and (i + 1) % step == 0]
    if "first_k_dense_replace" in cfg:  # DeepSeek
        k = int(cfg.get("first_k_dense_replace") or 0)
        freq = int(cfg.get("moe_layer_freq") or 1)
        layers = [i for i in layers if i >= k and i % freq == 0]
    return layers


def detect_moe_info(model_name: str) -> MoEInfo | None:
    """Whether a model is a mixture of experts, from its config alone.

    Parameters
    ----------
    model_name : str
        A local folder with a ``config.json``, a bundled model ID or a hub ID (only
        ``config.json`` is fetched).

    Returns
    -------
    MoEInfo or None
        None for a dense model.
    """
    cfg = _read_config(model_name)
    n_experts = next((int(cfg[k]) for k in _EXPERT_KEYS if cfg.get(k)), 0)
    if n_experts <= 1:
        return None
    n_layers = int(
        next((cfg[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if k in cfg), 0)
    )
    top_k = next((int(cfg[k]) for k in _TOPK_KEYS if cfg.get(k)), None)
    shared = int(
        cfg.get("n_shared_experts") or (1 if cfg.get("shared_expert_intermediate_size") else 0)
    )
    return MoEInfo(
        is_moe=True,
        n_experts=n_experts,
        n_experts_per_token=top_k,
        moe_layers=_moe_layers(cfg, n_layers),
        n_layers=n_layers,
        model_type=str(cfg.get("model_type", "")),
        n_shared_experts=shared,
    )


def router_modules(model) -> dict[int, object]:
    """``{layer: router module}`` for every decoder layer that routes to experts."""
    from .models import decoder_layers

    out = {}
    for i, block in enumerate(decoder_layers(model)):
        for name, mod in block.named_modules():
            parent_name, _, leaf = name.rpartition(".")
            if leaf not in ("gate", "router"):
                continue
            parent = block.get_submodule(parent_name) if parent_name else block
            if hasattr(parent, "experts"):
                out[i] = mod
                break
    return out


def require_routers(loaded) -> dict[int, object]:
    """The router modules of a loaded model; :class:`NotMoEError` for a dense one."""
    routers = router_modules(loaded.model)
    if not routers:
        raise NotMoEError(
            f"model {loaded.name!r} ({type(loaded.model).__name__}) is not a mixture-of-experts "
            "model: no decoder layer has a router (a 'gate'/'router' beside 'experts'); "
            "extract_router=True needs an MoE model such as Mixtral or Qwen-MoE"
        )
    return routers


def router_forward(loaded, prompts: list[str], layers: list[int], pooling, batch_size: int = 8):
    """Pooled hidden states and router logits of ``prompts`` in one forward pass per batch.

    Parameters
    ----------
    loaded : LoadedModel
    prompts : list of str
    layers : list of int
        Hidden-state layers to pool.
    pooling : str or callable
        An activation-level pooling (see :mod:`.pooling`).
    batch_size : int

    Returns
    -------
    hidden : dict of int to ndarray of shape (n_prompts, hidden)
    router : dict of int to list of ndarray of shape (n_tokens, n_experts)
        Per MoE layer, each prompt's router logits (float32, padding removed).
    """
    import torch

    from .models import decoder_layers
    from .pooling import pool_batch

    routers = require_routers(loaded)
    tok = loaded.tokenizer
    seqs = tok(
        list(prompts), add_special_tokens=True, truncation=True, max_length=loaded.max_length
    )["input_ids"]
    n = len(prompts)
    hidden = {layer: np.empty((n, loaded.hidden_size), np.float32) for layer in layers}
    router: dict[int, list] = {layer: [None] * n for layer in routers}
    blocks = decoder_layers(loaded.model)
    pad = tok.pad_token_id or 0
    base = (
        getattr(loaded.model, getattr(loaded.model, "base_model_prefix", ""), None) or loaded.model
    )
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        ids, mask = right_pad([seqs[i] for i in rows], pad)
        width = ids.shape[1]
        ids, mask = ids.to(loaded.device), mask.to(loaded.device)
        handles = []

        def hidden_hook(layer, rows=rows, mask=mask):
            def hook(_m, _i, output):
                h = output[0] if isinstance(output, tuple) else output
                hidden[layer][rows] = (
                    pool_batch(h, mask.to(h.device), pooling).float().cpu().numpy()
                )

            return hook

        def router_hook(layer, rows=rows, mask=mask, width=width):
            def hook(_m, _i, output):
                logits = output[0] if isinstance(output, tuple) else output
                logits = logits.reshape(len(rows), width, -1).float().cpu().numpy()
                keep = mask.bool().cpu().numpy()
                for r, i in enumerate(rows):
                    router[layer][i] = logits[r][keep[r]]

            return hook

        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(hidden_hook(layer)))
        for layer, mod in routers.items():
            handles.append(mod.register_forward_hook(router_hook(layer)))
        try:
            with torch.inference_mode():
                base(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=False,
                )
        finally:
            for h in handles:
                h.remove()
    return hidden, router
