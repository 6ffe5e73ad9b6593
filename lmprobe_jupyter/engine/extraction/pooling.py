"""Pooling strategies: how a prompt's token activations become one vector (or scores).

A pooling name can carry a *stage* (lmprobe 0.10):

- ``"activation:NAME"`` reduces the activations over tokens before the classifier (one
  vector per prompt). NAME is one of :data:`BASE_STRATEGIES`; ``activation:max`` /
  ``activation:min`` are element-wise over tokens.
- ``"score:NAME"`` classifies every token and reduces the per-token scores.
  NAME is any registered score aggregation (:data:`SCORE_AGGREGATIONS`): the base
  strategies (``score:mean`` = mean of the per-token probabilities) and those other
  modules register with :func:`register_score_aggregation`, which may take an argument
  (``NAME:ARG``, e.g. ``score:rolling_max:16``).

Bare names keep their older meaning: ``last_token``, ``first_token``, ``mean`` are
activation-stage; ``max`` / ``min`` are ``score:max`` / ``score:min`` at inference, and
element-wise at training (as they always were for ``train_pooling``). ``all`` scores every
token (inference) or trains on every token. A callable ``f(hidden: Tensor[seq, hidden]) ->
Tensor[hidden]`` is activation-stage. Score aggregations registered with ``bare=True``
(``max``, ``min``, and window aggregations such as ``rolling_max:K``) may also be written
without the prefix: ``score:rolling_max:16`` and ``rolling_max:16`` are the same pooling.

:func:`resolve_poolings` turns what the user wrote into *canonical* names: those are what
probes store in ``train_pooling_`` / ``inference_pooling_``, and two spellings of the same
pooling resolve to the same canonical name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cache.keys import UNCACHED_PREFIX

#: The reductions over tokens every stage offers.
BASE_STRATEGIES = ("last_token", "first_token", "mean", "max", "min")
#: Stage prefixes.
STAGES = ("activation", "score")
#: Bare names, with their meaning from before stage prefixes existed.
POOLINGS = ("last_token", "mean", "first_token", "all", "max", "min")
TOKEN_LEVEL_INFERENCE = ("all", "max", "min")
_BARE_ACTIVATION = ("last_token", "first_token", "mean")


@dataclass(frozen=True)
class ScoreAggregation:
    """A reduction of one prompt's per-token scores to one score.

    Attributes
    ----------
    name : str
    reduce : callable
        ``reduce(scores, arg)``: ``scores`` of shape (n_tokens,) or (n_tokens, n_classes)
        (NaN rows are tokens not scored, e.g. an attention sink) -> a float or an array of
        shape (n_classes,).
    parse_arg : callable or None
        ``parse_arg(text) -> value`` for ``NAME:ARG`` (raise ValueError on a bad one);
        None: the aggregation takes no argument.
    bare : bool
        Whether the name may be written without the ``score:`` prefix.
    train_as : str or None
        The train pooling a probe uses when this aggregation is its train (or base)
        pooling: ``"all"`` trains on every token; None keeps the aggregation's own
        canonical name (for probes trained through the aggregation).
    """

    name: str
    reduce: Callable[[np.ndarray, Any], Any]
    parse_arg: Callable[[str], Any] | None = None
    bare: bool = False
    train_as: str | None = "all"


#: Score-stage aggregations by name (see :func:`register_score_aggregation`).
SCORE_AGGREGATIONS: dict[str, ScoreAggregation] = {}


def register_score_aggregation(
    name: str,
    reduce: Callable[[np.ndarray, Any], Any],
    *,
    parse_arg: Callable[[str], Any] | None = None,
    bare: bool = False,
    train_as: str | None = "all",
) -> ScoreAggregation:
    """Make ``score:NAME`` (and ``NAME`` when ``bare``) a valid pooling; see
    :class:`ScoreAggregation` for the arguments."""
    if not name or ":" in name or name in STAGES or name == "all":
        raise ValueError(f"name={name!r} cannot name a score aggregation")
    agg = ScoreAggregation(name, reduce, parse_arg, bare, train_as)
    SCORE_AGGREGATIONS[name] = agg
    return agg


def _scored(scores: np.ndarray) -> np.ndarray:
    """Rows of ``scores`` that hold a score (drops all-NaN rows: tokens not scored)."""
    s = np.asarray(scores, dtype=np.float64)
    keep = ~np.isnan(s).all(axis=tuple(range(1, s.ndim))) if s.ndim > 1 else ~np.isnan(s)
    out = s[keep]
    if not len(out):
        raise ValueError("no token of this prompt has a score to reduce")
    return out


register_score_aggregation("last_token", lambda s, _: _scored(s)[-1])
register_score_aggregation("first_token", lambda s, _: _scored(s)[0])
register_score_aggregation("mean", lambda s, _: _scored(s).mean(axis=0))
register_score_aggregation("max", lambda s, _: _scored(s).max(axis=0), bare=True)
register_score_aggregation("min", lambda s, _: _scored(s).min(axis=0), bare=True)


def _window_reduce(kind: str):
    def reduce(scores, arg):
        from .windows import aggregate

        _scored(scores)  # a prompt with no scored token is an error, as for max/min
        return aggregate(scores, f"{kind}:{arg}")

    return reduce


def _window_arg(kind: str):
    def parse(text: str):
        from .windows import parse_aggregation

        agg = parse_aggregation(f"{kind}:{text}")
        return agg.window if kind == "rolling_max" else agg.alpha

    return parse


# Window aggregations (engine/windows.py): NaN-aware, over scored tokens. As a train or
# base pooling they train on every token (train_as="all").
register_score_aggregation(
    "rolling_max", _window_reduce("rolling_max"), parse_arg=_window_arg("rolling_max"), bare=True
)
register_score_aggregation("ema", _window_reduce("ema"), parse_arg=_window_arg("ema"), bare=True)


@dataclass(frozen=True)
class PoolingSpec:
    """A parsed pooling.

    Attributes
    ----------
    stage : {"activation", "score", "tokens"}
        ``tokens`` is ``"all"`` (one output per token).
    name : str or callable
        The base strategy or score aggregation (a callable for callable poolings).
    arg : object
        The aggregation's parsed argument (``NAME:ARG``), else None.
    """

    stage: str
    name: Any
    arg: Any = None
    arg_text: str | None = None

    @property
    def canonical(self):
        """The one name every spelling of this pooling resolves to."""
        if callable(self.name) or self.stage == "tokens":
            return self.name
        if self.stage == "activation":
            return self.name if self.name in _BARE_ACTIVATION else f"activation:{self.name}"
        tail = self.name if self.arg_text is None else f"{self.name}:{self.arg_text}"
        return tail if SCORE_AGGREGATIONS[self.name].bare else f"score:{tail}"


def _options() -> str:
    scores = ", ".join(sorted(SCORE_AGGREGATIONS))
    return (
        f"one of {', '.join(map(repr, POOLINGS))}, 'activation:NAME' with NAME one of "
        f"{', '.join(BASE_STRATEGIES)}, 'score:NAME' with NAME one of {scores}, or a callable"
    )


def _score_spec(text: str, full: str, what: str) -> PoolingSpec:
    name, _, arg_text = text.partition(":")
    agg = SCORE_AGGREGATIONS.get(name)
    if agg is None:
        raise ValueError(f"{what}={full!r}: {name!r} is not a score aggregation; use {_options()}")
    if agg.parse_arg is None:
        if arg_text:
            raise ValueError(f"{what}={full!r}: score aggregation {name!r} takes no argument")
        return PoolingSpec("score", name)
    if not arg_text:
        raise ValueError(f"{what}={full!r}: score aggregation {name!r} needs an argument, NAME:ARG")
    try:
        arg = agg.parse_arg(arg_text)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what}={full!r}: bad argument {arg_text!r} for {name!r}: {exc}"
        ) from None
    return PoolingSpec("score", name, arg, arg_text)


def parse_pooling(p, what: str = "pooling", role: str = "inference") -> PoolingSpec:
    """Parse a pooling name (or callable) into a :class:`PoolingSpec`.

    Parameters
    ----------
    p : str or callable
    what : str
        The parameter's name, for error messages.
    role : {"inference", "train"}
        Bare ``max`` / ``min`` are score-stage at inference and element-wise
        (activation-stage) at training.

    Raises
    ------
    ValueError
        For an unknown name, prefix or aggregation argument (naming the valid ones).
    """
    if callable(p):
        return PoolingSpec("activation", p)
    if not isinstance(p, str):
        raise ValueError(f"{what}={p!r} is not {_options()}")
    if p == "all":
        return PoolingSpec("tokens", "all")
    if p in ("max", "min") and role == "train":
        return PoolingSpec("activation", p)
    if p in _BARE_ACTIVATION:
        return PoolingSpec("activation", p)
    head, sep, rest = p.partition(":")
    if sep and head == "activation":
        if rest not in BASE_STRATEGIES:
            raise ValueError(
                f"{what}={p!r}: {rest!r} is not an activation pooling; use 'activation:NAME' "
                f"with NAME one of {', '.join(map(repr, BASE_STRATEGIES))}"
            )
        return PoolingSpec("activation", rest)
    if sep and head == "score":
        return _score_spec(rest, p, what)
    agg = SCORE_AGGREGATIONS.get(head)
    if agg is not None and agg.bare:
        return _score_spec(p, p, what)
    if sep:
        raise ValueError(
            f"{what}={p!r} has an unknown stage prefix {head!r}; the valid prefixes are "
            "'activation:' and 'score:' (e.g. 'activation:max', 'score:mean')"
        )
    raise ValueError(f"{what}={p!r} is not {_options()}")


def validate_pooling(p, what: str = "pooling") -> None:
    parse_pooling(p, what)


def train_pooling_of(p, what: str = "train_pooling"):
    """The canonical train pooling for ``p``: activation stage -> the extractor's name
    (``activation:max`` -> ``max``, element-wise); ``all`` stays; a score aggregation ->
    its ``train_as`` (``all``: train on every token), or its own name where it has none."""
    spec = parse_pooling(p, what, role="train")
    if spec.stage == "activation":
        return spec.name
    if spec.stage == "tokens":
        return "all"
    train_as = SCORE_AGGREGATIONS[spec.name].train_as
    return spec.canonical if train_as is None else train_as


def resolve_poolings(pooling, train_pooling=None, inference_pooling=None):
    """Apply the collision rules (explicit train/inference values override ``pooling``)
    and return the canonical ``(train, inference)`` poolings."""
    validate_pooling(pooling)
    train = pooling if train_pooling is None else train_pooling
    infer = pooling if inference_pooling is None else inference_pooling
    train_what = "pooling" if train_pooling is None else "train_pooling"
    infer_what = "pooling" if inference_pooling is None else "inference_pooling"
    return train_pooling_of(train, train_what), parse_pooling(infer, infer_what).canonical


def pooling_stage(p, role: str = "inference") -> str:
    """``"activation"``, ``"score"`` or ``"tokens"`` for a pooling used in ``role``."""
    return parse_pooling(p, role=role).stage


def is_token_level(p) -> bool:
    """Whether inference with ``p`` needs per-token outputs (``all`` or any score stage)."""
    return pooling_stage(p) != "activation"


def extractor_pooling(p):
    """The name extractors pool with (and cache under) for an activation-stage pooling:
    ``activation:max`` -> ``max``, ``activation:mean`` -> ``mean``; callables unchanged."""
    spec = parse_pooling(p, role="train")
    if spec.stage != "activation":
        raise ValueError(f"pooling={p!r} is not an activation-stage pooling")
    return spec.name


def reduce_token_scores(p, scores) -> np.ndarray | float:
    """Reduce one prompt's per-token scores with the score-stage pooling ``p``.

    Parameters
    ----------
    p : str
        A score-stage pooling (``"max"``, ``"score:mean"``, ``"rolling_max:16"``, ...).
        ``"all"`` reduces as ``"max"`` (a prompt is positive if any token is).
    scores : array-like of shape (n_tokens,) or (n_tokens, n_classes)

    Returns
    -------
    float, or ndarray of shape (n_classes,)
    """
    spec = PoolingSpec("score", "max") if p == "all" else parse_pooling(p)
    if spec.stage != "score":
        raise ValueError(f"pooling={p!r} is not a score-stage pooling")
    return SCORE_AGGREGATIONS[spec.name].reduce(np.asarray(scores), spec.arg)


def pooling_key(p) -> str:
    """A stable string naming a pooling, used in cache keys.

    A callable is keyed on everything that decides its output: its code (nested
    functions included), the values in its closure cells, its defaults and keyword
    defaults, and the current values of the globals it refers to. Numbers, strings,
    bytes, None, tuples/lists/dicts/sets of those, numpy arrays, tensors, modules,
    classes and other keyable functions are keyed by value. A callable that refers to
    anything else (an arbitrary object, a bound method, a callable instance) cannot be
    keyed deterministically: it gets a key starting with ``"uncached:"``, its results are
    computed and never cached, and one :class:`UserWarning` says so.
    """
    if isinstance(p, str):
        return p
    name = getattr(p, "__qualname__", None) or type(p).__qualname__
    try:
        h = hashlib.sha256()
        _key_value(p, h, _KeyContext(getattr(p, "__module__", None)))
    except _Unkeyable as exc:
        _warn_uncached(p, name, str(exc))
        return f"{UNCACHED_PREFIX}{name}"
    return "callable:" + h.hexdigest()[:16]


class _Unkeyable(Exception):
    """A value a callable pooling depends on cannot be keyed by value."""


_WARNED: set[tuple[str, str]] = set()


def _warn_uncached(p, name: str, why: str) -> None:
    import warnings

    ident = (getattr(p, "__module__", "") or "", name)
    if ident in _WARNED:
        return
    _WARNED.add(ident)
    warnings.warn(
        f"pooling={name!r} is not cached: its result depends on {why}, which cannot be "
        "keyed by value, so cached vectors could be served for a different function. "
        "It is computed on every call; to cache it, make it a plain function of numbers, "
        "strings, tuples, arrays or other such functions (pass values through a closure "
        "or default arguments)",
        UserWarning,
        stacklevel=4,
    )


_SCALARS = (type(None), bool, int, float, complex, str, bytes)


class _KeyContext:
    """Functions already keyed (recursion guard) and the module whose code is followed."""

    def __init__(self, module: str | None) -> None:
        self.seen: set[int] = set()
        self.module = module

    def follows(self, fn) -> bool:
        # The pooling's own module (a notebook, a script) is followed into; functions of
        # other modules (numpy, torch, libraries) are keyed by their name and version.
        return fn.__module__ in (self.module, "__main__", None)


def _key_value(v, h, ctx: _KeyContext) -> None:
    """Feed a deterministic description of ``v`` into hash ``h``; raise _Unkeyable if none."""
    import sys
    import types

    if isinstance(v, _SCALARS):
        h.update(f"{type(v).__name__}:{v!r};".encode("utf-8", "surrogatepass"))
        return
    if isinstance(v, (tuple, list, frozenset, set)):
        items = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v
        h.update(f"{type(v).__name__}[{len(v)}](".encode())
        for x in items:
            _key_value(x, h, ctx)
        h.update(b")")
        return
    if isinstance(v, dict):
        h.update(f"dict[{len(v)}](".encode())
        for k in sorted(v, key=repr):
            _key_value(k, h, ctx)
            _key_value(v[k], h, ctx)
        h.update(b")")
        return
    if isinstance(v, types.ModuleType):
        h.update(f"module:{v.__name__};".encode())
        return
    if isinstance(v, type) or isinstance(v, types.BuiltinFunctionType):
        h.update(f"ref:{getattr(v, '__module__', '')}.{v.__qualname__};".encode())
        return
    if isinstance(v, types.CodeType):
        _key_code(v, h, ctx)
        return
    if isinstance(v, types.FunctionType):
        if id(v) in ctx.seen:  # recursion (a function that calls itself by its global name)
            h.update(f"self:{v.__qualname__};".encode())
            return
        if ctx.seen and not ctx.follows(v):
            mod = sys.modules.get((v.__module__ or "").partition(".")[0])
            version = getattr(mod, "__version__", "")
            h.update(f"ref:{v.__module__}.{v.__qualname__}@{version};".encode())
            return
        ctx.seen.add(id(v))
        h.update(f"function:{v.__module__}.{v.__qualname__}(".encode())
        _key_code(v.__code__, h, ctx)
        cells = v.__closure__ or ()
        for var, cell in zip(v.__code__.co_freevars, cells):
            h.update(f"cell:{var}=".encode())
            try:
                _key_value(cell.cell_contents, h, ctx)
            except ValueError:  # an empty cell
                h.update(b"<empty>")
            except _Unkeyable as exc:
                raise _Unkeyable(f"closure variable {var!r} ({exc})") from None
        try:
            _key_value(v.__defaults__, h, ctx)
            _key_value(v.__kwdefaults__, h, ctx)
        except _Unkeyable as exc:
            raise _Unkeyable(f"a default argument ({exc})") from None
        glb = v.__globals__
        for gname in sorted(_global_names(v.__code__)):
            if gname in glb:
                h.update(f"global:{gname}=".encode())
                try:
                    _key_value(glb[gname], h, ctx)
                except _Unkeyable as exc:
                    raise _Unkeyable(f"global {gname!r} ({exc})") from None
        h.update(b")")
        return
    if type(v).__name__ == "partial" and hasattr(v, "func"):
        h.update(b"partial(")
        _key_value(v.func, h, ctx)
        _key_value(tuple(v.args), h, ctx)
        _key_value(dict(v.keywords), h, ctx)
        h.update(b")")
        return
    array = _array_bytes(v)
    if array is not None:
        h.update(array)
        return
    raise _Unkeyable(f"a {type(v).__module__}.{type(v).__qualname__} object")


def _key_code(code, h, ctx: _KeyContext) -> None:
    h.update(f"code:{code.co_name}:{code.co_argcount}:{code.co_kwonlyargcount}:".encode())
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        _key_value(const, h, ctx)


def _global_names(code) -> set[str]:
    """Names a code object (and the code nested in it) may read as globals."""
    import types

    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _array_bytes(v) -> bytes | None:
    """dtype, shape and data of a numpy array or torch tensor (None for anything else)."""
    import sys

    np = sys.modules.get("numpy")
    if np is not None and isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        return f"ndarray:{a.dtype.str}:{a.shape}:".encode() + a.tobytes()
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous().reshape(-1)
        head = f"tensor:{t.dtype}:{tuple(v.shape)}:".encode()
        return head + t.view(torch.uint8).numpy().tobytes() if t.numel() else head
    return None


def pool_batch(hidden, mask, pooling):
    """Pool ``hidden`` (batch, seq, d) over valid positions of ``mask`` (batch, seq).

    ``pooling`` is an activation-stage pooling (``"activation:max"`` and ``"max"`` are
    both the element-wise max over tokens). Runs on whatever device ``hidden`` lives on;
    returns (batch, d) in float32.
    """
    import torch

    if isinstance(pooling, str) and pooling.startswith("activation:"):
        pooling = pooling.partition(":")[2]
    h = hidden.float()
    m = mask.to(h.dtype)
    if pooling == "last_token":
        # Index of the last valid position works for left and right padding alike.
        pos = torch.arange(m.shape[1], device=m.device).expand_as(m)
        idx = (pos * mask.long()).argmax(dim=1)
        return h[torch.arange(h.shape[0], device=h.device), idx]
    if pooling == "first_token":
        idx = mask.long().argmax(dim=1)
        return h[torch.arange(h.shape[0], device=h.device), idx]
    if pooling == "mean":
        return (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
    if pooling == "max":
        return h.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(1)
    if pooling == "min":
        return h.masked_fill(~mask.bool().unsqueeze(-1), float("inf")).amin(1)
    if callable(pooling):
        rows = []
        d = h.shape[-1]
        for i in range(h.shape[0]):
            tokens = h[i][mask[i].bool()]
            out = torch.as_tensor(pooling(tokens), device=h.device).float()
            if tuple(out.shape) not in ((d,), (1, d)):
                name = getattr(pooling, "__name__", type(pooling).__name__)
                raise ValueError(
                    f"pooling function {name!r} returned shape {tuple(out.shape)} for token "
                    f"activations of shape {tuple(tokens.shape)} (seq, hidden); it must return "
                    f"one vector of shape (hidden,) = ({d},), e.g. h.mean(0) or h[-1]"
                )
            rows.append(out.reshape(-1))
        return torch.stack(rows)
    raise ValueError(f"pooling={pooling!r} cannot pool activations")
