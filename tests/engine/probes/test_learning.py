"""Learning on the real bundled SmolLM2: a probe must find the concept on new sentences."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.examples import CAT, DOG  # the reference's toy task, extended
from lmprobe_jupyter.examples import DOG_CAT_TEST as TEST  # new sentences, never trained on

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def dog_probe(smollm):
    return Probe(model=smollm.name, layers=16, random_state=42, device="cpu").fit(DOG, CAT)


def test_dog_vs_cat_generalizes_to_new_sentences(dog_probe):
    texts, labels = zip(*TEST)
    acc = dog_probe.score(list(texts), list(labels))
    assert acc >= 0.75, acc
    m = dog_probe.evaluate(list(texts), list(labels))
    assert m["auroc"] >= 0.8


def test_reference_example_predictions(dog_probe):
    pred = dog_probe.predict(
        ["Arf! Arf! Let's go outside!", "Knocking things off the counter for sport."]
    )
    assert list(pred) == [1, 0]


def test_batch_and_padding_invariance_on_real_model(smollm):
    prompts = [t for t, _ in TEST]
    target = prompts[3]
    alone = Extractor(smollm, batch_size=1, use_cache=False).pooled([target], [5, 20], "last_token")
    for side in ("left", "right"):
        ext = Extractor(smollm, batch_size=6, use_cache=False, padding_side=side)
        both = ext.pooled(prompts, [5, 20], "last_token")
        for layer in (5, 20):
            np.testing.assert_allclose(both[layer][3], alone[layer][0], atol=1e-4)


def test_middle_layer_default_and_token_scores(dog_probe, smollm):
    p = Probe(model=smollm.name, device="cpu").fit(DOG[:4], CAT[:4])
    assert p.layers_ == [15]
    (ts,) = dog_probe.token_scores(["Fetch the ball, good boy!"])
    assert "".join(ts.tokens) == "Fetch the ball, good boy!"
    assert ts.scores.shape == (len(ts.tokens),)
    # the first position (attention sink) is not scored; every other token is a probability
    assert np.isnan(ts.scores[0]) and ((ts.scores[1:] >= 0) & (ts.scores[1:] <= 1)).all()
