"""Layer sweeps of sequence probes (``classifier="mil"|"attention"|"multimax"``).

A sequence-probe sweep extracts the per-token activations of every swept layer once and
fits one sequence probe per layer; each must equal a probe fitted on that layer alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import TEST_TEMPLATES, TRAIN_TEMPLATES

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.evaluation import sweep as sweep_module
from lmprobe_jupyter.engine.probes.sequence_probes import AttentionProbe, MILProbe

POS = ["The dog barked.", "A dog ran home.", "My dog is happy.", "Dogs love bones.",
       "The dog slept.", "A dog dug a hole."]  # fmt: skip
NEG = ["The cat purred.", "A cat sat down.", "My cat is sleepy.", "Cats love fish.",
       "The cat slept.", "A cat chased a mouse."]  # fmt: skip
TEST = ["Our dog is loud.", "Her cat is shy.", "The dog ate.", "The cat ate.", "A dog!"]
TEST_Y = [1, 0, 1, 0, 1]
LAYERS = [1, 2, 3]
CASES = {
    "mil": ("mil", {"window": 2}),
    "attention": ("attention", {"n_heads": 2}),
    "attention-window": ("attention", {"n_heads": 2, "window": 3}),
}


def _kw(tiny_model_path, kind):
    classifier, kwargs = CASES[kind]
    return {
        "model": tiny_model_path,
        "device": "cpu",
        "dtype": "float32",
        "random_state": 3,
        "classifier": classifier,
        "classifier_kwargs": {**kwargs, "max_epochs": 6, "l2": 0.1},
    }


@pytest.mark.parametrize("kind", list(CASES), ids=list(CASES))
def test_each_layer_equals_a_probe_fitted_on_that_layer_alone(tiny_model_path, kind):
    kw = _kw(tiny_model_path, kind)
    result = Probe.sweep_layers(positive_prompts=POS, negative_prompts=NEG, layers=LAYERS, **kw)
    assert result.layers == LAYERS
    want_cls = MILProbe if kind == "mil" else AttentionProbe
    metrics = result.evaluate(TEST, TEST_Y)
    test_scores = result.score(TEST, TEST_Y)
    for layer in LAYERS:
        swept = result[layer]
        alone = Probe(layers=layer, **kw).fit(POS, NEG)
        assert isinstance(swept.classifier_, want_cls) and swept.layers_ == [layer]
        assert swept.classifier_.n_epochs_ == alone.classifier_.n_epochs_
        for name, v in alone.classifier_.params_.items():
            np.testing.assert_allclose(swept.classifier_.params_[name], v, atol=1e-5)
        np.testing.assert_allclose(
            swept.predict_proba(TEST), alone.predict_proba(TEST), rtol=0, atol=1e-5
        )
        # prompt-level metrics per layer, as the single probe reports them
        m = alone.evaluate(TEST, TEST_Y)
        assert metrics[layer]["auroc"] == pytest.approx(m["auroc"], abs=1e-9)
        assert metrics[layer]["accuracy"] == pytest.approx(m["accuracy"])
        assert test_scores[layer] == pytest.approx(alone.score(TEST, TEST_Y))
        assert result.train_scores[layer] == pytest.approx(
            alone.score(POS + NEG, [1] * 6 + [0] * 6)
        )


def test_cross_validation_refits_each_fold_and_picks_the_best_layer(tiny_model_path):
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    kw = _kw(tiny_model_path, "mil")
    result = Probe.sweep_layers(
        positive_prompts=POS, negative_prompts=NEG, layers=[1, 3], cv=3, **kw
    )
    assert set(result.cv_scores) == {1, 3}
    # by hand: the same folds, the same estimator refitted on the layer's scored tokens
    probe = result[3]
    rt = probe.runtime
    prompts, y = POS + NEG, np.array([1] * 6 + [0] * 6)
    toks, keep = rt.token_features(prompts, [3], score_special_tokens=False)
    X = [t.acts[3][k] for t, k in zip(toks, keep)]
    accs = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=3).split(X, y):
        est = clone(probe.classifier_).fit([X[i] for i in train], y[train])
        accs.append(np.mean(est.predict([X[i] for i in test]) == y[test]))
    assert result.cv_scores[3] == pytest.approx(np.mean(accs))
    best = max(result.cv_scores.values())
    assert result.best_layer() == min(x for x, s in result.cv_scores.items() if s == best)
    assert result.best_choice()[1] == "cv"


def test_the_sweep_extracts_once_and_keeps_only_scored_tokens(tiny_model_path, monkeypatch):
    rt_calls = []
    kw = _kw(tiny_model_path, "attention")
    base = Probe(layers="all", **kw)
    real = type(base.runtime).token_source

    def spy(self, prompts, layers, **run):
        rt_calls.append((len(prompts), list(layers)))
        return real(self, prompts, layers, **run)

    monkeypatch.setattr(type(base.runtime), "token_source", spy)
    monkeypatch.setattr(sweep_module, "TOKEN_CHUNK", 5)
    result = Probe.sweep_layers(positive_prompts=POS, negative_prompts=NEG, layers=LAYERS, **kw)
    # 12 prompts in chunks of 5: three extractions, each of every swept layer
    assert rt_calls == [(5, LAYERS), (5, LAYERS), (2, LAYERS)]
    tokens, _ = result.train_tokens
    n_tokens = [len(t) for t in result[1].runtime.tokenizer(POS + NEG)["input_ids"]]
    # the sink (position 0) is dropped; these short texts have no other special token
    assert [len(a) for a in tokens[2]] == [n - 1 for n in n_tokens]
    assert all(a.shape[1] == 32 for a in tokens[3])


def test_sequence_sweep_refuses_ray(tiny_model_path):
    kw = _kw(tiny_model_path, "mil")
    with pytest.raises(ValueError, match="executor='ray' distributes pooled extraction"):
        Probe.sweep_layers(
            positive_prompts=POS, negative_prompts=NEG, layers=[1], executor="ray", **kw
        )


# Dog vs cat sentences (shared with test_token_probes.py): the animal is one token of a
# short sentence, and held-out sentences use templates the probe never saw.


@pytest.mark.real_model
def test_a_sweep_of_mil_probes_learns_dog_vs_cat_on_smollm(smollm):
    """The bundled model: held-out prompt-level metrics per layer."""
    pos = [t.format(w) for t in TRAIN_TEMPLATES for w in ("dog", "puppy")]
    neg = [t.format(w) for t in TRAIN_TEMPLATES for w in ("cat", "kitten")]
    test = [t.format("dog") for t in TEST_TEMPLATES] + [t.format("cat") for t in TEST_TEMPLATES]
    test_y = [1] * 8 + [0] * 8
    result = Probe.sweep_layers(
        positive_prompts=pos,
        negative_prompts=neg,
        layers=[1, 15],
        classifier="mil",
        classifier_kwargs={"window": 4},
        device="cpu",
        dtype="float32",
        random_state=0,
        test_prompts=test,
        test_labels=test_y,
    )
    metrics = result.evaluate(test, test_y)
    print({layer: (m["accuracy"], round(m["auroc"], 3)) for layer, m in metrics.items()})
    # 16 balanced held-out texts: P(>= 13/16 correct | chance) ~ 0.011, so >= 0.8 at the
    # middle layer says the probe learned the animal
    assert metrics[15]["accuracy"] >= 0.8 and metrics[15]["auroc"] >= 0.9
    assert result.best_choice() == (max(result.test_scores, key=result.test_scores.get), "test")
