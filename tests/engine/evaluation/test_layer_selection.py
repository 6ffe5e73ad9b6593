"""Layer importance, fast_auto and group-lasso layer selection."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.evaluation.group_lasso import GroupLasso
from lmprobe_jupyter.engine.evaluation.layer_selection import (
    auto_candidate_layers,
    compute_layer_importance,
    validate_selection_params,
)
from lmprobe_jupyter.engine.extraction.extractor import Extractor

POS = ["alpha alpha alpha", "alpha beta alpha", "alpha gamma", "alpha alpha", "beta alpha alpha"]
NEG = ["omega omega omega", "omega delta", "delta omega omega", "omega omega", "omega sigma"]


@pytest.fixture
def tiny_probe(tiny_model_path):
    def make(**kw):
        kw.setdefault("random_state", 0)
        kw.setdefault("device", "cpu")
        return Probe(model=tiny_model_path, **kw)

    return make


def _blocks(n=60, n_layers=3, width=16, informative=1, seed=0, strength=1.5):
    """(n, n_layers, width) activations where only layer ``informative`` carries the label."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.standard_normal((n, n_layers, width))
    direction = rng.standard_normal(width)
    X[:, informative] += strength * np.outer(2 * y - 1, direction / np.linalg.norm(direction))
    return X, y


# ---------------------------------------------------------------------- importance
@pytest.mark.parametrize("metric", ["l2", "l1", "max_abs", "mean_abs"])
def test_importance_finds_the_informative_layer(metric):
    X, y = _blocks(informative=1)
    p = Probe(classifier="logistic_regression", random_state=0).fit_from_activations(X, y)
    imp = p.compute_layer_importance(metric=metric)
    assert imp.shape == (3,) and imp.sum() == pytest.approx(1.0)
    assert p.candidate_layers_ == [0, 1, 2]  # no layers_ from activations: block indices
    assert imp.argmax() == 1 and imp[1] > 0.5


def test_importance_known_values_by_metric():
    # mass_mean: w = mu_1 - mu_0, read after the per-neuron normalizer (True): easy to
    # recompute by hand.
    X, y = _blocks(n=40, informative=2, seed=3)
    p = Probe(classifier="mass_mean").fit_from_activations(X, y)
    Z = p.pipeline_.named_steps["normalize"].transform(X.reshape(40, -1))
    w = np.abs(Z[y == 1].mean(0) - Z[y == 0].mean(0)).reshape(3, 16)
    expected = {
        "l2": np.linalg.norm(w, axis=1),
        "l1": w.sum(1),
        "max_abs": w.max(1),
        "mean_abs": w.mean(1),
    }
    for metric, raw in expected.items():
        np.testing.assert_allclose(p.compute_layer_importance(metric), raw / raw.sum())


def test_importance_maps_pca_back_to_layers():
    X, y = _blocks(n=60, informative=0, seed=1)
    p = Probe(classifier="ridge", preprocessing="pca", pca_components=10)
    p.fit_from_activations(X, y)
    coef = p.classifier_.coef_ @ p.pipeline_.named_steps["pca"].components_
    raw = np.linalg.norm(coef.reshape(3, 16), axis=1)
    np.testing.assert_allclose(p.compute_layer_importance(), raw / raw.sum())
    assert p.compute_layer_importance().argmax() == 0


def test_importance_multiclass_uses_every_class_row():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    X = rng.standard_normal((60, 2, 8))
    X[:, 1, :3] += 3 * np.eye(3)[y]
    p = Probe(classifier="logistic_regression").fit_from_activations(X, y)
    assert p.classifier_.coef_.shape == (3, 16)
    assert p.compute_layer_importance().argmax() == 1


def test_importance_errors(tiny_probe):
    with pytest.raises(ValueError, match="metric='l3' is not one of 'l2', 'l1'"):
        compute_layer_importance(Probe(), metric="l3")
    single = tiny_probe(layers=2).fit(POS, NEG)
    with pytest.raises(ValueError, match=r"reads a single layer \(layers_=\[2\]\)"):
        single.compute_layer_importance()
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _blocks()
    knn = Probe(classifier=KNeighborsClassifier(3)).fit_from_activations(X, y)
    with pytest.raises(TypeError, match="KNeighborsClassifier.*has none"):
        knn.compute_layer_importance()
    rbf = Probe(classifier="svm", classifier_kwargs={"kernel": "rbf"}).fit_from_activations(X, y)
    with pytest.raises(TypeError, match="classifier='svm' \\(SVC\\) has none"):
        rbf.compute_layer_importance()


