"""train_pooling="all" fitted from the per-token store, a chunk of tokens at a time."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.extraction.runtime import ModelRuntime
from lmprobe_jupyter.engine.probes import token_linear
from lmprobe_jupyter.engine.probes.features import build_steps
from lmprobe_jupyter.engine.probes.fitting import TOKEN_LOGISTIC_DEFAULTS
from lmprobe_jupyter.engine.probes.sequence_base import ArrayTokenSource
from lmprobe_jupyter.engine.probes.token_linear import (
    TokenBatches,
    fit_token_logistic,
    set_fitted_logistic,
)

POS = ["alpha alpha alpha beta", "alpha beta alpha", "alpha gamma alpha", "beta alpha alpha"]
NEG = ["omega omega omega delta", "omega delta omega", "delta omega omega", "omega sigma"]
TEXTS = POS + NEG
LABELS = np.array([1] * 4 + [0] * 4)
EVERY = dict(train_pooling="all", inference_pooling="rolling_max:2")


def synthetic(n=40, width=24, seed=0):
    """Token sequences of varied length whose first 3 features carry the label, with an
    offset and spread like real activations (so the scalers matter)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    seqs = []
    for i in range(n):
        a = rng.normal(size=(int(rng.integers(5, 30)), width)).astype(np.float32) * 3 + 5
        a[:, :3] += 0.7 * y[i]
        seqs.append(a)
    masks = [np.r_[False, np.ones(len(a) - 1, bool)] for a in seqs]
    return seqs, masks, y, rng.uniform(0.5, 2.0, size=n)


CASES = [
    # (n_layers, normalize_layers, preprocessing, class_weight, sample weights, intercept)
    (1, True, None, None, False, True),
    (2, True, "standard", "balanced", True, True),
    (2, "per_layer", "standard", None, True, True),
    (2, False, None, {0: 2.0, 1: 1.0}, False, True),
    (1, True, "standard", "balanced", True, False),
]


@pytest.mark.parametrize(("n_layers", "norm", "pre", "cw", "weighted", "intercept"), CASES)
def test_streamed_fit_equals_sklearn_on_the_token_matrix(
    n_layers, norm, pre, cw, weighted, intercept
):
    """The scalers and the L2 logistic regression fitted chunk by chunk are the pipeline
    sklearn fits on the whole token matrix (to its stopping tolerance)."""
    seqs, masks, y, sw = synthetic()
    sw = sw if weighted else None
    X = np.concatenate([a[m] for a, m in zip(seqs, masks)])
    counts = [int(m.sum()) for m in masks]
    kw = dict(C=0.05, class_weight=cw, max_iter=2000, fit_intercept=intercept)
    ref = Pipeline(
        [*build_steps(n_layers, norm, pre, None, 40, 0), ("c", LogisticRegression(**kw))]
    )
    ref.fit(X, np.repeat(y, counts), c__sample_weight=None if sw is None else np.repeat(sw, counts))
    steps = build_steps(n_layers, norm, pre, None, 40, 0)
    batches = TokenBatches(ArrayTokenSource(seqs, masks), masks, chunk_bytes=2000)
    assert len(batches.chunks) > 10  # many chunks: the sums really are merged
    fit = fit_token_logistic(batches, y, steps, sample_weight=sw, **kw)
    clf = LogisticRegression(**kw)
    set_fitted_logistic(clf, fit, np.unique(y))
    ours = Pipeline([*steps, ("c", clf)])
    assert fit.n_tokens == len(X) and fit.converged
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=2e-3)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    for (_, a), (_, b) in zip(steps, ref.steps[:-1]):  # the fitted scalers
        np.testing.assert_allclose(a.mean_, b.mean_, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a.scale_, b.scale_, rtol=1e-9)


def test_chunks_are_held_as_float16_only_within_the_resident_budget():
    seqs, masks, y, _ = synthetic()
    n_tok = sum(int(m.sum()) for m in masks)
    held = TokenBatches(ArrayTokenSource(seqs, masks), masks, chunk_bytes=4000)
    first = [X.copy() for X, _ in held]
    assert held.resident
    again = [X for X, _ in held]  # the float16 copy: the store's precision
    for a, b in zip(first, again):
        np.testing.assert_allclose(a, b, rtol=2**-11)
    streamed = TokenBatches(
        ArrayTokenSource(seqs, masks), masks, chunk_bytes=4000, resident_bytes=n_tok * 24
    )
    list(streamed)
    assert not streamed.resident  # over the budget: every pass reads the source again
    owners = np.concatenate([o for _, o in streamed])
    np.testing.assert_array_equal(np.bincount(owners, minlength=len(masks)), streamed.n_scored)


