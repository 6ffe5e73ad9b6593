"""Helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

#: Contrastive prompts the tiny-model probe tests train on.
POS = ["alpha alpha alpha", "alpha beta alpha", "alpha gamma", "alpha alpha", "beta alpha alpha"]
NEG = ["omega omega omega", "omega delta", "delta omega omega", "omega omega", "omega sigma"]


def _save_tiny(
    path: Path,
    tokenizer_dir: Path,
    arch: str,
    *,
    n_layers: int,
    hidden: int,
    seed: int,
    adjust=None,
    **config,
):
    """Build a random-weight ``arch`` model (``"Llama"``, ``"Mixtral"``) with the tokenizer
    in ``tokenizer_dir`` (seeded, 4 heads, 2 KV heads, context 128, tied embeddings),
    ``adjust(model)`` it, and save model and tokenizer to ``path``."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = getattr(transformers, f"{arch}Config")(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
        **config,
    )
    model = getattr(transformers, f"{arch}ForCausalLM")(cfg)
    if adjust is not None:
        adjust(model)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_llama(
    path: Path, tokenizer_dir: Path, n_layers: int = 4, hidden: int = 32, seed: int = 0
):
    return _save_tiny(path, tokenizer_dir, "Llama", n_layers=n_layers, hidden=hidden, seed=seed)


def _spread_routers(model) -> None:
    """Random init leaves the router weights tiny; scale them so routing is not uniform."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate.weight" in name:
                p.normal_(0, 0.5)


def make_tiny_mixtral(
    path: Path, tokenizer_dir: Path, n_layers: int = 3, hidden: int = 32, seed: int = 0
):
    """A random-weight Mixtral (4 experts, top-2) with the bundled tokenizer."""
    return _save_tiny(
        path,
        tokenizer_dir,
        "Mixtral",
        n_layers=n_layers,
        hidden=hidden,
        seed=seed,
        adjust=_spread_routers,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
