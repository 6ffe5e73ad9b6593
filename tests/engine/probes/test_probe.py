"""Probe logic on the tiny random Llama: API surface, poolings, errors."""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import NEG, POS

from lmprobe_jupyter import LinearProbe, Probe
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.probes.probe import NotFittedError


def test_fit_contrastive_and_predict(tiny_probe):
    p = tiny_probe().fit(POS, NEG)
    assert p.layers_ == [2]
    assert list(p.classes_) == [0, 1]
    pred = p.predict(POS + NEG)
    assert pred.shape == (10,)
    # A 32-dim random model still separates these lexical sets on its training data.
    assert p.score(POS + NEG, [1] * 5 + [0] * 5) == 1.0
    proba = p.predict_proba(["alpha alpha beta"])
    assert proba.shape == (1, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_fit_with_labels_multiclass(tiny_probe):
    prompts = ["red red", "red apple", "green leaf", "green green", "blue sky", "blue blue"]
    labels = [0, 0, 1, 1, 2, 2]
    p = tiny_probe(layers=[1, 3]).fit(prompts, labels)
    assert list(p.classes_) == [0, 1, 2]
    assert p.predict_proba(prompts).shape == (6, 3)
    m = p.evaluate(prompts, labels)
    assert set(m) >= {"accuracy", "f1", "precision", "recall", "auroc"}
    assert m["accuracy"] == 1.0 and m["auroc"] == 1.0


def test_string_labels(tiny_probe):
    p = tiny_probe().fit(POS + NEG, labels=["dog"] * 5 + ["cat"] * 5)
    assert set(p.predict(POS)) == {"dog"} and set(p.predict(NEG)) == {"cat"}
    q = tiny_probe().fit(POS + NEG, np.array(["dog"] * 5 + ["cat"] * 5))
    assert list(q.classes_) == ["cat", "dog"]
    assert p.score(POS + NEG, ["dog"] * 5 + ["cat"] * 5) == 1.0


def test_regression(tiny_probe):
    prompts = [f"{'very ' * k}long" for k in range(12)]
    y = np.arange(12, dtype=float)
    p = tiny_probe(
        task="regression", layers=[1, 2, 3], pooling="mean", classifier_kwargs={"alpha": 1e-6}
    ).fit(prompts, y)
    pred = p.predict(prompts)
    assert pred.dtype.kind == "f"
    m = p.evaluate(prompts, y)
    assert set(m) >= {"r2", "mse", "mae"} and m["r2"] > 0.9
    assert p.score(prompts, y) == pytest.approx(m["r2"])
    with pytest.raises(ValueError, match="not defined for task='regression'"):
        p.predict_proba(prompts)


def test_inference_pooling_all_returns_masked_per_token_scores(tiny_probe):
    p = tiny_probe(pooling="last_token", inference_pooling="all").fit(POS, NEG)
    texts = ["alpha", "omega omega omega omega"]
    scores = p.predict_proba(texts)
    assert isinstance(scores, np.ma.MaskedArray)
    n_tok = [len(p.runtime.loaded.tokenizer(t)["input_ids"]) for t in texts]
    assert scores.shape == (2, max(n_tok))
    assert scores.mask[0].sum() == max(n_tok) - n_tok[0]  # a one-token text keeps its token
    # the sink (position 0) is not scored by default; every other token is
    assert scores.mask[1].tolist() == [True] + [False] * (n_tok[1] - 1)
    # the last token's score equals the last_token probe's prompt score
    plain = tiny_probe().fit(POS, NEG)
    np.testing.assert_allclose(scores[1, n_tok[1] - 1], plain.predict_proba(texts)[1, 1], atol=1e-6)
    ts = p.token_scores(texts)
    assert np.isnan(ts[1].scores[0])
    np.testing.assert_allclose(ts[1].scores[1:], scores[1].compressed(), atol=1e-6)


@pytest.mark.parametrize("how", ["max", "min"])
def test_inference_pooling_max_min_reduce_token_scores(tiny_probe, how):
    p = tiny_probe(inference_pooling=how).fit(POS, NEG)
    every = tiny_probe(inference_pooling="all").fit(POS, NEG).predict_proba(POS)
    want = every.max(axis=1) if how == "max" else every.min(axis=1)
    np.testing.assert_allclose(p.predict_proba(POS)[:, 1], np.asarray(want), atol=1e-6)


def test_pooling_collision_rules():
    p = Probe(pooling="mean", train_pooling="last_token")
    assert (p.train_pooling_, p.inference_pooling_) == ("last_token", "mean")
    p = Probe(pooling="mean", inference_pooling="max")
    assert (p.train_pooling_, p.inference_pooling_) == ("mean", "max")


def test_train_pooling_all_uses_every_scored_token(tiny_probe):
    p = tiny_probe(train_pooling="all", inference_pooling="mean").fit(POS, NEG)
    n_tokens = sum(len(p.runtime.loaded.tokenizer(t)["input_ids"]) for t in POS + NEG)
    # every token but each prompt's attention sink (position 0)
    assert p.n_train_tokens_ == n_tokens - len(POS + NEG)
    assert p.predict(POS).shape == (5,)


@pytest.mark.parametrize("mode", [True, "per_layer", False], ids=["neuron", "layer", "none"])
@pytest.mark.parametrize("prep", [None, "standard", "pca", "standard+pca"])
def test_multilayer_normalization_and_preprocessing(tiny_probe, mode, prep):
    p = tiny_probe(layers=[0, 2, 3], normalize_layers=mode, preprocessing=prep, pca_components=4)
    p.fit(POS, NEG)
    assert p.n_features_in_ == 96
    steps = list(p.pipeline_.named_steps)
    assert ("normalize" in steps) == (mode is not False)
    assert ("pca" in steps) == (prep is not None and "pca" in prep)
    assert p.score(POS + NEG, [1] * 5 + [0] * 5) >= 0.9


def test_per_layer_normalizer_uses_one_scale_per_layer():
    from lmprobe_jupyter.engine.probes.features import LayerNormalizer

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(0, 100, (50, 4))], axis=1)
    n = LayerNormalizer("per_layer", 2).fit(X)
    assert len(set(np.round(n.scale_[:4], 9))) == 1 and len(set(np.round(n.scale_[4:], 9))) == 1
    assert n.scale_[4] / n.scale_[0] > 50
    Z = n.transform(X)
    assert abs(Z[:, :4].std() - 1) < 0.2 and abs(Z[:, 4:].std() - 1) < 0.2


