"""Token-level scoring through Probe: the sink and special tokens unscored, window poolings."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.extraction.windows import aggregate

POS = ["alpha alpha alpha beta", "alpha beta alpha", "alpha gamma alpha", "beta alpha alpha"]
NEG = ["omega omega omega delta", "omega delta omega", "delta omega omega", "omega sigma"]


@pytest.fixture
def tiny(tiny_model_path):
    def make(**kw):
        kw.setdefault("layers", 2)
        kw.setdefault("random_state", 0)
        kw.setdefault("device", "cpu")
        return Probe(model=tiny_model_path, **kw)

    return make


def test_token_scores_leave_the_sink_unscored_unless_asked(tiny):
    p = tiny(pooling="mean").fit(POS, NEG)
    (ts,) = p.token_scores(["alpha beta omega"])
    assert np.isnan(ts.scores[0]) and np.isfinite(ts.scores[1:]).all()
    assert ts.max_score == pytest.approx(np.nanmax(ts.scores))
    (all_ts,) = p.set_params(score_special_tokens=True).token_scores(["alpha beta omega"])
    assert np.isfinite(all_ts.scores).all()
    np.testing.assert_allclose(all_ts.scores[1:], ts.scores[1:])


@pytest.mark.parametrize("how", ["rolling_max:2", "ema:0.5", "max"], ids=str)
def test_window_inference_pooling_aggregates_the_token_scores(tiny, how):
    p = tiny(pooling="mean", inference_pooling=how).fit(POS, NEG)
    texts = ["alpha beta omega delta alpha", "omega omega"]
    proba = p.predict_proba(texts)
    want = [aggregate(t.scores, how) for t in p.token_scores(texts)]
    np.testing.assert_allclose(proba[:, 1], want, atol=1e-12)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert list(p.predict(texts)) == [int(w > 0.5) for w in want]
    m = p.evaluate(POS + NEG, [1] * 4 + [0] * 4)
    assert 0.0 <= m["auroc"] <= 1.0 and m["n"] == 8


def test_all_pooling_masks_the_sink(tiny):
    p = tiny(pooling="mean", inference_pooling="all").fit(POS, NEG)
    out = p.predict_proba(["alpha beta omega", "omega"])
    assert out.mask[0, 0] and not out.mask[0, 1:3].any()
    # a one-token text has nothing else to score: it keeps its only token
    assert not out.mask[1, 0] and out.mask[1, 1:].all()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(inference_pooling="rolling_max:0"), r"K=0, which must be >= 1"),
        (dict(inference_pooling="ema:2"), r"A=2, which must be in \(0, 1\]"),
        (dict(inference_pooling="rolling_max:x"), r"K='x', which is not an int"),
        (dict(inference_pooling="rolling:3"), r"unknown stage prefix 'rolling'"),
        (dict(inference_pooling="score:rolling:3"), r"'rolling' is not a score aggregation"),
    ],
    ids=["k0", "ema2", "k-not-int", "unknown-prefix", "unknown"],
)
def test_window_pooling_errors(tiny, kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw).fit(POS, NEG)


def test_window_as_base_pooling_trains_on_every_token(tiny):
    p = tiny(pooling="rolling_max:2").fit(POS, NEG)
    assert p.train_pooling_ == "all"
    texts = ["alpha beta omega delta alpha"]
    want = [aggregate(t.scores, "rolling_max:2") for t in p.token_scores(texts)]
    np.testing.assert_allclose(p.predict_proba(texts)[:, 1], want, atol=1e-12)
    assert p.token_level_note() == ""


def test_last_token_probe_never_peaks_at_the_sink_on_tutorial_texts(smollm):
    """On the quickstart's dog/cat task the sink used to score 0.000 (last-token probe):
    with it included, position 0 is the most extreme token of every text; by default it is
    unscored, so no text's top token is position 0."""
    from lmprobe_jupyter.examples import CAT, DOG, DOG_CAT_TEST

    texts = [t for t, _ in DOG_CAT_TEST]
    p = Probe(model=smollm.name, pooling="last_token", layers=16, random_state=42, device="cpu")
    p.fit(DOG, CAT)
    scored = p.token_scores(texts)
    assert all(np.isnan(t.scores[0]) for t in scored)
    assert all(int(np.nanargmax(t.scores)) != 0 for t in scored)
    raw = p.set_params(score_special_tokens=True).token_scores(texts)
    extreme_at_sink = [int(np.argmax(np.abs(np.asarray(t.scores) - 0.5))) == 0 for t in raw]
    assert np.mean(extreme_at_sink) >= 0.8


