"""Pooling names with stage prefixes (``activation:NAME`` / ``score:NAME``), the registry of
score-stage aggregations, and what a probe computes with each."""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import NEG, POS

from lmprobe_jupyter import Extractor, Probe, load_model
from lmprobe_jupyter.engine.extraction import pooling as P

TEXTS = ["alpha omega beta", "omega omega alpha gamma delta", "beta"]


@pytest.fixture
def token_acts(tiny_model_path):
    """Per-token layer-2 activations of TEXTS, straight from the extractor."""
    ext = Extractor(load_model(tiny_model_path, device="cpu"), use_cache=False)
    return [t.acts[2] for t in ext.per_token(TEXTS, [2])]


@pytest.mark.parametrize(
    ("bare", "prefixed"),
    [
        ("last_token", "activation:last_token"),
        ("first_token", "activation:first_token"),
        ("mean", "activation:mean"),
        ("max", "score:max"),
        ("min", "score:min"),
    ],
    ids=["last_token", "first_token", "mean", "max", "min"],
)
def test_bare_names_equal_their_stage(bare, prefixed):
    assert P.parse_pooling(bare) == P.parse_pooling(prefixed)
    assert P.parse_pooling(prefixed).canonical == bare
    assert Probe(inference_pooling=prefixed).inference_pooling_ == bare


@pytest.mark.parametrize(
    ("pooling", "stage", "train", "infer"),
    [
        ("activation:max", "activation", "max", "activation:max"),
        ("activation:min", "activation", "min", "activation:min"),
        ("score:mean", "score", "all", "score:mean"),
        ("score:last_token", "score", "all", "score:last_token"),
        ("score:first_token", "score", "all", "score:first_token"),
        ("max", "score", "max", "max"),
        ("all", "tokens", "all", "all"),
    ],
    ids=["act-max", "act-min", "score-mean", "score-last", "score-first", "bare-max", "all"],
)
def test_stage_and_resolved_poolings(pooling, stage, train, infer):
    assert P.pooling_stage(pooling) == stage
    assert P.resolve_poolings(pooling) == (train, infer)


def test_every_base_strategy_takes_both_prefixes():
    for name in P.BASE_STRATEGIES:
        assert P.parse_pooling(f"activation:{name}").stage == "activation"
        assert P.parse_pooling(f"score:{name}").stage == "score"


@pytest.mark.parametrize(
    ("pooling", "match"),
    [
        ("token:mean", r"unknown stage prefix 'token'.*'activation:' and 'score:'"),
        (
            "activation:median",
            r"'median' is not an activation pooling.*'last_token', 'first_token'",
        ),
        ("score:median", r"'median' is not a score aggregation"),
        ("score:mean:3", r"'mean' takes no argument"),
        ("avg", r"pooling='avg' is not one of 'last_token', 'mean'"),
    ],
    ids=["prefix", "activation-name", "score-name", "stray-arg", "bare"],
)
def test_bad_names_name_the_valid_ones(pooling, match):
    with pytest.raises(ValueError, match=match):
        P.validate_pooling(pooling)


@pytest.fixture
def rolling_max(monkeypatch):
    """A window aggregation registered the way the token-level module registers its own."""
    monkeypatch.setattr(P, "SCORE_AGGREGATIONS", dict(P.SCORE_AGGREGATIONS))

    def parse(text):
        k = int(text)
        if k < 1:
            raise ValueError("window must be >= 1")
        return k

    def reduce(s, k):
        s = np.asarray(s, dtype=float)
        k = min(k, len(s))
        return np.convolve(s, np.ones(k) / k, mode="valid").max()

    return P.register_score_aggregation("rolling_max", reduce, parse_arg=parse, bare=True)


def test_registered_aggregation_with_argument_needs_no_prefix(rolling_max):
    assert P.parse_pooling("score:rolling_max:2") == P.parse_pooling("rolling_max:2")
    assert P.parse_pooling("score:rolling_max:2").canonical == "rolling_max:2"
    assert P.resolve_poolings("last_token", inference_pooling="score:rolling_max:2")[1] == (
        "rolling_max:2"
    )
    s = [0.1, 0.9, 0.2, 0.8, 0.7]
    assert P.reduce_token_scores("rolling_max:2", s) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="needs an argument"):
        P.validate_pooling("rolling_max")
    with pytest.raises(ValueError, match="bad argument '0' for 'rolling_max': window must be"):
        P.validate_pooling("score:rolling_max:0")