def test_probe_trains_every_token_without_the_token_matrix(tiny_probe, monkeypatch):
    """fit never builds the (n_tokens, hidden) matrix: it reads the per-token store in
    chunks, and gives the probe an in-memory fit on that matrix gives."""

    def no_matrix(*a, **k):
        raise AssertionError("the token matrix was built")

    probe = tiny_probe(layers=[1, 2], preprocessing="standard", **EVERY)
    with monkeypatch.context() as m:
        m.setattr(ModelRuntime, "training_set", no_matrix)
        probe.fit(POS, NEG)
    assert probe.training_activations is None
    n_tokens = [len(x) for x in probe.runtime.tokenizer(TEXTS)["input_ids"]]
    assert probe.n_train_tokens_ == sum(n - 1 for n in n_tokens)  # no sinks
    # reference: sklearn on the same float16-stored tokens, every token its prompt's label
    inputs = probe.runtime.token_source(TEXTS, [1, 2], score_special_tokens=False)
    pairs = inputs.source.take(range(len(TEXTS)))
    X = np.concatenate([a[k] for a, k in pairs])
    y = np.repeat(LABELS, [int(k.sum()) for _, k in pairs])
    ref = Pipeline(
        [
            *build_steps(2, True, "standard", None, 8, 0),
            (
                "classifier",
                LogisticRegression(max_iter=2000, random_state=0, **TOKEN_LOGISTIC_DEFAULTS),
            ),
        ]
    ).fit(X, y)
    np.testing.assert_allclose(
        probe.pipeline_.decision_function(X), ref.decision_function(X), atol=2e-3
    )
    ts = probe.token_scores(TEXTS)
    assert all(np.isnan(t.scores[0]) for t in ts)  # the sink is still unscored
    assert probe.predict(TEXTS).tolist() == LABELS.tolist()


def test_reads_are_chunks_and_passes_reread_the_store_beyond_the_budget(
    tiny_probe, monkeypatch, store_reads
):
    taken = store_reads
    resident = tiny_probe(**EVERY).fit(POS, NEG)
    n_resident = sum(taken)
    taken.clear()
    # nothing held between passes, and chunks of at most 2 prompts (float32 bytes of the
    # longest prompt, twice)
    longest = max(len(x) for x in resident.runtime.tokenizer(TEXTS)["input_ids"])
    budget = 2 * longest * resident.runtime.loaded.hidden_size * 4
    monkeypatch.setattr(token_linear, "RESIDENT_BYTES", 0)
    monkeypatch.setattr(token_linear, "FIT_CHUNK_BYTES", budget)
    streamed = tiny_probe(**EVERY).fit(POS, NEG)
    assert max(taken) <= 2  # never more than one chunk of prompts per read
    passes = streamed.train_passes_
    assert passes > 3 and sum(taken) >= passes * len(TEXTS)  # each pass read them all again
    assert n_resident <= 2 * len(TEXTS) + 1  # held in RAM: read once (plus a width probe)
    np.testing.assert_allclose(
        streamed.predict_proba(TEXTS), resident.predict_proba(TEXTS), atol=1e-9
    )


def test_refit_and_warmup_run_no_forward_pass(tiny_probe):
    probe = tiny_probe(**EVERY).warmup(TEXTS)
    assert probe.warmup_stats_.poolings == ["tokens"]
    assert probe.warmup_stats_.extracted == len(TEXTS)
    before = Extractor.forward_calls
    probe.fit(POS, NEG)
    assert Extractor.forward_calls == before and probe.train_cache_hits_ == len(TEXTS)


