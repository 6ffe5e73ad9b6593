"""Extraction: early stop, batch/padding invariance, pooling, truncation, caching hook."""

from __future__ import annotations

import numpy as np
import pytest
from lmtest_helpers import MIXED_PROMPTS

from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.extraction.models import decoder_layers, load_model

PROMPTS = MIXED_PROMPTS


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
    from lmprobe_jupyter.engine.cache import settings as cache

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
    from lmprobe_jupyter.engine.cache import settings as cache

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
    from lmprobe_jupyter.engine.extraction.models import load_model

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


# ---------------------------------------------------------------- token budget
@pytest.mark.parametrize(
    "lengths, batch_size, budget, expected",
    [
        (
            [10] * 20,
            8,
            2048,
            [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15], [16, 17, 18, 19]],
        ),
        ([10] * 20, 64, 100, [list(range(10)), list(range(10, 20))]),
        ([800, 700, 600, 50, 40], 8, 1600, [[0, 1], [2], [3, 4]]),
        ([3000, 5], 8, 1000, [[0], [1]]),
        ([5, 9, 7], 2, None, [[1, 2], [0]]),
    ],
    ids=["cap-by-batch-size", "cap-by-budget", "long-prompts", "longer-than-budget", "no-budget"],
)
def test_token_budget_batches(tiny, lengths, batch_size, budget, expected):
    ext = Extractor(tiny, batch_size=batch_size, max_batch_tokens=budget, use_cache=False)
    plan = ext.batch_plan(lengths)
    assert plan == expected
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    for b in plan:
        assert len(b) <= batch_size
        if budget is not None and len(b) > 1:
            assert len(b) * max(lengths[i] for i in b) <= budget


def test_token_budget_default_and_validation(tiny):
    from lmprobe_jupyter.engine.extraction.extractor import DEFAULT_BATCH_TOKENS

    assert Extractor(tiny).token_budget == DEFAULT_BATCH_TOKENS["cpu"]
    assert Extractor(tiny, max_batch_tokens=None).token_budget is None
    with pytest.raises(
        ValueError, match="max_batch_tokens=0 must be a positive int, 'auto' or None"
    ):
        Extractor(tiny, max_batch_tokens=0)


def test_token_budget_does_not_change_results(tiny):
    prompts = PROMPTS * 3
    a = Extractor(tiny, batch_size=64, max_batch_tokens=40, use_cache=False).pooled(
        prompts, [2], "mean"
    )
    b = Extractor(tiny, batch_size=1, max_batch_tokens=None, use_cache=False).pooled(
        prompts, [2], "mean"
    )
    np.testing.assert_allclose(a[2], b[2], atol=1e-5)


# ---------------------------------------------------------------- shared prefixes
SYSTEM = (
    "System: you are a careful assistant. Answer briefly, refuse harmful requests, and explain "
    "chemistry and programming questions for students with care. User: "
)
SHARED = [SYSTEM + q for q in ("hi", "what is a mole?", "write a loop in python please", "why?")]
MIXED = SHARED + ["unrelated short prompt", "another one that shares nothing at all"]


def _compare_paths(loaded, prompts, layers, poolings, atol):
    shared = Extractor(loaded, batch_size=8, use_cache=False)
    plain = Extractor(loaded, batch_size=8, use_cache=False, share_prefix=False)
    for pooling in poolings:
        calls = Extractor.forward_calls
        a = shared.pooled(prompts, layers, pooling)
        n_shared = Extractor.forward_calls - calls
        b = plain.pooled(prompts, layers, pooling)
        for layer in layers:
            np.testing.assert_allclose(a[layer], b[layer], atol=atol, rtol=1e-5)
    ta = shared.per_token(prompts, layers)
    tb = plain.per_token(prompts, layers)
    for x, y in zip(ta, tb):
        assert x.tokens == y.tokens
        for layer in layers:
            assert x.acts[layer].shape == y.acts[layer].shape
            np.testing.assert_allclose(x.acts[layer], y.acts[layer], atol=atol, rtol=1e-5)
    return n_shared


def test_shared_prefix_equals_plain_path(tiny):
    n = _compare_paths(
        tiny, MIXED, [0, 2, 3], ["last_token", "mean", "max", "min", "first_token"], 1e-4
    )
    # one prefix pass + one batch of the 4 suffixes + the plain batches of the 2 others
    others = Extractor(tiny).batch_plan([len(x) for x in Extractor(tiny).encode(MIXED[4:])])
    assert n == 2 + len(others)


def test_shared_prefix_with_token_masks_and_callable(tiny):
    shared = Extractor(tiny, use_cache=False)
    plain = Extractor(tiny, use_cache=False, share_prefix=False)
    lens = [len(x) for x in shared.encode(SHARED)]
    masks = [np.arange(n) % 3 == 0 for n in lens]  # some prefix and some suffix tokens
    for pooling in ("mean", "max", lambda h: h[1:4].sum(0)):
        a = shared.pooled(SHARED, [1], pooling, token_masks=masks, key_suffix=":m")
        b = plain.pooled(SHARED, [1], pooling, token_masks=masks, key_suffix=":m")
        np.testing.assert_allclose(a[1], b[1], atol=1e-4)


def test_a_prefix_too_small_to_pay_runs_the_plain_path(tiny):
    from lmprobe_jupyter.engine.extraction.extractor import MIN_PREFIX_SAVING

    pair = SHARED[:2]  # one prompt saved: fewer prefix tokens than MIN_PREFIX_SAVING
    n = min(len(x) for x in Extractor(tiny).encode(pair))
    assert n < MIN_PREFIX_SAVING
    calls = Extractor.forward_calls
    Extractor(tiny, use_cache=False).pooled(pair, [1], "mean")
    assert Extractor.forward_calls - calls == 1  # no separate prefix pass