@pytest.mark.parametrize("clf", ["logistic_regression", "ridge", "svm", "lda", "mass_mean", "sgd"])
def test_classifiers_through_probe(tiny_probe, clf):
    p = tiny_probe(classifier=clf, layers=[1, 3]).fit(POS, NEG)
    assert p.predict_proba(POS).shape == (5, 2)
    assert p.score(POS + NEG, [1] * 5 + [0] * 5) >= 0.8


def test_random_state_propagates(tiny_probe):
    p = tiny_probe(classifier="sgd", random_state=123).fit(POS, NEG)
    assert p.classifier_.random_state == 123
    a = tiny_probe(classifier="sgd", random_state=1).fit(POS, NEG).predict_proba(POS)
    b = tiny_probe(classifier="sgd", random_state=1).fit(POS, NEG).predict_proba(POS)
    np.testing.assert_array_equal(a, b)


def test_classifier_kwargs(tiny_probe):
    p = tiny_probe(classifier_kwargs={"C": 0.123, "max_iter": 77}).fit(POS, NEG)
    assert p.classifier_.C == 0.123 and p.classifier_.max_iter == 77


def test_refit_and_rescore_hit_the_cache(tiny_probe):
    p = tiny_probe().fit(POS, NEG)
    before = Extractor.forward_calls
    tiny_probe(classifier="ridge").fit(POS, NEG)
    p.score(POS + NEG, [1] * 5 + [0] * 5)
    assert Extractor.forward_calls == before


def test_warmup_fills_cache(tiny_probe):
    p = tiny_probe().fit(POS, NEG)
    new = ["fresh prompt one", "fresh prompt two"]
    p.warmup(new, batch_size=1)
    before = Extractor.forward_calls
    p.predict(new)
    assert Extractor.forward_calls == before


def test_from_activations_needs_no_model():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(1, 1, (30, 16)), rng.normal(-1, 1, (30, 16))])
    y = np.array([1] * 30 + [0] * 30)
    p = Probe(classifier="logistic_regression", random_state=42).fit_from_activations(X, y)
    assert not p.runtime.is_loaded
    assert p.predict_from_activations(X).shape == (60,)
    assert p.score_from_activations(X, y) > 0.9
    p3 = Probe(normalize_layers="per_layer").fit_from_activations(X.reshape(60, 2, 8), y)
    assert p3.n_feature_layers_ == 2
    with pytest.raises(ValueError, match="fitted on 16"):
        p.predict_from_activations(X[:, :5])