def test_cross_validate_refits_per_fold_and_scores_held_out_tokens(tiny_probe):
    """Folds hold whole prompts; the score is the token accuracy of a probe refitted on
    the other folds' tokens (what an in-memory grouped fit gives)."""
    from lmprobe_jupyter.engine.inputs import stratified_folds

    probe = tiny_probe(random_state=3, **EVERY).fit(POS, NEG)
    got = probe.cross_validate(cv=2)
    assert probe.cv_score_ == got
    pairs = probe.runtime.token_source(TEXTS, [2], score_special_tokens=False).source.take(
        range(len(TEXTS))
    )
    want = []
    for tr, te in stratified_folds(LABELS, 2, 3).split(LABELS, LABELS):

        def tokens(idx):
            X = np.concatenate([pairs[i][0][pairs[i][1]] for i in idx])
            return X, np.repeat(LABELS[idx], [int(pairs[i][1].sum()) for i in idx])

        scaler = StandardScaler().fit(tokens(tr)[0])  # preprocessing='auto'
        X, y = tokens(tr)
        est = LogisticRegression(max_iter=2000, **TOKEN_LOGISTIC_DEFAULTS).fit(
            scaler.transform(X), y
        )
        Xt, yt = tokens(te)
        want.append(float(np.mean(est.predict(scaler.transform(Xt)) == yt)))
    # a token whose logit lies within the solvers' tolerance of 0 may flip
    n_held = min(
        len(tokens(te)[1]) for _, te in stratified_folds(LABELS, 2, 3).split(LABELS, LABELS)
    )
    assert got == pytest.approx(np.mean(want), abs=1.0 / n_held + 1e-12)


def test_save_load_keeps_the_streamed_probe(tiny_probe, tmp_path):
    from lmprobe_jupyter import Probe

    probe = tiny_probe(layers=[1, 2], preprocessing="standard", **EVERY).fit(POS, NEG)
    probe.save(tmp_path / "p")
    back = Probe.load(tmp_path / "p")
    np.testing.assert_array_equal(back.predict_proba(TEXTS), probe.predict_proba(TEXTS))
    a, b = back.token_scores(TEXTS[:2]), probe.token_scores(TEXTS[:2])
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x.scores, z.scores)


@pytest.mark.parametrize(
    "kw",
    [
        dict(classifier="ridge"),
        dict(preprocessing="pca", pca_components=2),
        dict(classifier_kwargs={"solver": "newton-cg"}),
        dict(mass_mean_augment=True),
    ],
    ids=["ridge", "pca", "solver", "mass-mean"],
)
def test_other_every_token_probes_fit_in_memory(tiny_probe, kw):
    probe = tiny_probe(**EVERY, **kw).fit(POS, NEG)
    X, y = probe.training_activations
    assert len(X) == len(y) == sum(len(x) - 1 for x in probe.runtime.tokenizer(TEXTS)["input_ids"])
    assert not hasattr(probe, "train_passes_")


def test_multiclass_every_token_fits_in_memory(tiny_probe):
    labels = [0, 0, 1, 1, 2, 2, 0, 1]
    probe = tiny_probe(**EVERY).fit(TEXTS, labels=labels)
    assert probe.training_activations is not None and list(probe.classes_) == [0, 1, 2]


@pytest.mark.parametrize(
    "kw",
    [dict(pooling="rolling_max:16"), dict(train_pooling="all"), dict(pooling="score:mean")],
    ids=["rolling_max", "all", "score-mean"],
)
def test_every_token_logistic_defaults(tiny_probe, kw):
    """Trained on every token, the default logistic regression is standardized, strongly
    penalized and class-balanced (TOKEN_LOGISTIC_DEFAULTS), streamed or in memory."""
    probe = tiny_probe(**kw).fit(POS, NEG)
    clf = probe.classifier_
    assert clf.C == TOKEN_LOGISTIC_DEFAULTS["C"] == 5e-4
    assert clf.class_weight == "balanced"
    assert "standard" in probe.pipeline_.named_steps
    assert probe.preprocessing == "auto"  # the parameter as given; resolved at fit


def test_every_token_defaults_yield_to_the_users_settings(tiny_probe):
    probe = tiny_probe(
        **EVERY, preprocessing=None, classifier_kwargs={"C": 0.3, "max_iter": 500}
    ).fit(POS, NEG)
    assert probe.classifier_.C == 0.3  # the user's C
    assert probe.classifier_.class_weight == "balanced"  # a default the user left alone
    assert probe.classifier_.max_iter == 500
    assert "standard" not in probe.pipeline_.named_steps
    no_weights = tiny_probe(**EVERY, classifier_kwargs={"class_weight": None}).fit(POS, NEG)
    assert no_weights.classifier_.class_weight is None