def test_shared_prefix_keeps_cache_keys(tiny):
    Extractor(tiny).pooled(SHARED, [2], "mean")
    calls = Extractor.forward_calls
    plain = Extractor(tiny, share_prefix=False)
    plain.pooled(SHARED, [2], "mean")
    assert Extractor.forward_calls == calls and plain.last_hits == len(SHARED)


@pytest.mark.real_model
def test_shared_prefix_equals_plain_path_on_smollm(smollm):
    tok = smollm.tokenizer
    chat = [
        tok.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            tokenize=False,
        )
        for q in ("How do vaccines work?", "Tell me a joke about cats", "hi")
    ]
    # SmolLM2 has activations up to ~2e4 (one fp32 ulp there is ~2e-3): relative tolerance.
    shared = Extractor(smollm, use_cache=False)
    plain = Extractor(smollm, use_cache=False, share_prefix=False)
    for pooling in ("last_token", "mean", "max"):
        a = shared.pooled(chat, [3, 15], pooling)
        b = plain.pooled(chat, [3, 15], pooling)
        for layer in (3, 15):
            np.testing.assert_allclose(a[layer], b[layer], atol=1e-4, rtol=1e-4)
    x, y = shared.per_token(chat[:2], [15]), plain.per_token(chat[:2], [15])
    for s, t in zip(x, y):
        np.testing.assert_allclose(s.acts[15], t.acts[15], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- threads
def test_threads_on_a_cold_cache_get_their_own_hidden_states(tiny_model_path):
    """Issue 15 item 3: hooks on the shared model must not read another thread's forward."""
    from concurrent.futures import ThreadPoolExecutor

    from lmprobe_jupyter import Probe, clear_cache

    sets = [[f"set {k} prompt {i} " + "word " * (3 * i + k) for i in range(6)] for k in range(4)]
    p = Probe(model=tiny_model_path, layers=[1, 3], pooling="mean", dtype="float32", random_state=0)
    p.fit(["a dog barks", "the puppy runs far away"], ["a cat purrs", "the kitten naps all day"])
    clear_cache()
    single = [p.predict_proba(s) for s in sets]
    for _ in range(3):  # a race shows up in most, not all, runs
        clear_cache()
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(p.predict_proba, sets))
        for a, b in zip(threaded, single):
            np.testing.assert_allclose(a, b, atol=1e-6)
    clear_cache()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(p.predict_proba, sets))  # cold and threaded: these get cached
    calls = Extractor.forward_calls
    cached = [p.predict_proba(s) for s in sets]
    assert Extractor.forward_calls == calls
    for a, b in zip(cached, single):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_foreign_forward_through_the_model_is_ignored(tiny):
    """A forward pass that does not take the lock (another library) never reaches our hooks."""
    import threading

    import torch

    ref = Extractor(tiny, use_cache=False).pooled(PROMPTS, [1], "mean")[1]
    stop = threading.Event()
    errors = []

    def hammer():
        ids = torch.arange(1, 60)[None]
        while not stop.is_set():
            try:
                with torch.inference_mode():
                    out = tiny.model(input_ids=ids).logits
                assert out.shape == (1, 59, tiny.model.config.vocab_size)
            except BaseException as exc:  # noqa: BLE001 - an extraction hook fired here
                errors.append(type(exc).__name__)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for _ in range(20):
            got = Extractor(tiny, use_cache=False).pooled(PROMPTS, [1], "mean")[1]
            np.testing.assert_allclose(got, ref, atol=1e-6)
    finally:
        stop.set()
        t.join()
    assert errors == []


# ---------------------------------------------------------------- bfloat16 quality
@pytest.mark.real_model
def test_bfloat16_matches_float32_on_the_tutorial_sets(smollm):
    """dtype="auto" picks bfloat16 on this CPU: same activations (cosine), same predictions."""
    from lmprobe_jupyter import Probe
    from lmprobe_jupyter.examples import BENIGN, CAT, DOG, DOG_CAT_TEST, MISUSE, SAFETY_TEST

    bf16 = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu", dtype="bfloat16")
    assert bf16.key == smollm.key + ":bfloat16"
    tasks = {
        "dog-cat": (DOG + CAT, [1] * len(DOG) + [0] * len(CAT), DOG_CAT_TEST),
        "safety": (MISUSE + BENIGN, [1] * len(MISUSE) + [0] * len(BENIGN), SAFETY_TEST),
    }
    for name, (train, y, test) in tasks.items():
        test_prompts = [t for t, _ in test]
        for pooling in ("last_token", "mean"):
            feats = {}
            for lm in (smollm, bf16):
                ext = Extractor(lm, use_cache=False)
                feats[lm.dtype_name] = (
                    ext.pooled(train, [15], pooling)[15],
                    ext.pooled(test_prompts, [15], pooling)[15],
                )
            for a, b in zip(feats["float32"], feats["bfloat16"]):
                assert a.dtype == b.dtype == np.float32
                cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                assert cos.min() > 0.999, (name, pooling, cos.min())
            for src, dst in (("float32", "bfloat16"), ("bfloat16", "float32")):
                p = Probe(layers=[15], random_state=0).fit_from_activations(feats[src][0], y)
                own = p.predict_from_activations(feats[src][1])
                other = p.predict_from_activations(feats[dst][1])
                np.testing.assert_array_equal(own, other, err_msg=f"{name} {pooling} {src}")
