"""RetryPolicy: exponential backoff, which errors are retried, the last error raised."""

from __future__ import annotations

import pytest

from lmprobe_jupyter.engine.extraction.nnsight_backend import (
    NDIFAuthError,
    NDIFError,
    NDIFUnreachableError,
)
from lmprobe_jupyter.engine.extraction.retry import RetryPolicy, is_transient


def _flaky(errors):
    """A function that raises ``errors`` in turn, then returns how many calls it took."""
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return len(calls)

    return fn, calls


def test_backoff_doubles_from_one_second_and_is_capped():
    assert RetryPolicy(7).delays() == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert RetryPolicy(None).delays() == [] and RetryPolicy(0).delays() == []


def test_transient_failures_are_retried_after_the_backoff():
    waits = []
    fn, calls = _flaky([NDIFUnreachableError("down"), ConnectionError("reset")])
    assert RetryPolicy(3, sleep=waits.append).run(fn) == 3
    assert waits == [1.0, 2.0] and len(calls) == 3


def test_the_last_error_is_raised_when_retries_run_out():
    waits = []
    fn, calls = _flaky([NDIFError("job 1 failed"), NDIFError("job 2 failed"), NDIFError("3")])
    with pytest.raises(NDIFError, match="job 2 failed"):
        RetryPolicy(1, sleep=waits.append).run(fn)
    assert waits == [1.0] and len(calls) == 2


@pytest.mark.parametrize(
    "exc",
    [NDIFAuthError("bad key"), ValueError("bad argument"), KeyError("x")],
    ids=["auth", "value", "key"],
)
def test_errors_another_try_cannot_fix_are_raised_at_once(exc):
    waits = []
    fn, calls = _flaky([exc])
    with pytest.raises(type(exc)):
        RetryPolicy(5, sleep=waits.append).run(fn)
    assert waits == [] and len(calls) == 1
    assert not is_transient(exc)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"], ids=["negative", "float", "bool", "str"])
def test_bad_max_retries(bad):
    with pytest.raises(ValueError, match=r"max_retries=.* must be None or an int >= 0"):
        RetryPolicy(bad)
