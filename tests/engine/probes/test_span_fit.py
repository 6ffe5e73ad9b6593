"""Probe.fit_spans, context_documents and background_documents: every-token probes trained
on labelled (and weighted) spans."""

from __future__ import annotations

import re

import numpy as np
import pytest
from lmtest_helpers import TEST_TEMPLATES, TRAIN_NEG, TRAIN_POS, TRAIN_TEMPLATES
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from lmprobe_jupyter import Probe, background_documents, context_documents
from lmprobe_jupyter.engine.probes.features import build_steps
from lmprobe_jupyter.engine.probes.fitting import TOKEN_LOGISTIC_DEFAULTS
from lmprobe_jupyter.engine.probes.span_data import check_spans, span_owners

POS = ["alpha alpha alpha beta", "alpha beta alpha", "alpha gamma alpha", "beta alpha alpha"]
NEG = ["omega omega omega delta", "omega delta omega", "delta omega omega", "omega sigma"]
TEXTS = POS + NEG
LABELS = [1] * 4 + [0] * 4
EVERY = dict(train_pooling="all", inference_pooling="rolling_max:2")


def test_context_documents_place_every_prompt_repeats_times():
    docs, spans = context_documents(TEXTS, LABELS, per_document=(2, 3), repeats=3)
    seen = {}
    # 2-3 prompts per document; only a round's last document may hold fewer
    assert all(1 <= len(own) <= 3 for own in spans)
    assert sum(len(own) < 2 for own in spans) <= 3
    for doc, own in zip(docs, spans):
        for a, b, lab in own:
            text = doc[a:b]
            assert LABELS[TEXTS.index(text)] == lab
            seen[text] = seen.get(text, 0) + 1
        # joined with the separator, nothing else
        assert doc == "\n\n".join(doc[a:b] for a, b, _ in own)
    assert seen == {t: 3 for t in TEXTS}
    again = context_documents(TEXTS, LABELS, per_document=(2, 3), repeats=3)
    assert again == (docs, spans)  # random_state=0 by default: reproducible
    other = context_documents(TEXTS, LABELS, per_document=(2, 3), repeats=3, random_state=1)
    assert other[0] != docs


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (dict(labels=[1, 0]), "2 labels for 8 prompts"),
        (dict(per_document=(3, 2)), "fewest <= most"),
        (dict(repeats=0), "repeats=0"),
    ],
)
def test_context_documents_errors(args, match):
    kw = {"labels": LABELS, **args}
    with pytest.raises(ValueError, match=match):
        context_documents(TEXTS, kw.pop("labels"), **kw)


@pytest.mark.parametrize(
    ("spans", "match"),
    [
        ([[(0, 5, 1)]], "1 span lists for 2 texts"),
        ([[(0, 5, 1)], [(3, 99, 0)]], r"text 1: span \(3, 99\) is not inside"),
        ([[(0, 5, 1), (3, 8, 0)], []], "overlap"),
        ([[(0, 5)], []], "not \\(start, end, label\\)"),
        ([[], []], "no spans"),
    ],
)
def test_check_spans_names_the_problem(spans, match):
    with pytest.raises(ValueError, match=match):
        check_spans(["alpha beta gamma", "omega delta"], spans)


NEWS = [
    "The council met on Monday. Roads in the north will be resurfaced this summer! "
    "Residents asked about parking.",
    "Rain is expected later in the week? Farmers welcomed the forecast. The river rose "
    "by a metre overnight.",
]
NEWS_SENTENCES = {
    "The council met on Monday.",
    "Roads in the north will be resurfaced this summer!",
    "Residents asked about parking.",
    "Rain is expected later in the week?",
    "Farmers welcomed the forecast.",
    "The river rose by a metre overnight.",
}


