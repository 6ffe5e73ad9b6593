"""Validation of what users hand the engine: prompts, labels and ``fit``'s arguments.

One implementation shared by :class:`~.probe.Probe`, layer sweeps and the baselines, so a
rule (what a prompt is, when a list of strings means negative prompts, which labels a
classifier accepts) is written once and reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "check_batch_size",
    "check_cv",
    "stratified_folds",
    "check_known_labels",
    "check_labels",
    "check_prompts",
    "check_scoring_data",
    "check_two_classes",
    "is_message_list",
    "parse_fit_args",
]


def is_message_list(p) -> bool:
    """Is ``p`` a chat conversation: a non-empty list of ``{"role", "content"}`` dicts?"""
    return isinstance(p, list | tuple) and len(p) > 0 and all(isinstance(m, dict) for m in p)


def check_prompts(prompts, what: str = "prompts", allow_messages: bool = True) -> list:
    """Validate a list of prompts: non-empty strings (or chat message lists).

    Returns
    -------
    list
        The prompts as a new list.

    Raises
    ------
    TypeError
        Not a list, a single string, or an element that is not a prompt.
    ValueError
        An empty or whitespace-only prompt, or a message without role/content.
    """
    if isinstance(prompts, str):
        raise TypeError(
            f"{what} must be a list of strings, not a single string; wrap it: [{what!s}]"
        )
    if prompts is None or not isinstance(prompts, Sequence | np.ndarray):
        raise TypeError(f"{what} must be a list of strings, got {type(prompts).__name__}")
    out = list(prompts)
    for i, p in enumerate(out):
        if allow_messages and is_message_list(p):
            for j, m in enumerate(p):
                if "role" not in m or "content" not in m:
                    raise ValueError(f"{what}[{i}] has a message without 'role' and 'content' keys")
                if isinstance(m["content"], str):
                    _check_encodable(m["content"], f"{what}[{i}][{j}]['content']")
            continue
        if not isinstance(p, str):
            raise TypeError(
                f"{what}[{i}] is a {type(p).__name__} ({p!r:.40}); every prompt must be a str"
            )
        if not p.strip():
            raise ValueError(f"{what}[{i}] is an empty string; remove it or give it some text")
        _check_encodable(p, f"{what}[{i}]")
    return out


def _check_encodable(text: str, what: str) -> None:
    """A lone surrogate (``"\\ud800"``, e.g. from a badly split emoji) is not text a
    tokenizer can encode: name where it is instead of failing deep inside the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds a lone surrogate {text[exc.start]!r} at position {exc.start}, which "
            "is not valid Unicode text; remove it or repair the string (e.g. "
            "s.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace'))"
        ) from None


def check_labels(y, task: str = "classification") -> np.ndarray:
    """Labels as a 1-D array: floats for regression, class ids (ints/strings) otherwise."""
    is_object_array = isinstance(y, np.ndarray) and y.dtype.kind == "O"
    values = list(y) if isinstance(y, list | tuple) or is_object_array else []
    for i, v in enumerate(values):
        if v is None:
            raise ValueError(
                f"labels[{i}] is None; every prompt needs a label (an int or str class id, or "
                "a float for task='regression'): drop unlabelled prompts first"
            )
    if any(isinstance(v, str) for v in values) and not all(isinstance(v, str) for v in values):
        kinds = sorted({type(v).__name__ for v in values})
        raise TypeError(
            f"labels mix types ({', '.join(kinds)}); use one type: all ints or all strings"
        )
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "f" and np.isnan(y).any():
        i = int(np.flatnonzero(np.isnan(y))[0])
        raise ValueError(f"labels[{i}] is NaN; every prompt needs a label: drop it first")
    if task == "regression":
        try:
            return y.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError("task='regression' needs numeric (float) labels") from None
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(
                "classification labels must be class ids (ints or strings), got floats; "
                "for continuous targets use task='regression'"
            )
        y = y.astype(np.int64)
    return y


def check_two_classes(y: np.ndarray, what: str = "a probe") -> None:
    """Classification needs examples of at least two classes."""
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"training data has only one class ({classes[0]!r}); {what} needs examples of at "
            "least two classes"
        )


