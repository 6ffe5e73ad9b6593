"""The reading half of :class:`~.probe.Probe`: its model, and what a fitted probe says.

:class:`ProbeInference` is ``Probe``'s base class. It holds model access (the runtime,
prompt preparation, per-call extraction options, pooled and per-token features, warm-up)
and inference on prompts (``predict``, ``predict_proba``, ``prompt_outputs``, per-token
outputs and ``token_scores``). It reads the probe's parameters and learned state (through
``Probe``'s ``get_params``, fitted-state checks and ``classifier_``) and writes no
learned state (``warmup_stats_`` only records a warm-up): that is ``fit``'s job, in
:mod:`.probe` and :mod:`.fitting`.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..extraction.layers import resolve_layers
from ..extraction.pooling import extractor_pooling, is_token_level, pooling_stage


def per_call_options(method):
    """Run ``method`` with its ``batch_size`` / ``max_retries`` / ``executor`` /
    ``num_workers`` keywords applied to every extraction it does (see
    :meth:`ProbeInference._call_options`)."""

    import inspect

    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        # bound, so that positional values count too (warmup(prompts, 16))
        try:
            given = signature.bind_partial(self, *args, **kwargs).arguments
        except TypeError:
            given = kwargs  # the method itself reports the bad call
        with self._call_options(
            given.get("batch_size"),
            given.get("max_retries"),
            given.get("executor", "local"),
            given.get("num_workers"),
        ):
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class TokenScores:
    """Per-token scores of one text: ``tokens[i]`` is the exact text piece scored ``scores[i]``."""

    text: str
    tokens: list[str]
    scores: np.ndarray

    @property
    def max_score(self) -> float:
        """The highest score over scored tokens (NaN tokens, e.g. the sink, skipped)."""
        s = np.asarray(self.scores, dtype=np.float64)
        return float(np.nanmax(s)) if np.any(~np.isnan(s)) else float("nan")


class ProbeInference:
    """Model access and inference of a :class:`~.probe.Probe` (its base class; not used
    on its own: it reads ``Probe``'s parameters and fitted state)."""

    # ------------------------------------------------------------------ model access
    @property
    def runtime(self):
        """The :class:`~.runtime.ModelRuntime` this probe reads its model through.

        Built from the probe's parameters on first use (no weights load until an
        extraction needs them) and rebuilt when those parameters change. Probes may
        share one (a sweep's per-layer probes do): assign it.
        """
        from ..extraction.runtime import ModelRuntime

        rt = self.__dict__.get("_runtime")
        params = self.get_params()
        if rt is None or not rt.serves(params):
            rt = ModelRuntime.from_params(params)
            self._runtime = rt
        return rt

    @runtime.setter
    def runtime(self, runtime) -> None:
        if not runtime.serves(self.get_params()):
            raise ValueError(
                f"{runtime!r} runs {runtime.config()}, which differs from this probe's "
                "model parameters; give the probe the same model, backend, device and dtype"
            )
        self._runtime = runtime

    @property
    def model_name(self) -> str | None:
        """The model this probe reads (the bundled default when none was given)."""
        return self.runtime.model_name

    @property
    def dataset_info_(self) -> dict | None:
        """The activation dataset's description (``dataset=`` probes only)."""
        return self.runtime.dataset_info

    @property
    def last_cache_hits_(self) -> int:
        """Prompts the last pooled extraction served from the activation cache."""
        return self.runtime.last_hits

    def n_model_layers(self) -> int:
        """Number of decoder layers of the probed model (or dataset)."""
        return self.runtime.n_layers

    def check_model_identity(self, stacklevel: int = 2) -> bool:
        """Warn (once per runtime) if the weights read now are not the ones trained on.

        Returns
        -------
        bool
            True when the weights match the training model's fingerprint (or it is unknown).
        """
        trained = self.__dict__.get("model_fingerprint_")
        rt = self.runtime
        if not trained:
            return True
        current = rt.fingerprint
        if current == trained:
            return True
        if self.__dict__.get("_identity_warned") is not rt:
            self._identity_warned = rt
            trained_on = self.__dict__.get("trained_model_") or "an unrecorded model"
            warnings.warn(
                f"this probe was trained on {trained_on!r} (weights fingerprint {trained}), "
                f"but it now reads {rt.model_name!r} (fingerprint {current}); its scores may "
                "be meaningless on these weights",
                stacklevel=stacklevel + 1,
            )
        return False

    def _prepare_prompts(self, prompts, chat_template: bool | None = None) -> list[str]:
        """Validate prompts and apply the chat template where asked for."""
        use_chat = self.chat_template if chat_template is None else chat_template
        return self.runtime.prepare(prompts, chat_template=use_chat)

    @contextlib.contextmanager
    def _call_options(self, batch_size=None, max_retries=None, executor="local", num_workers=None):
        """Per-call ``batch_size`` / ``max_retries`` / ``executor`` / ``num_workers`` for
        every extraction inside the block."""
        from ..extraction.distributed import check_executor
        from ..extraction.retry import validate_max_retries

        check_executor(executor, num_workers)
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        validate_max_retries(max_retries)
        before = self.__dict__.get("_call_opts")
        self._call_opts = {
            "batch_size": batch_size,
            "max_retries": max_retries,
            "executor": executor,
            "num_workers": num_workers,
        }
        try:
            yield
        finally:
            if before is None:
                self.__dict__.pop("_call_opts", None)
            else:
                self._call_opts = before

    def extraction_options(self, batch_size=None) -> dict:
        """``batch_size`` and ``max_retries`` for an extraction: this call's, else the
        probe's; and where it runs (``executor``, ``num_workers``: this call's).

        Returns
        -------
        dict
            ``batch_size``, ``max_retries``, ``executor`` and ``num_workers``: keywords of
            the runtime's extraction methods.
        """
        opts = self.__dict__.get("_call_opts") or {}
        retries = opts.get("max_retries")
        return {
            "batch_size": batch_size or opts.get("batch_size"),
            "max_retries": self.max_retries if retries is None else retries,
            "executor": opts.get("executor", "local"),
            "num_workers": opts.get("num_workers"),
        }

    def _features(self, prompts, pooling, layers=None, remote=None, batch_size=None) -> dict:
        """Pooled activations of already-prepared prompts: {layer: (n, hidden)}."""
        layers = list(self.layers_ if layers is None else layers)
        return self.runtime.pooled(
            prompts,
            layers,
            pooling,
            roles=self.score_roles,
            remote=remote,
            **self.extraction_options(batch_size),
        )

    def token_inputs(self, prepared, layers, remote=None):
        """Per-token inputs of prepared prompts (:class:`~.token_store.StoredTokens`): a
        token source reading the per-token store one minibatch at a time, its masks, and
        the token pieces (what sequence probes and every-token fits train on)."""
        return self.runtime.token_source(
            prepared,
            list(layers),
            roles=self.score_roles,
            remote=remote,
            score_special_tokens=self.score_special_tokens,
            **self.extraction_options(),
        )

    @per_call_options
    def warmup(
        self,
        prompts,
        batch_size: int | None = None,
        *,
        remote: bool | None = None,
        max_retries: int | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ) -> ProbeInference:
        """Extract and cache activations for ``prompts`` so later calls hit the cache.

        With ``executor="ray"`` the extraction runs on ``num_workers`` Ray workers and
        lands in this process's activation cache (see :mod:`.distributed`): point it at
        S3 (``set_cache_backend("s3://...")``) and every machine's later calls hit it.

        Returns the probe (for chaining); what the call did is ``warmup_stats_``
        (a :class:`~.activation_store.WarmupStats`: cache hits, vectors extracted, time).
        """
        from ..cache.activation_store import WarmupStats
        from .fitting import streams_token_fit

        self._validate_params()
        prepared = self._prepare_prompts(prompts)
        layers = getattr(self, "layers_", None) or resolve_layers(
            self.layers, self.n_model_layers()
        )
        t0 = time.perf_counter()
        hits = extracted = 0
        poolings = []
        if self._is_sequence() or streams_token_fit(self):
            # sequence probes and streamed train_pooling="all" fits read every token:
            # fill the per-token store they train from
            with self._call_options(batch_size, max_retries, executor, num_workers):
                got = self.token_inputs(prepared, layers, remote)
            hits, extracted = int(got.hits), int(got.extracted)
            poolings.append("tokens")
        wanted = set()
        if not self._is_sequence():
            if pooling_stage(self.train_pooling_, role="train") == "activation":
                wanted.add(extractor_pooling(self.train_pooling_))
            if not is_token_level(self.inference_pooling_):
                wanted.add(extractor_pooling(self.inference_pooling_))
        for pooling in sorted(wanted, key=str):
            self._features(prepared, pooling, layers, remote, batch_size)
            hits += self.last_cache_hits_
            extracted += len(prepared) - self.last_cache_hits_
        self.warmup_stats_ = WarmupStats(
            n_prompts=len(prepared),
            layers=[int(x) for x in layers],
            poolings=poolings + sorted(map(str, wanted)),
            cache_hits=hits,
            extracted=extracted,
            seconds=time.perf_counter() - t0,
        )
        return self

    # ------------------------------------------------------------------ inference
    def _is_sequence(self) -> bool:
        from .token_probes import uses_sequence_probe

        return uses_sequence_probe(self)

    def _empty_output(self, kind: str):
        """What ``predict``/``predict_proba`` return for no prompts: empty, correctly typed."""
        if self.inference_pooling_ == "all":
            return np.ma.masked_array(np.zeros((0, 0)), mask=np.zeros((0, 0), bool))
        if kind == "proba":
            return np.zeros((0, len(self.classes_)), dtype=np.float64)
        if self.task == "regression":
            return np.zeros(0, dtype=np.float64)
        return np.empty(0, dtype=self.classes_.dtype)

    def _pooled_matrix(self, prompts, pooling, remote=None, batch_size=None) -> np.ndarray:
        from .features import concat_layers

        self.check_model_identity(stacklevel=4)
        acts = self._features(prompts, pooling, self.layers_, remote, batch_size)
        return concat_layers(acts, self.layers_)

    def _token_chunks(self, prompts, remote):
        """Per-token activations of prepared prompts with their scored-token masks, a chunk
        at a time (:meth:`.ModelRuntime.token_feature_chunks`): scoring many long prompts
        holds one chunk's per-token activations, not all of them. Yields ``(indices,
        toks, keep)``."""
        return self.runtime.token_feature_chunks(
            prompts,
            list(self.layers_),
            roles=self.score_roles,
            remote=remote,
            score_special_tokens=self.score_special_tokens,
            **self.extraction_options(),
        )

    def _reduced_rows(self, prompts, remote) -> list[np.ndarray]:
        """Per-token outputs restricted to the tokens the probe may score."""
        from .scoring import restrict

        return restrict(*self.token_outputs(prompts, remote=remote))

    def _sequence_outputs(self, prompts, remote):
        """Prompt logits (n,) and per-token contributions (NaN where unscored) of a
        sequence probe, with the scored-token masks and the prompts' token pieces (a
        lazy list of TokenActs without activations)."""
        self._check_reads_prompts()
        self.check_model_identity(stacklevel=5)
        from ..cache.token_store import LazyTokenActs

        inputs = self.token_inputs(prompts, self.layers_, remote)
        est = self.classifier_
        rows = est.token_scores(inputs.source)
        z = est.decision_function(inputs.source)
        return z, rows, inputs.masks, LazyTokenActs(inputs.pieces)

    def _sequence_proba(self, prompts, remote) -> np.ndarray:
        z = self._sequence_outputs(prompts, remote)[0]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return np.column_stack([1.0 - p, p])

    def token_outputs(self, prompts, *, remote: bool | None = None, mode: str = "proba"):
        """Per-token outputs of prepared prompts and the tokens the probe may score.

        Returns
        -------
        rows : list of ndarray
            Per prompt, see :func:`~.scoring.token_rows`.
        keep : list of bool ndarray, or None
            With ``score_roles``: per prompt, the tokens of those roles (else None).
        """
        from .scoring import token_rows

        self._check_reads_prompts()
        if self._is_sequence():
            # Per-token contributions to the prompt logit (see token_scores).
            _, rows, masks, _ = self._sequence_outputs(prompts, remote)
            return rows, masks
        self.check_model_identity(stacklevel=4)
        rows, keeps = [None] * len(prompts), [None] * len(prompts)
        for idx, toks, keep in self._token_chunks(prompts, remote):
            for i, r, k in zip(idx, token_rows(self, toks, mode), keep or [None] * len(idx)):
                rows[i], keeps[i] = r, k
        return rows, (None if all(k is None for k in keeps) else keeps)

    @per_call_options
    def predict_proba(
        self,
        prompts,
        *,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ):
        """Class probabilities.

        ``batch_size`` and ``max_retries`` override the probe's values for this call;
        ``executor``/``num_workers`` as for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_prompts, n_classes), or for ``inference_pooling="all"`` a masked
        array of shape (n_prompts, seq_len) holding the positive-class probability of every
        token (padded positions masked; (n_prompts, seq_len, n_classes) for multi-class).
        """
        from .scoring import pad_tokens, reduced_proba

        self._check_reads_prompts()
        if self.task == "regression":
            raise ValueError("predict_proba is not defined for task='regression'; use predict")
        prepared = self._prepare_prompts(prompts)
        if not prepared:
            return self._empty_output("proba")
        how = self.inference_pooling_
        if how == "all":
            return pad_tokens(*self.token_outputs(prepared, remote=remote))
        if self._is_sequence():
            return self._sequence_proba(prepared, remote)
        if is_token_level(how):
            return reduced_proba(self._reduced_rows(prepared, remote), how)
        from .classifiers import classifier_proba

        return classifier_proba(
            self.pipeline_, self._pooled_matrix(prepared, how, remote, batch_size)
        )

    @per_call_options
    def predict(
        self,
        prompts,
        *,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
        executor: str = "local",
        num_workers: int | None = None,
    ):
        """Predicted labels (or values for regression); per token for ``inference_pooling="all"``.

        ``executor``/``num_workers`` as for :meth:`fit`.
        """
        from .scoring import pad_tokens, prompt_outputs

        self._check_reads_prompts()
        prepared = self._prepare_prompts(prompts)
        if not prepared:
            return self._empty_output("predict")
        how = self.inference_pooling_
        if self._is_sequence():  # prompt-level labels, also for inference_pooling="all"
            return prompt_outputs(self, proba=self._sequence_proba(prepared, remote))[0]
        if how == "all":
            mode = "proba" if self.task == "regression" else "predict"
            return pad_tokens(*self.token_outputs(prepared, remote=remote, mode=mode))
        if is_token_level(how):
            return prompt_outputs(self, rows=self._reduced_rows(prepared, remote))[0]
        return self.pipeline_.predict(self._pooled_matrix(prepared, how, remote, batch_size))

    def prompt_outputs(self, prompts, *, remote: bool | None = None):
        """Prompt-level (n,) predictions and (n, k) probabilities (None for regression).

        ``inference_pooling="all"`` is scored as "max" (a prompt is positive if any token
        is). What ``score``, ``evaluate``, ``calibrate`` and the battery read.
        """
        from .scoring import prompt_outputs

        self._check_reads_prompts()
        how = self.inference_pooling_
        prepared = self._prepare_prompts(prompts)
        if self._is_sequence():
            return prompt_outputs(self, proba=self._sequence_proba(prepared, remote))
        if is_token_level(how):
            return prompt_outputs(self, rows=self._reduced_rows(prepared, remote))
        return prompt_outputs(self, features=self._pooled_matrix(prepared, how, remote))

    # ------------------------------------------------------------------ tokens
    def token_scores(self, texts, *, remote: bool | None = None) -> list[TokenScores]:
        """Per-token positive-class scores for each text (for highlights and monitoring).

        For ``classifier="attention"|"multimax"|"mil"`` the scores are each token's
        contribution to the prompt's logit (NaN at unscored tokens), not probabilities:
        attention ``sum_h alpha_{t,h} v_{t,h}``, multimax ``beta_h max_t s_{t,h}`` at each
        head's arg-max token; their sum plus ``classifier_.params_["b"]`` is the prompt
        logit (``predict_proba[:, 1]`` is its sigmoid). MIL: per-token logits whose
        ``rolling_max:K`` is the prompt logit. See :mod:`.sequence_probes`.
        """
        from .scoring import token_rows

        self._check_reads_prompts()
        if isinstance(texts, str):
            texts = [texts]
        prepared = self._prepare_prompts(texts)
        if not prepared:
            return []
        if self._is_sequence():
            _, rows, _, toks = self._sequence_outputs(prepared, remote)
            return [TokenScores(t.text, t.tokens, r) for t, r in zip(toks, rows)]
        self.check_model_identity(stacklevel=3)
        from ..extraction.token_masks import mask_scores

        out = [None] * len(prepared)
        for idx, toks, keep in self._token_chunks(prepared, remote):
            rows = token_rows(self, toks, mode="score")
            if keep is not None:
                rows = [mask_scores(r, k[: len(r)]) for r, k in zip(rows, keep)]
            for i, t, r in zip(idx, toks, rows):
                out[i] = TokenScores(t.text, t.tokens, r)
        return out

    def token_level_note(self) -> str:
        """What a highlight legend should say about this probe's per-token scores.

        A probe fitted on one pooled vector per prompt and applied to each token is off
        its training distribution; the note says so and names a token-level probe. Empty
        for probes trained on every token.
        """
        self._check_fitted()
        if self._is_sequence():
            how = (
                f"their rolling_max:{self.classifier_.window} is"
                if self.classifier_.kind == "mil"
                else "they sum (plus an intercept) to"
            )
            return (
                f"Scores are each token's contribution to the {self.classifier_.kind} "
                f"probe's prompt logit: {how} the prompt's logit (above 0: positive). "
                "Grey tokens (the first position, special tokens) are not scored."
            )
        train = self.train_pooling_
        if train == "all":
            return ""
        what = train if isinstance(train, str) else "a custom pooling"
        return (
            f"This probe was trained on {what} vectors, one per prompt, so its per-token "
            "scores are off its training distribution. For token-level use train on every "
            "token: Probe(train_pooling='all', inference_pooling='rolling_max:16'). "
            "Grey tokens (the first position, special tokens) are not scored."
        )

    def show_tokens(self, texts, threshold: float | None = None):
        """Per-token highlight widget (needs the ``jupyter`` extra).

        ``threshold`` defaults to 0.5 (probabilities), 0 for sequence probes (whose token
        scores are logit contributions, see :meth:`token_scores`; their colour scale is
        symmetric around 0, to the largest contribution shown).
        """
        from .. import display

        rows = self.token_scores(texts)
        scale = {}
        if self._is_sequence():
            finite = [np.abs(r.scores[~np.isnan(r.scores)]) for r in rows]
            top = max((float(f.max()) for f in finite if f.size), default=1.0) or 1.0
            scale = {"vmin": -top, "vmax": top}
        if threshold is None:
            threshold = 0.0 if self._is_sequence() else 0.5
        return display.widget(
            "tokens", rows, threshold=threshold, note=self.token_level_note(), **scale
        )
