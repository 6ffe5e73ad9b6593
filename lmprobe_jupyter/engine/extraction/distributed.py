"""Pooled extraction on a Ray cluster, feeding the shared activation cache.

For prompt sets too big for one machine (hundreds of thousands of chat logs to score, a
million-prompt activation dataset). Nothing here schedules work by hand: prompts become
a Ray Data dataset and go through ``map_batches`` with an actor pool
(:class:`ray.data.ActorPoolStrategy`), one model per worker, a GPU per worker where the
cluster has GPUs and ``worker_cpus`` CPUs otherwise.

How it runs
-----------
- **The same extraction code as the local path.** Each worker builds
  ``Extractor(load_model(...), use_cache=False)`` once and calls its public ``pooled``
  on every chunk it gets, so length-sorted batches, the early stop after the deepest
  layer and pooling on the device are exactly those of a single process. The driver
  sorts prompts by length before cutting them into chunks, so each worker's chunk
  already holds prompts of similar length (little padding).
- **Only uncached prompts are sent.** The driver looks every prompt up first; a rerun
  after an interruption (or on another machine sharing an S3 cache) sends only what is
  missing, and a fully cached call starts no Ray work at all.
- **The driver writes the cache; workers never do.** Results are stored chunk by chunk
  as they arrive (an interrupted driver keeps every finished chunk). One writer means an
  entry is written once: a retried chunk's output from a dead worker never reaches the
  driver, and ``ActivationCache.store`` skips keys already present, so no entry is
  written twice; shards are written to a temporary name and renamed, so none is half
  written. It also works with the S3 mirror as it is (the driver's cache uploads each
  shard write-through), without S3 credentials or a local index on every worker, and
  without many sqlite writers contending on one index.
- **Lost workers.** A worker process that dies (crash, OOM kill, lost node, ``ray.kill``
  with restart) is restarted by Ray and its chunk retried (Ray Data's actors have
  unlimited restarts and task retries). If the run fails anyway (a worker killed for
  good, a pool that cannot restart), the driver keeps what it stored and runs again on
  what is left, up to ``max_attempts`` times. A worker that cannot start (a missing
  dependency, checked first; weights whose fingerprint differs from the driver's, which
  would poison a shared cache) fails the call at once with that worker's error line.
- **Connecting.** ``address=`` or ``$RAY_ADDRESS`` connects to a running cluster; without
  either (and without an initialized Ray), a local instance starts on 127.0.0.1 with no
  dashboard, and is shut down when the call ends. (Ray binds a local instance to the
  machine's routable address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before
  Ray is imported; we set it then, when there is no cluster address, so a process that
  later joins a remote cluster as a full driver should set ``RAY_ADDRESS`` first.) A Ray already initialized by the
  caller is used as it is and left running.

Each chunk on a worker costs a task round trip on top of its forward passes (measured in
``bench/ray_extraction.py``); chunks of ``chunk_size`` prompts keep that small.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Sequence

import numpy as np

from .extractor import progress_enabled
from .pooling import pooling_key, validate_pooling

__all__ = [
    "EXECUTORS",
    "WORKER_REQUIREMENTS",
    "RayExtractor",
    "check_executor",
    "check_worker_dependencies",
    "ray_session",
]

#: Ways to run extraction: in this process, or on a Ray cluster.
EXECUTORS = ("local", "ray")

#: What every Ray worker must import to run the model.
WORKER_REQUIREMENTS = ("torch", "transformers")

# Errors that mean a worker (or its node) was lost, not that the extraction code failed:
# the driver stores what finished and runs again on the rest.
_LOST_WORKER_ERRORS = (
    "ActorDiedError",
    "ActorUnavailableError",
    "NodeDiedError",
    "WorkerCrashedError",
    "ObjectLostError",
    "OwnerDiedError",
    "LocalRayletDiedError",
)

_ACTIVATION_POOLINGS = ("last_token", "mean", "first_token", "max", "min")


def check_executor(executor: str, num_workers: int | None = None) -> None:
    """Validate the ``executor=`` / ``num_workers=`` keywords of the extraction entry points."""
    if executor not in EXECUTORS:
        raise ValueError(
            f"executor={executor!r} is not one of {', '.join(map(repr, EXECUTORS))}; use "
            "'ray' to extract on a Ray cluster (pip install 'lmprobe-jupyter[ray]')"
        )
    if num_workers is not None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers={num_workers!r} must be a positive int or None")
        if executor == "local" and num_workers != 1:
            raise ValueError(
                f"num_workers={num_workers!r} needs executor='ray' (the local executor runs "
                "in this one process)"
            )


def check_worker_dependencies(modules: Sequence[str] = WORKER_REQUIREMENTS) -> None:
    """Raise ImportError naming the first of ``modules`` this process cannot import.

    Called by every Ray worker before it loads the model, so a cluster whose image lacks
    a dependency fails at once with the missing name and the fix.
    """
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ImportError(
                f"Ray worker on {socket.gethostname()} cannot import {name!r}, which "
                "extraction needs: install lmprobe-jupyter with its dependencies on every "
                "node (pip install 'lmprobe-jupyter[ray]'), or pass "
                "ray_remote_args={'runtime_env': {'pip': [...]}}"
            )


#: Ray's switch for "this machine only": node addresses and every listening socket of a
#: local instance stay on 127.0.0.1. Read once, when Ray is imported.
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray(address: str | None = None):
    """Import Ray; before its first import with no cluster to join, keep it on loopback."""
    if "ray" not in sys.modules and not (address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault(_RAY_LOOPBACK_ENV, "0")
    try:
        import ray
        import ray.data  # noqa: F401 - the actor pool lives in Ray Data
    except ImportError:
        raise ImportError(
            "executor='ray' needs Ray Data: pip install 'lmprobe-jupyter[ray]' "
            "(or pip install 'ray[data]')"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Use the initialized Ray, connect to a cluster, or start a local instance.

    Parameters
    ----------
    address : str, optional
        A cluster address (``"ray://host:10001"``, ``"host:6379"``, ``"auto"``); default
        ``$RAY_ADDRESS``. Without either, a local instance starts on 127.0.0.1 with no
        dashboard.
    num_cpus : int, optional
        CPUs of a local instance (default: this machine's).

    Yields
    ------
    bool
        Whether this call started (and will shut down) the Ray connection.
    """
    ray = _ray(address)
    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"log_to_driver": True, "logging_level": "warning"}
    if address:
        ray.init(address=address, **quiet)
    else:
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
        except Exception:  # noqa: BLE001 - e.g. "node timed out during startup" under load
            # A machine busy enough to time out Ray's start-up usually lets a second try
            # through; a real misconfiguration fails again and raises.
            ray.shutdown()
            ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
        if ray.util.get_node_ip_address() != "127.0.0.1":
            warnings.warn(
                f"the local Ray instance listens on {ray.util.get_node_ip_address()}, not only "
                f"127.0.0.1: Ray was imported before lmprobe could set {_RAY_LOOPBACK_ENV}=0; "
                "set it in the environment to keep a local instance on loopback",
                stacklevel=3,
            )
    try:
        yield True
    finally:
        ray.shutdown()


