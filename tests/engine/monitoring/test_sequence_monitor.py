"""Streaming scores of sequence probes: exact prefix logits and the live monitor.

A sequence probe's score after a token is the prompt-level score of the prefix up to and
including it. ``PrefixScorer`` updates it per token; these tests check it against
``decision_function`` on every truncated prefix, and the monitor against scoring each
generated prefix offline.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmprobe_jupyter.engine.monitoring import calibration as monitoring
from lmprobe_jupyter.engine.probes.scoring import token_matrix
from lmprobe_jupyter.engine.probes.sequence_probes import AttentionProbe, MILProbe, MultiMaxProbe

ESTIMATORS = [
    (MILProbe, {"window": 4}),
    (MILProbe, {"window": 1}),
    (AttentionProbe, {"n_heads": 3}),
    (AttentionProbe, {"n_heads": 2, "window": 3}),
    (MultiMaxProbe, {"n_heads": 3}),
]
ESTIMATOR_IDS = ["mil-4", "mil-1", "attention", "attention-window-3", "multimax"]


def _fitted(cls, kwargs, rng):
    """A fitted estimator on random sequences, its weights jittered so that no head is
    degenerate (pooled warm starts make attention queries 0: uniform attention)."""
    X = [rng.randn(rng.randint(2, 24), 6) for _ in range(16)]
    masks = [rng.rand(len(x)) > 0.25 for x in X]
    for m in masks:
        m[0] = False  # the sink
    y = np.r_[np.zeros(8), np.ones(8)]
    est = cls(max_epochs=3, validation_fraction=0.0, **kwargs).fit(X, y, mask=masks)
    for k, v in est.params_.items():
        est.params_[k] = v + rng.randn(*v.shape) * 0.7
    return est, X, masks


@pytest.mark.parametrize(("cls", "kwargs"), ESTIMATORS, ids=ESTIMATOR_IDS)
def test_prefix_scores_equal_decision_function_of_each_prefix(cls, kwargs):
    rng = np.random.RandomState(0)
    est, X, masks = _fitted(cls, kwargs, rng)
    for x, m in zip(X, masks):
        got = est.prefix_decision_function(x, m)
        want = [est.decision_function([x[: t + 1]], mask=[m[: t + 1]])[0] for t in range(len(x))]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    # a prefix with no scored token scores like a prompt with none
    empty = est.prefix_decision_function(X[0][:1], [False])[0]
    assert empty == pytest.approx(0.0 if cls is MILProbe else est.params_["b"][0], abs=1e-12)
    # no mask: every token counts
    full = est.prefix_decision_function(X[1])
    assert full[-1] == pytest.approx(est.decision_function([X[1]])[0], abs=1e-10)


@pytest.mark.parametrize(("cls", "kwargs"), ESTIMATORS, ids=ESTIMATOR_IDS)
def test_pushing_token_by_token_equals_pushing_the_prompt_at_once(cls, kwargs):
    rng = np.random.RandomState(1)
    est, X, masks = _fitted(cls, kwargs, rng)
    x, m = X[2], masks[2]
    scorer = est.prefix_scorer()
    head = scorer.push(x[:5], m[:5])
    rest = [scorer.push(x[t], m[t : t + 1])[0] for t in range(5, len(x))]
    np.testing.assert_allclose(np.r_[head, rest], est.prefix_decision_function(x, m), atol=1e-12)
    assert scorer.n_tokens == len(x) and scorer.n_scored == int(m.sum())
    assert scorer.logit == pytest.approx(est.decision_function([x], mask=[m])[0], abs=1e-10)


def test_prefix_scorer_names_bad_shapes():
    est, X, _ = _fitted(MultiMaxProbe, {"n_heads": 2}, np.random.RandomState(2))
    scorer = est.prefix_scorer()
    with pytest.raises(ValueError, match=r"shape \(3, 5\) do not have hidden size 6"):
        scorer.push(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"mask of shape \(2,\) does not match 3 tokens"):
        scorer.push(np.zeros((3, 6)), [True, False])
    with pytest.raises(ValueError, match="not fitted"):
        MultiMaxProbe().prefix_scorer()


# ---------------------------------------------------------------------- the live monitor

POS = ["The dog barked.", "A dog ran home.", "My dog is happy.", "Dogs love bones."]
NEG = ["The cat purred.", "A cat sat down.", "My cat is sleepy.", "Cats love fish."]
# the tiny random model repeats one token greedily; after this prompt the prefix scores
# still move from token to token (the context grows)
PROMPT = "My favourite food is"
KINDS = {
    "mil": {"window": 3},
    "attention": {"n_heads": 2},
    "attention-window": {"n_heads": 2, "window": 3},
    "multimax": {"n_heads": 2},
}


@pytest.fixture(scope="module")
def sequence_probes(tiny_model_path):
    from lmprobe_jupyter import Probe

    out = {}
    for name, kw in KINDS.items():
        out[name] = Probe(
            model=tiny_model_path,
            layers=[1, 2],
            device="cpu",
            dtype="float32",
            random_state=0,
            classifier=name.split("-")[0],
            # strong L2 keeps the tiny model's logits off saturation, so scores differ
            classifier_kwargs={**kw, "max_epochs": 5, "validation_fraction": 0.0, "l2": 1.0},
        ).fit(POS, NEG)
    return out


def _offline_prefix_scores(probe, result) -> np.ndarray:
    """The probe's prompt-level probability of every prefix of the finished text,
    scored offline from a fresh extraction (NaN before the first scored token)."""
    full = result.prompt_text + result.text
    ids = probe.runtime.tokenizer(full, add_special_tokens=True)["input_ids"]
    assert ids == result.prompt_ids + result.token_ids, "re-tokenization changed the tokens"
    toks, keep = probe.runtime.token_features(
        [full], probe.layers_, score_special_tokens=probe.score_special_tokens
    )
    x = token_matrix(toks[0].acts, probe.layers_)
    m = np.ones(len(x), dtype=bool) if keep is None else keep[0]
    est = probe.classifier_
    z = np.array([est.decision_function([x[: t + 1]], mask=[m[: t + 1]])[0] for t in range(len(x))])
    p = 1.0 / (1.0 + np.exp(-z))
    p[np.cumsum(m) == 0] = np.nan
    return p


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_monitor_scores_are_the_prompt_scores_of_each_prefix(sequence_probes, kind):
    probe = sequence_probes[kind]
    seen = []
    result = probe.monitor(
        PROMPT,
        max_new_tokens=8,
        chat_template=False,
        threshold=2.0,
        on_token=lambda *a: seen.append(a),
    )
    n = len(result.prompt_ids)
    assert result.score_kind == "prefix" and len(result.scores) == 8
    assert np.ptp(result.scores) > 1e-3  # a test with teeth: the scores move
    ref = _offline_prefix_scores(probe, result)
    np.testing.assert_allclose(result.prompt_scores, ref[:n], atol=1e-5)
    np.testing.assert_allclose(result.scores, ref[n:], atol=1e-5)
    # the last score is what predict_proba gives the finished text (predict_proba reads
    # the per-token store, float16 on disk, so up to that rounding)
    assert result.scores[-1] == pytest.approx(
        probe.predict_proba([result.prompt_text + result.text])[0, 1], abs=1e-4
    )
    # the sink is not scored: the one-token prefix has no score yet
    assert np.isnan(result.prompt_scores[0]) and not np.isnan(result.prompt_scores[1:]).any()
    # streaming gave the same scores, in order; without callbacks, one deferred pass
    assert [s[0] for s in seen] == list(range(8))
    np.testing.assert_array_equal([s[2] for s in seen], result.scores)
    quiet = probe.monitor(PROMPT, max_new_tokens=8, chat_template=False)
    assert quiet.token_ids == result.token_ids
    np.testing.assert_allclose(quiet.scores, result.scores, atol=1e-6)
    np.testing.assert_allclose(quiet.prompt_scores, result.prompt_scores, atol=1e-6)


@pytest.mark.parametrize("kind", ["mil", "attention"], ids=["mil", "attention"])
def test_monitor_flags_at_the_first_crossing_of_the_prefix_score(sequence_probes, kind):
    probe = sequence_probes[kind]
    full = probe.monitor(PROMPT, max_new_tokens=8, chat_template=False)
    s = full.scores
    records = [k for k in range(1, len(s)) if s[k] > s[:k].max() + 1e-9]
    k = records[0] if records else 0
    threshold = float((s[:k].max() + s[k]) / 2) if k else float(s[0] - 1e-6)
    flags = []
    stopped = probe.monitor(
        PROMPT,
        max_new_tokens=8,
        chat_template=False,
        threshold=threshold,
        stop_on_flag=True,
        on_flag=lambda *a: flags.append(a),
    )
    assert k > 0 and stopped.flagged_at == k and stopped.stopped_early
    assert stopped.token_ids == full.token_ids[: k + 1]
    np.testing.assert_allclose(stopped.scores, s[: k + 1], atol=1e-6)
    assert flags == [(k, stopped.tokens[k], stopped.scores[k])]


def test_calibrated_threshold_is_on_the_same_scale(sequence_probes):
    """calibrate() sets the threshold on prompt-level scores; the monitor's last prefix
    score is the finished text's prompt-level score, so flagging agrees with flag()."""
    import copy

    probe = copy.copy(sequence_probes["attention"])
    benign = [*NEG, "A bird sang.", "The sun rose.", "We ate lunch.", "It rained."]
    with pytest.warns(UserWarning, match="too few|at least"):
        probe.calibrate(benign, fpr=0.1)
    result = probe.monitor(PROMPT, max_new_tokens=6, chat_template=False)
    assert result.threshold == probe.threshold_
    text = result.prompt_text + result.text
    assert probe.flag([text], threshold=result.threshold)[0] == (
        result.scores[-1] > result.threshold
    )


