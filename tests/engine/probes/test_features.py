"""Feature steps between extraction and the classifier: MassMeanAugmenter."""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter.engine.probes.features import MassMeanAugmenter, build_steps


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(30, 4))
    y = np.array([0] * 15 + [1] * 15)
    X[y == 1] += [2.0, 0.0, -1.0, 0.5]
    return X, y


def test_adds_one_feature_the_projection_on_the_unit_mass_mean_direction():
    X, y = _data()
    aug = MassMeanAugmenter().fit(X, y)
    w = X[y == 1].mean(0) - X[y == 0].mean(0)
    np.testing.assert_allclose(aug.direction_, w / np.linalg.norm(w))
    out = aug.transform(X[:5])
    assert out.shape == (5, 5)
    np.testing.assert_array_equal(out[:, :4], X[:5])
    np.testing.assert_allclose(out[:, 4], X[:5] @ (w / np.linalg.norm(w)))


def test_fold_coef_gives_the_same_linear_function():
    X, y = _data()
    aug = MassMeanAugmenter().fit(X, y)
    coef = np.array([[0.5, -1.0, 2.0, 0.0, 3.0]])
    np.testing.assert_allclose(aug.transform(X) @ coef[0], X @ aug.fold_coef(coef)[0])


def test_needs_two_classes():
    X, _ = _data()
    with pytest.raises(ValueError, match="exactly two classes.*got 3; set mass_mean_augment"):
        MassMeanAugmenter().fit(X, np.arange(30) % 3)


def test_build_steps_puts_the_augmenter_after_preprocessing():
    steps = build_steps(2, True, "standard+pca", 3, 30, 0, mass_mean_augment=True)
    assert [name for name, _ in steps] == ["normalize", "standard", "pca", "mass_mean_augment"]