def test_token_level_note_names_the_training_pooling(tiny):
    last = tiny(pooling="last_token").fit(POS, NEG)
    note = last.token_level_note()
    assert "trained on last_token vectors" in note
    assert "Probe(train_pooling='all', inference_pooling='rolling_max:16')" in note
    every = tiny(train_pooling="all", inference_pooling="rolling_max:2").fit(POS, NEG)
    assert every.token_level_note() == ""


def test_training_on_every_token_leaves_the_sink_out_unless_asked(tiny):
    """train_pooling="all" trains on the tokens token_scores scores: not position 0 (the
    attention sink) by default, every token with score_special_tokens=True."""
    p = tiny(train_pooling="all", inference_pooling="rolling_max:2").fit(POS, NEG)
    n_tokens = [len(x) for x in p.runtime.tokenizer(POS + NEG)["input_ids"]]
    assert p.n_train_tokens_ == sum(n - 1 for n in n_tokens)
    q = tiny(train_pooling="all", score_special_tokens=True).fit(POS, NEG)
    assert q.n_train_tokens_ == sum(n_tokens)
    # the in-memory path (a classifier the streamed fit does not take) builds the same set
    r = tiny(train_pooling="all", classifier="ridge").fit(POS, NEG)
    X, y = r.training_activations
    assert len(X) == sum(n - 1 for n in n_tokens)
    assert y.tolist() == [lab for lab, n in zip([1] * 4 + [0] * 4, n_tokens) for _ in range(n - 1)]


@pytest.mark.parametrize("inference", [None, "rolling_max:2"], ids=["default", "same-window"])
def test_train_pooling_window_trains_through_the_aggregation(tiny, tmp_path, inference):
    """train_pooling="rolling_max:K" fits MILProbe(window=K) (gradient descent, the label
    supervising each prompt's top window): the same estimator as classifier="mil"."""
    from lmprobe_jupyter.engine.probes.sequence_probes import MILProbe

    few = {"max_epochs": 5, "validation_fraction": 0.0}
    p = tiny(train_pooling="rolling_max:2", inference_pooling=inference, classifier_kwargs=few)
    p.fit(POS, NEG)
    mil = tiny(classifier="mil", classifier_kwargs={"window": 2, **few}).fit(POS, NEG)
    assert isinstance(p.classifier_, MILProbe) and p.classifier_.window == 2
    for name, v in mil.classifier_.params_.items():
        np.testing.assert_allclose(p.classifier_.params_[name], v, atol=1e-12)
    texts = ["alpha beta omega delta alpha", "omega omega"]
    proba = p.predict_proba(texts)
    np.testing.assert_allclose(proba, mil.predict_proba(texts), atol=1e-12)
    # the prompt logit is rolling_max:2 of the token logits
    z = [aggregate(t.scores, "rolling_max:2") for t in p.token_scores(texts)]
    np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(z))), proba[:, 1], atol=1e-9)
    p.save(tmp_path / "p")
    np.testing.assert_array_equal(Probe.load(tmp_path / "p").predict_proba(texts), proba)
    with pytest.raises(ValueError, match="windows of 2 tokens, but classifier_kwargs has window=4"):
        tiny(train_pooling="rolling_max:2", classifier_kwargs={"window": 4}).fit(POS, NEG)
    with pytest.raises(ValueError, match="inference_pooling='max'"):
        tiny(train_pooling="rolling_max:2", inference_pooling="max").fit(POS, NEG)