class _PooledWorker:
    """One Ray Data actor: loads the model once, pools every chunk it is given."""

    def __init__(
        self, model, device, dtype, expected_key, layers, pooling, batch_size, key_suffix
    ) -> None:
        check_worker_dependencies()
        from .extractor import Extractor
        from .models import load_model

        loaded = load_model(model, device=device, dtype=dtype)
        if loaded.key != expected_key:
            raise RuntimeError(
                f"the Ray worker on {socket.gethostname()} loaded model {model!r} as "
                f"{loaded.key!r} but the driver caches it as {expected_key!r}: its weights "
                "differ; give every node the same model files"
            )
        self.extractor = Extractor(loaded, batch_size=batch_size, progress=False, use_cache=False)
        self.layers = layers
        self.pooling = pooling
        self.key_suffix = key_suffix

    def __call__(self, batch: dict) -> dict:
        """Pool each chunk (one dataset row: its prompts, their rows, their masks)."""
        from .extractor import Extractor

        rows, calls, secs, pooled = [], [], [], {layer: [] for layer in self.layers}
        for j in range(len(batch["rows"])):
            prompts = [str(p) for p in batch["prompts"][j]]
            masks = None
            if "masks" in batch:
                masks = [np.asarray(m, dtype=bool) for m in batch["masks"][j]]
            before, t0 = Extractor.forward_calls, time.perf_counter()
            out = self.extractor.pooled(
                prompts, self.layers, self.pooling, token_masks=masks, key_suffix=self.key_suffix
            )
            # per chunk, on its first row: forward passes run and seconds spent extracting
            calls.append(np.zeros(len(prompts), np.int64))
            calls[-1][:1] = Extractor.forward_calls - before
            secs.append(np.zeros(len(prompts), np.float64))
            secs[-1][:1] = time.perf_counter() - t0
            rows.append(np.asarray(batch["rows"][j], np.int64))
            for layer in self.layers:
                pooled[layer].append(out[layer])
        result = {
            "row": np.concatenate(rows),
            "forward_calls": np.concatenate(calls),
            "seconds": np.concatenate(secs),
        }
        for layer in self.layers:
            result[f"layer_{layer}"] = np.concatenate(pooled[layer])
        return result