def test_linear_probe_alias_and_params():
    assert LinearProbe is Probe
    p = Probe(layers=3, classifier="ridge")
    params = p.get_params()
    for name in [
        "model",
        "dataset",
        "layers",
        "pooling",
        "train_pooling",
        "inference_pooling",
        "classifier",
        "task",
        "device",
        "remote",
        "random_state",
        "batch_size",
        "backend",
        "dtype",
        "normalize_layers",
        "preprocessing",
        "pca_components",
        "classifier_kwargs",
        "fast_auto_top_k",
        "auto_candidates",
        "auto_alpha",
    ]:
        assert name in params
    assert repr(p) == "Probe(layers=3, classifier='ridge')"


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((["a", "b"], ["c"]), None, None),
        ((["a", ""], ["c"]), ValueError, r"positive_prompts\[1\] is an empty string"),
        ((["a", 3], ["c"]), TypeError, r"positive_prompts\[1\] is a int"),
        (("just one string", ["c"]), TypeError, "not a single string"),
        ((["a", "b"], [1]), ValueError, "got 2 prompts but 1 labels"),
        ((["a", "b"], [1, 1]), ValueError, "only one class"),
        (([], []), ValueError, "no training prompts"),
        ((["a", "b"],), TypeError, "needs two arguments"),
        ((["a", "b"], [0.5, 1.0]), ValueError, "task='regression'"),
    ],
    ids=[
        "ok",
        "empty-str",
        "non-str",
        "bare-str",
        "mismatch",
        "one-class",
        "empty",
        "one-arg",
        "float-labels",
    ],
)
def test_bad_training_input(tiny_probe, args, exc, match):
    p = tiny_probe()
    if exc is None:
        p.fit(*args)
        return
    with pytest.raises(exc, match=match):
        p.fit(*args)


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        ({"layers": 4}, ValueError, "the model has 4 layers"),
        ({"layers": -5}, ValueError, "the model has 4 layers"),
        ({"pooling": "avg"}, ValueError, "pooling='avg' is not one of 'last_token', 'mean'"),
        ({"inference_pooling": "median"}, ValueError, "inference_pooling='median'"),
        ({"classifier": "forest"}, ValueError, "classifier='forest' is not one of"),
        ({"task": "ranking"}, ValueError, "task='ranking'"),
        ({"normalize_layers": "global"}, ValueError, "normalize_layers='global'"),
        ({"preprocessing": "whiten"}, ValueError, "preprocessing='whiten'"),
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"backend": "vllm"}, ValueError, "backend='vllm'"),
        ({"remote": True}, ValueError, "remote=True needs backend='nnsight'"),
        ({"device": "cuda:7"}, ValueError, "device='cuda:7'"),
        ({"dtype": "int8"}, ValueError, "dtype='int8'"),
    ],
    ids=lambda v: str(v)[:20],
)
def test_bad_configuration(tiny_probe, kw, exc, match):
    with pytest.raises(exc, match=match):
        tiny_probe(**kw).fit(POS, NEG)


def test_predict_before_fit():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        Probe().predict(["x"])
    with pytest.raises(ValueError, match="not fitted yet"):
        Probe().score(["x"], [1])


def test_missing_model_names_bundled_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="HuggingFaceTB/SmolLM2-135M-Instruct"):
        Probe(model="nobody/no-such-model-xyz").fit(POS, NEG)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        Probe(model=str(tmp_path)).fit(POS, NEG)


def test_cross_validate_matches_a_manual_stratified_kfold(tiny_probe, tmp_path):
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    p = tiny_probe(random_state=3).fit(POS, NEG)
    got = p.cross_validate(cv=5)
    want = cross_val_score(
        clone(p.pipeline_),
        p.training_activations[0],
        p.training_activations[1],
        cv=StratifiedKFold(5, shuffle=True, random_state=3),
    ).mean()
    assert got == pytest.approx(want) and p.cv_score_ == got
    p.save(tmp_path / "probe")
    with pytest.raises(ValueError, match="saved probes do not keep"):
        Probe.load(tmp_path / "probe").cross_validate()


def test_cross_validate_on_every_token_keeps_each_prompt_in_one_fold(tiny_probe, monkeypatch):
    """train_pooling="all" has one sample per token: folds are grouped by prompt (tokens
    of a held-out prompt are never trained on)."""
    import sklearn.model_selection as sklearn_selection
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    # (ridge: an every-token probe fitted in memory; the streamed logistic one refits per
    # fold from the store, tests/engine/test_token_linear.py)
    p = tiny_probe(train_pooling="all", classifier="ridge", random_state=3).fit(POS, NEG)
    X, y = p.training_activations
    n_tokens = [len(p.runtime.loaded.tokenizer(t)["input_ids"]) - 1 for t in POS + NEG]
    groups = np.repeat(np.arange(len(n_tokens)), n_tokens)
    splitter = StratifiedGroupKFold(3, shuffle=True, random_state=3)
    for train, test in splitter.split(X, y, groups):
        assert not set(groups[train]) & set(groups[test])
    want = cross_val_score(clone(p.pipeline_), X, y, cv=splitter, groups=groups).mean()
    seen = []
    real = sklearn_selection.cross_val_score

    def spy(est, X_, y_, cv=None, groups=None, **kw):
        seen.append((cv, groups))
        return real(est, X_, y_, cv=cv, groups=groups, **kw)

    monkeypatch.setattr(sklearn_selection, "cross_val_score", spy)
    assert p.cross_validate(cv=3) == pytest.approx(want)
    # the folds it used never split a prompt's tokens
    ((cv_used, groups_used),) = seen
    np.testing.assert_array_equal(groups_used, groups)
    for train, test in cv_used.split(X, y, groups_used):
        assert not set(groups_used[train]) & set(groups_used[test])
