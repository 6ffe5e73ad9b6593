"""Feature preparation between extraction and the classifier.

Multi-layer inputs are concatenated along the hidden axis; :class:`LayerNormalizer` keeps a
high-magnitude layer from dominating (``normalize_layers``), then optional ``preprocessing``
(standard scaling and/or PCA) runs before the classifier. All learned state is plain numpy
arrays so it can be saved without pickle.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

PREPROCESSING = ("standard", "pca", "standard+pca")


class LayerNormalizer(TransformerMixin, BaseEstimator):
    """Normalize a concatenation of ``n_layers`` equal-width blocks.

    Parameters
    ----------
    mode : True, "per_neuron", "per_layer" or False
        True/"per_neuron": standardize each feature. "per_layer": subtract each layer's
        per-feature mean and divide by one scalar std per layer. False: identity.
    n_layers : int
    """

    def __init__(self, mode=True, n_layers: int = 1):
        self.mode = mode
        self.n_layers = n_layers

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        d = X.shape[1]
        if d % self.n_layers:
            raise ValueError(f"{d} features cannot split into {self.n_layers} equal layers")
        self.mean_ = X.mean(0)
        if self.mode is False:
            self.mean_ = np.zeros(d)
            self.scale_ = np.ones(d)
        elif self.mode == "per_layer":
            width = d // self.n_layers
            centred = X - self.mean_
            scale = np.empty(d)
            for i in range(self.n_layers):
                block = centred[:, i * width : (i + 1) * width]
                scale[i * width : (i + 1) * width] = np.sqrt((block**2).mean()) or 1.0
            self.scale_ = scale
        elif self.mode in (True, "per_neuron"):
            std = X.std(0)
            self.scale_ = np.where(std > 1e-12, std, 1.0)
        else:
            raise ValueError(
                f"normalize_layers={self.mode!r} is not one of True, 'per_layer', False"
            )
        return self

    def transform(self, X):
        check_is_fitted(self, "scale_")
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_


class MassMeanAugmenter(TransformerMixin, BaseEstimator):
    """Append one feature: the projection on the mass-mean direction (``mass_mean_augment``).

    The direction is the positive-class mean minus the negative-class mean of the
    (already preprocessed) training features, scaled to unit length; the extra feature of
    a sample ``x`` is ``x @ direction_``. A linear classifier then gets, for free, the
    direction that mass-mean probing finds, next to every original feature.

    Attributes
    ----------
    direction_ : ndarray of shape (n_features,)
        Unit vector from the negative to the positive class mean.
    classes_ : ndarray of shape (2,)
        ``classes_[1]`` is the positive class.
    """

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        classes = np.unique(y)
        if len(classes) != 2:
            raise ValueError(
                f"mass_mean_augment needs exactly two classes (a positive and a negative "
                f"mean), got {len(classes)}; set mass_mean_augment=False"
            )
        w = X[y == classes[1]].mean(0) - X[y == classes[0]].mean(0)
        norm = np.linalg.norm(w)
        self.direction_ = w / norm if norm > 0 else w
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        return self

    def fold_coef(self, coef) -> np.ndarray:
        """Coefficients of a linear model over the augmented features, (k, n_features + 1),
        as the same linear function of the input features, (k, n_features)."""
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        return coef[:, :-1] + coef[:, -1:] * self.direction_

    def transform(self, X):
        """(n_samples, n_features) -> (n_samples, n_features + 1)."""
        check_is_fitted(self, "direction_")
        X = np.asarray(X, dtype=np.float64)
        return np.column_stack([X, X @ self.direction_])


def validate_preprocessing(preprocessing, pca_components) -> None:
    if preprocessing is not None and preprocessing not in (*PREPROCESSING, "auto"):
        raise ValueError(
            f"preprocessing={preprocessing!r} is not one of 'auto', None, "
            f"{', '.join(map(repr, PREPROCESSING))}"
        )
    if pca_components is not None and (not isinstance(pca_components, int) or pca_components < 1):
        raise ValueError(f"pca_components={pca_components!r} must be a positive int or None")


def validate_normalize(mode) -> None:
    if mode not in (True, False, "per_layer", "per_neuron"):
        raise ValueError(f"normalize_layers={mode!r} is not one of True, 'per_layer', False")


def build_steps(
    n_layers: int,
    normalize_layers,
    preprocessing,
    pca_components,
    n_samples: int,
    random_state,
    mass_mean_augment: bool = False,
) -> list:
    """Pipeline steps placed before the classifier (``mass_mean_augment`` last, so it
    reads the preprocessed features)."""
    steps = []
    if n_layers > 1 and normalize_layers is not False:
        steps.append(("normalize", LayerNormalizer(mode=normalize_layers, n_layers=n_layers)))
    if preprocessing in ("standard", "standard+pca"):
        from sklearn.preprocessing import StandardScaler

        steps.append(("standard", StandardScaler()))
    if preprocessing in ("pca", "standard+pca"):
        from sklearn.decomposition import PCA

        k = pca_components or 50
        k = max(1, min(k, n_samples - 1 if n_samples > 1 else 1))
        steps.append(("pca", PCA(n_components=k, random_state=random_state)))
    if mass_mean_augment:
        steps.append(("mass_mean_augment", MassMeanAugmenter()))
    return steps


def concat_layers(acts: dict[int, np.ndarray], layers: list[int]) -> np.ndarray:
    """Concatenate per-layer (n, hidden) arrays in ``layers`` order -> (n, len(layers)*hidden)."""
    if len(layers) == 1:
        return acts[layers[0]]
    return np.concatenate([acts[layer] for layer in layers], axis=1)
