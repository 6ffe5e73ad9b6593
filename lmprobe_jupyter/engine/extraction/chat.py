"""Chat-aware prompts: chat-template rendering, message spans and role token masks.

A probe meant to watch a chatbot should read prompts the way the chatbot sees them: as
turns rendered with the tokenizer's chat template. Rendering adds boilerplate (role
headers, a default system prompt) that says nothing about the user's intent, so a probe
can restrict its pooling to the tokens of some roles' content (``score_roles``).

To know which characters of the rendered text came from which message, each message is
rendered once with its content replaced by a unique sentinel; the sentinels' positions
give the spans exactly, whatever markup the template wraps around them. Token masks then
follow from the tokenizer's offset mapping.
"""

from __future__ import annotations

import numpy as np

#: Roles that ``score_roles`` may name.
ROLES = ("system", "user", "assistant", "tool")

_SENTINEL = "LMPJMSG{}SENTINEL"


class ChatText(str):
    """A rendered chat prompt: a ``str`` that remembers where each message's content is.

    Attributes
    ----------
    spans : tuple of (role, start, end)
        Character span ``text[start:end]`` of every message's content, in message order.
    """

    spans: tuple[tuple[str, int, int], ...]

    def __new__(cls, text: str, spans=()) -> ChatText:
        obj = super().__new__(cls, text)
        obj.spans = tuple((str(r), int(a), int(b)) for r, a, b in spans)
        return obj

    def __reduce__(self):
        return (ChatText, (str(self), self.spans))


def normalize_roles(score_roles) -> tuple[str, ...] | None:
    """Validate ``score_roles``: None, one role name or a sequence of role names.

    Raises
    ------
    ValueError
        If a role is not one of :data:`ROLES`, or the sequence is empty.
    """
    if score_roles is None:
        return None
    roles = (score_roles,) if isinstance(score_roles, str) else score_roles
    try:
        roles = tuple(roles)
    except TypeError:
        raise TypeError(
            f"score_roles={score_roles!r} must be a role name or a tuple of role names "
            f"from {', '.join(map(repr, ROLES))}"
        ) from None
    if not roles:
        raise ValueError(
            f"score_roles is empty; give at least one of {', '.join(map(repr, ROLES))} or None"
        )
    for r in roles:
        if r not in ROLES:
            raise ValueError(
                f"score_roles contains {r!r}, which is not one of {', '.join(map(repr, ROLES))}"
            )
    return tuple(dict.fromkeys(roles))


def _check_messages(messages) -> list[dict]:
    messages = list(messages)
    if not messages:
        raise ValueError("a chat prompt needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} ({m!r:.60}) needs 'role' and 'content' keys")
        if not isinstance(m["content"], str):
            raise TypeError(
                f"message {i} has content of type {type(m['content']).__name__}; only text "
                "(str) content is supported"
            )
    return messages


def render_chat(tokenizer, messages, add_generation_prompt: bool = False) -> ChatText:
    """Render ``messages`` with ``tokenizer``'s chat template, keeping content spans.

    Parameters
    ----------
    tokenizer : transformers tokenizer with a ``chat_template``
    messages : list of dict
        ``[{"role": ..., "content": ...}, ...]``.
    add_generation_prompt : bool, default False
        Append the header of the assistant's turn (for generation).

    Returns
    -------
    ChatText
        The rendered text, with ``spans`` locating each message's content.
    """
    messages = _check_messages(messages)

    def apply(msgs):
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    text = apply(messages)
    marked = apply(
        [{**m, "content": _SENTINEL.format(i)} for i, m in enumerate(messages)],
    )
    # Rebuild the real text from the marked one, recording where each content lands.
    for strip in (False, True):
        out, spans, pos = [], [], 0
        for i, m in enumerate(messages):
            sentinel = _SENTINEL.format(i)
            at = marked.find(sentinel, pos)
            if at < 0:
                break
            out.append(marked[pos:at])
            start = sum(map(len, out))
            content = m["content"].strip() if strip else m["content"]
            out.append(content)
            spans.append((m["role"], start, start + len(content)))
            pos = at + len(sentinel)
        else:
            out.append(marked[pos:])
            if "".join(out) == text:
                return ChatText(text, spans)
    raise ValueError(
        "cannot locate the messages' content in the text rendered by this tokenizer's chat "
        "template (it rewrites message content); score_roles is not supported for it"
    )


def format_chat(
    tokenizer,
    prompt,
    force: bool = False,
    add_generation_prompt: bool = False,
    model_name: str | None = None,
) -> str:
    """Render ``prompt`` as chat text with ``tokenizer``'s chat template.

    A plain string becomes one user turn when ``force`` is true (``chat_template=True``);
    a list of ``{"role", "content"}`` messages is always rendered with the template.
    Rendered prompts are :class:`ChatText` (they carry the content spans used by
    ``score_roles``); a plain string that is not rendered is returned unchanged.
    """
    if isinstance(prompt, str) and not force:
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {model_name or 'this model'!r} has no chat template; use "
            "chat_template=False and pass plain strings"
        )
    return render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)


def role_token_mask(tokenizer, text: ChatText, roles, max_length: int | None = None) -> np.ndarray:
    """Boolean mask over the tokens of ``text``: True where a token overlaps the content
    of a message whose role is in ``roles``.

    ``text`` is tokenized exactly as the extractor does (``add_special_tokens=True``,
    cut to ``max_length``), so the mask lines up with the activations.
    """
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, truncation=False)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    if max_length is not None:
        offsets = offsets[:max_length]
    mask = np.zeros(len(offsets), dtype=bool)
    for role, a, b in text.spans:
        if role in roles and b > a:
            mask |= (offsets[:, 0] < b) & (offsets[:, 1] > a)
    return mask


def role_token_masks(tokenizer, prompts, roles, max_length: int | None = None) -> list[np.ndarray]:
    """Per-prompt token masks of ``roles`` for already-prepared (rendered) prompts.

    Raises
    ------
    ValueError
        If a prompt is not a rendered chat prompt, or holds no token of those roles.
    """
    roles = normalize_roles(roles)
    masks = []
    for i, p in enumerate(prompts):
        if not isinstance(p, ChatText):
            raise ValueError(
                f"score_roles={roles!r} needs chat prompts, but prompt {i} ({str(p)!r:.50}) is "
                "plain text; set chat_template=True or pass lists of {'role', 'content'} messages"
            )
        m = role_token_mask(tokenizer, p, roles, max_length)
        if not m.any():
            present = sorted({r for r, _, _ in p.spans})
            raise ValueError(
                f"prompt {i} has no tokens from roles {roles!r} (its roles: {present}); "
                "every prompt needs a non-empty message of a scored role"
            )
        masks.append(m)
    return masks


def roles_key(score_roles) -> str:
    """Cache-key suffix naming the pooled roles (empty when pooling sees every token)."""
    roles = normalize_roles(score_roles)
    return "" if roles is None else "|roles=" + ",".join(roles)
