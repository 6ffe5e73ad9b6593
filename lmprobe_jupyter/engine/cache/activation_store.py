"""Activations held in memory: :class:`ActivationStore` (pooled vectors of a prompt set,
split into cross-validation folds without re-extracting) and :class:`WarmupStats` (what
one ``Probe.warmup`` call extracted and what it found already cached).

Both are lmprobe public names; ``ActivationStore`` is what the ``*_from_activations``
methods and :func:`lmprobe_jupyter.engine.probes.features.concat_layers` read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ActivationStore:
    """Pooled activations of ``n`` prompts at several layers, with optional labels.

    Parameters
    ----------
    activations : dict of int to ndarray of shape (n_prompts, hidden)
    labels : array-like of shape (n_prompts,), optional
    prompts : list of str, optional

    Examples
    --------
    >>> store = ActivationStore({16: X16, 20: X20}, labels=y)
    >>> for train, test in store.folds(5, random_state=0):
    ...     probe.fit_from_activations(train.matrix(), train.labels)
    """

    activations: dict[int, np.ndarray]
    labels: np.ndarray | None = None
    prompts: list | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.activations, dict) or not self.activations:
            raise ValueError("activations must be a non-empty dict {layer: (n_prompts, hidden)}")
        self.activations = {int(k): np.asarray(v) for k, v in self.activations.items()}
        sizes = {k: v.shape for k, v in self.activations.items()}
        bad = [k for k, s in sizes.items() if len(s) != 2]
        if bad:
            raise ValueError(f"layer {bad[0]} has shape {sizes[bad[0]]}; expected (n, hidden)")
        counts = {s[0] for s in sizes.values()}
        if len(counts) > 1:
            raise ValueError(f"layers hold different numbers of prompts: {sizes}")
        n = counts.pop()
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != (n,):
                raise ValueError(f"labels have shape {self.labels.shape}; expected ({n},)")
        if self.prompts is not None:
            self.prompts = list(self.prompts)
            if len(self.prompts) != n:
                raise ValueError(f"got {len(self.prompts)} prompts for {n} activation rows")

    @property
    def layers(self) -> list[int]:
        return sorted(self.activations)

    def __len__(self) -> int:
        return len(next(iter(self.activations.values())))

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self.activations.values()))

    def matrix(self, layers=None) -> np.ndarray:
        """Layers concatenated along the hidden axis: (n_prompts, len(layers) * hidden)."""
        layers = self.layers if layers is None else [int(x) for x in np.atleast_1d(layers)]
        missing = [x for x in layers if x not in self.activations]
        if missing:
            raise KeyError(f"layer {missing[0]} is not in this store (layers: {self.layers})")
        return np.concatenate([self.activations[x] for x in layers], axis=1)

    def subset(self, indices) -> ActivationStore:
        """The rows ``indices`` (a new store; arrays are copies)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ActivationStore(
            {k: v[idx] for k, v in self.activations.items()},
            None if self.labels is None else self.labels[idx],
            None if self.prompts is None else [self.prompts[i] for i in idx],
        )

    def folds(self, n_folds: int = 5, random_state: int | None = None):
        """(train, test) stores of a shuffled k-fold split, stratified when labels exist.

        Yields
        ------
        tuple of (ActivationStore, ActivationStore)
        """
        from sklearn.model_selection import KFold, StratifiedKFold

        if not isinstance(n_folds, int) or n_folds < 2:
            raise ValueError(f"n_folds={n_folds!r} must be an int >= 2")
        X = np.zeros((len(self), 1))
        if self.labels is not None and self.labels.dtype.kind not in "f":
            splits = StratifiedKFold(n_folds, shuffle=True, random_state=random_state).split(
                X, self.labels
            )
        else:
            splits = KFold(n_folds, shuffle=True, random_state=random_state).split(X)
        for train, test in splits:
            yield self.subset(train), self.subset(test)


@dataclass
class WarmupStats:
    """What one ``Probe.warmup`` call did.

    Attributes
    ----------
    n_prompts : int
    layers : list of int
    poolings : list of str
        The activation poolings extracted (train and inference).
    cache_hits : int
        Pooled (prompt, pooling) vectors that were already cached.
    extracted : int
        Pooled (prompt, pooling) vectors computed by running the model.
    seconds : float
    """

    n_prompts: int
    layers: list[int] = field(default_factory=list)
    poolings: list[str] = field(default_factory=list)
    cache_hits: int = 0
    extracted: int = 0
    seconds: float = 0.0
