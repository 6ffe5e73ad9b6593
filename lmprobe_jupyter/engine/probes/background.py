"""Training attention probes inside ordinary text (``Probe(background="auto")``).

A probe trained on short prompts alone has never seen a request inside other text: in a
long document its attention spreads over text it never learned to ignore
(``bench/token_probes.py``). With ``background="auto"`` (the default),
:meth:`~.probe.Probe.fit` of an attention probe also trains on each training
prompt placed at a random sentence boundary of ordinary text
(:func:`.span_data.background_documents`), the document labelled as its prompt: the
request is the needle the probe learns to find.

The ordinary text is Python's own documentation (``pydoc_data.topics``, shipped with
CPython, so it is there offline on every machine): technical prose that is never a
request of either class, and far from the prose a benchmark tests in. At most
:data:`MAX_DOCUMENTS` training prompts get a document (a seeded sample), so the extra
extraction stays bounded (~450 tokens per document); a prompt's document depends on the
prompt alone, so refits reuse their cached activations.

Not (yet) for MultiMax probes: unmeasured on the benchmark. Not for every-token
logistic probes (``pooling="rolling_max:16"``): trained on the text
around each prompt as a negative, such a probe learns "prompt vs prose" into the same
direction as its task, and on short prompts that costs the task (a dog-vs-cat probe on
8-word prompts fell from 0.97 to 0.63 held-out AUROC). There,
``Probe.fit_spans(*background_documents(prompts, labels, texts))`` is the opt-in, whose
gain and cost ``bench/token_probes.py`` measures. Nor for MIL probes
(``classifier="mil"``, ``train_pooling="rolling_max:K"``): they train through the
windows already, and documents lowered their held-out AUROC on the same test (1.0 ->
0.89).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Most training prompts placed in background text per fit.
MAX_DOCUMENTS = 512
BACKGROUND_VALUES = ("auto", None)


def validate_background(background) -> None:
    """``background`` is ``"auto"`` or None."""
    if background not in BACKGROUND_VALUES:
        raise ValueError(
            f"background={background!r} is not 'auto' or None; to train in text of your "
            "own, use Probe.fit_spans(*background_documents(prompts, labels, your_texts))"
        )


@lru_cache(maxsize=1)
def builtin_background() -> tuple[str, ...]:
    """Paragraphs of Python's documentation (``pydoc_data.topics``), in a fixed order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # a Python built without its documentation
        raise RuntimeError(
            "background='auto' reads Python's documentation (pydoc_data), which this Python "
            "lacks; pass background=None, or train with Probe.fit_spans(*background_documents"
            "(prompts, labels, your_texts))"
        ) from exc
    paragraphs = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            words = para.split()
            # prose only: no code listings, grammar rules or tables
            if len(words) >= 12 and not para.startswith((" ", "\t")) and "::=" not in para:
                paragraphs.append(" ".join(words))
    return tuple(paragraphs)


def document_words(probe, prompts, labels) -> tuple[int, int] | None:
    """The words of background per document, or None where ``fit`` trains ``probe`` on
    the prompts alone: ``background`` None, not an attention probe of two
    classes of text prompts read from a model, or a context too short for a prompt and
    48 words around it. Documents hold (230, 540) words (~300-700 tokens) where the
    context has room."""
    from .token_probes import uses_sequence_probe

    if probe.classifier != "attention" or not uses_sequence_probe(probe):
        return None
    if not (
        probe.background == "auto"
        and probe.task == "classification"
        and probe.dataset is None
        and len(np.unique(np.asarray(labels))) == 2
        and all(isinstance(p, str) for p in prompts)
    ):
        return None
    rt = probe.runtime
    longest = max(len(ids) for ids in rt.tokenizer(list(prompts))["input_ids"])
    # 2 tokens per word covers 90% of the documentation's paragraphs (mean 1.4), plus
    # room for a chat template
    most = min(540, (rt.max_length - longest - 64) // 2)
    return None if most < 48 else (min(230, most // 2), most)


def chosen(n: int, random_state) -> np.ndarray:
    """The prompts (indices, sorted) that get a document: all, or a seeded sample."""
    if n <= MAX_DOCUMENTS:
        return np.arange(n)
    rng = np.random.default_rng(0 if random_state is None else random_state)
    return np.sort(rng.choice(n, size=MAX_DOCUMENTS, replace=False))


def documents(prompts, labels, words, random_state):
    """(indices, documents, spans) of :func:`.span_data.background_documents` for the
    chosen prompts. A prompt's document depends on the prompt and
    ``random_state`` only, so refits on overlapping prompts (folds, relabels) reuse the
    documents' cached activations."""
    import hashlib

    from .span_data import background_documents

    labels = np.asarray(labels)
    negative = np.unique(labels)[0].item()
    seed = 0 if random_state is None else int(random_state)
    idx = chosen(len(prompts), random_state)
    docs, spans = [], []
    for i in idx:
        digest = hashlib.sha256(f"{seed}\0{prompts[i]}".encode()).digest()
        (doc,), (own,) = background_documents(
            [prompts[i]],
            labels[[i]],
            builtin_background(),
            words=words,
            background_label=negative,
            random_state=int.from_bytes(digest[:8], "little"),
        )
        docs.append(doc)
        spans.append(own)
    return idx, docs, spans


def bag_training_set(prompts, labels, words, random_state):
    """Prompts and labels for a sequence probe: the prompts, then the documents with
    their prompts' labels."""
    labels = np.asarray(labels)
    idx, docs, _ = documents(prompts, labels, words, random_state)
    return list(prompts) + docs, np.concatenate([labels, labels[idx]])
