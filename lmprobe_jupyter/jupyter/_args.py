"""Argument parsing for the ``%probe_*`` magics, kept apart from the magics themselves.

Every ``Probe`` constructor option is exposed as a ``--kebab-case`` flag whose text
value is parsed by kind: ints, floats, comma lists (``14,15,16``), layer specs
(``16``, ``-1``, ``sweep:5``, ``middle``), ``true``/``false``/``none`` and small dicts
(``C=0.1,max_iter=500`` or JSON). Parsing mistakes raise IPython's ``UsageError`` so the
user sees one line and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

__all__ = [
    "PROBE_OPTIONS",
    "parse_bool",
    "parse_labeled_lines",
    "parse_layers",
    "parse_value",
    "probe_kwargs",
    "probe_options",
    "unquote",
    "user_list",
    "user_object",
]

_NONE = ("none", "null")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def unquote(text: str) -> str:
    """Drop one pair of matching outer quotes (IPython's magic splitter keeps them)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_value(text: str) -> Any:
    """Parse one free-form value: none/true/false, int, float, comma list, else the string.

    Examples
    --------
    >>> parse_value("16"), parse_value("0.5"), parse_value("none"), parse_value("a,b")
    (16, 0.5, None, ['a', 'b'])
    """
    t = text.strip()
    if "," in t:
        return [parse_value(p) for p in t.strip("[]").split(",") if p.strip()]
    low = t.lower()
    if low in _NONE:
        return None
    if low == "true":
        return True
    if low == "false":
        return False
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    return t


def parse_bool(text: str, flag: str = "value") -> bool:
    """``true/yes/on/1`` or ``false/no/off/0`` (any case)."""
    low = str(text).strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise UsageError(f"{flag} expects true or false, got {text!r}")


def _parse_int(text: str, flag: str) -> int:
    if not _INT.match(text.strip()):
        raise UsageError(f"{flag} expects an integer, got {text!r}")
    return int(text)


def _parse_float(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{flag} expects a number, got {text!r}") from None


def parse_layers(text: str, flag: str = "--layers") -> int | list[int] | str:
    """A layer spec: ``16``, ``-1``, ``14,15,16`` (or ``[14,15,16]``), or a named spec.

    Named specs (``middle``, ``last``, ``all``, ``auto``, ``fast_auto``, ``sweep``,
    ``sweep:N``, ``sweep:A-B``) pass through as strings; the engine validates them.
    """
    t = text.strip()
    inner = t.strip("[]").strip()
    if "," in inner or (t.startswith("[") and t.endswith("]")):
        parts = [p.strip() for p in inner.split(",") if p.strip()]
        if not parts or not all(_INT.match(p) for p in parts):
            raise UsageError(f"{flag} expects integers in a comma list like 14,15,16, got {text!r}")
        return [int(p) for p in parts]
    if _INT.match(t):
        return int(t)
    return t


def _parse_dict(text: str, flag: str) -> dict | None:
    t = text.strip()
    if t.lower() in _NONE:
        return None
    if t.startswith("{"):
        try:
            value = json.loads(t)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{flag} is not valid JSON ({exc.msg}): {text!r}") from None
        if not isinstance(value, dict):
            raise UsageError(f"{flag} expects a JSON object, got {text!r}")
        return value
    out = {}
    for part in t.split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"{flag} expects key=value pairs like C=0.1,max_iter=500, got {text!r}"
            )
        out[key.strip()] = parse_value(val)
    return out


def _optional(parse: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    def wrapped(text: str, flag: str) -> Any:
        return None if text.strip().lower() in _NONE else parse(text, flag)

    return wrapped


def _string(text: str, flag: str) -> str:
    return text


def _number_list(text: str, flag: str) -> list[float | int]:
    values = [parse_value(p) for p in text.strip("[]").split(",") if p.strip()]
    if not values or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise UsageError(f"{flag} expects a comma list of numbers like 0.25,0.5,0.75, got {text!r}")
    return values


def _string_list(text: str, flag: str) -> list[str]:
    return [p.strip() for p in text.strip("[]").split(",") if p.strip()]


def _normalize(text: str, flag: str) -> bool | str:
    low = text.strip().lower()
    if low in _TRUE or low in _FALSE:
        return parse_bool(low, flag)
    return text.strip()


#: Probe constructor option -> (parser(text, flag), help). Order follows ``Probe.__init__``.
PROBE_OPTIONS: dict[str, tuple[Callable[[str, str], Any], str]] = {
    "model": (_string, "model hub ID or local path (default: %%config ProbeMagics.model)"),
    "dataset": (_optional(_string), "activation dataset repo ID (instead of a model)"),
    "layers": (parse_layers, "16, -1, 14,15,16, middle, last, all, auto, fast_auto, sweep:5"),
    "pooling": (
        _string,
        "last_token, mean, first_token, all, max, min, activation:max, score:mean",
    ),
    "train_pooling": (_optional(_string), "pooling for fit only"),
    "inference_pooling": (_optional(_string), "pooling for predict only (all, max, min too)"),
    "classifier": (
        _string,
        "logistic_regression, ridge, svm, lda, mass_mean, sgd, logistic_regression_cv, ensemble; "
        "sequence probes: mil, attention, multimax",
    ),
    "task": (_string, "classification or regression"),
    "device": (_string, "auto, cpu, cuda:0"),
    "remote": (parse_bool, "nnsight remote execution (true/false)"),
    "random_state": (_optional(_parse_int), "seed (int or none)"),
    "batch_size": (_parse_int, "prompts per forward pass"),
    "backend": (_string, "local or nnsight"),
    "dtype": (_optional(_string), "float32, float16, bfloat16 or none"),
    "normalize_layers": (_normalize, "true, false or per_layer"),
    "preprocessing": (_optional(_string), "auto, standard, pca, standard+pca or none"),
    "pca_components": (_optional(_parse_int), "PCA components (int)"),
    "classifier_kwargs": (_parse_dict, "C=0.1,max_iter=500 or JSON"),
    "fast_auto_top_k": (_parse_int, "layers kept by fast_auto"),
    "auto_candidates": (_optional(_number_list), "0.25,0.5,0.75 (fractions or indices)"),
    "auto_alpha": (_parse_float, "group-lasso strength"),
    "chat_template": (parse_bool, "format prompts with the chat template (true/false)"),
    "score_roles": (_optional(_string_list), "chat roles to pool over, e.g. user"),
    "progress": (_optional(parse_bool), "progress bars (true/false/none)"),
    "mass_mean_augment": (parse_bool, "append the mass-mean projection feature (true/false)"),
    "max_retries": (_optional(_parse_int), "retries of a failed remote batch (int or none)"),
    "compute_backend": (_string, "sklearn or cuml"),
    "score_special_tokens": (
        parse_bool,
        "score the first token (attention sink) and special tokens too (true/false)",
    ),
    "background": (_optional(_string), "auto or none (attention probes also train in prose)"),
}

_BOOL_OPTIONS = ("remote", "chat_template", "progress", "mass_mean_augment", "score_special_tokens")


def probe_options(
    exclude: Sequence[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding every Probe option as a ``--kebab-case`` flag to a magic.

    Use it under ``@magic_arguments()`` like any ``@argument``. Flags not given are
    absent from the parsed namespace, so the engine's own defaults apply.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(list(PROBE_OPTIONS)):
            if name in exclude:
                continue
            _, help_text = PROBE_OPTIONS[name]
            extra: dict[str, Any] = {}
            if name in _BOOL_OPTIONS:
                extra = {"nargs": "?", "const": "true"}
            func = argument(
                _flag(name),
                dest=f"opt_{name}",
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=help_text,
                **extra,
            )(func)
        return func

    return decorate


def probe_kwargs(ns: argparse.Namespace, model: str | None = None) -> dict[str, Any]:
    """Probe keyword arguments from the flags given (parsed by kind).

    Parameters
    ----------
    ns : argparse.Namespace
        Parsed magic arguments (flags decorated by :func:`probe_options`).
    model : str, optional
        Default model when ``--model`` was not given (the magics' configured model).
    """
    out: dict[str, Any] = {}
    for name, (parse, _) in PROBE_OPTIONS.items():
        raw = getattr(ns, f"opt_{name}", argparse.SUPPRESS)
        if raw is argparse.SUPPRESS:
            continue
        out[name] = parse(unquote(str(raw)), _flag(name))
    if "model" not in out and "dataset" not in out and model is not None:
        out["model"] = model
    return out


def parse_labeled_lines(text: str) -> tuple[list[str], list[str]]:
    """Split a cell body into positive (``+ text``) and negative (``- text``) prompts.

    Blank lines and lines starting with ``#`` are ignored; any other line is a mistake.
    """
    positive: list[str] = []
    negative: list[str] = []
    for i, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        sign, body = stripped[0], stripped[1:].strip()
        # the space after the sign is required so that "-5 degrees" is not a negative prompt
        if sign not in "+-" or not stripped[1:2].isspace() or not body:
            raise UsageError(
                f"cell line {i} ({stripped[:40]!r}) must start with '+ ' (positive) or "
                "'- ' (negative) followed by the prompt"
            )
        (positive if sign == "+" else negative).append(body)
    return positive, negative


def user_object(user_ns: Mapping[str, Any], name: str, flag: str) -> Any:
    """The value of variable ``name`` in the user namespace, or a UsageError."""
    if not name.isidentifier():
        raise UsageError(f"{flag} expects a variable name, got {name!r}")
    if name not in user_ns:
        raise UsageError(f"{flag}: no variable named {name!r} in the notebook namespace")
    return user_ns[name]


def user_list(user_ns: Mapping[str, Any], name: str, flag: str, strings: bool = True) -> list:
    """A list from the user namespace (list, tuple, array, Series), checked non-empty.

    With ``strings=True`` every element must be a ``str`` (prompts); otherwise any
    values are accepted (labels).
    """
    value = user_object(user_ns, name, flag)
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        raise UsageError(
            f"{flag} {name} must be a list, got {type(value).__name__}"
            + (" (wrap a single prompt in a list)" if isinstance(value, str) else "")
        )
    items = list(value.tolist() if hasattr(value, "tolist") else value)
    if not items:
        raise UsageError(f"{flag} {name} is empty")
    if strings:
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise UsageError(
                    f"{flag} {name}[{i}] is a {type(item).__name__}, every prompt must be a str"
                )
    return items


def out_name(name: str | None) -> str | None:
    """The ``-o/--out`` variable name, checked (None: bind nothing)."""
    if name is not None and not name.isidentifier():
        raise UsageError(f"-o/--out expects a variable name, got {name!r}")
    return name


@contextlib.contextmanager
def user_errors(what: str, *kinds: type[BaseException]):
    """Turn the engine's input errors (``kinds``) raised inside into a one-line
    ``UsageError`` prefixed with ``what`` (the magic's name)."""
    try:
        yield
    except UsageError:
        raise
    except kinds as exc:
        msg = " ".join(str(exc).strip("'\"").split()) or type(exc).__name__
        raise UsageError(f"{what}: {msg}") from None
