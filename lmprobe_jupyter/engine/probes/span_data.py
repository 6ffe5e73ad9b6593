"""Span-labelled training texts, and context augmentation built from them.

An every-token probe (``train_pooling="all"``) gives every token its prompt's label.
Trained on short requests, it then meets the same request hundreds of tokens into a
document or a chat, where the request's activations have drifted (on the shift
benchmark of ``bench/token_probes.py``, a positive request's top window loses about 0.9
logit) and ordinary text around it outscores the weaker requests.

:meth:`Probe.fit_spans <.probe.Probe.fit_spans>` trains on texts whose labelled parts
are character spans: each token inside a span gets that span's label, tokens outside
every span are not trained on. :func:`context_documents` builds such texts from the
training prompts alone: a few prompts, shuffled, joined into one document, each
prompt's tokens labelled with that prompt's label. The probe then sees every request at
later positions, after other text, without any text of the kind it is tested on.
:func:`background_documents` puts each prompt at a random sentence boundary of a few
hundred words of ordinary text the user supplies (news, documentation: not the text the
probe will be tested in), the prompt's span labelled with its label and the text around
it with the negative label at a small weight: the probe learns to fire on a request
inside ordinary text and not on the text (spans may carry a weight, ``(start, end,
label, weight)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["background_documents", "check_spans", "context_documents", "span_owners"]

#: Sentence ends that :func:`background_documents` may cut background text at.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def context_documents(
    prompts: Sequence[str],
    labels,
    *,
    per_document: tuple[int, int] = (2, 4),
    repeats: int = 3,
    separator: str = "\n\n",
    random_state: int | None = 0,
):
    """Documents of several training prompts each, with every prompt's span labelled.

    Each of ``repeats`` rounds shuffles the prompts and cuts the order into documents of
    ``per_document[0]`` to ``per_document[1]`` prompts (drawn uniformly), joined with
    ``separator``; so every prompt appears ``repeats`` times, at different positions
    and after different text.

    Parameters
    ----------
    prompts : sequence of str
    labels : array-like of shape (n_prompts,)
    per_document : (int, int), default (2, 4)
        Fewest and most prompts per document.
    repeats : int, default 3
    separator : str, default "\\n\\n"
    random_state : int or None, default 0

    Returns
    -------
    documents : list of str
    spans : list of list of (start, end, label)
        Per document, the character span of each prompt in it and that prompt's label.
    """
    prompts = list(prompts)
    labels = np.asarray(labels)
    if len(labels) != len(prompts):
        raise ValueError(f"got {len(labels)} labels for {len(prompts)} prompts")
    lo, hi = (int(x) for x in per_document)
    if not 1 <= lo <= hi:
        raise ValueError(f"per_document={per_document!r}: need 1 <= fewest <= most")
    if int(repeats) < 1:
        raise ValueError(f"repeats={repeats!r} must be >= 1")
    if not prompts:
        raise ValueError("no prompts to build documents from")
    rng = np.random.default_rng(random_state)
    documents, spans = [], []
    for _ in range(int(repeats)):
        order = rng.permutation(len(prompts))
        i = 0
        while i < len(order):
            k = int(rng.integers(lo, hi + 1))
            text, where = "", []
            for j in order[i : i + k]:
                if text:
                    text += separator
                start = len(text)
                text += prompts[j]
                where.append((start, len(text), labels[j].item()))
            documents.append(text)
            spans.append(where)
            i += k
    return documents, spans


def background_documents(
    prompts: Sequence[str],
    labels,
    background: Sequence[str],
    *,
    words: tuple[int, int] = (230, 540),
    background_label=None,
    background_weight: float = 0.3,
    random_state: int | None = 0,
):
    """Each prompt inside ordinary text: its span labelled with its label, the text
    around it with the negative label at a small weight.

    ``background`` is split into sentences (kept in order). For each prompt a run of
    consecutive sentences, from a random one on (wrapping around), is taken until it
    holds ``words[0]`` to ``words[1]`` words (drawn uniformly), and the prompt goes in at
    a random boundary between them (first and last included), joined with spaces. Use
    text of a kind the probe will not be tested in, so a benchmark still measures the
    shift: on ``bench/token_probes.py`` (news articles as background, requests tested
    inside novel prose) this and :func:`context_documents` together lift the embedded
    AUROC of the every-token probe (see the README).

    Parameters
    ----------
    prompts : sequence of str
    labels : array-like of shape (n_prompts,)
    background : sequence of str
        Ordinary text (articles, paragraphs): never a request of either class.
    words : (int, int), default (230, 540)
        Fewest and most words of background per document (about 300-700 tokens).
    background_label : label, optional
        The label of the background's tokens. Default: the smallest of ``labels`` (0 of
        0/1, False of booleans), which needs two classes among ``labels``.
    background_weight : float, default 0.3
        Weight of each background token against a prompt token's 1. 0 leaves the
        background untrained (it is then only context).
    random_state : int or None, default 0

    Returns
    -------
    documents : list of str
        One per prompt, in order.
    spans : list of list of (start, end, label, weight)
        Per document: the background before the prompt, the prompt, the background after
        it (background spans only where there is text and ``background_weight > 0``).
    """
    prompts = list(prompts)
    labels = np.asarray(labels)
    if len(labels) != len(prompts):
        raise ValueError(f"got {len(labels)} labels for {len(prompts)} prompts")
    if not prompts:
        raise ValueError("no prompts to place in background text")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("background_documents takes prompts as str (chat messages: render them)")
    if isinstance(background, str):
        raise ValueError("background is one str: give a list of texts (e.g. [text])")
    lo, hi = (int(x) for x in words)
    if not 1 <= lo <= hi:
        raise ValueError(f"words={words!r}: need 1 <= fewest <= most")
    weight = float(background_weight)
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"background_weight={background_weight!r} must be a number >= 0")
    if background_label is None:
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(
                "labels hold one class, so the background's label cannot be inferred: "
                "pass background_label= (the negative class)"
            )
        background_label = classes[0].item()
    sentences = [x.strip() for t in background for x in _SENTENCE_END.split(str(t))]
    sentences = [x for x in sentences if x]
    if not sentences:
        raise ValueError("background holds no text")
    n_words = [len(x.split()) for x in sentences]
    rng = np.random.default_rng(random_state)
    documents, spans = [], []
    for prompt, label in zip(prompts, labels):
        target = int(rng.integers(lo, hi + 1))
        j = int(rng.integers(len(sentences)))
        run, total = [], 0
        while total < target:
            run.append(sentences[j % len(sentences)])
            total += n_words[j % len(sentences)]
            j += 1
        cut = int(rng.integers(0, len(run) + 1))
        before, after = " ".join(run[:cut]), " ".join(run[cut:])
        head = before + " " if before else ""
        text = head + prompt + (" " + after if after else "")
        start, end = len(head), len(head) + len(prompt)
        own = [(start, end, label.item(), 1.0)]
        if weight > 0 and before:
            own.insert(0, (0, len(before), background_label, weight))
        if weight > 0 and after:
            own.append((end + 1, len(text), background_label, weight))
        documents.append(text)
        spans.append(own)
    return documents, spans


def check_spans(texts: Sequence[str], spans) -> list[list[tuple[int, int, object, float]]]:
    """Validate ``spans`` (per text, a list of ``(start, end, label)`` or ``(start, end,
    label, weight)`` character spans inside the text, not overlapping; weights > 0,
    default 1) and return them as lists of ``(start, end, label, weight)``, sorted.

    Raises
    ------
    ValueError
        Naming the text and span at fault.
    """
    if spans is None or len(spans) != len(texts):
        n = "no" if spans is None else len(spans)
        raise ValueError(f"got {n} span lists for {len(texts)} texts: give one list per text")
    out = []
    for i, (text, own) in enumerate(zip(texts, spans)):
        rows = []
        for s in own:
            if len(s) not in (3, 4):
                raise ValueError(
                    f"text {i}: span {s!r} is not (start, end, label) or (start, end, label, "
                    "weight)"
                )
            a, b, lab = s[:3]
            a, b = int(a), int(b)
            if not 0 <= a < b <= len(text):
                raise ValueError(
                    f"text {i}: span ({a}, {b}) is not inside the text (length {len(text)}) "
                    "or is empty"
                )
            w = float(s[3]) if len(s) == 4 else 1.0
            if not (np.isfinite(w) and w > 0):
                raise ValueError(
                    f"text {i}: span ({a}, {b}) has weight {s[3]!r}; a span's weight must be "
                    "a finite number > 0 (leave a text part out of its spans to not train on it)"
                )
            rows.append((a, b, lab, w))
        rows.sort(key=lambda r: r[0])
        for (a0, b0, *_), (a1, *_) in zip(rows, rows[1:]):
            if a1 < b0:
                raise ValueError(f"text {i}: spans starting at {a0} and {a1} overlap")
        out.append(rows)
    if not any(out):
        raise ValueError("no spans: every text's span list is empty")
    return out


def span_owners(offsets, spans, first: int, shift: int = 0) -> np.ndarray:
    """Which span each token lies in: ``first + k`` for the text's ``k``-th span, -1 for
    a token outside every span. A token belongs to the span its characters overlap
    (offsets ``(start, end)`` per token; ``shift`` is where the span coordinates start in
    the text the offsets index, e.g. after a chat template's prefix)."""
    owner = np.full(len(offsets), -1, dtype=np.int64)
    if not len(offsets):
        return owner
    o = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    for k, (a, b, *_) in enumerate(spans):
        inside = (o[:, 1] > a + shift) & (o[:, 0] < b + shift) & (o[:, 1] > o[:, 0])
        owner[inside & (owner < 0)] = first + k
    return owner
