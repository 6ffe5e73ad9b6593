"""Monitoring: calibrated thresholds, flagging, and per-token scoring during generation.

A probe deployed next to a chatbot needs three things beyond ``predict``:

- a decision threshold with a known false-positive rate on benign traffic
  (:func:`calibrate`, then :func:`flag`), and metrics at that threshold with bootstrap
  confidence intervals (:func:`evaluate_extra`, merged into ``Probe.evaluate``);
- every part of a long input read: a prompt longer than the model's context is scored
  in overlapping windows and keeps its highest window's score (:func:`prompt_scores`,
  ``long_inputs="windows"``), so benign padding placed before a request cannot push the
  request past the context and out of sight;
- scores for the model's own output while it is being written (:func:`monitor`):
  forward hooks on the probe's layers read the residual stream of every new position
  from the same forward pass ``model.generate`` runs anyway, so monitoring costs a
  classifier call per token, not a second pass.

The score of generated token ``t`` comes from the hidden state at the position where
``t`` is the model's *input* (the step after it was sampled), the same position that
scores ``t`` when the finished text is re-scored with ``inference_pooling="all"``.
The last generated token is never an input to ``generate``; one extra single-token step
on the KV cache, stopped after the deepest probed layer, scores it.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

__all__ = [
    "MonitorResult",
    "calibrate",
    "evaluate_extra",
    "flag",
    "monitor",
    "prompt_scores",
    "window_spans",
]

LONG_INPUTS = ("windows", "truncate")


# ---------------------------------------------------------------------- prompt-level scores


def prompt_scores(
    probe, prompts, *, remote: bool | None = None, long_inputs: str = "windows"
) -> np.ndarray:
    """One score per prompt: the positive-class probability (binary classification) or
    the prediction (regression), as ``Probe.evaluate`` sees it.

    Parameters
    ----------
    probe : Probe
    prompts : list of str or chat message lists
    remote : bool, optional
    long_inputs : {"windows", "truncate"}, default "windows"
        A text prompt longer than the model's context is scored in overlapping windows
        (:func:`window_spans`: half-overlapping, the last one ending at the text's end)
        and its score is the highest window's, with a warning saying so. "truncate"
        reads only the first ``max_length`` tokens (what ``predict`` does), so text past
        them is never seen. Chat message lists and ``dataset=`` probes are never split.

    Returns
    -------
    ndarray of shape (n_prompts,), float64
    """
    from ..inputs import check_prompts

    probe.check_fitted()
    prompts = check_prompts(prompts, "prompts")
    if not prompts:
        raise ValueError("no prompts were given")
    if long_inputs not in LONG_INPUTS:
        raise ValueError(
            f"long_inputs={long_inputs!r} is not one of {', '.join(map(repr, LONG_INPUTS))}"
        )
    if probe.task == "classification" and len(probe.classes_) != 2:
        raise ValueError(
            f"calibrated thresholds need a binary probe; this one has {len(probe.classes_)} "
            f"classes ({', '.join(map(repr, probe.classes_.tolist()))})"
        )
    owner, pieces = list(range(len(prompts))), list(prompts)
    if long_inputs == "windows" and probe.dataset is None:
        owner, pieces = _split_long(probe, prompts)
    pred, proba = probe.prompt_outputs(pieces, remote=remote)
    scores = np.asarray(pred if probe.task == "regression" else proba[:, 1], dtype=np.float64)
    out = np.full(len(prompts), -np.inf)
    np.maximum.at(out, np.asarray(owner), scores)
    return out


def _window_size(probe) -> int:
    """Tokens of raw text that fit the context with the prompt's own additions (special
    tokens, chat template), less 8 of slack for re-tokenization at window edges."""
    rt = probe.runtime
    tok = rt.tokenizer
    wrapped = rt.prepare(["x"], chat_template=probe.chat_template)[0]
    overhead = len(tok(wrapped, add_special_tokens=True)["input_ids"]) - len(
        tok("x", add_special_tokens=False)["input_ids"]
    )
    return max(8, rt.max_length - overhead - 8)


def window_spans(tokenizer, text: str, size: int, fits: int | None = None) -> list[tuple[int, int]]:
    """Character spans of windows of at most ``size`` tokens covering ``text``.

    Consecutive windows overlap by half (stride ``size // 2``), so any passage of up to
    ``size // 2`` tokens lies whole inside one window; the last window ends at the end
    of ``text``. A text of at most ``fits`` tokens (default ``size``) is one window.

    Returns
    -------
    list of (start, end) character offsets into ``text``
    """
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    n = len(offsets)
    if n <= (size if fits is None else fits):
        return [(0, len(text))]
    stride = max(1, size // 2)
    starts = list(range(0, n - size, stride)) + [n - size]
    return [
        (0 if s == 0 else offsets[s][0], len(text) if s + size == n else offsets[s + size - 1][1])
        for s in starts
    ]


def _split_long(probe, prompts) -> tuple[list[int], list]:
    """(owner index, text) pieces: text prompts over the context become their windows."""
    rt = probe.runtime
    size = _window_size(probe)
    owner, pieces, split = [], [], []
    for i, p in enumerate(prompts):
        spans = (
            window_spans(rt.tokenizer, p, size, fits=size + 8)
            if isinstance(p, str)
            else [(0, len(p))]
        )
        if len(spans) > 1:
            split.append((i, len(spans)))
        for a, b in spans:
            owner.append(i)
            pieces.append(p if not isinstance(p, str) else p[a:b])
    if split:
        i, k = split[0]
        warnings.warn(
            f"{len(split)} prompt(s) exceed the model's context of {rt.max_length} tokens "
            f"(first: #{i}); each was scored in overlapping windows of {size} tokens "
            f"(#{i}: {k} windows) and keeps its highest window's score, so text anywhere in "
            "it counts (long_inputs='truncate' reads only the first tokens)",
            UserWarning,
            stacklevel=4,
        )
    return owner, pieces


def current_threshold(probe, threshold: float | None = None) -> float:
    """``threshold`` if given, else the calibrated ``probe.threshold_``, else 0.5."""
    if threshold is None:
        threshold = getattr(probe, "threshold_", None)
    if threshold is None:
        return 0.5
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"threshold={threshold!r} must be a number") from None
    if math.isnan(value):
        raise ValueError("threshold=nan is not a usable threshold")
    return value


# ---------------------------------------------------------------------- calibration


def calibrate(
    probe,
    benign_prompts,
    fpr: float = 0.01,
    *,
    remote: bool | None = None,
    long_inputs: str = "windows",
):
    """The threshold at which at most ``fpr`` of ``benign_prompts`` is flagged.

    ``Probe.calibrate`` stores the result as ``threshold_`` and ``calibration_``.

    With the benign scores sorted from high to low, ``s_1 >= s_2 >= ... >= s_n`` and
    ``m = floor(fpr * n)``, the threshold is ``s_(m+1)``: a prompt is flagged when its
    score is strictly greater, so at most ``m`` benign prompts (fewer with ties) are
    flagged. This is the conservative ``1 - fpr`` quantile; on fresh benign prompts from
    the same distribution the expected flagged fraction is at most about ``fpr``.

    Parameters
    ----------
    probe : Probe
        A fitted binary classification (or regression) probe.
    benign_prompts : list of str or chat message lists
        Held-out prompts that should *not* be flagged (not the training prompts).
    fpr : float, default 0.01
        Target false-positive rate, in (0, 1).
    remote : bool, optional
        Override ``probe.remote`` for the scoring pass.
    long_inputs : {"windows", "truncate"}, default "windows"
        How prompts longer than the context are scored (see :func:`prompt_scores`).

    Returns
    -------
    threshold : float
    calibration : dict
        ``fpr``, ``n_benign``, ``n_flagged``, ``threshold``, and ``scores`` (the benign
        prompts' scores, which :func:`.drift.drift` compares new traffic with).

    Warns
    -----
    UserWarning
        When ``fpr * n < 1``: too few benign prompts to resolve ``fpr``, so the
        threshold is the highest benign score.
    """
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr={fpr!r} must be a number strictly between 0 and 1")
    fpr = float(fpr)
    scores = prompt_scores(probe, benign_prompts, remote=remote, long_inputs=long_inputs)
    n = len(scores)
    m = int(math.floor(fpr * n + 1e-9))
    if m == 0:
        warnings.warn(
            f"calibrating fpr={fpr} on {n} benign prompts: at least {math.ceil(1 / fpr)} are "
            "needed to resolve that rate, so the threshold is the highest benign score",
            UserWarning,
            stacklevel=3,
        )
    threshold = float(np.sort(scores)[::-1][m])
    calibration = {
        "fpr": fpr,
        "n_benign": int(n),
        "n_flagged": int(np.sum(scores > threshold)),
        "threshold": threshold,
        # the benign score distribution, so that probe.drift(new_prompts) can compare new
        # traffic with it after a reload, without the calibration prompts
        "scores": [float(x) for x in np.asarray(scores, dtype=np.float64)],
    }
    return threshold, calibration


def flag(
    probe,
    prompts,
    *,
    threshold: float | None = None,
    remote: bool | None = None,
    long_inputs: str = "windows",
) -> np.ndarray:
    """Which prompts score over the threshold.

    Parameters
    ----------
    probe : Probe
        A fitted binary classification (or regression) probe.
    prompts : list of str or chat message lists
    threshold : float, optional
        Overrides the threshold. By default the calibrated ``probe.threshold_`` is used;
        an uncalibrated probe uses 0.5, the plain ``predict`` cut-off, which has no
        false-positive guarantee: call :func:`calibrate` first for one.
    remote : bool, optional
    long_inputs : {"windows", "truncate"}, default "windows"
        A prompt longer than the context is flagged if any window of it scores over the
        threshold (see :func:`prompt_scores`).

    Returns
    -------
    ndarray of bool, shape (n_prompts,)
        True where the score is strictly greater than the threshold.
    """
    thr = current_threshold(probe, threshold)
    return prompt_scores(probe, prompts, remote=remote, long_inputs=long_inputs) > thr


# ---------------------------------------------------------------------- evaluate extras


def _bootstrap_counts(rng, n: int, n_boot: int) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _bootstrap(pos, neg, threshold, n_boot, rng, chunk: int = 200):
    """Stratified bootstrap of TPR at ``threshold`` and AUROC (Mann-Whitney, ties 1/2)."""
    neg_sorted = np.sort(neg)
    order = np.argsort(neg, kind="stable")
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    over = (pos > threshold).astype(np.float64) if threshold is not None else None
    tprs, aucs = [], []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        wp = _bootstrap_counts(rng, len(pos), b)
        wn = _bootstrap_counts(rng, len(neg), b)[:, order]
        cum = np.concatenate([np.zeros((b, 1)), np.cumsum(wn, axis=1)], axis=1)
        below = cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])
        aucs.append((wp * below).sum(1) / (len(pos) * len(neg)))
        if over is not None:
            tprs.append(wp @ over / len(pos))
    auc = np.concatenate(aucs)
    tpr = np.concatenate(tprs) if tprs else None
    return tpr, auc


def _interval(values, level: float = 0.95) -> tuple[float, float]:
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [a, 100.0 - a])
    return float(lo), float(hi)


def evaluate_extra(
    probe,
    y,
    pred,
    proba,
    *,
    n_bootstrap: int | None = None,
    random_state: int | None = None,
    **unknown,
) -> dict:
    """Metrics at the calibrated threshold, merged into ``Probe.evaluate``'s result.

    For a calibrated binary probe: ``threshold``, ``target_fpr`` (the rate it was
    calibrated for), ``fpr`` (the flagged fraction of this set's negatives),
    ``tpr_at_fpr`` (the flagged fraction of its positives), and 95% percentile
    bootstrap intervals ``tpr_at_fpr_ci`` and ``auroc_ci`` from ``n_bootstrap``
    stratified resamples (positives and negatives resampled separately, so every
    resample has both classes; default 1000). An uncalibrated probe gets only
    ``auroc_ci``, and only when ``n_bootstrap`` is given. Regression and multi-class
    probes get nothing extra.

    Parameters
    ----------
    y, pred, proba
        Labels, predictions and (n, 2) probabilities computed by ``Probe.evaluate``.
    n_bootstrap : int, optional
        Number of bootstrap resamples (0 turns the intervals off).
    random_state : int, optional
        Seed of the resampling (default: ``probe.random_state``, else 0).
    """
    if unknown:
        raise TypeError(
            f"evaluate() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            "valid: 'n_bootstrap', 'random_state'"
        )
    if n_bootstrap is not None and (
        isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0
    ):
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be a non-negative int")
    classes = getattr(probe, "classes_", None)
    if probe.task != "classification" or proba is None or classes is None or len(classes) != 2:
        return {}
    threshold = getattr(probe, "threshold_", None)
    if threshold is None and not n_bootstrap:
        return {}
    y = np.asarray(y)
    scores = np.asarray(proba, dtype=np.float64)[:, 1]
    is_pos = y == classes[1]
    pos, neg = scores[is_pos], scores[~is_pos]
    out: dict = {}
    if threshold is not None:
        threshold = float(threshold)
        cal = getattr(probe, "calibration_", None) or {}
        out["threshold"] = threshold
        out["target_fpr"] = float(cal["fpr"]) if "fpr" in cal else float("nan")
        out["fpr"] = float(np.mean(neg > threshold)) if len(neg) else float("nan")
        out["tpr_at_fpr"] = float(np.mean(pos > threshold)) if len(pos) else float("nan")
    n_boot = 1000 if n_bootstrap is None else n_bootstrap
    if n_boot > 0:
        nan2 = (float("nan"), float("nan"))
        if len(pos) and len(neg):
            seed = random_state if random_state is not None else (probe.random_state or 0)
            tpr, auc = _bootstrap(pos, neg, threshold, n_boot, np.random.default_rng(seed))
            out["auroc_ci"] = _interval(auc)
            if threshold is not None:
                out["tpr_at_fpr_ci"] = _interval(tpr)
        else:
            out["auroc_ci"] = nan2
            if threshold is not None:
                out["tpr_at_fpr_ci"] = (
                    _interval(np.full(1, out["tpr_at_fpr"])) if len(pos) else nan2
                )
        out["n_bootstrap"] = n_boot
    return out


# ---------------------------------------------------------------------- generation monitoring


@dataclass
class MonitorResult:
    """What :func:`monitor` saw while the model generated.

    Attributes
    ----------
    text : str
        The generated text (``"".join(tokens)``, special tokens kept).
    prompt_tokens : list of str
        Text pieces of the prompt's tokens.
    tokens : list of str
        Text pieces of the generated tokens (a piece may be ``""`` while a multi-byte
        character is split across tokens).
    scores : ndarray of shape (n_generated,)
        Score after each generated token (see ``score_kind``); NaN where not scored.
    prompt_scores : ndarray of shape (n_prompt_tokens,)
        The same for each prompt token (NaN at the attention sink and special tokens
        unless the probe's ``score_special_tokens``).
    flagged_at : int or None
        Index into ``tokens`` of the first token scoring over ``threshold``.
    threshold : float
    stopped_early : bool
        Generation was halted at ``flagged_at`` (``stop_on_flag=True``).
    prompt_text : str
        The exact text fed to the model (chat template applied).
    prompt_ids, token_ids : list of int
        Token ids of the prompt and of the generated tokens.
    chat_template : bool
        The prompt was rendered with the model's chat template (the default for models
        that have one; ``monitor(..., chat_template=False)`` turns it off).
    score_kind : {"token", "prefix"}
        ``"token"``: each token's own positive-class probability (token-level probes).
        ``"prefix"``: a sequence probe's prompt-level probability of the whole text up
        to and including the token (prompt and generation so far), the score
        ``predict_proba`` would give that prefix.
    """

    text: str
    prompt_tokens: list[str]
    tokens: list[str]
    scores: np.ndarray
    prompt_scores: np.ndarray
    flagged_at: int | None
    threshold: float
    stopped_early: bool
    prompt_text: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    chat_template: bool = False
    score_kind: str = "token"

    @property
    def flagged(self) -> bool:
        """Whether any generated token scored over the threshold."""
        return self.flagged_at is not None

    @property
    def max_score(self) -> float:
        """Highest score of a generated token (NaN when none was scored)."""
        finite = np.asarray(self.scores, dtype=np.float64)
        finite = finite[~np.isnan(finite)]
        return float(finite.max()) if len(finite) else float("nan")

    def __repr__(self) -> str:
        # counted from 1, like the widget's banner
        state = (
            f"flagged at token {self.flagged_at + 1} of {len(self.tokens)} "
            f"({self.tokens[self.flagged_at]!r}, score {self.scores[self.flagged_at]:.3f})"
            if self.flagged
            else "not flagged"
        )
        stop = ", stopped early" if self.stopped_early else ""
        chat = ", chat template" if self.chat_template else ""
        n = len(self.tokens)
        return (
            f"MonitorResult({n} token{'' if n == 1 else 's'}, max score {self.max_score:.3f}, "
            f"threshold {self.threshold:.3f}{chat}, {state}{stop}; text={self.text!r:.80})"
        )

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ...presentation.payload import repr_bundle

        return repr_bundle(
            "monitor",
            tokens=self.tokens,
            scores=self.scores,
            threshold=self.threshold,
            flagged_at=self.flagged_at,
            prompt_tokens=self.prompt_tokens,
            prompt_scores=self.prompt_scores,
            status="stopped" if self.stopped_early else "done",
            chat_template=self.chat_template,
        )

    def _repr_html_(self) -> str:
        from ...presentation import render_monitor

        return render_monitor(
            self.tokens,
            self.scores,
            self.threshold,
            flagged_at=self.flagged_at,
            prompt_tokens=self.prompt_tokens,
            prompt_scores=self.prompt_scores,
            status="stopped" if self.stopped_early else "done",
            chat_template=self.chat_template,
        )


def _hidden_of(output):
    return output[0] if isinstance(output, tuple) else output


class _StopAfterLayer(Exception):
    """Ends the final single-token step once the deepest probed layer has run."""


class _Detokenizer:
    """Text pieces of generated tokens whose concatenation is the decoded text."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.text = ""

    def piece(self, ids: list[int], final: bool = False) -> str:
        full = self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        # a multi-byte character split across tokens decodes to U+FFFD until complete;
        # its piece waits for the token that completes it (the last token takes the rest)
        if not final and (not full.startswith(self.text) or full.endswith("\ufffd")):
            return ""
        out = full[len(self.text) :]
        self.text = full
        return out


class _Monitor:
    """Hooks, per-step scoring and callbacks of one :func:`monitor` call.

    Positions are scored once each, in order: ``n_fed`` counts those already scored.
    A token-level probe scores each position by itself; a sequence probe
    (``classifier="mil"|"attention"|"multimax"``) pushes it into a
    :class:`~.sequence_probes.PrefixScorer`, whose logit after the position is the
    prompt-level logit of the whole prefix so far.
    """

    def __init__(self, probe, loaded, n_prompt, threshold, *, on_token, on_flag, stop_on_flag):
        from ..extraction.token_masks import special_token_ids
        from ..probes.token_probes import uses_sequence_probe

        self.probe = probe
        self.loaded = loaded
        self.layers = list(probe.layers_)
        self.deepest = max(self.layers)
        self.n_prompt = n_prompt
        self.threshold = threshold
        self.on_token = on_token
        self.on_flag = on_flag
        self.stop_on_flag = stop_on_flag
        self.streaming = bool(on_token or on_flag or stop_on_flag)
        self.detok = _Detokenizer(loaded.tokenizer)
        self.include = bool(getattr(probe, "score_special_tokens", False))
        self.special = frozenset() if self.include else special_token_ids(loaded.tokenizer)
        self.scorer = probe.classifier_.prefix_scorer() if uses_sequence_probe(probe) else None
        self.n_fed = 0
        self.captured: dict[int, object] = {}
        self.steps: list[dict[int, object]] = []  # per forward: layer -> (seq, hidden)
        self.prompt_scores: np.ndarray | None = None
        self.scores: list[float] = []
        self.pieces: list[str] = []
        self.flagged_at: int | None = None
        self.stop_after_layer = False
        self.paused = False

    # ---------------------------------------------------------------- hooks
    def install(self):
        from ..extraction.models import decoder_layers

        blocks = decoder_layers(self.loaded.model)
        wanted = set(self.layers)

        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                if self.paused:  # a callback running the model itself (e.g. predict)
                    return
                if layer in wanted:
                    # keep it on the device: no sync in the middle of the forward pass
                    self.captured[layer] = _hidden_of(output)[0].detach()
                if layer == self.deepest and self.stop_after_layer:
                    raise _StopAfterLayer

            return hook

        return [blocks[i].register_forward_hook(make_hook(i)) for i in sorted(wanted)]

    # ---------------------------------------------------------------- scoring
    def scored_mask(self, fed: list[int], start: int) -> np.ndarray:
        """Which of the positions ``start..len(fed)-1`` get a score: not the attention
        sink (position 0) nor special tokens, unless ``probe.score_special_tokens``."""
        from ..extraction.token_masks import scored_token_mask

        if self.include:
            return np.ones(len(fed) - start, dtype=bool)
        return scored_token_mask(fed, self.special)[start:]

    def score_new(self, acts: dict[int, object], fed: list[int]) -> np.ndarray:
        """Scores of the positions not scored yet, ``n_fed..len(fed)-1``.

        ``acts`` holds the last rows of the sequence ``fed`` (the whole prompt on the
        first pass, one position per KV-cached step). Unscored positions of a
        token-level probe, and positions before a sequence probe's first scored token,
        are NaN.
        """
        from ..probes.scoring import token_matrix, token_rows

        new = len(fed) - self.n_fed
        rows = {layer: a[-new:].float().cpu().numpy() for layer, a in acts.items()}
        mask = self.scored_mask(fed, self.n_fed)
        if self.scorer is None:
            out = token_rows(self.probe, [SimpleNamespace(acts=rows)], mode="score")[0]
            out = np.where(mask, np.asarray(out, dtype=np.float64), np.nan)
        else:
            before = self.scorer.n_scored
            z = self.scorer.push(token_matrix(rows, self.layers), mask)
            out = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
            out[before + np.cumsum(mask) == 0] = np.nan
        self.n_fed = len(fed)
        return out

    def end_step(self, ids: list[int]) -> bool:
        """Called after every forward pass; ``ids`` is the sequence fed so far plus, as
        the last entry, the token sampled from this pass. Returns True to stop."""
        if len(self.captured) != len(self.layers):
            raise RuntimeError(
                f"monitoring hooks captured layers {sorted(self.captured)} of {self.layers} "
                "in one forward pass; the model did not run the probed layers"
            )
        acts, self.captured = self.captured, {}
        if not self.streaming:
            self.steps.append(acts)
            return False
        scores = self.score_new(acts, ids[:-1])
        if self.prompt_scores is None:
            self.prompt_scores = scores
            return False
        return self._emit(ids, float(scores[-1]), final=False)

    def final_step(self, ids: list[int]) -> None:
        """Score the last generated token, just run through the probed layers."""
        acts, self.captured = self.captured, {}
        if self.streaming:
            self._emit(ids, float(self.score_new(acts, ids)[-1]), final=True)
        else:
            self.steps.append(acts)

    def _emit(self, ids: list[int], score: float, final: bool) -> bool:
        """Record the score of the newest generated token that was fed to the model."""
        k = len(self.scores)
        generated = ids[self.n_prompt :]
        piece = self.detok.piece(generated[: k + 1], final=final)
        self.scores.append(score)
        self.pieces.append(piece)
        flagged = self.flagged_at is None and score > self.threshold
        if flagged:
            self.flagged_at = k
        self.paused = True
        try:
            if self.on_token is not None:
                self.on_token(k, piece, score)
            if flagged and self.on_flag is not None:
                self.on_flag(k, piece, score)
        finally:
            self.paused = False
        return flagged and self.stop_on_flag

    def finish(self, ids: list[int], n_generated: int) -> None:
        """Score deferred steps (non-streaming mode) once, with a single classifier call."""
        if self.streaming:
            if self.prompt_scores is None:  # nothing was generated
                self.prompt_scores = np.full(self.n_prompt, np.nan)
            return
        import torch

        steps = self.steps
        self.steps = []
        acts = {
            layer: torch.cat([s[layer][-1:] if i else s[layer] for i, s in enumerate(steps)])
            for layer in self.layers
        }
        fed = ids[: self.n_prompt + n_generated]
        rows = self.score_new(acts, fed)
        self.prompt_scores = rows[: self.n_prompt]
        for k, score in enumerate(rows[self.n_prompt : self.n_prompt + n_generated]):
            self._emit(ids[: self.n_prompt + k + 1], float(score), final=k == n_generated - 1)


def _monitor_criteria(mon: _Monitor):
    """A ``StoppingCriteria`` that ends each generation step with :meth:`_Monitor.end_step`."""
    import torch
    from transformers import StoppingCriteria

    class MonitorCriteria(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stop = mon.end_step(input_ids[0].tolist())
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    return MonitorCriteria()


def _final_step(mon: _Monitor, out, ids: list[int]) -> None:
    """Feed the last generated token through the probed layers on the KV cache."""
    import torch

    model = mon.loaded.model
    base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    params = inspect.signature(base.forward).parameters
    kwargs: dict = {"use_cache": True}
    if cache is not None and "cache" in params:
        kwargs["cache"] = cache
    elif cache is not None and "past_key_values" in params:
        kwargs["past_key_values"] = cache
    device = mon.loaded.device
    if "cache" in kwargs or "past_key_values" in kwargs:
        input_ids = torch.tensor([ids[-1:]], device=device)
        kwargs["position_ids"] = torch.tensor([[len(ids) - 1]], device=device)
    else:  # no cache to continue from: one pass over the whole sequence
        input_ids = torch.tensor([ids], device=device)
    mon.stop_after_layer = True
    try:
        with torch.inference_mode():
            base(input_ids=input_ids, **kwargs)
    except _StopAfterLayer:
        pass
    finally:
        mon.stop_after_layer = False


def _use_chat_template(probe, chat_template: bool | None) -> bool:
    """``chat_template`` if given, else on when the probe or the model has a chat template.

    An instruct model continuing a bare string writes junk ("'s past.<|im_end|>"): it
    expects a user turn and the assistant header, so that is the default.
    """
    if chat_template is not None:
        return bool(chat_template)
    if probe.chat_template:
        return True
    return bool(getattr(probe.runtime.tokenizer, "chat_template", None))


def _prompt_text(probe, prompt, chat_template) -> str:
    from ..inputs import is_message_list

    if isinstance(prompt, str) and not prompt.strip():
        raise ValueError("prompt is an empty string; give the model something to continue")
    use_chat = _use_chat_template(probe, chat_template)
    if is_message_list(prompt) or use_chat:
        from ..extraction.chat import format_chat

        if not isinstance(prompt, str) and not is_message_list(prompt):
            raise TypeError(
                f"prompt must be a str or a list of {{'role', 'content'}} messages, got "
                f"{type(prompt).__name__}"
            )
        return str(
            format_chat(
                probe.runtime.tokenizer,
                prompt,
                force=True,
                add_generation_prompt=True,
                model_name=probe.model_name,
            )
        )
    if not isinstance(prompt, str):
        raise TypeError(
            f"prompt must be a str or a list of {{'role', 'content'}} messages, got "
            f"{type(prompt).__name__}"
        )
    return prompt


def monitor(
    probe,
    prompt,
    max_new_tokens: int = 32,
    threshold: float | None = None,
    on_flag: Callable[[int, str, float], object] | None = None,
    stop_on_flag: bool = False,
    chat_template: bool | None = None,
    do_sample: bool = False,
    on_token: Callable[[int, str, float], object] | None = None,
    **generate_kwargs,
) -> MonitorResult:
    """Generate from ``prompt`` and score every generated token as it is produced.

    Forward hooks on the probe's layers capture the residual stream of each new
    position during ``model.generate``'s own forward passes; no second pass is run.
    Generated token ``k`` is scored from the position where it is the model's input,
    so ``scores`` equal re-scoring ``prompt_text + text`` with
    ``inference_pooling="all"`` at the generated positions (up to float rounding of
    the KV-cached steps). The attention sink (position 0) and special tokens (BOS/EOS,
    chat-template control tokens) get NaN and are never flagged, unless the probe has
    ``score_special_tokens=True``, as in ``token_scores``.

    For a sequence probe (``classifier="mil"|"attention"|"multimax"``) the score after
    a token is the prompt-level probability of the whole prefix (prompt plus the
    generation up to and including that token): what ``predict_proba`` gives that
    prefix. It is updated incrementally at a constant cost per token
    (:class:`~.sequence_probes.PrefixScorer`: a running window for MIL's
    ``rolling_max:K``, a running log-sum-exp per attention head, a running max per
    multimax head), so a calibrated ``threshold_`` applies as is and the text is
    flagged at the first token after which its prompt-level score crosses it. Tokens
    before the first scored one get NaN; an unscored token repeats the prefix score.

    Parameters
    ----------
    probe : Probe
        A fitted probe on a local (transformers) model.
    prompt : str or list of dict
        Text to continue, or ``{"role", "content"}`` messages (rendered with the chat
        template and the assistant-turn header).
    max_new_tokens : int, default 32
    threshold : float, optional
        Flagging threshold; default the calibrated ``probe.threshold_``, else 0.5.
        (``threshold_`` is calibrated on prompt-level scores; per-token scores of a
        ``last_token`` probe live on the same scale, and a sequence probe's prefix
        scores are prompt-level scores.)
    on_flag : callable, optional
        ``on_flag(position, token, score)``, called once at the first generated token
        scoring over the threshold.
    stop_on_flag : bool, default False
        Stop generating at the first flagged token (it is the last token returned).
    chat_template : bool, optional
        Render a string prompt as a user turn with the model's chat template (plus the
        assistant header). Default: on when the model has a chat template (or
        ``probe.chat_template`` is set), since an instruct model continues a bare
        string poorly; ``False`` turns it off. ``MonitorResult.chat_template`` and the
        widget say which was used.
    do_sample : bool, default False
        Sample instead of greedy decoding.
    on_token : callable, optional
        ``on_token(position, token, score)`` for every generated token as soon as it
        is scored (streaming; drives the live widget).
    **generate_kwargs
        Passed on to ``model.generate`` (``temperature``, ``min_new_tokens``, ...).

    Returns
    -------
    MonitorResult
    """
    import torch
    from transformers import StoppingCriteriaList

    probe.check_fitted()
    if probe.dataset is not None or probe.backend != "local":
        raise ValueError(
            "monitor() runs the model itself; it needs backend='local' and a model, not "
            f"backend={probe.backend!r}, dataset={probe.dataset!r}"
        )
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive int")
    for name, fn in (("on_flag", on_flag), ("on_token", on_token)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable (position, token, score), got {fn!r}")
    for bad in ("max_length", "input_ids", "return_dict_in_generate"):
        if bad in generate_kwargs:
            raise TypeError(f"{bad}= cannot be passed to monitor(); use max_new_tokens=")
    thr = current_threshold(probe, threshold)
    probe.check_model_identity(stacklevel=3)
    loaded = probe.runtime.loaded
    tok = loaded.tokenizer
    text = _prompt_text(probe, prompt, chat_template)
    templated = _use_chat_template(probe, chat_template) or not isinstance(prompt, str)
    # tokenized exactly as the extractor does, so re-scoring sees the same tokens
    prompt_ids = list(tok(text, add_special_tokens=True, truncation=False)["input_ids"])
    if len(prompt_ids) + 1 > loaded.max_length:
        raise ValueError(
            f"the prompt has {len(prompt_ids)} tokens; the model's context is "
            f"{loaded.max_length}, leaving no room to generate"
        )
    mon = _Monitor(
        probe,
        loaded,
        len(prompt_ids),
        thr,
        on_token=on_token,
        on_flag=on_flag,
        stop_on_flag=bool(stop_on_flag),
    )
    criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
    criteria.append(_monitor_criteria(mon))
    input_ids = torch.tensor([prompt_ids], device=loaded.device)
    generate_kwargs.setdefault("pad_token_id", tok.pad_token_id)
    handles = mon.install()
    try:
        with torch.inference_mode():
            out = loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                stopping_criteria=criteria,
                return_dict_in_generate=True,
                **generate_kwargs,
            )
        ids = out.sequences[0].tolist()
        stopped_early = mon.streaming and mon.flagged_at is not None and mon.stop_on_flag
        if stopped_early:
            # the token sampled after the flagged one is not part of the answer
            ids = ids[: len(prompt_ids) + mon.flagged_at + 1]
        n_generated = len(ids) - len(prompt_ids)
        if n_generated > 0 and not stopped_early:
            _final_step(mon, out, ids)
            mon.final_step(ids)
        mon.finish(ids, n_generated)
    finally:
        for h in handles:
            h.remove()
    from ..extraction.extractor import Extractor

    _, prompt_pieces = Extractor(loaded, progress=False).token_pieces(text, len(prompt_ids))
    return MonitorResult(
        text="".join(mon.pieces),
        prompt_tokens=list(prompt_pieces),
        tokens=list(mon.pieces),
        scores=np.asarray(mon.scores, dtype=np.float64),
        prompt_scores=np.asarray(mon.prompt_scores, dtype=np.float64),
        flagged_at=mon.flagged_at,
        threshold=thr,
        stopped_early=bool(stopped_early),
        prompt_text=text,
        prompt_ids=prompt_ids,
        token_ids=ids[len(prompt_ids) :],
        chat_template=templated,
        score_kind="token" if mon.scorer is None else "prefix",
    )
