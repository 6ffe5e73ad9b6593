"""Baseline options from lmprobe 0.10: max_features, ngram_range, base_method, and
ActivationBaseline(remote=, backend=)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from lmprobe_jupyter import ActivationBaseline, BaselineProbe

POS = ["alpha beta alpha", "alpha beta gamma", "alpha gamma beta", "beta alpha alpha"]
NEG = ["omega delta omega", "delta omega sigma", "omega sigma delta", "sigma omega"]
TOKENS = r"(?u)\b\w+\b"


def test_max_features_caps_the_vocabulary():
    b = BaselineProbe(method="bow", max_features=3).fit(POS, NEG)
    ref = CountVectorizer(token_pattern=TOKENS, max_features=3).fit(POS + NEG)
    assert b.vectorizer_.vocabulary_ == ref.vocabulary_ and len(ref.vocabulary_) == 3
    full = BaselineProbe(method="bow").fit(POS, NEG)
    assert full.vectorizer_.max_features == 10000 and len(full.vectorizer_.vocabulary_) == 6


def test_ngram_range_adds_ngrams():
    b = BaselineProbe(method="tfidf", ngram_range=(1, 2)).fit(POS, NEG)
    ref = TfidfVectorizer(token_pattern=TOKENS, ngram_range=(1, 2)).fit(POS + NEG)
    assert "alpha beta" in b.vectorizer_.vocabulary_
    assert b.vectorizer_.vocabulary_ == ref.vocabulary_
    np.testing.assert_allclose(
        b.vectorizer_.transform(["alpha beta x"]).toarray(),
        ref.transform(["alpha beta x"]).toarray(),
    )


@pytest.mark.parametrize(
    ("base", "vectorizer"),
    [("bow", CountVectorizer), ("tfidf", TfidfVectorizer)],
    ids=["bow", "tfidf"],
)
def test_base_method_picks_the_shuffled_features(base, vectorizer):
    other = "tfidf" if base == "bow" else "bow"
    b = BaselineProbe(method="shuffled_labels", base_method=base, features=other, random_state=0)
    b.fit(POS, NEG)
    assert type(b.vectorizer_) is vectorizer and b.shuffle_features == base


def test_base_method_sentence_length_has_no_vocabulary():
    b = BaselineProbe(method="shuffled_labels", base_method="sentence_length", random_state=0)
    b.fit(POS, NEG)
    assert not hasattr(b, "vectorizer_") and b.predict(POS).shape == (4,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_method": "pca"}, "base_method='pca' is not one of 'tfidf', 'bow'"),
        ({"max_features": 0}, "max_features=0 must be a positive int or None"),
        ({"ngram_range": (2, 1)}, r"ngram_range=\(2, 1\) must be a pair of ints"),
        ({"ngram_range": 2}, "ngram_range=2 must be a pair"),
    ],
    ids=["base_method", "max_features", "ngram-order", "ngram-int"],
)
def test_bad_text_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BaselineProbe(method="shuffled_labels", **kwargs).fit(POS, NEG)


def test_activation_baseline_runs_through_the_nnsight_backend(tiny_model_path, monkeypatch):
    from lmprobe_jupyter.engine.cache.settings import set_cache_enabled
    from lmprobe_jupyter.engine.extraction import nnsight_backend as nb

    set_cache_enabled(False)
    calls = []
    real = nb.NNsightExtractor.pooled

    def spy(self, *args, **kwargs):
        calls.append(self.remote)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(nb.NNsightExtractor, "pooled", spy)
    kw = {"model": tiny_model_path, "layers": 2, "device": "cpu", "random_state": 0}
    local = ActivationBaseline("pca", n_components=2, **kw).fit(POS, NEG)
    assert calls == []
    viann = ActivationBaseline("pca", n_components=2, backend="nnsight", **kw).fit(POS, NEG)
    assert calls == [False]  # the fit's extraction went through nnsight, locally
    np.testing.assert_allclose(
        viann.predict_proba(POS + NEG), local.predict_proba(POS + NEG), atol=1e-4
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"remote": True}, "remote=True needs backend='nnsight'"),
        ({"backend": "vllm"}, "backend='vllm' is not one of 'local', 'nnsight'"),
        (
            {"method": "perplexity", "remote": True, "backend": "nnsight"},
            "does not run on NDIF",
        ),
        ({"pooling": "score:mean"}, "pooling='score:mean' scores tokens"),
    ],
    ids=["remote-local", "backend", "perplexity", "score-pooling"],
)
def test_bad_activation_options(tiny_model_path, kwargs, match):
    kwargs = {"method": "pca", **kwargs}
    with pytest.raises(ValueError, match=match):
        ActivationBaseline(model=tiny_model_path, **kwargs).fit(POS, NEG)


def test_activation_max_pooling_is_accepted(tiny_model_path):
    a = ActivationBaseline("pca", model=tiny_model_path, layers=2, pooling="activation:max")
    b = ActivationBaseline("pca", model=tiny_model_path, layers=2, pooling="max")
    a.fit(POS, NEG)
    b.fit(POS, NEG)
    np.testing.assert_allclose(a.predict_proba(POS), b.predict_proba(POS))
