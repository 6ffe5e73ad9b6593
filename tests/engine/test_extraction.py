"""Extraction: early stop, batch/padding invariance, pooling, truncation, caching hook."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter.engine.extraction import Extractor
from lmprobe_jupyter.engine.models import decoder_layers, load_model

PROMPTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "A much longer prompt, with punctuation; several clauses, and a trailing question?",
    "Short one",
    "Numbers 1 2 3 4 5 6 7 8 9 10 11 12",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return load_model(tiny_model_path, device="cpu")


def _bare_hidden(loaded, text, layer):
    import torch

    # A plain full-depth forward of one unpadded prompt; block outputs read by a hook
    # (hidden_states[-1] would be after the final norm).
    ids = loaded.tokenizer(text, return_tensors="pt")
    seen = {}
    block = decoder_layers(loaded.model)[layer]
    handle = block.register_forward_hook(
        lambda m, i, o: seen.setdefault("h", o[0] if isinstance(o, tuple) else o)
    )
    try:
        with torch.inference_mode():
            loaded.model(**ids)
    finally:
        handle.remove()
    return seen["h"][0].numpy()


@pytest.mark.parametrize("pooling", ["last_token", "mean", "first_token", "max", "min"])
def test_pooled_matches_bare_forward(tiny, pooling):
    ext = Extractor(tiny, batch_size=3, use_cache=False)
    acts = ext.pooled(PROMPTS, [1, 3], pooling)
    for layer in (1, 3):
        assert acts[layer].shape == (len(PROMPTS), 32) and acts[layer].dtype == np.float32
        for i, text in enumerate(PROMPTS):
            h = _bare_hidden(tiny, text, layer)
            ref = {
                "last_token": h[-1],
                "first_token": h[0],
                "mean": h.mean(0),
                "max": h.max(0),
                "min": h.min(0),
            }[pooling]
            np.testing.assert_allclose(acts[layer][i], ref, atol=1e-4)


def test_batch_composition_and_padding_side_do_not_matter(tiny):
    target = PROMPTS[2]
    alone = Extractor(tiny, batch_size=1, use_cache=False).pooled([target], [2], "mean")[2][0]
    for side in ("right", "left"):
        for bs in (2, 5):
            ext = Extractor(tiny, batch_size=bs, use_cache=False, padding_side=side)
            got = ext.pooled(PROMPTS[::-1], [2], "mean")[2][PROMPTS[::-1].index(target)]
            np.testing.assert_allclose(got, alone, atol=1e-4)
            last = ext.pooled(PROMPTS, [2], "last_token")[2][2]
            np.testing.assert_allclose(
                last,
                Extractor(tiny, batch_size=1, use_cache=False).pooled([target], [2], "last_token")[
                    2
                ][0],
                atol=1e-4,
            )


def test_forward_stops_after_deepest_layer(tiny):
    blocks = decoder_layers(tiny.model)
    ran = []
    handles = [
        b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(blocks)
    ]
    try:
        Extractor(tiny, use_cache=False).pooled(["hello there"], [1], "last_token")
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1]


def test_callable_pooling(tiny):
    ext = Extractor(tiny, use_cache=False)
    got = ext.pooled(PROMPTS[:2], [0], lambda h: h[-2:].sum(0))[0]
    h = _bare_hidden(tiny, PROMPTS[1], 0)
    np.testing.assert_allclose(got[1], h[-2:].sum(0), atol=1e-4)


def test_cache_hits_run_no_forward(tiny):
    ext = Extractor(tiny)
    first = ext.pooled(PROMPTS, [1, 2], "mean")
    before = Extractor.forward_calls
    again = ext.pooled(PROMPTS, [2, 1], "mean")
    assert Extractor.forward_calls == before
    assert ext.last_hits == len(PROMPTS) and ext.last_misses == 0
    np.testing.assert_allclose(again[1], first[1])


def test_duplicate_prompts_computed_once(tiny):
    ext = Extractor(tiny, batch_size=1, use_cache=False)
    before = Extractor.forward_calls
    acts = ext.pooled(["same text", "same text", "other"], [0], "mean")[0]
    assert Extractor.forward_calls - before == 2
    np.testing.assert_array_equal(acts[0], acts[1])


def test_long_prompt_truncated_with_warning(tiny):
    long = "word " * 400  # tiny model's context is 128 tokens
    with pytest.warns(UserWarning, match="exceed the model's context of 128 tokens"):
        acts = Extractor(tiny, use_cache=False).pooled([long], [0], "mean")
    assert np.isfinite(acts[0]).all()


def test_per_token_pieces_keep_whitespace(tiny):
    text = "Hello  world\n\tnew line"
    (t,) = Extractor(tiny, use_cache=False).per_token([text], [1, 3])
    assert "".join(t.tokens) == text
    assert t.acts[1].shape == (len(t.tokens), 32)
    np.testing.assert_allclose(t.acts[3], _bare_hidden(tiny, text, 3), atol=1e-4)


def test_bad_batch_size(tiny):
    with pytest.raises(ValueError, match="batch_size=0 must be a positive int"):
        Extractor(tiny, batch_size=0)


def test_per_token_cached_only_when_asked(tiny):
    from lmprobe_jupyter.engine import cache

    ext = Extractor(tiny)
    first = ext.per_token(PROMPTS[:3], [1])
    before = Extractor.forward_calls
    ext.per_token(PROMPTS[:3], [1])
    assert Extractor.forward_calls > before  # computed on demand by default
    cache.set_cache_tokens(True)
    try:
        ext.per_token(PROMPTS[:3], [1])
        before = Extractor.forward_calls
        again = ext.per_token(PROMPTS[:3], [1])
        assert Extractor.forward_calls == before and ext.last_hits == 3
        for a, b in zip(first, again):
            assert a.tokens == b.tokens
            np.testing.assert_allclose(a.acts[1], b.acts[1], atol=1e-6)
    finally:
        cache.set_cache_tokens(False)


def test_cold_and_warm_agree_with_a_float16_cache(tiny):
    from lmprobe_jupyter.engine import cache

    cache.set_cache_dtype("float16")
    try:
        ext = Extractor(tiny)
        cold = ext.pooled(PROMPTS, [2], "mean")[2]
        warm = ext.pooled(PROMPTS, [2], "mean")[2]
        assert ext.last_hits == len(PROMPTS)
        np.testing.assert_array_equal(cold, warm)
        assert cold.dtype == np.float32
    finally:
        cache.set_cache_dtype("float32")


def test_pooled_many_is_pooled_for_each_pooling_in_one_pass(tiny_model_path):
    from lmprobe_jupyter.engine.models import load_model

    loaded = load_model(tiny_model_path, device="cpu")
    prompts = ["alpha beta", "gamma delta epsilon zeta", "eta", "alpha beta"]
    poolings = ["last_token", "mean", "max", "first_token"]
    before = Extractor.forward_calls
    got = Extractor(loaded, batch_size=8).pooled_many(prompts, [1, 3], poolings)
    assert Extractor.forward_calls - before == 1
    ref = Extractor(loaded, batch_size=2, use_cache=False)
    for p in poolings:
        want = ref.pooled(prompts, [1, 3], p)
        for layer in (1, 3):
            np.testing.assert_allclose(got[p][layer], want[layer], atol=1e-5)
    before = Extractor.forward_calls
    Extractor(loaded).pooled_many(prompts, [1, 3], poolings)  # all cached now
    assert Extractor.forward_calls == before