def test_background_documents_put_each_prompt_inside_background_sentences():
    docs, spans = background_documents(TEXTS, LABELS, NEWS, words=(10, 20))
    assert len(docs) == len(TEXTS)
    for doc, own, prompt, label in zip(docs, spans, TEXTS, LABELS):
        (a, b, lab, w) = next(s for s in own if s[3] == 1.0)
        assert (doc[a:b], lab) == (prompt, label)
        background = [s for s in own if s[3] != 1.0]
        # the rest of the document is background, labelled negative at the default weight
        assert all(lab == 0 and w == 0.3 for *_, lab, w in background)
        covered = sorted([(s[0], s[1]) for s in own])
        gaps = [doc[e:s] for (_, e), (s, _) in zip(covered, covered[1:])]
        assert covered[0][0] == 0 and covered[-1][1] == len(doc) and set(gaps) <= {" "}
        words = 0
        for s0, s1, *_ in background:
            # whole sentences of the background, consecutive
            part = doc[s0:s1]
            assert part.endswith((".", "!", "?"))
            pieces = re.split(r"(?<=[.!?])\s+", part)
            assert set(pieces) <= NEWS_SENTENCES
            words += len(part.split())
        # 10-20 words drawn, whole sentences until there are enough: at most 8 over (the
        # longest sentence has 9 words)
        assert 10 <= words <= 20 + 8
    assert check_spans(docs, spans) == [sorted(own) for own in spans]
    again = background_documents(TEXTS, LABELS, NEWS, words=(10, 20))
    assert again == (docs, spans)  # random_state=0 by default: reproducible
    assert background_documents(TEXTS, LABELS, NEWS, words=(10, 20), random_state=1) != again
    # untrained background: the prompt's span only, still placed in the text
    bare, bare_spans = background_documents(
        TEXTS, LABELS, NEWS, words=(10, 20), background_weight=0
    )
    assert bare == docs and [len(own) for own in bare_spans] == [1] * len(TEXTS)
    strings, str_spans = background_documents(
        TEXTS, ["bad"] * 4 + ["ok"] * 4, NEWS, background_label="ok", background_weight=0.5
    )
    assert {s[2:] for own in str_spans for s in own} == {("bad", 1.0), ("ok", 1.0), ("ok", 0.5)}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (dict(labels=[1, 0]), "2 labels for 8 prompts"),
        (dict(background=NEWS[0]), "background is one str"),
        (dict(background=["  ", ""]), "background holds no text"),
        (dict(words=(30, 10)), "fewest <= most"),
        (dict(labels=[1] * 8), "pass background_label="),
        (dict(background_weight=-0.1), "must be a number >= 0"),
        (dict(prompts=[[{"role": "user", "content": "hi"}]] * 8), "prompts as str"),
    ],
)
def test_background_documents_errors(args, match):
    kw = {"prompts": TEXTS, "labels": LABELS, "background": NEWS, **args}
    with pytest.raises(ValueError, match=match):
        background_documents(kw.pop("prompts"), kw.pop("labels"), kw.pop("background"), **kw)


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf")])
def test_check_spans_refuses_weights_that_are_not_positive(weight):
    with pytest.raises(ValueError, match="weight must be a finite number > 0"):
        check_spans(["alpha beta gamma"], [[(0, 5, 1, weight)]])


def test_check_spans_gives_unweighted_spans_weight_one():
    got = check_spans(["alpha beta gamma"], [[(6, 10, 0, 0.25), (0, 5, 1)]])
    assert got == [[(0, 5, 1, 1.0), (6, 10, 0, 0.25)]]


def test_span_weights_are_the_tokens_sample_weights(tiny_probe):
    """Whole-text spans with weights fit what fit(..., sample_weight=) fits."""
    w = np.linspace(0.2, 2.0, len(TEXTS))
    spans = [[(0, len(t), lab, wi)] for t, lab, wi in zip(TEXTS, LABELS, w)]
    kw = dict(classifier_kwargs={"class_weight": "balanced"}, **EVERY)
    by_span = tiny_probe(**kw).fit_spans(TEXTS, spans)
    by_fit = tiny_probe(**kw).fit(TEXTS, LABELS, sample_weight=w)
    unweighted = tiny_probe(**kw).fit(TEXTS, LABELS)
    np.testing.assert_allclose(by_span.predict_proba(TEXTS), by_fit.predict_proba(TEXTS), atol=1e-9)
    assert np.abs(by_span.predict_proba(TEXTS) - unweighted.predict_proba(TEXTS)).max() > 1e-4


def test_span_owners_by_character_overlap():
    offsets = [(0, 0), (0, 5), (5, 10), (10, 11), (11, 16)]  # a sink, then 4 pieces
    owner = span_owners(offsets, [(0, 10, 1), (11, 16, 0)], first=4)
    assert owner.tolist() == [-1, 4, 4, -1, 5]
    shifted = span_owners([(o0 + 7, o1 + 7) for o0, o1 in offsets], [(0, 10, 1)], 0, shift=7)
    assert shifted.tolist() == [-1, 0, 0, -1, -1]