def test_pooled_probes_keep_sklearns_defaults(tiny_probe):
    probe = tiny_probe(pooling="mean").fit(POS, NEG)
    assert probe.classifier_.C == 1.0 and probe.classifier_.class_weight is None
    assert "standard" not in probe.pipeline_.named_steps  # "auto" is None for them


def test_max_iter_reached_warns(tiny_probe):
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="max_iter=1 before converging"):
        tiny_probe(classifier_kwargs={"max_iter": 1}, **EVERY).fit(POS, NEG)


def test_bad_inputs_name_the_problem():
    seqs, masks, y, _ = synthetic(n=4)
    none = [np.zeros(len(m), bool) for m in masks]
    with pytest.raises(ValueError, match="no scored tokens"):
        fit_token_logistic(TokenBatches(ArrayTokenSource(seqs, none), none), y, [])
    with pytest.raises(ValueError, match="binary"):
        fit_token_logistic(TokenBatches(ArrayTokenSource(seqs, masks), masks), [0, 1, 2, 0], [])
    with pytest.raises(ValueError, match="C=0"):
        fit_token_logistic(TokenBatches(ArrayTokenSource(seqs, masks), masks), y, [], C=0)


def test_token_level_inference_extracts_a_chunk_at_a_time(tiny_probe, monkeypatch):
    """predict_proba / token_scores of a token-level probe extract and score one chunk of
    prompts at a time (bounded memory for many long prompts), with the same results."""
    probe = tiny_probe(**EVERY).fit(POS, NEG)
    texts = TEXTS + ["alpha omega beta delta alpha", "sigma"]
    whole = probe.predict_proba(texts)
    rows = probe.token_scores(texts)
    seen = []
    real = ModelRuntime.token_features

    def spy(self, prompts, layers, **kw):
        seen.append(sum(len(x) for x in self.tokenizer(list(prompts))["input_ids"]))
        return real(self, prompts, layers, **kw)

    monkeypatch.setattr(ModelRuntime, "token_features", spy)
    per_token = probe.runtime.loaded.hidden_size * 4  # float32 bytes of one token
    longest = max(len(x) for x in probe.runtime.tokenizer(texts)["input_ids"])
    monkeypatch.setattr(
        "lmprobe_jupyter.engine.cache.token_store.CHUNK_BYTES", 2 * longest * per_token
    )
    # (batches of other prompts pad differently: float32 noise only)
    np.testing.assert_allclose(probe.predict_proba(texts), whole, atol=1e-6)
    total = sum(len(x) for x in probe.runtime.tokenizer(texts)["input_ids"])
    assert len(seen) > 1 and sum(seen) == total  # several chunks, every prompt once
    assert max(seen) <= 2 * longest  # each within the chunk budget
    for a, b in zip(probe.token_scores(texts), rows):  # in the caller's order
        assert (a.text, a.tokens) == (b.text, b.tokens)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def test_warmup_also_fills_a_pooled_inference_pooling(tiny_probe):
    probe = tiny_probe(train_pooling="all", inference_pooling="mean").warmup(TEXTS)
    stats = probe.warmup_stats_
    assert stats.poolings == ["tokens", "mean"]
    assert (stats.cache_hits, stats.extracted) == (0, 2 * len(TEXTS))
    before = Extractor.forward_calls
    probe.fit(POS, NEG).predict_proba(TEXTS)  # tokens from the store, means from the cache
    assert Extractor.forward_calls == before


def test_a_refit_another_way_forgets_the_streamed_fit(tiny_probe):
    """Refitted in memory, a probe is cross-validated (and described) as in-memory."""
    probe = tiny_probe(**EVERY).fit(POS, NEG)
    assert probe.train_passes_ > 1 and probe.training_activations is None
    probe.set_params(classifier="ridge").fit(POS, NEG)
    assert not hasattr(probe, "train_passes_") and probe.training_activations is not None
    X, y = probe.training_activations
    assert probe.n_train_tokens_ == len(X)
    assert 0.0 <= probe.cross_validate(cv=2) <= 1.0  # the in-memory grouped folds
    probe.set_params(train_pooling=None, inference_pooling=None).fit(POS, NEG)
    assert not hasattr(probe, "n_train_tokens_")
