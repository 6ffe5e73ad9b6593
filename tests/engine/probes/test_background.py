"""Background documents by default: attention and MultiMax probes also train on their
prompts inside ordinary text (``Probe(background="auto")``)."""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import TEST_TEMPLATES, TRAIN_NEG, TRAIN_POS

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.probes import background

TEST_TEXTS = [t.format("dog") for t in TEST_TEMPLATES] + [t.format("cat") for t in TEST_TEMPLATES]
TEST_Y = np.array([1] * 8 + [0] * 8)
#: Ordinary sentences the probes never trained in (the background is Python's docs).
PROSE = [
    "The committee met on Tuesday to review the budget for the coming year.",
    "Rain is expected across the northern districts by the weekend.",
    "She folded the letters carefully and put them back in the drawer.",
    "The train to the coast was delayed by almost an hour.",
    "Fresh bread was sold out before nine in the morning.",
    "He spent the afternoon repairing the old fence behind the barn.",
    "The museum will open a new wing dedicated to maritime history.",
    "Students gathered in the hall to hear the results of the election.",
    "A light breeze carried the smell of the harbour through the streets.",
    "The report recommends replacing the bridge within ten years.",
]


def embedded(texts, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for t in texts:
        parts = [PROSE[i] for i in rng.permutation(len(PROSE))]
        cut = int(rng.integers(2, len(parts) - 2))
        out.append(" ".join(parts[:cut] + [t] + parts[cut:]))
    return out


def test_bad_background_names_the_fix():
    with pytest.raises(ValueError, match=r"background='docs' is not 'auto' or None.*fit_spans"):
        Probe(classifier="attention", background="docs").fit(["a", "b"], [0, 1])


def test_builtin_background_is_paragraphs_of_prose():
    paras = background.builtin_background()
    assert len(paras) >= 500
    assert all(len(p.split()) >= 12 for p in paras)
    assert not any("::=" in p for p in paras)  # no grammar rules
    assert background.builtin_background() is paras  # read once


def test_a_prompts_document_depends_on_the_prompt_alone():
    prompts = ["How do I bake bread?", "Name three rivers.", "Write a haiku."]
    idx, docs, spans = background.documents(prompts, [0, 1, 0], (230, 540), 0)
    assert idx.tolist() == [0, 1, 2]
    for p, d, own in zip(prompts, docs, spans):
        (a, b) = next((a, b) for a, b, *_ in own if d[a:b] == p)
        assert d[a:b] == p
        assert 230 <= len(d.split()) - len(p.split()) <= 540 + 60  # whole sentences
    # the same prompt in another training set (a fold, a relabel): the same document
    _, again, _ = background.documents([prompts[1], "Other."], [1, 0], (230, 540), 0)
    assert again[0] == docs[1]
    _, other_seed, _ = background.documents([prompts[1], "Other."], [1, 0], (230, 540), 1)
    assert other_seed[0] != docs[1]


def test_at_most_max_documents_prompts_get_one():
    assert background.chosen(10, 0).tolist() == list(range(10))
    idx = background.chosen(2000, 3)
    assert len(idx) == background.MAX_DOCUMENTS and len(set(idx)) == len(idx)
    assert (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(idx, background.chosen(2000, 3))  # seeded


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        (dict(classifier="attention", background=None), "turned off"),
        (dict(classifier="mil"), "MIL trains through its windows"),
        (dict(pooling="rolling_max:16"), "every-token logistic"),
        (dict(pooling="mean"), "pooled"),
    ],
)
def test_who_trains_on_prompts_alone(kw, why):
    probe = Probe(**kw)
    assert background.document_words(probe, TRAIN_POS + TRAIN_NEG, [1, 0] * 16) is None, why


def test_a_short_context_trains_on_prompts_alone(tiny_probe):
    """The tiny Llama reads 128 tokens: no room for 48 words around a prompt."""
    probe = tiny_probe(classifier="attention", classifier_kwargs={"max_epochs": 2})
    probe.fit(["alpha beta", "omega delta"] * 3, [1, 0] * 3)
    assert not hasattr(probe, "n_background_documents_")
    assert probe.n_train_ == 6


def test_attention_trains_in_background_and_finds_the_request_in_prose():
    """On the bundled model: the default attention probe trains on 32 prompts plus their
    32 documents, describes itself as trained on the prompts, and ranks held-out texts
    alone and inside prose it never saw (measured: 1.0 / 1.0)."""
    from sklearn.metrics import roc_auc_score

    probe = Probe(classifier="attention", device="cpu", dtype="float32", random_state=0)
    probe.fit(TRAIN_POS, TRAIN_NEG)
    n = len(TRAIN_POS + TRAIN_NEG)
    assert probe.n_background_documents_ == n and probe.n_train_ == n
    assert list(probe.training_data[0]) == TRAIN_POS + TRAIN_NEG
    assert roc_auc_score(TEST_Y, probe.predict_proba(TEST_TEXTS)[:, 1]) >= 0.9
    assert roc_auc_score(TEST_Y, probe.predict_proba(embedded(TEST_TEXTS))[:, 1]) >= 0.9
    assert 0.5 <= probe.cross_validate(cv=2) <= 1.0  # refits on the prompts alone
    # a refit with background=None forgets the documents
    probe.set_params(background=None).fit(TRAIN_POS, TRAIN_NEG)
    assert not hasattr(probe, "n_background_documents_")