def test_whole_text_spans_fit_the_probe_fit_gives(tiny_probe):
    """A span covering each whole text with its label is exactly fit(texts, labels)."""
    spans = [[(0, len(t), lab)] for t, lab in zip(TEXTS, LABELS)]
    by_span = tiny_probe(**EVERY).fit_spans(TEXTS, spans)
    by_fit = tiny_probe(**EVERY).fit(POS, NEG)
    assert by_span.n_train_tokens_ == by_fit.n_train_tokens_
    np.testing.assert_allclose(by_span.predict_proba(TEXTS), by_fit.predict_proba(TEXTS), atol=1e-9)


def test_only_tokens_inside_spans_are_trained_on(tiny_probe):
    docs, spans = context_documents(TEXTS, LABELS, per_document=(2, 3), repeats=2)
    probe = tiny_probe(layers=[1, 2], preprocessing="standard", **EVERY).fit_spans(docs, spans)
    # reference: sklearn on the tokens whose characters lie in a span, labelled by it
    inputs = probe.runtime.token_source(docs, [1, 2], score_special_tokens=False)
    pairs = inputs.source.take(range(len(docs)))
    X, y, first = [], [], 0
    labels = [lab for own in spans for _, _, lab in own]
    for (a, m), piece, own in zip(pairs, inputs.pieces(), spans):
        o = span_owners(piece.offsets[: len(a)], own, first)
        keep = m & (o >= 0)
        X.append(a[keep])
        y.append(np.asarray(labels)[o[keep]])
        first += len(own)
    X, y = np.concatenate(X), np.concatenate(y)
    assert probe.n_train_tokens_ == len(X)
    n_scored = sum(int(m.sum()) for _, m in pairs)
    assert len(X) < n_scored  # the separators' tokens are left out
    ref = Pipeline(
        [
            *build_steps(2, True, "standard", None, 8, 0),
            (
                "classifier",
                LogisticRegression(max_iter=2000, random_state=0, **TOKEN_LOGISTIC_DEFAULTS),
            ),
        ]
    ).fit(X, y)
    np.testing.assert_allclose(
        probe.pipeline_.decision_function(X), ref.decision_function(X), atol=2e-3
    )


def test_chat_template_spans_are_shifted_into_the_user_turn(tiny_probe):
    spans = [[(0, len(t), lab)] for t, lab in zip(TEXTS, LABELS)]
    probe = tiny_probe(chat_template=True, **EVERY).fit_spans(TEXTS, spans)
    prepared = probe._prepare_prompts(TEXTS)
    assert all(p != t and t in p for p, t in zip(prepared, TEXTS))
    tok = probe.runtime.tokenizer
    want = 0
    for p, t in zip(prepared, TEXTS):
        enc = tok(p, return_offsets_mapping=True, add_special_tokens=True)
        shift = p.find(t)
        want += int(
            sum(o1 > shift and o0 < shift + len(t) and o1 > o0 for o0, o1 in enc["offset_mapping"])
        )
    assert probe.n_train_tokens_ == want  # the text's own tokens, not the template's


def test_fit_spans_refuses_what_it_cannot_train(tiny_probe):
    spans = [[(0, len(t), lab)] for t, lab in zip(TEXTS, LABELS)]
    with pytest.raises(ValueError, match="fit_spans trains an every-token logistic probe"):
        tiny_probe(classifier="ridge", **EVERY).fit_spans(TEXTS, spans)
    with pytest.raises(ValueError, match="fit_spans trains an every-token logistic probe"):
        tiny_probe(pooling="mean").fit_spans(TEXTS, spans)
    with pytest.raises(ValueError, match="texts as str"):
        tiny_probe(**EVERY).fit_spans([[{"role": "user", "content": "hi"}]], [[(0, 1, 1)]])
    probe = tiny_probe(**EVERY).fit_spans(TEXTS, spans)
    with pytest.raises(ValueError, match="hold out some texts"):
        probe.cross_validate()


# --------------------------------------------------------------- learning (SmolLM2)
FILLER = (
    "The weather report said it would rain in the afternoon, so the market closed early. "
    "Traffic on the bridge was slow and the bus arrived twenty minutes late. "
    "At the office the printer jammed twice before the meeting started. "
)


