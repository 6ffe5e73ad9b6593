"""What the baseline modules share: method names, input checks, the fitted-baseline surface."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ... import inputs

TEXT_METHODS: tuple[str, ...] = (
    "bow",
    "tfidf",
    "sentence_length",
    "sentence_transformers",
    "random",
    "majority",
    "shuffled_labels",
)
ACTIVATION_METHODS: tuple[str, ...] = ("random_direction", "pca", "layer_0", "perplexity")
ALL_METHODS: tuple[str, ...] = TEXT_METHODS + ACTIVATION_METHODS

# Feature sets a shuffled-labels baseline can be trained on (text side).
SHUFFLE_FEATURES: tuple[str, ...] = ("tfidf", "bow", "sentence_length", "sentence_transformers")

TOKENISH = re.compile(r"\w+|[^\w\s]")


def quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


# kind -> (its methods, the class that runs them, "a"/"an")
_KINDS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "text": (TEXT_METHODS, "BaselineProbe", "a"),
    "activation": (ACTIVATION_METHODS, "ActivationBaseline", "an"),
}


def check_method(method: Any, kind: str) -> None:
    """Refuse ``method`` unless it is a ``kind`` (``"text"`` or ``"activation"``) baseline;
    a method of the other kind is pointed at the class that runs it."""
    methods, _cls, article = _KINDS[kind]
    if method in methods:
        return
    hint = ""
    for other, (other_methods, other_cls, other_article) in _KINDS.items():
        if other != kind and method in other_methods:
            hint = f" ({method!r} is {other_article} {other} baseline: use {other_cls})"
    raise ValueError(
        f"method={method!r} is not {article} {kind} baseline; valid methods are "
        f"{quoted(methods)}{hint}"
    )


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def as_prompt_list(prompts: Any, what: str = "prompts") -> list[str]:
    """Text prompts (baselines read plain strings, not chat message lists)."""
    return inputs.check_prompts(prompts, what, allow_messages=False)


def split_fit_args(positive: Any, negative: Any) -> tuple[list[str], np.ndarray]:
    """Accept ``fit(positive, negative)`` (two prompt lists) or ``fit(prompts, labels)``,
    exactly as ``Probe.fit`` does."""
    prompts, y = inputs.parse_fit_args(positive, negative)
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError("baselines read plain text prompts, not chat message lists")
    return prompts, y


def class_labels(labels: Any) -> np.ndarray:
    """Labels as class ids; integral floats become ints (as in ``Probe``)."""
    return inputs.check_labels(labels)


def check_labels(prompts: list[str], labels: Any) -> np.ndarray:
    return inputs.check_scoring_data(prompts, labels)[1]


def check_two_classes(y: np.ndarray, method: str) -> None:
    inputs.check_two_classes(y, f"method={method!r}")


def make_classifier(
    classifier: Any, random_state: int | None, classifier_kwargs: dict | None
) -> Any:
    """The engine's classifier factory, so baselines and probes share classifier names."""
    from ...probes.classifiers import build_classifier

    return build_classifier(classifier, "classification", random_state, classifier_kwargs)


def prompt_seed(seed: int, prompt: str) -> int:
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little")


def length_features(prompts: Sequence[str]) -> np.ndarray:
    """Character length, word count and token-ish count (words and punctuation marks).

    Returns
    -------
    numpy.ndarray of shape (n_prompts, 3), float64
    """
    rows = [(len(p), len(p.split()), len(TOKENISH.findall(p))) for p in prompts]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 3)


class FittedBaseline:
    """The fit/predict/score/evaluate surface shared by all baselines."""

    @property
    def name(self) -> str:
        """Short display name (the method)."""
        return self.method

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            from ...probes.probe import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__}(method={self.method!r}) is not fitted yet; "
                "call fit() first."
            )

    def predict(self, prompts: Sequence[str]) -> np.ndarray:
        """Predicted class of each prompt.

        Returns
        -------
        numpy.ndarray of shape (n_prompts,)
        """
        return self.predict_both(as_prompt_list(prompts))[0]

    def predict_proba(self, prompts: Sequence[str]) -> np.ndarray:
        """Class probabilities, columns ordered as ``classes_``.

        Returns
        -------
        numpy.ndarray of shape (n_prompts, n_classes)
        """
        return self.predict_both(as_prompt_list(prompts))[1]

    def score(self, prompts: Sequence[str], labels: Sequence[Any]) -> float:
        """Accuracy on ``prompts`` against ``labels``."""
        prompts = as_prompt_list(prompts)
        y = check_labels(prompts, labels)
        pred = self.predict_both(prompts)[0]
        return float(np.mean(pred == y)) if len(y) else float("nan")

    def evaluate(self, prompts: Sequence[str], labels: Sequence[Any]) -> dict[str, float]:
        """Accuracy, F1, precision, recall and AUROC on ``prompts``."""
        prompts = as_prompt_list(prompts)
        y = check_labels(prompts, labels)
        pred, proba = self.predict_both(prompts)
        from ...probes.scoring import compute_metrics

        return compute_metrics(y, pred, proba, "classification", self.classes_)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r})"
