"""``ModelRuntime``: the one object that owns what a probe needs to run its model.

A probe, a layer sweep, a baseline, the battery and the monitor all read the same things:
the model's name and identity, its tokenizer, ``n_layers`` and context length, its weights
(only when an extraction really needs them), an extractor (transformers, nnsight or an
activation dataset), and prompt preparation (chat template, ``score_roles`` token masks).
They all go through a runtime instead of reaching into each other.

As in nnsight's split of a meta model and its dispatch, the runtime exists before its
weights do: the tokenizer, the layer count and the weights' fingerprint come from the
model's files, and the weights load on the first extraction. A remote (NDIF) runtime and
a dataset-backed runtime never load weights on this machine.
"""

from __future__ import annotations

import threading

import numpy as np

from ..inputs import check_batch_size, check_prompts, is_message_list

__all__ = ["RUNTIME_PARAMS", "RUN_OPTIONS", "ModelRuntime", "run_options"]

#: Per-call options of an extraction (``**run`` of :meth:`ModelRuntime.pooled`, ...), with
#: their defaults; they mean what they mean for :meth:`ModelRuntime.extractor`.
RUN_OPTIONS = {
    "remote": None,
    "batch_size": None,
    "max_retries": None,
    "executor": "local",
    "num_workers": None,
}


def run_options(run: dict, where: str) -> dict:
    """``run`` completed with the :data:`RUN_OPTIONS` defaults; an unknown name is a
    ``TypeError`` naming the valid ones."""
    unknown = sorted(set(run) - set(RUN_OPTIONS))
    if unknown:
        raise TypeError(
            f"{where}() got unexpected keyword argument(s) {unknown}; the extraction "
            f"options are {', '.join(RUN_OPTIONS)}"
        )
    return {**RUN_OPTIONS, **run}


#: Probe parameters that decide which model (and how) a runtime runs.
RUNTIME_PARAMS = (
    "model",
    "dataset",
    "backend",
    "remote",
    "device",
    "dtype",
    "batch_size",
    "progress",
)


