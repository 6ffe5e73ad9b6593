"""``Probe(classifier="attention" | "multimax" | "mil")``: sequence probes inside Probe."""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import TEST_TEMPLATES, TRAIN_NEG, TRAIN_POS

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.extraction.windows import aggregate_rows
from lmprobe_jupyter.engine.probes.sequence_probes import AttentionProbe, MILProbe, MultiMaxProbe

TEST_TEXTS = [t.format("dog") for t in TEST_TEMPLATES] + [t.format("cat") for t in TEST_TEMPLATES]
TEST_Y = np.array([1] * 8 + [0] * 8)

SMALL_POS = ["The dog barked.", "A dog ran home.", "My dog is happy.", "Dogs love bones."]
SMALL_NEG = ["The cat purred.", "A cat sat down.", "My cat is sleepy.", "Cats love fish."]
FEW = {"max_epochs": 5, "validation_fraction": 0.0}


@pytest.mark.parametrize(
    ("classifier", "kwargs", "cls"),
    [
        ("attention", {"heads": 2}, AttentionProbe),
        ("mil", {"window": 4}, MILProbe),
    ],
    ids=["attention", "mil"],
)
def test_sequence_probe_learns_held_out_dog_vs_cat(classifier, kwargs, cls):
    probe = Probe(
        layers="middle",
        classifier=classifier,
        classifier_kwargs=kwargs,
        device="cpu",
        dtype="float32",
        random_state=0,
    ).fit(TRAIN_POS, TRAIN_NEG)
    assert isinstance(probe.classifier_, cls)
    assert probe.classifier_.n_features_in_ == 576  # SmolLM2-135M hidden size, one layer
    # 16 held-out texts, balanced: chance is 0.5 and P(>= 13/16 correct | chance) ~ 0.011,
    # so >= 0.8 says the probe learned the animal. (Measured: attention 1.0, MIL 0.94.)
    assert probe.score(TEST_TEXTS, TEST_Y) >= 0.8
    metrics = probe.evaluate(TEST_TEXTS, TEST_Y)
    assert metrics["auroc"] >= 0.9
    assert metrics["n"] == 16
    proba = probe.predict_proba(TEST_TEXTS)
    assert proba.shape == (16, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)


@pytest.fixture
def attention_probe(tiny_probe):
    return tiny_probe(
        classifier="attention", classifier_kwargs={"n_heads": 2, **FEW}, layers=[1, 2]
    ).fit(SMALL_POS, SMALL_NEG)


def test_attention_contributions_sum_to_the_prompt_logit(attention_probe):
    probe = attention_probe
    assert probe.n_features_in_ == 64  # two layers of the tiny model (hidden 32) per token
    rows = probe.token_scores(SMALL_POS + SMALL_NEG)
    b = float(probe.classifier_.params_["b"][0])
    logits = np.array([np.nansum(r.scores) + b for r in rows])
    p = probe.predict_proba(SMALL_POS + SMALL_NEG)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), p, atol=1e-5)
    # the attention sink (position 0) is not scored by default
    assert all(np.isnan(r.scores[0]) for r in rows)
    assert all(len(r.tokens) == len(r.scores) for r in rows)
    assert "sum" in probe.token_level_note()


def test_mil_token_scores_aggregate_through_rolling_max(tiny_probe):
    probe = tiny_probe(classifier="mil", classifier_kwargs={"window": 2, **FEW}).fit(
        SMALL_POS, SMALL_NEG
    )
    rows = [r.scores for r in probe.token_scores(SMALL_POS)]
    z = aggregate_rows(rows, "rolling_max:2")
    np.testing.assert_allclose(
        1 / (1 + np.exp(-z)), probe.predict_proba(SMALL_POS)[:, 1], atol=1e-5
    )
    assert "rolling_max:2" in probe.token_level_note()


def test_inference_pooling_all_returns_masked_contributions(tiny_probe):
    probe = tiny_probe(
        classifier="multimax", classifier_kwargs={"n_heads": 2, **FEW}, inference_pooling="all"
    ).fit(SMALL_POS, SMALL_NEG)
    assert isinstance(probe.classifier_, MultiMaxProbe)
    out = probe.predict_proba(SMALL_POS[:2])
    rows = probe.token_scores(SMALL_POS[:2])
    assert isinstance(out, np.ma.MaskedArray)
    assert out.shape == (2, max(len(r.scores) for r in rows))
    for i, r in enumerate(rows):
        scored = ~np.isnan(r.scores)
        np.testing.assert_array_equal(~out.mask[i, : len(r.scores)], scored)
        np.testing.assert_allclose(out.data[i, : len(r.scores)][scored], r.scores[scored])
    assert out.mask[:, 0].all()  # the sink
    # predict and score stay prompt-level
    assert probe.predict(SMALL_POS[:2]).shape == (2,)
    pred, proba = probe.prompt_outputs(SMALL_POS[:2])
    assert proba.shape == (2, 2)
    np.testing.assert_array_equal(pred, probe.classes_[proba.argmax(1)])


