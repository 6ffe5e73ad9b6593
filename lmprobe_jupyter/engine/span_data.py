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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["check_spans", "context_documents", "span_owners"]


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


def check_spans(texts: Sequence[str], spans) -> list[list[tuple[int, int, object]]]:
    """Validate ``spans`` (per text, a list of ``(start, end, label)`` character spans
    inside the text, not overlapping) and return them as lists of tuples.

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
            if len(s) != 3:
                raise ValueError(f"text {i}: span {s!r} is not (start, end, label)")
            a, b, lab = s
            a, b = int(a), int(b)
            if not 0 <= a < b <= len(text):
                raise ValueError(
                    f"text {i}: span ({a}, {b}) is not inside the text (length {len(text)}) "
                    "or is empty"
                )
            rows.append((a, b, lab))
        rows.sort(key=lambda r: r[0])
        for (a0, b0, _), (a1, _, _) in zip(rows, rows[1:]):
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
    for k, (a, b, _) in enumerate(spans):
        inside = (o[:, 1] > a + shift) & (o[:, 0] < b + shift) & (o[:, 1] > o[:, 0])
        owner[inside & (owner < 0)] = first + k
    return owner
