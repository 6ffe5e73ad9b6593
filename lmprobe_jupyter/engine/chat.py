"""Chat-aware prompts: format a prompt (or a message list) with the tokenizer's chat template."""

from __future__ import annotations


def format_chat(probe, prompt, force: bool = False) -> str:
    """Render ``prompt`` as chat text.

    A plain string becomes one user turn when ``force`` is true (``chat_template=True``);
    a list of ``{"role", "content"}`` messages is always rendered with the template.
    """
    if isinstance(prompt, str) and not force:
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    tok = probe._loaded().tokenizer
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {probe.model_name!r} has no chat template; use chat_template=False "
            "and pass plain strings"
        )
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