class ModelRuntime:
    """Model access for probes: identity, tokenizer, lazy weights, extraction.

    Parameters
    ----------
    model : str or None
        Hub ID or local path (None: the bundled SmolLM2, unless ``dataset`` is given).
    dataset : str or None
        Activation dataset repo ID read instead of running a model.
    backend : {"local", "nnsight"}
    remote : bool
        nnsight remote execution on NDIF.
    device, dtype : str or None
        Where and in which dtype the weights run.
    batch_size : int
        Prompts per forward pass.
    progress : bool or None
        Progress bars (None: on unless ``LMPROBE_PROGRESS=0``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dataset: str | None = None,
        backend: str = "local",
        remote: bool = False,
        device: str | None = "auto",
        dtype=None,
        batch_size: int = 8,
        progress: bool | None = None,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.backend = backend
        self.remote = remote
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.progress = progress
        self._loaded = None
        self._extractors: dict = {}
        self._lock = threading.RLock()
        #: Cache hits of the last pooled extraction (prompts served without a forward pass).
        self.last_hits = 0

    @classmethod
    def from_params(cls, params: dict) -> ModelRuntime:
        """A runtime for a probe's parameters (see :data:`RUNTIME_PARAMS`)."""
        model = params.get("model")
        return cls(model, **{k: params[k] for k in RUNTIME_PARAMS[1:] if k in params})

    @classmethod
    def from_loaded(cls, loaded, params: dict | None = None) -> ModelRuntime:
        """A runtime over an already loaded model (no second load)."""
        rt = cls.from_params({**(params or {}), "model": loaded.name})
        rt._loaded = loaded
        return rt

    def config(self) -> dict:
        return {k: getattr(self, k) for k in RUNTIME_PARAMS}

    def serves(self, params: dict) -> bool:
        """Does this runtime run the model that ``params`` ask for?"""
        mine = self.config()
        return all(params.get(k, mine[k]) == mine[k] for k in RUNTIME_PARAMS)

    def __repr__(self) -> str:
        what = f"dataset={self.dataset!r}" if self.dataset else f"model={self.model_name!r}"
        state = "loaded" if self._loaded is not None else "not loaded"
        return f"ModelRuntime({what}, backend={self.backend!r}, {state})"

    # ------------------------------------------------------------------ identity
    @property
    def uses_local_weights(self) -> bool:
        """Whether extraction runs weights on this machine (not NDIF, not a dataset)."""
        return self.dataset is None and not (self.backend == "nnsight" and self.remote is True)

    @property
    def dataset_info(self) -> dict | None:
        """The activation dataset's ``info.json`` (None without ``dataset``)."""
        return None if self.dataset is None else self._backend().info

    @property
    def model_name(self) -> str:
        """The model this runtime reads (the bundled default when none was given)."""
        if self.dataset is not None:
            return self.model or self.dataset_info["model_name"]
        from .models import DEFAULT_MODEL

        return self.model or DEFAULT_MODEL

    @property
    def is_loaded(self) -> bool:
        """Whether local weights have been loaded."""
        return self._loaded is not None

    @property
    def loaded(self):
        """The :class:`~.models.LoadedModel` (loads local weights on first use).

        For nnsight it is the backend's model (a weightless stand-in when remote).
        """
        if self.dataset is not None:
            raise ValueError(
                f"dataset={self.dataset!r} probes read stored activations and have no model "
                "weights; give model= to run one"
            )
        if self.backend == "nnsight":
            return self._backend().loaded
        with self._lock:
            if self._loaded is None:
                from .models import load_model

                self._loaded = load_model(self.model_name, device=self.device, dtype=self.dtype)
        return self._loaded

    @property
    def compute_dtype(self) -> str | None:
        """The dtype the weights compute in on this machine (``"bfloat16"`` for
        ``dtype="auto"`` on hardware with native bf16); None where the weights are not run
        here (NDIF, activation datasets). Resolved without loading weights."""
        if not self.uses_local_weights:
            return None
        if self._loaded is not None or self.backend == "nnsight":
            return self.loaded.dtype_name
        from .models import resolve_device, resolve_dtype

        return str(resolve_dtype(self.dtype, resolve_device(self.device))).removeprefix("torch.")

    def load(self):
        """Load the weights now (if this runtime runs any locally); returns ``self``."""
        if self.uses_local_weights:
            _ = self.loaded
        return self

    @property
    def fingerprint(self) -> str | None:
        """Identity of the weights this runtime reads (no weights are loaded for it)."""
        if self.dataset is not None:
            return (self.dataset_info or {}).get("model_fingerprint")
        if self._loaded is not None or self.backend == "nnsight":
            return self.loaded.fingerprint
        from .models import resolve_model

        return resolve_model(self.model_name)[2]

    @property
    def tokenizer(self):
        """The model's tokenizer; never loads weights."""
        if self._loaded is not None:
            return self._loaded.tokenizer
        if self.backend == "nnsight" and self.dataset is None:
            return self._backend().loaded.tokenizer
        from .models import load_tokenizer

        return load_tokenizer(self.model_name)

    @property
    def n_layers(self) -> int:
        """Number of decoder layers of the model (or of the dataset's model)."""
        if self.dataset is not None or self.backend == "nnsight":
            return self._backend().n_layers
        if self._loaded is not None:
            return self._loaded.n_layers
        from .models import model_n_layers

        return model_n_layers(self.model_name)

    @property
    def max_length(self) -> int:
        """Longest input the model reads (tokens)."""
        if self.backend == "nnsight" or self._loaded is not None:
            return self.loaded.max_length
        from .models import config_context_length

        return config_context_length(self.model_name, self.tokenizer)

    # ------------------------------------------------------------------ extraction
    def extractor(
        self,
        remote: bool | None = None,
        batch_size: int | None = None,
        max_retries=None,
        executor: str = "local",
        num_workers: int | None = None,
    ):
        """The extraction backend: transformers, nnsight or an activation dataset.

        ``max_retries`` sets how often a failed remote batch is retried (nnsight; see
        :mod:`.retry`) for the extractions that follow. This is the one place extraction
        is dispatched: ``executor="ray"`` returns a :class:`~.distributed.RayExtractor`
        running the same extraction on ``num_workers`` Ray workers (same vectors, same
        cache entries).
        """
        from .distributed import check_executor

        check_executor(executor, num_workers)
        if executor == "ray":
            return self.ray_extractor(num_workers, batch_size)
        ext = self._extractor_for(remote, batch_size)
        if hasattr(ext, "retry"):
            from .retry import RetryPolicy

            ext.retry = RetryPolicy(max_retries)
        return ext

    def _backend(self):
        """The default extractor, for what it knows about the model (info, layer count,
        tokenizer): unlike :meth:`extractor`, it leaves the per-call retry policy alone."""
        return self._extractor_for(None, None)

    def ray_extractor(self, num_workers: int | None = None, batch_size: int | None = None):
        """The Ray counterpart of :meth:`extractor` (see :mod:`.distributed`).

        Workers load the model themselves; this process loads no weights for it (only the
        tokenizer, to cut length-sorted chunks) and writes what they return to the cache.
        """
        if self.dataset is not None or self.backend != "local":
            what = f"dataset={self.dataset!r}" if self.dataset else f"backend={self.backend!r}"
            raise ValueError(
                f"executor='ray' runs the transformers backend on Ray workers; this probe has "
                f"{what}; use executor='local'"
            )
        bs = batch_size or self.batch_size
        key = ("ray", num_workers, bs)
        with self._lock:
            ext = self._extractors.get(key)
            if ext is None:
                from .distributed import RayExtractor
                from .models import model_key

                ext = RayExtractor(
                    self.model_name,
                    device=self.device,
                    dtype=self.dtype,
                    num_workers=num_workers,
                    batch_size=bs,
                    progress=self.progress,
                    model_key=self._loaded.key
                    if self._loaded
                    else model_key(self.model_name, self.device, self.dtype),
                    tokenizer=self.tokenizer,
                )
                self._extractors[key] = ext
            return ext

    def _extractor_for(self, remote: bool | None, batch_size: int | None):
        remote = self.remote if remote is None else remote
        bs = check_batch_size(batch_size) or self.batch_size
        key = (remote, bs)
        with self._lock:
            ext = self._extractors.get(key)
            if ext is not None:
                return ext
            if self.dataset is not None:
                from ..sharing.datasets import DatasetExtractor

                ext = DatasetExtractor(self.dataset, progress=self.progress)
            elif self.backend == "nnsight":
                from .nnsight_backend import NNsightExtractor

                ext = NNsightExtractor(
                    self.model_name,
                    remote=remote,
                    device=self.device,
                    dtype=self.dtype,
                    batch_size=bs,
                    progress=self.progress,
                )
            else:
                from .extractor import Extractor

                ext = Extractor(self.loaded, batch_size=bs, progress=self.progress)
            self._extractors[key] = ext
            return ext

    def prepare(self, prompts, chat_template: bool = False) -> list:
        """Validate prompts and render chat prompts (``chat_template`` or message lists)."""
        prompts = check_prompts(prompts)
        if not chat_template and not any(is_message_list(p) for p in prompts):
            return prompts
        from .chat import format_chat

        return [
            format_chat(self.tokenizer, p, force=chat_template, model_name=self.model_name)
            for p in prompts
        ]

    def check_layers(self, layers) -> list[int]:
        """``layers`` as ints, each one a decoder layer of this model (``0..n_layers-1``).

        A probe trained on a deeper model, pointed at a shallower one, fails here with
        both numbers rather than as an ``IndexError`` inside a forward hook.
        """
        layers = [int(x) for x in layers]
        n = self.n_layers
        bad = [x for x in layers if not 0 <= x < n]
        if bad:
            raise ValueError(
                f"layer(s) {bad} do not exist in {self.model_name!r}, which has {n} layers "
                f"(0..{n - 1}); a probe trained on a model's layers {layers} cannot read this "
                "one: give the probe the model it was trained on, or fit a new probe"
            )
        return layers

    def role_masks(self, prompts, roles) -> list[np.ndarray]:
        """Per prepared prompt, the tokens whose text belongs to a message of ``roles``."""
        from .chat import role_token_masks

        return role_token_masks(self.tokenizer, prompts, roles, self.max_length)

    def pooled(
        self,
        prompts,
        layers,
        pooling,
        *,
        roles=None,
        **run,
    ) -> dict[int, np.ndarray]:
        """Pooled activations of prepared prompts, ``{layer: (n, hidden)}`` float32.

        ``pooling`` is an activation-stage pooling (``activation:max`` and ``max`` are the
        same vectors, cached once). With ``roles``, pooling reads only the tokens of those
        chat roles. ``run``: the extraction options :data:`RUN_OPTIONS` (``remote``,
        ``batch_size``, ``max_retries``, ``executor``, ``num_workers``, as for
        :meth:`extractor`); ``executor="ray"`` runs it on ``num_workers`` Ray workers.
        """
        from .pooling import extractor_pooling

        pooling = extractor_pooling(pooling)
        ext = self.extractor(**run_options(run, "pooled"))
        layers = self.check_layers(layers)
        if roles is None:
            acts = ext.pooled(prompts, layers, pooling)
        else:
            from .chat import normalize_roles, roles_key

            roles = normalize_roles(roles)
            masks = self.role_masks(prompts, roles)
            if not getattr(ext, "supports_token_masks", False):
                raise ValueError(
                    f"score_roles={roles!r} is only supported by backend='local' without "
                    f"dataset=; {type(ext).__name__} pools every token"
                )
            acts = ext.pooled(
                prompts, layers, pooling, token_masks=masks, key_suffix=roles_key(roles)
            )
        self.last_hits = getattr(ext, "last_hits", 0)
        return acts

    def pooled_many(
        self,
        prompts,
        layers,
        poolings,
        *,
        roles=None,
        **run,
    ) -> dict:
        """Several activation-stage poolings of prepared prompts, from one forward pass
        per batch where the extractor can (transformers backend, cache on, no ``roles``;
        with ``executor="ray"``, one Ray run per pooling). ``run``: as for :meth:`pooled`.

        Returns
        -------
        dict
            ``{pooling: {layer: (n, hidden)}}`` keyed by the poolings as given.
        """
        from .pooling import extractor_pooling

        poolings = list(dict.fromkeys(poolings))
        names = [extractor_pooling(p) for p in poolings]
        ext = self.extractor(**run_options(run, "pooled_many"))
        if roles is None and hasattr(ext, "pooled_many"):
            got = ext.pooled_many(prompts, list(layers), list(dict.fromkeys(names)))
            self.last_hits = getattr(ext, "last_hits", 0)
            return {p: got[n] for p, n in zip(poolings, names)}
        return {p: self.pooled(prompts, layers, p, roles=roles, **run) for p in poolings}

    def token_features(
        self,
        prompts,
        layers,
        *,
        roles=None,
        score_special_tokens: bool = True,
        **run,
    ):
        """Per-token activations of prepared prompts and the tokens a probe may score.

        Always in this process: ``executor="ray"`` (pooled extraction only) raises.
        ``run``: as for :meth:`pooled`.

        Parameters
        ----------
        score_special_tokens : bool, default True
            False leaves position 0 (the attention sink) and special tokens (BOS/EOS,
            chat-template control tokens) unscored (:mod:`.token_masks`); a prompt with
            no other token keeps all of its tokens.

        Returns
        -------
        toks : list of TokenActs
        keep : list of bool ndarray of shape (n_tokens,), or None
            Per prompt, the tokens of ``roles`` (when given) that may be scored; None
            means every token.
        """
        opts = self._check_local_tokens(run, "token_features")
        layers = self.check_layers(layers)
        ext = self.extractor(opts["remote"], opts["batch_size"], opts["max_retries"])
        toks = ext.per_token(prompts, layers)
        keep = self._keep_masks(prompts, [len(t.tokens) for t in toks], roles, score_special_tokens)
        return toks, keep

    def token_feature_chunks(self, prompts, layers, *, budget: int | None = None, **kwargs):
        """:meth:`token_features` a chunk of prompts at a time, so that scoring many long
        prompts never holds all their ``(seq, hidden)`` activations: chunks of at most
        ``budget`` float32 bytes (default :data:`~.token_store.CHUNK_BYTES`; longest
        prompts first, as :func:`~.token_store.chunk_plan` groups them). ``kwargs``: as
        for :meth:`token_features`.

        Yields
        ------
        (indices, toks, keep)
            The chunk's positions in ``prompts`` and :meth:`token_features` of them.
        """
        from ..cache.token_store import chunk_plan

        prompts = list(prompts)
        layers = self.check_layers(layers)
        if not prompts:
            return
        if self.dataset is not None:  # no model to tokenize with: token_features says why
            yield list(range(len(prompts))), *self.token_features(prompts, layers, **kwargs)
            return
        limit = self.max_length
        ids = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        width = self.loaded.hidden_size * len(layers)
        for chunk in chunk_plan([min(len(x), limit) for x in ids], width, budget):
            toks, keep = self.token_features([prompts[i] for i in chunk], layers, **kwargs)
            yield chunk, toks, keep

    def _keep_masks(self, prompts, lengths, roles, score_special_tokens: bool):
        """The tokens a probe may score per prompt of ``lengths`` tokens (None: all)."""
        keep = None if roles is None else self.role_masks(prompts, roles)
        if not score_special_tokens:
            from .token_masks import scored_token_masks

            ids = self.tokenizer(list(prompts), add_special_tokens=True, truncation=False)
            scored = scored_token_masks(
                self.tokenizer, [x[:n] for x, n in zip(ids["input_ids"], lengths)]
            )
            scored = [m if m.any() else np.ones_like(m) for m in scored]
            if keep is None:
                keep = scored
            else:
                keep = [k[: len(m)] & m for k, m in zip(keep, scored)]
        return keep

    def _check_local_tokens(self, run: dict, where: str) -> dict:
        from .distributed import check_executor

        opts = run_options(run, where)
        check_executor(opts["executor"], opts["num_workers"])
        if opts["executor"] == "ray":
            raise ValueError(
                "executor='ray' distributes pooled extraction; per-token activations "
                "(pooling='all', score-stage inference poolings, sequence classifiers) run "
                "with executor='local'"
            )
        return opts

    def token_source(
        self,
        prompts,
        layers,
        *,
        roles=None,
        score_special_tokens: bool = True,
        **run,
    ):
        """Per-token activations of prepared prompts as a lazy, disk-backed token source.

        What sequence probes train on and read (:mod:`.token_store`): prompts already in
        the per-token store are not run again; the others are extracted in chunks
        (longest first, :data:`~.token_store.CHUNK_BYTES` of float32 at a time), each
        chunk written to the store and dropped. The returned source reads ``batch_size``
        prompts per :meth:`~.sequence_base.TokenSource.take`, so neither extraction nor
        training ever holds all ``(n, seq, hidden)``. With the activation cache off
        (``set_cache_enabled(False)``) or read-only, the activations are extracted into
        memory instead (the same numbers, unrounded). ``run``: as for :meth:`pooled`
        (``executor="ray"`` raises).

        Returns
        -------
        StoredTokens
            ``source`` gives ``(seq_i, hidden * len(layers))`` float32 per prompt (layers
            side by side in the order given), with its scored-token mask.
        """
        from ..cache.token_store import StoredTokens, StoredTokenSource, TokenStore, chunk_plan
        from ..probes.sequence_base import ArrayTokenSource
        from .extractor import TokenActs

        opts = self._check_local_tokens(run, "token_source")
        layers = self.check_layers(layers)
        prompts = list(prompts)
        ext = self.extractor(opts["remote"], opts["batch_size"], opts["max_retries"])
        limit = self.max_length
        ids = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        lengths = [min(len(x), limit) for x in ids]
        keep = self._keep_masks(prompts, lengths, roles, score_special_tokens)
        masks = [
            np.ones(n, dtype=bool) if keep is None else np.asarray(k[:n], dtype=bool)
            for k, n in zip(keep or [None] * len(prompts), lengths)
        ]

        def pieces():
            return [
                TokenActs(p, tokens, offsets, {})
                for p, n in zip(prompts, lengths)
                for offsets, tokens in [ext.token_pieces(p, n)]
            ]

        store = None
        if getattr(ext, "use_cache", False) and getattr(ext, "loaded", None) is not None:
            from ..cache.settings import get_cache

            store = TokenStore(get_cache(), ext.loaded.key, layers)
        if store is None or not store.usable:
            got = ext.per_token(prompts, layers)
            self.last_hits = getattr(ext, "last_hits", 0)
            X = [np.concatenate([t.acts[x] for x in layers], axis=1) for t in got]
            n_new = len(prompts) - self.last_hits
            return StoredTokens(
                ArrayTokenSource(X, masks), masks, self.last_hits, n_new, lambda: got
            )
        held = store.held(prompts)
        todo = list(dict.fromkeys(p for p, h in zip(prompts, held) if not h))
        by_prompt = {p: n for p, n in zip(prompts, lengths)}
        in_memory = {}  # prompt -> acts the store could not keep
        width = ext.loaded.hidden_size * len(layers)
        for chunk in chunk_plan([by_prompt[p] for p in todo], width):
            part = [todo[j] for j in chunk]
            toks = ext.per_token(part, layers)
            written = store.write(part, [t.acts for t in toks])
            for p, acts, ok in zip(part, written, store.held(part)):
                if not ok:
                    in_memory[p] = acts
            del toks, written
        self.last_hits = len(prompts) - sum(not h for h in held)

        def refetch(ps):
            return [t.acts for t in ext.per_token(list(ps), layers)]

        source = StoredTokenSource(
            store,
            prompts,
            masks,
            refetch,
            held={i: in_memory[p] for i, p in enumerate(prompts) if p in in_memory},
        )
        return StoredTokens(source, masks, self.last_hits, len(todo), pieces)

    def training_set(
        self,
        prompts,
        labels,
        layers,
        pooling,
        *,
        roles=None,
        score_special_tokens: bool = True,
        return_owner: bool = False,
        **run,
    ):
        """Training samples for ``pooling`` over ``layers``: one pooled vector per prompt,
        or for ``pooling="all"`` every (scored) token with its prompt's label. ``run``: as
        for :meth:`pooled`. ``score_special_tokens=False`` leaves the attention sink and
        special tokens out of ``pooling="all"`` training (as :meth:`token_features`).

        Returns
        -------
        X_layers : dict of int to ndarray of shape (n_samples, hidden)
        labels : ndarray of shape (n_samples,)
        owner : ndarray of shape (n_samples,)
            Only with ``return_owner``: the prompt index of every sample.
        """
        labels = np.asarray(labels)
        if pooling != "all":
            X = self.pooled(prompts, layers, pooling, roles=roles, **run)
            return (X, labels, np.arange(len(labels))) if return_owner else (X, labels)
        toks, keep = self.token_features(
            prompts, layers, roles=roles, score_special_tokens=score_special_tokens, **run
        )
        keep = keep or [np.ones(len(t.tokens), bool) for t in toks]
        per_layer = {
            layer: np.concatenate([t.acts[layer][k] for t, k in zip(toks, keep)])
            for layer in layers
        }
        owner = np.concatenate([np.full(int(k.sum()), i) for i, k in enumerate(keep)])
        return (per_layer, labels[owner], owner) if return_owner else (per_layer, labels[owner])

    def embedding_pooled(self, prompts, pooling) -> np.ndarray:
        """Pooled input embeddings (no transformer block runs), shape (n, hidden)."""
        return self.extractor().embedding_pooled(prompts, pooling)
