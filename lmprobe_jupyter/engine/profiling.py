"""Wall-clock profiling: where an operation's time goes (tokenize, forward, pool, cache, fit).

Off by default and then free: :func:`profile` returns one shared no-op context manager, so
the timers left in the hot paths cost a function call and an ``if``. Turn it on with
``set_profiling(True)`` or ``LMPROBE_PROFILE=1``.

Two kinds of frame:

- ``with profile("forward"):`` times one step. Times are *exclusive*: a step nested in
  another (pooling inside the forward hooks, cache reads inside an extraction) is
  subtracted from its parent, so the steps of an operation add up to its total.
- ``with operation("Probe.fit"):`` (or the ``@profiled("Probe.fit")`` decorator) marks a
  user-facing call. When the outermost operation ends, its breakdown is logged at INFO on
  the ``lmprobe`` logger and kept as :func:`last_profile`. A step that runs with no
  operation around it is its own operation.

Frames are per thread; totals over the process accumulate in :func:`profile_totals`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field

__all__ = [
    "OPERATIONS",
    "ProfileReport",
    "is_profiling",
    "last_profile",
    "operation",
    "profile",
    "profile_totals",
    "profiled",
    "reset_profile",
    "set_profiling",
]

#: The step names the engine records (other names are allowed).
OPERATIONS = ("tokenize", "forward", "pool", "cache_read", "cache_write", "fit")

logger = logging.getLogger("lmprobe")

_enabled = os.environ.get("LMPROBE_PROFILE", "0").strip().lower() in ("1", "true", "yes", "on")
_local = threading.local()
_totals_lock = threading.Lock()
_totals: dict[str, list[float]] = {}
_NOOP = contextlib.nullcontext()


@dataclass
class ProfileReport:
    """Breakdown of one operation.

    Attributes
    ----------
    name : str
        The operation (``"Probe.fit"``, ``"extract"``, ...).
    total : float
        Its wall-clock seconds.
    steps : dict of str to float
        Exclusive seconds per step (``"forward"``, ``"pool"``, ...); ``"other"`` is the
        time in the operation outside every step.
    calls : dict of str to int
        How many times each step ran.
    """

    name: str
    total: float
    steps: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = ", ".join(
            f"{k} {v:.3f}s" + (f" x{self.calls[k]}" if self.calls.get(k, 1) > 1 else "")
            for k, v in sorted(self.steps.items(), key=lambda kv: -kv[1])
        )
        return f"{self.name}: {self.total:.3f}s = {parts}"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ..presentation.payload import repr_bundle

        rows = [
            (k, f"{v:.3f}", self.calls.get(k, ""), f"{v / self.total if self.total else 0:.0%}")
            for k, v in sorted(self.steps.items(), key=lambda kv: -kv[1])
        ]
        return repr_bundle(
            "table",
            rows=rows,
            columns=("step", "s", "calls", "share"),
            title=f"{self.name}: {self.total:.3f} s",
        )

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td style='text-align:left'>{html.escape(k)}</td><td>{v:.3f}</td>"
            f"<td>{self.calls.get(k, '')}</td><td>{v / self.total if self.total else 0:.0%}</td>"
            "</tr>"
            for k, v in sorted(self.steps.items(), key=lambda kv: -kv[1])
        )
        return (
            f"<table class='lmprobe-profile'><caption>{html.escape(self.name)}: "
            f"{self.total:.3f} s</caption><thead><tr><th>step</th><th>s</th><th>calls</th>"
            f"<th>share</th></tr></thead><tbody>{rows}</tbody></table>"
        )


def set_profiling(enabled: bool = True) -> None:
    """Turn wall-clock profiling on or off for this process (default: ``$LMPROBE_PROFILE``)."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"set_profiling(enabled={enabled!r}) takes True or False")
    _enabled = enabled


def is_profiling() -> bool:
    """Whether profiling is on."""
    return _enabled


def _stack() -> list:
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = []
    return s


class _Frame:
    __slots__ = ("name", "is_op", "start", "child", "steps", "calls")

    def __init__(self, name: str, is_op: bool) -> None:
        self.name, self.is_op = name, is_op
        self.start = time.perf_counter()
        self.child = 0.0
        self.steps: dict[str, float] = {}
        self.calls: dict[str, int] = {}


def _add(frame: _Frame, name: str, seconds: float, calls: int = 1) -> None:
    frame.steps[name] = frame.steps.get(name, 0.0) + seconds
    frame.calls[name] = frame.calls.get(name, 0) + calls


@contextlib.contextmanager
def _timed(name: str, is_op: bool):
    stack = _stack()
    root = not any(f.is_op for f in stack)
    frame = _Frame(name, is_op or root)
    stack.append(frame)
    try:
        yield
    finally:
        elapsed = time.perf_counter() - frame.start
        stack.pop()
        own = max(elapsed - frame.child, 0.0)
        if stack:
            stack[-1].child += elapsed
        op = next((f for f in reversed(stack) if f.is_op), None)
        if not is_op:
            with _totals_lock:
                t = _totals.setdefault(name, [0.0, 0])
                t[0] += own
                t[1] += 1
            if op is not None:
                _add(op, name, own)
            else:
                _add(frame, name, own)
        elif op is not None:  # an operation nested in another: merge its steps upward
            for k, v in frame.steps.items():
                _add(op, k, v, frame.calls.get(k, 1))
            if own:
                _add(op, "other", own)
        if op is None:
            if is_op and own:
                _add(frame, "other", own)
            report = ProfileReport(name, elapsed, dict(frame.steps), dict(frame.calls))
            _local.last = report
            logger.info("profile %s", report)


def profile(name: str):
    """Time one step (exclusive of nested steps); a no-op unless profiling is on."""
    if not _enabled:
        return _NOOP
    return _timed(name, False)


def operation(name: str):
    """Mark a user-facing operation; its breakdown is logged when the outermost one ends."""
    if not _enabled:
        return _NOOP
    return _timed(name, True)


def profiled(name: str):
    """Decorator form of :func:`operation`."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with operation(name):
                return fn(*args, **kwargs)

        return inner

    return wrap


def last_profile() -> ProfileReport | None:
    """The breakdown of the last operation that finished in this thread (None before any)."""
    return getattr(_local, "last", None)


def profile_totals() -> dict[str, tuple[float, int]]:
    """Exclusive seconds and call counts per step over the whole process."""
    with _totals_lock:
        return {k: (v[0], int(v[1])) for k, v in _totals.items()}


def reset_profile() -> None:
    """Forget the process totals and this thread's last report."""
    with _totals_lock:
        _totals.clear()
    _local.last = None
