"""Live monitoring: per-token probe scores of a model's output while it is generated.

:func:`monitor` puts forward hooks on the probe's layers that read the residual stream of
every new position from the same forward pass ``model.generate`` runs anyway, so
monitoring costs a classifier call per token, not a second pass.

The score of generated token ``t`` comes from the hidden state at the position where
``t`` is the model's *input* (the step after it was sampled), the same position that
scores ``t`` when the finished text is re-scored with ``inference_pooling="all"``.
The last generated token is never an input to ``generate``; one extra single-token step
on the KV cache, stopped after the deepest probed layer, scores it. Thresholds come from
:mod:`.calibration`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from .calibration import current_threshold

__all__ = ["MonitorResult", "monitor"]


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
    :class:`~.sequence_base.PrefixScorer`, whose logit after the position is the
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
    (:class:`~.sequence_base.PrefixScorer`: a running window for MIL's
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
