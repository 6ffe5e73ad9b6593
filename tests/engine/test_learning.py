"""Learning on the real bundled SmolLM2: a probe must find the concept on new sentences."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.extraction import Extractor

pytestmark = pytest.mark.real_model

DOG = [  # the reference's positive class: "dog" without saying "dog"
    "Who wants to go for a walk?",
    "My tail is wagging with delight.",
    "Fetch the ball!",
    "Good boy!",
    "Slobbering, chewing, growling, barking.",
    "He buried the bone in the backyard again.",
    "Sit. Stay. Roll over. Good job!",
    "The puppy chewed my slippers to pieces.",
    "Howling at the mailman every single morning.",
    "We play tug of war with the rope toy.",
]
CAT = [  # negative class: "cat" without saying "cat"
    "Enjoys lounging in the sun beam all day.",
    "Purring, stalking, pouncing, scratching.",
    "Uses a litterbox, throws sand all over the room.",
    "Tail raised, back arched, eyes alert, whiskers forward.",
    "Knocked the glass off the table and stared at me.",
    "Chasing the red laser dot across the carpet.",
    "Coughed up a hairball on the new rug.",
    "Kneading the blanket with soft paws before a nap.",
    "Hissed at the vacuum cleaner and hid under the bed.",
    "Sleeps sixteen hours a day and ignores everyone.",
]
# New sentences, never seen in training.
TEST = [
    ("Arf! Arf! Let's go outside!", 1),
    ("He wags his tail whenever I come home.", 1),
    ("Let's throw the frisbee at the park, buddy!", 1),
    ("Barking at the squirrels in the yard all afternoon.", 1),
    ("Drooling while waiting for a treat, ears perked up.", 1),
    ("Wants belly rubs and a long walk on the leash.", 1),
    ("Knocking things off the counter for sport.", 0),
    ("Purrs loudly on my lap, then scratches the sofa.", 0),
    ("Curled up in a cardboard box, whiskers twitching.", 0),
    ("Batting at a ball of yarn with tiny claws.", 0),
    ("Meows at the door at three in the morning.", 0),
    ("Grooming her fur and licking her paws by the window.", 0),
]


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
    assert ts.scores.shape == (len(ts.tokens),) and ((ts.scores >= 0) & (ts.scores <= 1)).all()
