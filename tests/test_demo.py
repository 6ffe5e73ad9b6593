"""``make demo``'s printed story: what the probe's margin over the best baseline means."""

from __future__ import annotations

import pytest

from lmprobe_jupyter.demo import margin_text
from lmprobe_jupyter.examples import SAFETY_TEST, SAFETY_TRICKY


@pytest.mark.parametrize(
    ("margin", "expected"),
    [
        (0.0, "a tie with tfidf: on this test set the words alone give the answer away"),
        (0.25, "the probe beats the best baseline (tfidf) by +0.250"),
        (-0.083, "the best baseline (tfidf) beats the probe by 0.083"),
        (None, ""),
    ],
    ids=["tie", "win", "loss", "no-probe"],
)
def test_margin_is_explained(margin, expected):
    assert expected in margin_text(margin, "tfidf")


def test_tricky_set_is_balanced_and_new():
    labels = [y for _, y in SAFETY_TRICKY]
    assert labels.count(1) == labels.count(0) == 6
    assert not {t for t, _ in SAFETY_TRICKY} & {t for t, _ in SAFETY_TEST}