@pytest.mark.parametrize(
    ("pooling", "want"),
    [
        ("score:mean", 0.5),
        ("score:max", 0.9),
        ("min", 0.1),
        ("score:last_token", 0.5),
        ("score:first_token", 0.1),
        ("all", 0.9),
    ],
    ids=["mean", "max", "min", "last", "first", "all-as-max"],
)
def test_reduce_token_scores_skips_unscored_tokens(pooling, want):
    s = np.array([np.nan, 0.1, 0.9, 0.5])  # the NaN is a token that is not scored
    assert P.reduce_token_scores(pooling, s) == pytest.approx(want)


def test_reduce_multiclass_per_class():
    s = np.array([[0.2, 0.8], [0.6, 0.4]])
    np.testing.assert_allclose(P.reduce_token_scores("score:mean", s), [0.4, 0.6])


def test_pool_batch_activation_max_is_elementwise_over_valid_tokens():
    import torch

    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 4, 3, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    for name, red in [("activation:max", np.max), ("activation:min", np.min)]:
        out = P.pool_batch(h, mask, name).numpy()
        for r in range(2):
            valid = h[r][mask[r].bool()].numpy()
            np.testing.assert_allclose(out[r], red(valid, axis=0))


# ---------------------------------------------------------------------------- in a probe
def test_activation_max_feeds_the_elementwise_max_to_the_classifier(tiny_probe, token_acts):
    p = tiny_probe(pooling="activation:max").fit(POS, NEG)
    assert (p.train_pooling_, p.inference_pooling_) == ("max", "activation:max")
    want = np.stack([a.max(axis=0) for a in token_acts])
    proba = p.predict_proba(TEXTS)
    np.testing.assert_allclose(proba, p.pipeline_.predict_proba(want), atol=1e-5)
    # and the training matrix is the element-wise max of the training prompts' tokens
    ext = Extractor(load_model(p.model, device="cpu"), use_cache=False)
    train = np.stack([t.acts[2].max(0) for t in ext.per_token(POS + NEG, [2])])
    np.testing.assert_allclose(p.training_activations[0], train, atol=1e-5)


def test_activation_min_at_inference_differs_from_score_min(tiny_probe, token_acts):
    act = tiny_probe(inference_pooling="activation:min").fit(POS, NEG)
    want = act.pipeline_.predict_proba(np.stack([a.min(axis=0) for a in token_acts]))
    np.testing.assert_allclose(act.predict_proba(TEXTS), want, atol=1e-5)
    score = tiny_probe(inference_pooling="score:min").fit(POS, NEG)
    per_token = [score.pipeline_.predict_proba(a)[:, 1].min() for a in token_acts]
    np.testing.assert_allclose(score.predict_proba(TEXTS)[:, 1], per_token, atol=1e-5)


def test_score_mean_is_the_mean_of_per_token_probabilities(tiny_probe, token_acts):
    p = tiny_probe(inference_pooling="score:mean").fit(POS, NEG)
    # the first position (attention sink) is not scored at token level (score_special_tokens),
    # unless it is a text's only token
    want = [p.pipeline_.predict_proba(a[1:] if len(a) > 1 else a)[:, 1].mean() for a in token_acts]
    proba = p.predict_proba(TEXTS)
    np.testing.assert_allclose(proba[:, 1], want, atol=1e-5)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    every = tiny_probe(inference_pooling="all").fit(POS, NEG).predict_proba(TEXTS)
    np.testing.assert_allclose(proba[:, 1], every.mean(axis=1), atol=1e-5)


def test_score_last_token_equals_activation_last_token(tiny_probe):
    score = tiny_probe(inference_pooling="score:last_token").fit(POS, NEG)
    act = tiny_probe(inference_pooling="activation:last_token").fit(POS, NEG)
    np.testing.assert_allclose(score.predict_proba(TEXTS), act.predict_proba(TEXTS), atol=1e-5)
    np.testing.assert_array_equal(score.predict(TEXTS), act.predict(TEXTS))


def test_score_stage_base_pooling_trains_on_every_token(tiny_probe):
    p = tiny_probe(pooling="score:mean").fit(POS, NEG)
    n_tokens = sum(len(p.runtime.tokenizer(t)["input_ids"]) for t in POS + NEG)
    # every token but each prompt's attention sink (unscored, so not trained on)
    assert p.n_train_tokens_ == n_tokens - len(POS + NEG)
    assert p.score(POS + NEG, [1] * 5 + [0] * 5) == pytest.approx(
        np.mean(p.predict(POS + NEG) == np.array([1] * 5 + [0] * 5))
    )


def test_prefixed_mean_is_the_same_probe_as_bare_mean(tiny_probe):
    a = tiny_probe(pooling="mean").fit(POS, NEG)
    b = tiny_probe(pooling="activation:mean").fit(POS, NEG)
    np.testing.assert_allclose(a.predict_proba(TEXTS), b.predict_proba(TEXTS))