def parse_fit_args(X, y, labels=None, task: str = "classification"):
    """Accept ``fit(positive, negative)`` or ``fit(prompts, labels)``.

    A plain list of strings (or chat conversations) as the second argument means negative
    prompts; string class labels go through ``labels=`` or a numpy array.

    Returns
    -------
    prompts : list
    labels : ndarray of shape (n_samples,)
    """
    if labels is not None:
        if y is not None:
            raise TypeError("give either a second positional argument or labels=, not both")
        y = np.asarray(labels)
    if y is None:
        raise TypeError(
            "fit() needs two arguments: fit(positive_prompts, negative_prompts) or "
            "fit(prompts, labels)"
        )
    if isinstance(y, str):
        raise TypeError("the second argument must be a list (negative prompts or labels)")
    y_list = list(y)
    contrastive = (
        not isinstance(y, np.ndarray)
        and len(y_list) > 0
        and all(isinstance(v, str) or is_message_list(v) for v in y_list)
    )
    if contrastive:
        if task == "regression":
            raise ValueError("task='regression' needs fit(prompts, labels) with float labels")
        pos = check_prompts(X, "positive_prompts")
        neg = check_prompts(y_list, "negative_prompts")
        if not pos:
            raise ValueError("positive_prompts is empty; give at least one positive example")
        return pos + neg, np.array([1] * len(pos) + [0] * len(neg))
    prompts = check_prompts(X, "prompts")
    if len(prompts) != len(y_list):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(y_list)} labels; labels must be 1-D with "
            "one label per prompt"
        )
    if not prompts:
        raise ValueError("no training prompts were given")
    return prompts, check_labels(y_list, task)


def check_scoring_data(
    prompts, labels, task: str = "classification", classes=None, what: str = "evaluate"
):
    """Prompts and labels for ``score``/``evaluate``: non-empty, same length, valid labels
    and, with ``classes``, labels the probe knows (see :func:`check_known_labels`).

    Returns
    -------
    prompts : list
    labels : ndarray of shape (n_samples,)
    """
    prompts = check_prompts(prompts)
    if labels is None or isinstance(labels, str):
        raise TypeError("labels must be a list or array with one label per prompt")
    y = check_labels(list(labels), task)
    if len(y) != len(prompts):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(y)} labels; labels must be 1-D with one "
            "label per prompt"
        )
    if not prompts:
        raise ValueError(
            f"{what} needs at least one prompt with its label; metrics of nothing are undefined"
        )
    if task == "classification" and classes is not None:
        check_known_labels(y, classes)
    return prompts, y


def check_known_labels(y: np.ndarray, classes) -> None:
    """Every label must be one of the classes the probe was fitted on: a label it cannot
    predict (``2`` for a 0/1 probe, ``"1"`` for int classes) makes accuracy meaningless."""
    classes = np.asarray(classes)
    known = set(classes.tolist())
    unseen = [v for v in dict.fromkeys(y.tolist()) if v not in known]
    if not unseen:
        return
    shown = ", ".join(map(repr, unseen[:5]))
    hint = ""
    if y.dtype.kind in "UO" and classes.dtype.kind in "iub":
        hint = "; the labels are strings, but the probe's classes are ints: convert them"
    elif y.dtype.kind in "iub" and classes.dtype.kind in "UO":
        hint = "; the labels are ints, but the probe's classes are strings"
    raise ValueError(
        f"labels hold {shown}, not among the probe's classes {classes.tolist()!r}{hint}; "
        "a probe can only be scored on the classes it was fitted on"
    )


def check_batch_size(batch_size, what: str = "batch_size") -> int | None:
    """None (use the default) or a positive int."""
    if batch_size is None:
        return None
    if (
        not isinstance(batch_size, int | np.integer)
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"{what}={batch_size!r} must be a positive int (or None for the default)")
    return int(batch_size)


def check_cv(cv) -> int:
    """Number of cross-validation folds: an int >= 2."""
    if not isinstance(cv, int | np.integer) or isinstance(cv, bool) or cv < 2:
        raise ValueError(f"cv={cv!r} must be an int >= 2 (the number of folds)")
    return int(cv)


def stratified_folds(labels, cv: int, random_state=None, what: str = "training examples"):
    """``StratifiedKFold`` with ``min(cv, smallest class count)`` folds.

    Raises
    ------
    ValueError
        A class has fewer than 2 ``what`` (there is no fold to hold it out in).
    """
    from sklearn.model_selection import StratifiedKFold

    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    k = min(int(cv), int(counts.min()))
    if k < 2:
        raise ValueError(
            f"cross_validate needs at least 2 {what} of every class; class "
            f"{classes[counts.argmin()]!r} has {counts.min()}"
        )
    return StratifiedKFold(k, shuffle=True, random_state=random_state or 0)
