"""Pooling keys: a callable pooling's cache key covers everything that decides its output."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

from lmprobe_jupyter.engine.cache import settings as C
from lmprobe_jupyter.engine.cache.keys import UNCACHED_PREFIX
from lmprobe_jupyter.engine.extraction import pooling as P
from lmprobe_jupyter.engine.extraction.pooling import pooling_key

PROMPTS = ["Hello there", "The cat sat on the mat.", "A third, longer prompt about dogs"]


@pytest.fixture
def tiny(tiny_model_path):
    from lmprobe_jupyter.engine.extraction.models import load_model

    return load_model(tiny_model_path, device="cpu")


def make_pool(scale):
    def pool(h):
        return h.mean(0) * scale

    return pool


def test_two_closures_with_the_same_code_are_cached_apart(tiny):
    """Reproduces issue 15 #5 (callables): ``make_pool(1.0)`` and ``make_pool(3.0)`` have
    the same code and qualname, so they shared one cache key and the second was served
    the first one's vectors. Both must be right, cold and warm."""
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    one, three = make_pool(1.0), make_pool(3.0)
    assert pooling_key(one) != pooling_key(three)
    a = Extractor(tiny).pooled(PROMPTS, [2], one)[2]
    b = Extractor(tiny).pooled(PROMPTS, [2], three)[2]
    np.testing.assert_allclose(b, 3.0 * a, rtol=1e-5)
    calls = Extractor.forward_calls
    warm_a = Extractor(tiny).pooled(PROMPTS, [2], make_pool(1.0))[2]  # a new, equal closure
    warm_b = Extractor(tiny).pooled(PROMPTS, [2], make_pool(3.0))[2]
    assert Extractor.forward_calls == calls  # both served from the cache
    np.testing.assert_array_equal(warm_a, a)
    np.testing.assert_array_equal(warm_b, b)


SCALE = 2.0


def uses_global(h):
    return h.mean(0) * SCALE


def with_default(h, scale=2.0):
    return h.mean(0) * scale


def with_kwdefault(h, *, scale=2.0):
    return h.mean(0) * scale


def helper(h):
    return h.mean(0)


def uses_helper(h):
    return helper(h) * 2.0


def _key_after(fn, change):
    before = pooling_key(fn)
    undo = change()
    try:
        return before, pooling_key(fn)
    finally:
        undo()


def _set_global(name, value):
    old = globals()[name]
    globals()[name] = value
    return lambda: globals().__setitem__(name, old)


def _set_attr(obj, attr, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    return lambda: setattr(obj, attr, old)


@pytest.mark.parametrize(
    "fn,change",
    [
        (uses_global, lambda: _set_global("SCALE", 5.0)),
        (with_default, lambda: _set_attr(with_default, "__defaults__", (5.0,))),
        (with_kwdefault, lambda: _set_attr(with_kwdefault, "__kwdefaults__", {"scale": 5.0})),
        (uses_helper, lambda: _set_global("helper", lambda h: h.sum(0))),
        (uses_global, lambda: _set_global("SCALE", np.float64(2.0))),
    ],
    ids=["global", "default", "kwdefault", "called-helper", "global-type"],
)
def test_key_changes_with_what_decides_the_output(fn, change):
    before, after = _key_after(fn, change)
    assert before.startswith("callable:") and after.startswith("callable:")
    assert before != after
    assert pooling_key(fn) == before  # restored: the key is deterministic


@pytest.mark.parametrize(
    "value",
    [
        (1, "a", None, (2.5, b"x")),
        {"k": [1, 2], "j": frozenset({3, 4})},
        np.arange(6, dtype=np.float32).reshape(2, 3),
        functools.partial(with_default, scale=3.0),
        np,
    ],
    ids=["tuple", "dict-set", "ndarray", "partial", "module"],
)
def test_keyable_closure_values_give_stable_keys(value):
    fn = make_pool(value)
    assert pooling_key(fn).startswith("callable:")
    assert pooling_key(fn) == pooling_key(make_pool(value))


def test_array_contents_are_part_of_the_key():
    w = np.ones(4, dtype=np.float32)
    assert pooling_key(make_pool(w)) != pooling_key(make_pool(w * 2))


class Scaler:
    def __init__(self, s):
        self.s = s


def test_unkeyable_callable_is_computed_every_time_and_warned_once(tiny):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor

    P._WARNED.clear()
    weird = make_pool(Scaler(2.0))  # an arbitrary object in the closure
    with pytest.warns(
        UserWarning,
        match=r"pooling='make_pool.<locals>.pool' is not cached.*"
        r"closure variable 'scale'.*Scaler",
    ) as record:
        key = pooling_key(weird)
        pooling_key(make_pool(Scaler(3.0)))
    assert key.startswith(UNCACHED_PREFIX) and len(record) == 1

    double = make_pool(Scaler(2.0))
    double_fn = lambda h: h.mean(0) * 2.0  # noqa: E731 - the reference
    ref = Extractor(tiny).pooled(PROMPTS, [1], double_fn)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pool_obj = lambda h, s=double.__closure__[0].cell_contents: h.mean(0) * s.s  # noqa: E731
        first = Extractor(tiny).pooled(PROMPTS, [1], pool_obj)[1]
        calls = Extractor.forward_calls
        again = Extractor(tiny).pooled(PROMPTS, [1], pool_obj)[1]
    assert Extractor.forward_calls > calls  # never served from the cache
    np.testing.assert_allclose(first, ref, rtol=1e-6)
    np.testing.assert_allclose(again, ref, rtol=1e-6)
    info = C.cache_info()
    assert all(not p.startswith(UNCACHED_PREFIX) for m in info.models.values() for p in m.poolings)


def test_uncached_key_never_reaches_the_store():
    c = C.get_cache()
    c.store("m", ["a"], 0, f"{UNCACHED_PREFIX}f", [np.ones(3)])
    assert C.cache_info().entries == 0
    assert c.lookup("m", ["a"], 0, f"{UNCACHED_PREFIX}f") == [None]
    assert c.contains("m", ["a"], 0, f"{UNCACHED_PREFIX}f") == [False]