@pytest.mark.parametrize("classifier", ["attention", "multimax", "mil"])
@pytest.mark.parametrize("where", ["dir", "file"], ids=["folder", "single-file"])
def test_save_load_round_trip_is_identical(tiny_probe, tmp_path, classifier, where):
    probe = tiny_probe(classifier=classifier, classifier_kwargs=dict(FEW)).fit(SMALL_POS, SMALL_NEG)
    path = tmp_path / ("p" if where == "dir" else "p.safetensors")
    probe.save(path)
    if where == "dir":
        assert not list(path.glob("*.pkl"))
        assert '"SequenceProbe"' in (path / "probe.json").read_text()
    loaded = Probe.load(path)
    assert type(loaded.classifier_) is type(probe.classifier_)
    texts = SMALL_POS + SMALL_NEG
    np.testing.assert_array_equal(loaded.predict_proba(texts), probe.predict_proba(texts))
    for a, b in zip(loaded.token_scores(texts), probe.token_scores(texts)):
        np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(loaded.classes_, probe.classes_)


def test_calibrate_and_flag_use_prompt_scores(attention_probe):
    probe = attention_probe.calibrate(SMALL_NEG, fpr=0.25)
    p = probe.predict_proba(SMALL_NEG)[:, 1]
    flags = probe.flag(SMALL_NEG)
    assert flags.sum() <= 1  # at most 25% of the 4 benign prompts
    np.testing.assert_array_equal(flags, p > probe.threshold_)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"dataset": "someone/acts"}, "dataset='someone/acts'"),
        ({"layers": "auto"}, "layers='auto'"),
        ({"pooling": "mean"}, "pooling='mean'"),
        ({"task": "regression"}, "task='regression'"),
        ({"preprocessing": "pca"}, "preprocessing='pca'"),
    ],
    ids=["dataset", "layer-selection", "pooling", "regression", "preprocessing"],
)
def test_incompatible_options_are_refused(tiny_probe, params, match):
    probe = tiny_probe(classifier="attention", **params)
    with pytest.raises(ValueError, match=match):
        probe.fit(SMALL_POS, SMALL_NEG)


def test_fit_from_activations_refuses_pooled_rows(tiny_probe):
    with pytest.raises(ValueError, match=r"reads token sequences.*got X of shape \(4, 8\)"):
        tiny_probe(classifier="mil").fit_from_activations(np.zeros((4, 8)), [0, 1, 0, 1])


def test_fit_from_token_activations_scores_prompts_the_same(tiny_probe):
    maker = tiny_probe(classifier="attention", classifier_kwargs=dict(FEW))
    texts = SMALL_POS + SMALL_NEG
    # the per-token store's activations (float16 on disk), which Probe.predict reads too
    inputs = maker.runtime.token_source(texts, [2], score_special_tokens=False)
    X, masks = map(list, zip(*inputs.source.take(range(len(texts)))))
    # padded (n, seq, d) + mask, as the issue asks; padding is masked out
    width = max(len(x) for x in X)
    padded = np.zeros((len(X), width, X[0].shape[1]))
    pad_mask = np.zeros((len(X), width), dtype=bool)
    for i, (x, m) in enumerate(zip(X, masks)):
        padded[i, : len(x)], pad_mask[i, : len(x)] = x, m
    probe = maker.fit_from_activations(padded, [1] * 4 + [0] * 4, mask=pad_mask, layers=[2])
    from_acts = probe.predict_proba_from_activations(X, mask=masks)
    np.testing.assert_allclose(probe.predict_proba(texts), from_acts, atol=1e-10)
    assert probe.score_from_activations(X, [1] * 4 + [0] * 4, mask=masks) == probe.score(
        texts, [1] * 4 + [0] * 4
    )


def test_bad_classifier_kwargs_name_the_problem(tiny_probe):
    with pytest.raises(ValueError, match="bad classifier_kwargs for 'attention'"):
        tiny_probe(classifier="attention", classifier_kwargs={"nheads": 2}).fit(
            SMALL_POS, SMALL_NEG
        )


def test_unknown_classifier_lists_sequence_kinds(tiny_probe):
    with pytest.raises(ValueError, match="'attention', 'multimax'"):
        tiny_probe(classifier="transformer").fit(SMALL_POS, SMALL_NEG)


def test_show_tokens_centres_the_colour_scale_on_zero(attention_probe):
    pytest.importorskip("anywidget")
    w = attention_probe.show_tokens(SMALL_POS[:2])
    rows = attention_probe.token_scores(SMALL_POS[:2])
    top = max(float(np.nanmax(np.abs(r.scores))) for r in rows)
    assert (w.threshold, w.vmin, w.vmax) == (0.0, pytest.approx(-top), pytest.approx(top))
    assert "contribution" in w.note


def test_default_rolling_probe_converges_and_learns_held_out_dog_vs_cat():
    """``Probe(pooling="rolling_max:16")`` at its defaults (every token, standardized,
    C=5e-4): the fit converges (sklearn's C=1 did not in 2,000 iterations on six
    StrongREJECT categories) and the probe ranks held-out texts it never saw."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import roc_auc_score

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        probe = Probe(pooling="rolling_max:16", device="cpu", dtype="float32", random_state=0).fit(
            TRAIN_POS, TRAIN_NEG
        )
    assert probe.classifier_.C == 5e-4 and probe.train_passes_ > 1
    # measured 0.97 (16 held-out texts; chance 0.5)
    assert roc_auc_score(TEST_Y, probe.predict_proba(TEST_TEXTS)[:, 1]) >= 0.9