class RayExtractor:
    """Pooled activations computed on a Ray cluster, cached by the driver.

    The distributed counterpart of :meth:`Extractor.pooled`, with the same results
    (within float tolerance) and the same cache entries.

    Parameters
    ----------
    model : str or None
        Hub ID or local path, as for :func:`load_model` (None: the bundled SmolLM2). Every
        worker must be able to load it.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Device on each worker. With "auto" or "cuda" and GPUs in the cluster, each worker
        gets one GPU.
    dtype : {"float32", "float16", "bfloat16"} or None
    num_workers : int, optional
        Actors (model copies). Default: the cluster's GPUs if it has any (and ``device``
        allows), else its CPUs divided by ``worker_cpus``.
    batch_size : int, default 8
        Prompts per forward pass on a worker.
    chunk_size : int, default 64
        Prompts per task sent to a worker (and per cache write on the driver), rounded up
        to whole batches: prompts sorted by token length are cut into chunks of whole
        batches, so every batch is the one the local path would form (identical floats).
    worker_cpus : int, default 1
        CPUs reserved per worker (its torch threads) when it has no GPU.
    address : str, optional
        Ray cluster address (default ``$RAY_ADDRESS``; none: a local instance).
    model_key : str, optional
        The model's cache identity (``LoadedModel.key``), if the driver already knows it;
        default: resolved from ``model`` on the driver without loading weights.
    progress : bool or None
        One ``tqdm.auto`` bar across all workers (None: on unless ``LMPROBE_PROGRESS=0``).
    use_cache : bool, default True
    max_attempts : int, default 3
        Runs over what is left after a run fails on a lost worker.
    ray_remote_args : dict, optional
        Extra Ray options for the workers (``runtime_env``, ``accelerator_type``,
        ``num_gpus``, ...).
    tokenizer : transformers tokenizer, optional
        Used on the driver to sort prompts by token length (default: loaded from the
        model's files when the driver has them; else prompts are sorted by characters).

    Attributes
    ----------
    last_hits, last_misses : int
        Prompts answered by the cache / computed on the cluster by the last call.
    last_forward_calls : int
        Forward passes the workers ran for the last call (0 when all were cached).
    last_attempts : int
        Ray runs the last call needed (0 when all were cached).
    last_seconds : dict of str to float
        Where the last call's time went: ``"wall"`` (the whole call), ``"startup"`` (until
        the first chunk arrived, less that chunk's extraction: starting the pool, each
        worker importing torch and loading the model), ``"extract"`` (summed over workers:
        time inside ``Extractor.pooled``).
    """

    #: Like :class:`Extractor`, pools over per-prompt token masks (``score_roles``).
    supports_token_masks = True

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = "auto",
        dtype: str | None = None,
        num_workers: int | None = None,
        batch_size: int = 8,
        chunk_size: int = 64,
        worker_cpus: int = 1,
        address: str | None = None,
        model_key: str | None = None,
        progress: bool | None = None,
        use_cache: bool = True,
        max_attempts: int = 3,
        ray_remote_args: dict | None = None,
        tokenizer=None,
    ) -> None:
        for name, value in (
            ("batch_size", batch_size),
            ("chunk_size", chunk_size),
            ("worker_cpus", worker_cpus),
            ("max_attempts", max_attempts),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        check_executor("ray", num_workers)
        self.model = model
        self.device = device
        self.dtype = dtype
        self.num_workers = num_workers
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.worker_cpus = worker_cpus
        self.address = address
        self.model_key = model_key
        self.progress = progress
        self.use_cache = use_cache
        self.max_attempts = max_attempts
        self.ray_remote_args = dict(ray_remote_args or {})
        self.tokenizer = tokenizer
        self.last_hits = 0
        self.last_misses = 0
        self.last_forward_calls = 0
        self.last_attempts = 0

    # ------------------------------------------------------------------ public
    def key(self) -> str:
        """The model's cache identity (resolved once, without loading weights)."""
        if self.model_key is None:
            from .models import model_key

            self.model_key = model_key(self.model, self.device, self.dtype)
        return self.model_key

    def pooled(
        self,
        prompts: list[str],
        layers: list[int],
        pooling,
        token_masks: list[np.ndarray] | None = None,
        key_suffix: str = "",
    ) -> dict[int, np.ndarray]:
        """Pooled activations, shape (n_prompts, hidden) float32 per layer.

        Same parameters and results as :meth:`Extractor.pooled`.

        Parameters
        ----------
        prompts : list of str
        layers : list of int
        pooling : str or callable
            ``"last_token"``, ``"mean"``, ``"first_token"``, ``"max"``, ``"min"`` or a
            picklable callable ``f(hidden: Tensor[seq, hidden]) -> Tensor[hidden]``.
        token_masks : list of bool ndarray of shape (n_tokens,), optional
        key_suffix : str

        Returns
        -------
        dict of int to ndarray of shape (n_prompts, hidden)
        """
        from ..cache.settings import get_cache

        prompts = [str(p) for p in prompts]
        layers = sorted(set(int(x) for x in layers))
        if not layers or min(layers) < 0:
            raise ValueError(f"layers={layers!r} must be non-empty non-negative layer indices")
        self._check_pooling(pooling)
        if token_masks is not None and len(token_masks) != len(prompts):
            raise ValueError(f"got {len(token_masks)} token masks for {len(prompts)} prompts")
        key = self.key()
        pk = pooling_key(pooling) + key_suffix
        unique = list(dict.fromkeys(prompts))
        masks = None
        if token_masks is not None:
            by_prompt = {p: m for p, m in zip(reversed(prompts), reversed(token_masks))}
            masks = [np.asarray(by_prompt[p], dtype=bool) for p in unique]
        cache = get_cache() if self.use_cache else None
        if cache is not None and not cache.enabled:
            cache = None
        got: dict[int, list] = {layer: [None] * len(unique) for layer in layers}
        if cache is not None:
            for layer in layers:
                got[layer] = list(cache.lookup(key, unique, layer, pk))
        need = [i for i in range(len(unique)) if any(got[x][i] is None for x in layers)]
        missing = {unique[i] for i in need}
        self.last_misses = sum(p in missing for p in prompts)
        self.last_hits = len(prompts) - self.last_misses
        self.last_forward_calls = 0
        self.last_attempts = 0
        self.last_seconds = {"wall": 0.0, "startup": 0.0, "extract": 0.0}
        t_call = time.perf_counter()
        if need:
            self._run(unique, masks, need, layers, pooling, key_suffix, pk, key, cache, got)
        row = {p: j for j, p in enumerate(unique)}
        out = {}
        for layer in layers:
            vecs = got[layer]
            if not prompts:
                out[layer] = np.zeros((0, 0), np.float32)
                continue
            stacked = np.stack(vecs).astype(np.float32, copy=False)
            out[layer] = (
                stacked if len(unique) == len(prompts) else stacked[[row[p] for p in prompts]]
            )
        self.last_seconds["wall"] = time.perf_counter() - t_call
        return out

    # ---------------------------------------------------------------- internals
    def _check_pooling(self, pooling) -> None:
        validate_pooling(pooling)
        if isinstance(pooling, str) and pooling not in _ACTIVATION_POOLINGS:
            raise ValueError(
                f"pooling={pooling!r} is a score-level pooling; extraction takes one of "
                f"{', '.join(map(repr, _ACTIVATION_POOLINGS))} or a callable"
            )
        if callable(pooling):
            cloudpickle = _ray(self.address).cloudpickle

            try:
                cloudpickle.dumps(pooling)
            except Exception as exc:  # noqa: BLE001 - any pickling failure means the same
                raise TypeError(
                    f"pooling={pooling!r} cannot be sent to Ray workers "
                    f"({type(exc).__name__}: {exc}); use a named pooling or a plain function"
                ) from None

    def _resources(self, ray) -> tuple[int, dict]:
        total = ray.cluster_resources()
        gpus = int(total.get("GPU", 0))
        use_gpu = gpus > 0 and (
            self.device in (None, "auto") or str(self.device).startswith("cuda")
        )
        args: dict = {"num_gpus": 1} if use_gpu else {"num_cpus": self.worker_cpus}
        args.update(self.ray_remote_args)
        n = self.num_workers
        if n is None:
            n = gpus if use_gpu else max(1, int(total.get("CPU", 1)) // self.worker_cpus)
        return n, args

    def _run(self, unique, masks, need, layers, pooling, key_suffix, pk, key, cache, got):
        ray = _ray(self.address)
        # Longest first, as Extractor batches: a chunk holds whole batches of similar
        # length, exactly those the local path forms, and the slowest chunks start first.
        lengths = self._token_lengths([unique[i] for i in need])
        length = dict(zip(need, lengths))
        todo = sorted(need, key=lambda i: -length[i])
        bar = None
        if progress_enabled(self.progress):
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(unique),
                initial=len(unique) - len(todo),
                desc="extracting on ray",
                unit="prompt",
                leave=False,  # a finished bar is not left in saved notebooks
            )
        local_cpus = None
        if self.num_workers is not None:
            local_cpus = max(os.cpu_count() or 1, self.num_workers * self.worker_cpus)
        try:
            with ray_session(self.address, num_cpus=local_cpus), self._quiet_data(ray):
                for attempt in range(1, self.max_attempts + 1):
                    self.last_attempts = attempt
                    try:
                        self._attempt(
                            ray, unique, masks, todo, layers, pooling, key_suffix, pk, key,
                            cache, got, bar,
                        )  # fmt: skip
                        return
                    except Exception as exc:
                        reason = _worker_start_error(exc)
                        if reason is not None:
                            # our worker's constructor raised: the same on every retry
                            kind = ImportError if "ImportError" in reason.split(":")[0] else None
                            raise (kind or RuntimeError)(
                                f"Ray workers could not start: {reason}"
                            ) from exc
                        if not _lost_worker(exc) or attempt == self.max_attempts:
                            raise
                    todo = [i for i in todo if any(got[x][i] is None for x in layers)]
                    if not todo:
                        return
        finally:
            if bar is not None:
                bar.close()

    def _token_lengths(self, texts: list[str]) -> list[int]:
        """Token counts (the driver's tokenizer); character counts if it has none."""
        if self.tokenizer is None:
            try:
                from .models import load_tokenizer

                self.tokenizer = load_tokenizer(self.model)
            except Exception:  # noqa: BLE001 - no local copy: order by characters instead
                return [len(t) for t in texts]
        return [len(x) for x in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    @staticmethod
    @contextlib.contextmanager
    def _quiet_data(ray):
        """Ray Data without its own bars and per-run INFO lines (ours is the one bar)."""
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = False
        logger = logging.getLogger("ray.data")
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            yield
        finally:
            logger.setLevel(level)

    def _attempt(
        self, ray, unique, masks, todo, layers, pooling, key_suffix, pk, key, cache, got, bar
    ):
        n_workers, remote_args = self._resources(ray)
        # Whole batches per chunk, so each worker forms the batches the local path would.
        size = math.ceil(self.chunk_size / self.batch_size) * self.batch_size
        items = []
        for start in range(0, len(todo), size):
            part = todo[start : start + size]
            item = {"rows": part, "prompts": [unique[i] for i in part]}
            if masks is not None:
                item["masks"] = [masks[i].tolist() for i in part]
            items.append(item)
        # One chunk per dataset row and per task: a lost worker loses one chunk.
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            _PooledWorker,
            fn_constructor_args=(
                self.model,
                self.device,
                self.dtype,
                key,
                layers,
                pooling,
                self.batch_size,
                key_suffix,
            ),  # fmt: skip
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(1, min(n_workers, len(items)))),
            **remote_args,
        )
        t_start = time.perf_counter()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = [int(r) for r in batch["row"]]
            self.last_forward_calls += int(np.sum(batch["forward_calls"]))
            if not self.last_seconds["startup"]:
                first = float(batch["seconds"][batch["seconds"] > 0][:1].sum())
                self.last_seconds["startup"] = time.perf_counter() - t_start - first
            self.last_seconds["extract"] += float(np.sum(batch["seconds"]))
            texts = [unique[r] for r in rows]
            for layer in layers:
                vecs = list(np.asarray(batch[f"layer_{layer}"], dtype=np.float32))
                if cache is not None:
                    cache.store(key, texts, layer, pk, vecs)
                    if cache.dtype != "float32":
                        # what later (warm) calls return, as the local path does
                        vecs = cache.as_stored(vecs)
                for r, v in zip(rows, vecs):
                    got[layer][r] = v
            if bar is not None:
                bar.update(len(rows))


def _lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause chain) is Ray's report of a lost worker or node."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(c.__name__ in _LOST_WORKER_ERRORS for c in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _worker_start_error(exc: BaseException) -> str | None:
    """The error line of a worker whose constructor raised (None for any other error).

    Ray reports it as an ``ActorDiedError`` with ``actor_init_failed`` set and the
    worker's traceback in its message; the last ``SomeError: ...`` line is ours.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "actor_init_failed", False):
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
            return (errors or lines or [type(exc).__name__])[-1]
        exc = exc.__cause__ or exc.__context__
    return None
