"""Validation of what users hand the engine: prompts, labels and ``fit``'s arguments.

One implementation shared by :class:`~.probe.Probe`, layer sweeps and the baselines, so a
rule (what a prompt is, when a list of strings means negative prompts, which labels a
classifier accepts) is written once and reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
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
            for m in p:
                if "role" not in m or "content" not in m:
                    raise ValueError(f"{what}[{i}] has a message without 'role' and 'content' keys")
            continue
        if not isinstance(p, str):
            raise TypeError(
                f"{what}[{i}] is a {type(p).__name__} ({p!r:.40}); every prompt must be a str"
            )
        if not p.strip():
            raise ValueError(f"{what}[{i}] is an empty string; remove it or give it some text")
    return out


def check_labels(y, task: str = "classification") -> np.ndarray:
    """Labels as a 1-D array: floats for regression, class ids (ints/strings) otherwise."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
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


def check_scoring_data(prompts, labels, task: str = "classification"):
    """Prompts and labels for ``score``/``evaluate``: same length, valid labels.

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
    return prompts, y
