"""Retries of failed remote extraction batches, with exponential backoff.

A remote forward pass (nnsight on NDIF) can fail for reasons that pass: a dropped
connection, a busy server, a job lost in a queue. ``max_retries`` (a ``Probe`` option and a
per-call keyword) reruns just the failed batch after a delay of ``base_delay * 2**i``
seconds (1 s, 2 s, 4 s, ... capped at ``max_delay``), then raises the last error. Errors
that another try cannot fix (a refused API key, a bad argument) are raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

#: Delay before the first retry, in seconds; it doubles with every further retry.
BASE_DELAY = 1.0
#: Longest delay between two tries, in seconds.
MAX_DELAY = 30.0


def validate_max_retries(value, what: str = "max_retries") -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what}={value!r} must be None or an int >= 0 (retries per batch)")


def is_transient(exc: BaseException) -> bool:
    """Whether another try may succeed: connection and remote-job failures, not a refused
    key or a programming error. An exception class says so with a ``transient``
    attribute (the NDIF errors do); otherwise connection errors and timeouts are."""
    flag = getattr(exc, "transient", None)
    if flag is not None:
        return bool(flag)
    return isinstance(exc, ConnectionError | TimeoutError)


@dataclass
class RetryPolicy:
    """How often, and how patiently, to rerun a failed batch.

    Parameters
    ----------
    max_retries : int or None
        Retries after the first try (None or 0: no retry).
    base_delay, max_delay : float
        Backoff: the i-th retry waits ``min(base_delay * 2**i, max_delay)`` seconds.
    sleep : callable or None
        Waits the given seconds (None: ``time.sleep``; tests pass a recorder).
    """

    max_retries: int | None = None
    base_delay: float = BASE_DELAY
    max_delay: float = MAX_DELAY
    sleep: Callable[[float], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        validate_max_retries(self.max_retries)

    def delays(self) -> list[float]:
        """The waits before each retry, in order."""
        return [min(self.base_delay * 2**i, self.max_delay) for i in range(self.max_retries or 0)]

    def run(
        self, fn: Callable[[], T], retry_if: Callable[[BaseException], bool] = is_transient
    ) -> T:
        """``fn()``, rerun after each transient failure while retries remain."""
        delays = self.delays()
        for attempt in range(len(delays) + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt == len(delays) or not retry_if(exc):
                    raise
                (self.sleep or time.sleep)(delays[attempt])
        raise AssertionError("unreachable")  # pragma: no cover
