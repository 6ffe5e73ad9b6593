"""Pooling strategies: how a prompt's token activations become one vector (or scores).

Activation-level poolings (used to build classifier inputs): ``last_token``, ``mean``,
``first_token``, ``max``/``min`` (element-wise over tokens, at training time) and any
callable ``f(hidden: Tensor[seq, hidden]) -> Tensor[hidden]``.

Score-level poolings (inference only): ``all`` returns one score per token, ``max``/``min``
reduce per-token scores to one per prompt ("flag if any token triggers").
"""

from __future__ import annotations

import hashlib

POOLINGS = ("last_token", "mean", "first_token", "all", "max", "min")
TOKEN_LEVEL_INFERENCE = ("all", "max", "min")
#: Key prefix of a callable pooling that cannot be keyed: the cache never stores or serves it.
UNCACHED_PREFIX = "uncached:"


def validate_pooling(p, what: str = "pooling") -> None:
    if callable(p):
        return
    if not isinstance(p, str) or p not in POOLINGS:
        raise ValueError(
            f"{what}={p!r} is not one of {', '.join(map(repr, POOLINGS))} or a callable"
        )


def resolve_poolings(pooling, train_pooling=None, inference_pooling=None):
    """Apply the collision rules: explicit train/inference values override ``pooling``."""
    validate_pooling(pooling)
    train = pooling if train_pooling is None else train_pooling
    infer = pooling if inference_pooling is None else inference_pooling
    validate_pooling(train, "train_pooling")
    validate_pooling(infer, "inference_pooling")
    return train, infer


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

    Runs on whatever device ``hidden`` lives on; returns (batch, d) in float32.
    """
    import torch

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
        for i in range(h.shape[0]):
            out = pooling(h[i][mask[i].bool()])
            rows.append(torch.as_tensor(out, device=h.device).float().reshape(-1))
        return torch.stack(rows)
    raise ValueError(f"pooling={pooling!r} cannot pool activations")