def test_importance_on_model_layers_and_plot(tiny_probe):
    import matplotlib.figure

    p = tiny_probe(layers=[3, 1, 2], classifier="ridge").fit(POS, NEG)
    imp = p.compute_layer_importance()
    assert p.candidate_layers_ == [3, 1, 2] and imp.sum() == pytest.approx(1.0)
    fig = p.plot_layer_importance(metric="l1")
    assert isinstance(fig, matplotlib.figure.Figure)
    bars = fig.axes[0].patches
    np.testing.assert_allclose([b.get_height() for b in bars], p.compute_layer_importance("l1"))
    assert fig.axes[0].get_ylabel() == "importance (l1)"


# ---------------------------------------------------------------------- fast_auto
def test_fast_auto_keeps_top_k(tiny_probe):
    before = Extractor.forward_calls
    p = tiny_probe(layers="fast_auto", fast_auto_top_k=2).fit(POS, NEG)
    assert Extractor.forward_calls - before == 2  # 10 prompts, batch 8: one pass
    assert len(p.selected_layers_) == 2 and p.layers_ == p.selected_layers_
    scores = p.selection_scores_
    assert sorted(scores) == [0, 1, 2, 3] and sum(scores.values()) == pytest.approx(1.0)
    top2 = sorted(sorted(scores, key=lambda k: -scores[k])[:2])
    assert p.selected_layers_ == top2
    assert p.n_features_in_ == 2 * 32
    # Importances stay aligned with every candidate; dropped layers weigh 0.
    imp = p.compute_layer_importance()
    assert len(imp) == len(p.candidate_layers_) == 4
    assert imp.sum() == pytest.approx(1.0)
    dropped = [i for i, c in enumerate(p.candidate_layers_) if c not in p.layers_]
    assert np.all(imp[dropped] == 0)


def test_fast_auto_top_k_larger_than_candidates(tiny_probe):
    with pytest.warns(UserWarning, match="fast_auto_top_k=9 is more than the 4 candidate"):
        p = tiny_probe(layers="fast_auto", fast_auto_top_k=9).fit(POS, NEG)
    assert p.selected_layers_ == [0, 1, 2, 3]


# ---------------------------------------------------------------------- auto (group lasso)
@pytest.mark.parametrize(
    "cands,expected",
    [
        ([0.25, 0.5, 0.75], [7, 15, 22]),
        ([0.0, 1.0], [0, 29]),
        ([3, -1, 3], [3, 29]),
        ([0.5, 14], [14, 15]),
        (None, list(range(30))),
    ],
    ids=["fractions", "ends", "ints-dedup", "mixed", "none"],
)
def test_auto_candidate_layers(cands, expected):
    assert auto_candidate_layers(cands, 30) == expected


@pytest.mark.parametrize(
    "cands,exc,match",
    [
        ([1.5], ValueError, "fractions in \\[0, 1\\]"),
        ([True], TypeError, "give fractions or layer indices"),
        ([30], ValueError, "out of range"),
        ("middle", TypeError, "must be a list"),
        ([], ValueError, "is empty"),
    ],
    ids=["big-float", "bool", "out-of-range", "string", "empty"],
)
def test_auto_candidate_errors(cands, exc, match):
    with pytest.raises(exc, match=match):
        auto_candidate_layers(cands, 30)


@pytest.mark.parametrize(
    "task", ["binary", "multinomial", "regression"], ids=["binary", "multinomial", "regression"]
)
def test_group_lasso_reaches_optimum_and_finds_the_group(task):
    rng = np.random.default_rng(0)
    n, G, h = 90, 4, 24
    X = rng.standard_normal((n, G * h))
    if task == "binary":
        y = rng.integers(0, 2, n)
        X[:, h : 2 * h] += 0.8 * np.outer(2 * y - 1, rng.standard_normal(h))
    elif task == "multinomial":
        y = rng.integers(0, 3, n)
        X[:, h : 2 * h] += rng.standard_normal((3, h))[y]
    else:
        y = X[:, h : 2 * h] @ rng.standard_normal(h) + 0.1 * rng.standard_normal(n)
    kind = "regression" if task == "regression" else "classification"
    gl = GroupLasso(alpha=0.05, n_groups=G, task=kind).fit(X, y)
    assert gl.kkt_violation(X, y) < 1e-3
    assert gl.group_norms_[1] > 0
    assert np.count_nonzero(gl.group_norms_) < G  # sparse: noise groups are zeroed
    if kind == "classification":
        assert np.mean(gl.predict(X) == y) > 0.9
    # At alpha_max every group is zero.
    top = GroupLasso(alpha=gl.alpha_max_ * 1.01, n_groups=G, task=kind).fit(X, y)
    assert np.all(top.group_norms_ == 0)
    below = GroupLasso(alpha=gl.alpha_max_ * 0.9, n_groups=G, task=kind).fit(X, y)
    assert np.count_nonzero(below.group_norms_) >= 1