def test_unscored_tokens_repeat_the_prefix_score(sequence_probes):
    """In a chat prompt the control tokens are not scored: the prefix score stays put."""
    probe = sequence_probes["multimax"]
    result = probe.monitor("Tell me about dogs", max_new_tokens=3, threshold=2.0)
    assert result.chat_template
    special = probe.runtime.tokenizer.all_special_ids
    ids = result.prompt_ids
    inner = [t for t in range(2, len(ids)) if ids[t] in special and ids[t - 1] not in special]
    assert inner, "the chat prompt has control tokens after text"
    for t in inner:
        assert result.prompt_scores[t] == result.prompt_scores[t - 1]


def test_sequence_probes_score_long_inputs_in_windows(sequence_probes):
    """calibrate/flag read a prompt longer than the context window by window."""
    probe = sequence_probes["mil"]
    rt = probe.runtime
    text = " ".join(["The weather was mild and pleasant today."] * 60) + " The dog barked."
    assert len(rt.tokenizer(text)["input_ids"]) > rt.max_length
    with pytest.warns(UserWarning, match="overlapping windows"):
        score = monitoring.prompt_scores(probe, [text])[0]
    size = monitoring._window_size(probe)
    windows = [text[a:b] for a, b in monitoring.window_spans(rt.tokenizer, text, size)]
    assert len(windows) > 1
    assert score == pytest.approx(probe.predict_proba(windows)[:, 1].max(), abs=1e-9)