def test_a_probe_trained_on_the_word_finds_it_after_unrelated_text():
    """Spans on the animal word only (dog/puppy 1, cat/kitten 0; the rest of each
    sentence untrained): on held-out sentences (templates never seen) set after three
    sentences of unrelated text, the top-scoring token is the animal and the texts
    separate. 16 held-out texts: chance AUROC is 0.5 and >= 0.9 happens by chance with
    probability < 0.01. (Measured: AUROC 1.0, the top token " dog" in 8 of 8.)"""
    texts, spans = [], []
    for t in TRAIN_TEMPLATES:
        for word, lab in [("dog", 1), ("puppy", 1), ("cat", 0), ("kitten", 0)]:
            s = t.format(word)
            texts.append(s)
            spans.append([(s.index(word), s.index(word) + len(word), lab)])
    probe = Probe(
        layers="middle",
        train_pooling="all",
        inference_pooling="max",
        preprocessing="standard",
        classifier_kwargs={"C": 0.1},
        device="cpu",
        dtype="float32",
        random_state=0,
    ).fit_spans(texts, spans)
    assert probe.n_train_tokens_ == len(texts)  # one token per span: the animal
    test = [FILLER + t.format(w) for w in ("dog", "cat") for t in TEST_TEMPLATES]
    y = np.array([1] * 8 + [0] * 8)
    assert probe.evaluate(test, y)["auroc"] >= 0.9
    top = [r.tokens[int(np.nanargmax(r.scores))].strip() for r in probe.token_scores(test[:8])]
    assert top.count("dog") >= 7, top


TRAIN_BACKGROUND = [
    "The library opens at nine on weekdays. Volunteers sorted the donated books by author. "
    "A new reading room was added last year. The train to the coast leaves every hour. "
    "Tickets can be bought at the station or online. The cafe on the corner sells soup "
    "and bread. The recipe calls for two onions and a cup of rice. Stir the pot slowly "
    "and add salt at the end. The committee will publish its report in the spring."
]


def _background_fit(weight):
    docs, spans = background_documents(
        TRAIN_POS + TRAIN_NEG,
        [1] * len(TRAIN_POS) + [0] * len(TRAIN_NEG),
        TRAIN_BACKGROUND,
        words=(20, 40),
        background_weight=weight,
    )
    return Probe(
        layers="middle",
        train_pooling="all",
        inference_pooling="rolling_max:4",
        preprocessing="standard",
        classifier_kwargs={"C": 0.01, "class_weight": "balanced"},
        device="cpu",
        dtype="float32",
        random_state=0,
    ).fit_spans(docs, spans)


def test_background_documents_keep_unrelated_text_from_firing():
    """Dog (1) vs cat (0) sentences, each placed in library/train/recipe sentences whose
    tokens are labelled 0 at weight 0.3, against the same documents with the background
    untrained. Tested on held-out sentences after held-out unrelated text (weather,
    traffic: the same prefix for every text, so its tokens score alike in all of them).
    Untrained, that text outscores the sentences: every text's top window is in it and
    AUROC is 0.5. Labelled, the unrelated text scores lower and the top token of the dog
    texts lies in the sentence. (Measured: unrelated tokens' mean probability 0.24 vs
    0.47; top token in the sentence for 7 vs 0 of 8 dog texts; AUROC 0.75 vs 0.50.)"""
    test = [FILLER + t.format(w) for w in ("dog", "cat") for t in TEST_TEMPLATES]
    y = np.array([1] * 8 + [0] * 8)
    res = {}
    for weight in (0.3, 0):
        probe = _background_fit(weight)
        rows = probe.token_scores(test)
        ends = [np.cumsum([len(t) for t in r.tokens]) for r in rows]
        filler = np.concatenate([r.scores[e <= len(FILLER)] for r, e in zip(rows, ends)])
        inside = [e[int(np.nanargmax(r.scores))] > len(FILLER) for r, e in zip(rows[:8], ends)]
        res[weight] = (np.nanmean(filler), sum(inside), probe.evaluate(test, y)["auroc"])
    assert res[0.3][0] < res[0][0] - 0.1, res
    assert res[0.3][1] >= 6 and res[0][1] <= 2, res
    assert res[0.3][2] >= 0.7 and res[0.3][2] > res[0][2] + 0.1, res