def test_auto_selects_nonzero_groups(tiny_probe):
    p = tiny_probe(layers="auto", auto_candidates=[1, 3], auto_alpha=0.001).fit(POS, NEG)
    assert p.selected_layers_ and set(p.selected_layers_) <= {1, 3}
    assert sorted(p.selection_scores_) == [1, 3]
    assert p.selected_layers_ == [k for k, v in sorted(p.selection_scores_.items()) if v > 0]
    assert p.layers_ == p.selected_layers_
    assert p.predict(POS + NEG).shape == (10,)


def test_auto_all_zero_falls_back_to_one_layer(tiny_probe):
    with pytest.warns(UserWarning, match="zeroed every candidate layer"):
        p = tiny_probe(layers="auto", auto_candidates=[0, 2], auto_alpha=1e6).fit(POS, NEG)
    assert len(p.selected_layers_) == 1 and p.selected_layers_[0] in (0, 2)


@pytest.mark.parametrize("alpha", [0, -1.0, "big", True], ids=["zero", "neg", "str", "bool"])
def test_auto_alpha_must_be_positive(tiny_probe, alpha):
    with pytest.raises(ValueError, match="must be a positive number"):
        tiny_probe(layers="auto", auto_alpha=alpha).fit(POS, NEG)


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        ({"auto_alpha": 0.0}, ValueError, "auto_alpha=0.0 must be a positive number"),
        ({"auto_candidates": "all"}, TypeError, "must be a list"),
        ({"auto_candidates": [0.5, 2.5]}, ValueError, "holds 2.5"),
        ({"auto_candidates": [False]}, TypeError, "holds False"),
    ],
    ids=["alpha", "string", "float", "bool"],
)
def test_selection_params_checked_without_a_model(kw, exc, match):
    with pytest.raises(exc, match=match):
        validate_selection_params(Probe(**kw))
    validate_selection_params(Probe(auto_candidates=[0.25, 3, -1], auto_alpha=1))


# ---------------------------------------------------------------------- SmolLM2 (learning)
# Sentiment from templates; the held-out set uses other subjects and other adjectives.
_GOOD = ["wonderful", "delightful", "excellent", "lovely", "fantastic"]
_BAD = ["terrible", "awful", "dreadful", "horrible", "miserable"]
_SUBJ = ["The film", "Our holiday", "The dinner", "My new job"]
_GOOD_T = ["superb", "charming", "brilliant"]
_BAD_T = ["disgusting", "painful", "appalling"]
_SUBJ_T = ["The concert", "Her wedding"]
TRAIN_POS = [f"{s} was {a}." for s in _SUBJ for a in _GOOD]
TRAIN_NEG = [f"{s} was {a}." for s in _SUBJ for a in _BAD]
TEST = [(f"{s} was {a}.", 1) for s in _SUBJ_T for a in _GOOD_T] + [
    (f"{s} was {a}.", 0) for s in _SUBJ_T for a in _BAD_T
]


@pytest.mark.real_model
def test_smollm_group_lasso_selects_and_generalizes(smollm):
    texts, labels = map(list, zip(*TEST))
    p = Probe(
        model=smollm.name,
        layers="auto",
        auto_candidates=[0.25, 0.5, 0.75],
        auto_alpha=0.01,
        device="cpu",
        random_state=0,
    ).fit(TRAIN_POS, TRAIN_NEG)
    assert p.selected_layers_ and set(p.selected_layers_) <= {7, 15, 22}
    assert sorted(p.selection_scores_) == [7, 15, 22]
    assert p.layers_ == p.selected_layers_
    assert p.score(texts, labels) >= 0.8  # chance is 0.5


@pytest.mark.real_model
def test_smollm_fast_auto_and_importance(smollm):
    texts, labels = map(list, zip(*TEST))
    p = Probe(
        model=smollm.name, layers="fast_auto", fast_auto_top_k=3, device="cpu", random_state=0
    ).fit(TRAIN_POS, TRAIN_NEG)
    assert len(p.selected_layers_) == 3 and set(p.selected_layers_) <= set(range(30))
    assert p.score(texts, labels) >= 0.8
    # Importance of the chosen layers, aligned with all 30 candidates.
    imp = p.compute_layer_importance("l2")
    assert len(imp) == len(p.candidate_layers_) == 30
    assert imp.sum() == pytest.approx(1.0)
    assert set(np.flatnonzero(imp)) == set(p.selected_layers_)
    # Layer 0 sits at the bottom of the full-probe ranking the selection used.
    s = p.selection_scores_
    assert s[0] < np.median(list(s.values()))
