"""Bad inputs get one clear error at the place that validates them (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.probes.probe import NotFittedError

POS = ["dog barks loud", "puppy wags tail", "hound howls", "woof woof dog"]
NEG = ["cat purrs soft", "kitten naps", "tabby meows", "cat sits mat"]
Y = [1, 1, 1, 1, 0, 0, 0, 0]


@pytest.fixture
def probe(tiny_model_path):
    return Probe(model=tiny_model_path, layers=[1, 3], device="cpu", random_state=0).fit(POS, NEG)


def test_empty_inputs_give_empty_results(probe):
    assert probe.predict([]).shape == (0,)
    proba = probe.predict_proba([])
    assert proba.shape == (0, 2) and proba.dtype == np.float64
    assert probe.token_scores([]) == []
    assert probe.predict([]).dtype == probe.classes_.dtype


@pytest.mark.parametrize("fn", ["evaluate", "score"], ids=str)
def test_empty_evaluation_is_an_error(probe, fn):
    with pytest.raises(ValueError, match=rf"{fn} needs at least one prompt"):
        getattr(probe, fn)([], [])


def test_none_label_named(tiny_model_path):
    with pytest.raises(ValueError, match=r"labels\[2\] is None"):
        Probe(model=tiny_model_path, layers=1).fit(POS + NEG, [1, 1, None, 1, 0, 0, 0, 0])


def test_lone_surrogate_named(probe):
    with pytest.raises(ValueError, match=r"prompts\[1\] holds a lone surrogate.*position 3"):
        probe.predict(["fine", "hi \ud800 there"])


@pytest.mark.parametrize(
    "labels, match",
    [
        ([2, 2, 0, 0], r"labels hold 2, not among the probe's classes \[0, 1\]"),
        (["1", "1", "0", "0"], r"'1', '0', not among .*strings, but the probe's classes are ints"),
    ],
    ids=["unseen", "strings"],
)
@pytest.mark.parametrize("fn", ["evaluate", "score"], ids=str)
def test_labels_outside_classes(probe, fn, labels, match):
    with pytest.raises(ValueError, match=match):
        getattr(probe, fn)(POS[:2] + NEG[:2], labels)


def test_predict_from_activations_before_fit():
    with pytest.raises(NotFittedError, match="not fitted"):
        Probe().predict_from_activations(np.zeros((2, 2, 4)))


def test_predict_prompts_after_fit_from_activations():
    rng = np.random.default_rng(0)
    p = Probe(random_state=0).fit_from_activations(rng.normal(size=(8, 2, 4)), [0, 1] * 4)
    with pytest.raises(ValueError, match="fitted from activations.*predict_from_activations"):
        p.predict(["hi"])


@pytest.mark.parametrize(
    "pool",
    [lambda h: h[:, :3].mean(0), lambda h: h.sum(), lambda h: h],
    ids=["narrow", "scalar", "no-reduction"],
)
def test_callable_pooling_wrong_shape(tiny_model_path, pool):
    with pytest.raises(ValueError, match=r"pooling .* returned .* must return .*\(32,\)"):
        Probe(model=tiny_model_path, layers=1, pooling=pool).fit(POS, NEG)


def test_model_with_fewer_layers(tiny_model_path):
    """A probe trained on layers 1 and 9 of a deeper model, pointed at the 4-layer one."""
    rng = np.random.default_rng(0)
    p = Probe(model=tiny_model_path, device="cpu", random_state=0)
    p.fit_from_activations(rng.normal(size=(8, 2, 32)), [0, 1] * 4, layers=[1, 9])
    for call in (p.predict, p.predict_proba, p.token_scores):
        with pytest.raises(ValueError, match=r"layer\(s\) \[9\] do not exist in .* has 4 layers"):
            call(POS)


@pytest.mark.parametrize("bs", [0, -1, True, 2.5], ids=repr)
def test_batch_size_checked_per_call(probe, bs):
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        probe.predict(POS, batch_size=bs)


@pytest.mark.parametrize("cv", [0, 1, -3, 2.0], ids=repr)
def test_cross_validate_cv_checked(probe, cv):
    with pytest.raises((ValueError, TypeError), match=r"cv=.* must be an int >= 2"):
        probe.cross_validate(cv=cv)


# ---------------------------------------------------------------------------- the checks themselves
LABEL_CASES = [
    ([1, None, 0], ValueError, r"labels\[1\] is None"),
    (np.array([1, None, 0], dtype=object), ValueError, r"labels\[1\] is None"),
    ([1.0, float("nan"), 0.0], ValueError, r"labels\[1\] is NaN"),
    ([1, "dog", 0], TypeError, r"labels mix types \(int, str\)"),
]


@pytest.mark.parametrize(
    "labels, error, match", LABEL_CASES, ids=["none", "none-object-array", "nan", "mixed"]
)
def test_check_labels_names_the_bad_label(labels, error, match):
    from lmprobe_jupyter.engine.inputs import check_labels

    with pytest.raises(error, match=match):
        check_labels(labels)


def test_check_labels_keeps_good_labels():
    from lmprobe_jupyter.engine.inputs import check_labels

    assert check_labels([1.0, 0.0]).dtype == np.int64
    assert check_labels(["a", "b"]).tolist() == ["a", "b"]
    assert check_labels([0.5, 1.5], "regression").tolist() == [0.5, 1.5]


def test_surrogate_in_a_chat_message_named():
    from lmprobe_jupyter.engine.inputs import check_prompts

    conv = [{"role": "user", "content": "ok \udfff"}]
    with pytest.raises(ValueError, match=r"prompts\[0\]\[0\]\['content'\] holds a lone"):
        check_prompts([conv])
    assert check_prompts(["emoji \U0001f600 fine"]) == ["emoji \U0001f600 fine"]


@pytest.mark.parametrize(
    "fn, arg, ok",
    [("check_batch_size", None, None), ("check_batch_size", 4, 4), ("check_cv", 3, 3)],
    ids=["bs-none", "bs-4", "cv-3"],
)
def test_size_checks_accept_valid_values(fn, arg, ok):
    from lmprobe_jupyter.engine import inputs

    assert getattr(inputs, fn)(arg) == ok


def test_score_and_evaluate_agree_on_string_labels(probe):
    """score() used to return 0.0 where evaluate() raised."""
    for fn in (probe.score, probe.evaluate):
        with pytest.raises(ValueError, match="labels are strings, but the probe's classes are"):
            fn(POS + NEG, [str(v) for v in Y])
    assert probe.score(POS + NEG, Y) == probe.evaluate(POS + NEG, Y)["accuracy"]
