"""Unscored tokens: the sink at position 0 and special tokens, with switches to include them."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter.engine.extraction.token_masks import (
    mask_scores,
    scored_token_mask,
    scored_token_masks,
    special_token_ids,
)


@pytest.mark.parametrize(
    ("sink", "special", "expected"),
    [
        (False, False, [False, True, False, True, False]),
        (True, False, [False, True, False, True, False]),  # position 0 is special anyway
        (False, True, [False, True, True, True, True]),
        (True, True, [True, True, True, True, True]),
    ],
    ids=["default", "with-sink", "with-special", "all"],
)
def test_scored_token_mask(sink, special, expected):
    got = scored_token_mask([1, 7, 2, 9, 2], {1, 2}, include_sink=sink, include_special=special)
    assert got.tolist() == expected


def test_sink_is_unscored_even_when_it_is_ordinary_text():
    assert scored_token_mask([5, 6, 7], set()).tolist() == [False, True, True]
    assert scored_token_mask([], set()).tolist() == []


def test_bundled_tokenizer_chat_control_tokens(bundled_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bundled_dir))
    special = special_token_ids(tok)
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert {im_start, im_end} <= special
    text = tok.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False)
    ids = tok(text, add_special_tokens=True)["input_ids"]
    (mask,) = scored_token_masks(tok, [ids])
    pieces = tok.convert_ids_to_tokens(ids)
    assert [p for p, m in zip(pieces, mask) if not m] == [p for p in pieces if p.startswith("<|")]
    assert "Hi" in "".join(p for p, m in zip(pieces, mask) if m)
    plain = tok("The dog barked.", add_special_tokens=True)["input_ids"]
    (m2,) = scored_token_masks(tok, [plain])
    assert m2.tolist() == [False] + [True] * (len(plain) - 1)


def test_mask_scores():
    s = mask_scores(np.asarray([[0.1, 0.9], [0.2, 0.3], [0.4, 0.5]]), np.asarray([0, 1, 1], bool))
    assert np.isnan(s[0]).all() and s[1, 1] == 0.3
    with pytest.raises(ValueError, match=r"scores of shape \(2,\) do not match a mask of shape"):
        mask_scores(np.zeros(2), np.ones(3, bool))
