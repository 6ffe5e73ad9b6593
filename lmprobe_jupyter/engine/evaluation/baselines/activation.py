"""Baselines on the language model itself: :class:`ActivationBaseline` (a random direction,
top principal components, layer 0, the model's own perplexity). Features come through
the probe's model runtime, so they share the activation cache with probes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...extraction._batching import right_pad
from ._common import (
    FittedBaseline,
    check_method,
    check_two_classes,
    make_classifier,
    quoted,
    split_fit_args,
)

#: Full-model forward passes run for the perplexity baseline in this process (the
#: activation extractor's own count is ``Extractor.forward_calls``).
PERPLEXITY_FORWARD_CALLS = 0

# (model key, prompt) -> mean token log-likelihood; logits never enter the activation
# cache, so this keeps repeated batteries from re-running the full model.
_LOGPROB_MEMO: dict[tuple[str, str], float] = {}


def mean_token_logprob(
    loaded: Any, prompts: Sequence[str], batch_size: int = 8, progress: bool | None = None
) -> np.ndarray:
    """Mean log-likelihood per token of each prompt under the model itself.

    Runs the full model (all blocks, the final norm and the LM head). When the tokenizer
    does not add a BOS token itself, its BOS (if it has one) is prepended so the first
    text token is scored too; otherwise the first token is only context. A prompt with
    nothing to score gets 0.0.

    Parameters
    ----------
    loaded : LoadedModel
    prompts : list of str
    batch_size : int
        Prompts per forward pass (sorted by length to limit padding).
    progress : bool or None
        A ``tqdm.auto`` bar over batches.

    Returns
    -------
    numpy.ndarray of shape (n_prompts,), float64
    """
    global PERPLEXITY_FORWARD_CALLS
    prompts = list(prompts)
    out = np.array([_LOGPROB_MEMO.get((loaded.key, p), np.nan) for p in prompts])
    missing = list(dict.fromkeys(p for p, v in zip(prompts, out) if np.isnan(v)))
    if not missing:
        return out

    import torch

    tok = loaded.tokenizer
    seqs = tok(missing, add_special_tokens=True, truncation=False)["input_ids"]
    bos = tok.bos_token_id
    if bos is not None:
        seqs = [s if (s and s[0] == bos) else [bos, *s] for s in seqs]
    seqs = [s[: loaded.max_length] for s in seqs]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    from ...extraction.extractor import progress_enabled

    if progress_enabled(progress) and len(batches) > 1:
        from ...progress import progress_bar

        batches = progress_bar(batches, desc="perplexity", unit="batch")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    model = loaded.model
    values: dict[str, float] = {}
    for batch in batches:
        ids, mask = right_pad([seqs[i] for i in batch], pad)
        ids, mask = ids.to(loaded.device), mask.to(loaded.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        PERPLEXITY_FORWARD_CALLS += 1
        with torch.inference_mode():
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False
            ).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
            m = mask[:, 1:].to(target.dtype)
            mean = (target * m).sum(1) / m.sum(1).clamp(min=1)
        for r, i in enumerate(batch):
            values[missing[i]] = float(mean[r])
    for p, v in values.items():
        _LOGPROB_MEMO[(loaded.key, p)] = v
    return np.array([_LOGPROB_MEMO[(loaded.key, p)] for p in prompts])


# --------------------------------------------------------------------------------------
# Activation baselines
# --------------------------------------------------------------------------------------


class ActivationBaseline(FittedBaseline):
    """A baseline on the language model's activations, with the surface of ``Probe``.

    Parameters
    ----------
    method : str
        ``'random_direction'``: project the activations onto a random unit vector and fit a
        logistic regression on that single number. ``'pca'``: the top ``n_components``
        principal components (capped at ``n_samples - 1``) plus a classifier.
        ``'layer_0'``: the same classifier on the input embeddings (before any decoder
        block; a table lookup, no forward pass) instead of ``layers``; with an
        activation dataset or NDIF, where embeddings are not at hand, layer 0 (the
        first block's output). ``'perplexity'``: the model's own mean token
        log-likelihood of the prompt as the single feature.
    model : str, LoadedModel, Probe or None
        The model to read. A :class:`~lmprobe_jupyter.engine.probes.probe.Probe` lends its
        model, extraction backend and chat formatting (same as ``probe=``). Required.
    layers : int, list of int or str, default -1
        Layers the baseline reads (``random_direction`` and ``pca``), resolved as in
        ``Probe``; ``'auto'``-style selection specs are not accepted.
    pooling : str or callable, default "last_token"
        An activation-level pooling (``'all'`` is an inference-only pooling: not here).
    random_state : int or None
        Seeds the random direction, PCA and the classifier.
    device : str, default "auto"
    batch_size : int, default 8
    classifier : str or sklearn estimator, default "logistic_regression"
    classifier_kwargs : dict or None
    n_components : int, default 10
        Principal components for ``method='pca'``.
    probe : Probe or None
        Take the feature source (model, backend, chat template) from this probe, so its
        cached activations are reused.
    dtype : str or None
    progress : bool or None
    remote : bool, default False
        Run the extraction on NDIF (needs ``backend="nnsight"``), as for ``Probe``.
    backend : {"local", "nnsight"}, default "local"
        The extraction backend, as for ``Probe`` (ignored when ``probe=`` lends one).

    Examples
    --------
    >>> rd = ActivationBaseline("random_direction", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> rd.fit(positive_prompts, negative_prompts).score(test_prompts, test_labels)
    """

    def __init__(
        self,
        method: str = "random_direction",
        model: Any = None,
        layers: Any = -1,
        pooling: Any = "last_token",
        random_state: int | None = None,
        device: str = "auto",
        batch_size: int = 8,
        classifier: Any = "logistic_regression",
        classifier_kwargs: dict | None = None,
        n_components: int = 10,
        probe: Any = None,
        dtype: str | None = None,
        progress: bool | None = None,
        remote: bool = False,
        backend: str = "local",
    ) -> None:
        self.method = method
        self.model = model
        self.layers = layers
        self.pooling = pooling
        self.random_state = random_state
        self.device = device
        self.batch_size = batch_size
        self.classifier = classifier
        self.classifier_kwargs = classifier_kwargs
        self.n_components = n_components
        self.probe = probe
        self.dtype = dtype
        self.progress = progress
        self.remote = remote
        self.backend = backend

    # -- validation and the feature source -----------------------------------------

    def validate_params(self) -> None:
        check_method(self.method, "activation")
        from ...extraction.layers import is_selection_spec, is_sweep_spec, validate_spec
        from ...extraction.pooling import validate_pooling

        validate_spec(self.layers)
        if is_selection_spec(self.layers) or is_sweep_spec(self.layers):
            raise ValueError(
                f"layers={self.layers!r} selects or sweeps layers; an ActivationBaseline needs "
                "fixed layers (an int, a list of ints, 'middle', 'last' or 'all')"
            )
        validate_pooling(self.pooling)
        from ...extraction.pooling import pooling_stage
        from ...probes.probe import BACKENDS

        if pooling_stage(self.pooling, role="train") != "activation":
            raise ValueError(
                f"pooling={self.pooling!r} scores tokens; an ActivationBaseline needs one "
                "vector per prompt: use one of 'last_token', 'mean', 'first_token', 'max', "
                "'min', an 'activation:NAME' pooling or a callable"
            )
        if self.backend not in BACKENDS:
            raise ValueError(
                f"backend={self.backend!r} is not one of {quoted(BACKENDS)} (as for Probe)"
            )
        if self.remote and self.backend != "nnsight":
            raise ValueError(
                "remote=True needs backend='nnsight' (NDIF runs models through nnsight)"
            )
        if self.remote and self.method == "perplexity":
            raise ValueError(
                "method='perplexity' reads the model's logits from local weights; it does not "
                "run on NDIF: use remote=False"
            )
        if self.method == "pca" and (
            not isinstance(self.n_components, int) or self.n_components < 1
        ):
            raise ValueError(f"n_components={self.n_components!r} must be a positive int")

    def source_probe(self) -> Any:
        """The Probe whose model, extractor and prompt formatting supply features."""
        from ...extraction.models import LoadedModel
        from ...probes.probe import Probe

        lender = self.probe
        if lender is None and isinstance(self.model, Probe):
            lender = self.model
        if lender is not None:
            return lender
        if self.model is None:
            raise ValueError(
                f"ActivationBaseline(method={self.method!r}) needs model=... (a model ID, a "
                "local path, a LoadedModel or a Probe) to read activations from; "
                "text-only baselines are BaselineProbe(method=...)"
            )
        src = self.__dict__.get("_source_probe")
        if src is None:
            loaded = self.model if isinstance(self.model, LoadedModel) else None
            src = Probe(
                model=loaded.name if loaded is not None else self.model,
                layers=self.layers,
                pooling=self.pooling,
                device=self.device,
                batch_size=self.batch_size,
                dtype=self.dtype,
                progress=self.progress,
                remote=self.remote,
                backend=self.backend,
            )
            if loaded is not None:
                from ...extraction.runtime import ModelRuntime

                # reuse the caller's loaded model as is
                src.runtime = ModelRuntime.from_loaded(loaded, src.get_params())
            self._source_probe = src
        return src

    def prepare(self, prompts) -> list:
        """Prompts as the source probe reads them (chat template applied where set)."""
        src = self.source_probe()
        return src.runtime.prepare(prompts, chat_template=src.chat_template)

    def resolved_layers(self) -> list[int]:
        from ...extraction.layers import resolve_layers

        src = self.source_probe()
        return list(resolve_layers(self.layers, src.n_model_layers()))

    def layer_matrix(self, prepared: list[str], layers: list[int]) -> np.ndarray:
        from ...probes.features import concat_layers

        src = self.source_probe()
        acts = src.runtime.pooled(prepared, layers, self.pooling, roles=src.score_roles)
        return np.asarray(concat_layers(acts, layers), dtype=np.float32)

    def _matrix(self, prompts: list[str]) -> np.ndarray:
        """The method's input features for raw prompts."""
        src = self.source_probe()
        prepared = self.prepare(prompts)
        if self.method == "perplexity":
            loaded = src.runtime.loaded
            lp = mean_token_logprob(loaded, prepared, self.batch_size, self.progress)
            return lp.reshape(-1, 1)
        if self.method == "layer_0":
            ext = src.runtime.extractor()
            if hasattr(ext, "embedding_pooled") and not getattr(ext, "remote", False):
                return ext.embedding_pooled(prepared, self.pooling)
            return self.layer_matrix(prepared, [0])
        return self.layer_matrix(prepared, self.layers_)

    def _build_estimator(self, n_samples: int, n_features: int) -> Any:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        clf = make_classifier(self.classifier, self.random_state, self.classifier_kwargs)
        if self.method == "random_direction":
            rng = np.random.default_rng(self.random_state)
            w = rng.standard_normal(n_features)
            self.direction_ = (w / np.linalg.norm(w)).astype(np.float32)
            project = FunctionTransformer(_project, kw_args={"direction": self.direction_})
            return Pipeline([("project", project), ("scale", StandardScaler()), ("clf", clf)])
        if self.method == "pca":
            from sklearn.decomposition import PCA

            k = max(1, min(self.n_components, n_samples - 1, n_features))
            self.n_components_ = k
            pca = PCA(n_components=k, random_state=self.random_state)
            return Pipeline([("pca", pca), ("scale", StandardScaler()), ("clf", clf)])
        # layer_0 and perplexity: standardize, then the classifier (as a probe would).
        return Pipeline([("scale", StandardScaler()), ("clf", clf)])

    # -- fit / predict -------------------------------------------------------------

    def fit(self, positive: Sequence[str], negative: Sequence[Any] | None = None):
        """Fit on contrastive prompts or on prompts with labels.

        Parameters
        ----------
        positive : list of str
            Positive prompts (label 1), or all prompts when ``negative`` holds labels.
        negative : list of str or array-like of shape (n_prompts,)
            Negative prompts (label 0), or one label per prompt.

        Returns
        -------
        self
        """
        import time

        t0 = time.perf_counter()
        self.validate_params()
        prompts, y = split_fit_args(positive, negative)
        check_two_classes(y, self.method)
        self.layers_ = [0] if self.method == "layer_0" else self.resolved_layers()
        if self.method == "perplexity":
            self.layers_ = []
        X = self._matrix(prompts)
        self.estimator_ = self._build_estimator(len(X), X.shape[1])
        self.estimator_.fit(X, y)
        self.classes_ = np.asarray(self.estimator_.classes_)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict_both(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        from ...probes.classifiers import classifier_proba

        X = self._matrix(prompts)
        if len(X) == 0:
            return np.empty(0, dtype=self.classes_.dtype), np.zeros((0, len(self.classes_)))
        proba = np.asarray(classifier_proba(self.estimator_, X), dtype=np.float64)
        return np.asarray(self.estimator_.predict(X)), proba


def _project(X: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return (np.asarray(X, dtype=np.float32) @ direction).reshape(-1, 1)
