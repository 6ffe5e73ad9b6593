"""The nnsight backend: local extraction through nnsight, and remote extraction on NDIF.

``Probe(..., backend="nnsight")`` reads activations through an nnsight model instead of
plain forward hooks; ``remote=True`` runs the forward pass on NDIF (https://ndif.us), so
models too large for this machine can be probed.

:class:`NNsightExtractor` subclasses :class:`~.extraction.Extractor` and overrides only
``_forward``: tokenization, length-sorted batching, the activation cache, pooling and
per-token extraction are shared with the transformers backend.

Cache keys
----------
- Local runs (``remote=False``) wrap the *same* :class:`~.models.LoadedModel` that the
  transformers backend uses (``models.load_model`` is memoised), so the cache model key is
  the same ``name@fingerprint``: the activations are the same numbers, and a probe trained
  on one backend is served from the cache on the other.
- Remote runs use the model key ``f"{name}@remote"``. NDIF serves the hub checkpoint in its
  own dtype and hardware, which is not bit-identical to a local copy (for the bundled
  SmolLM2 the local copy is even a dequantized GGUF), so remote activations are never
  mixed with local ones.
- ``remote="local"`` is nnsight's dry run of the remote path: the trace is serialized and
  deserialized as for NDIF (with this package's modules hidden), then run on the local
  weights. It uses the local cache key, since it computes on the local weights.

Remote execution
----------------
The API key comes from ``NNSIGHT_API_KEY`` (then ``NDIF_API_KEY``, then nnsight's own
config); without one, creating a remote extractor fails at once with
:class:`NDIFAuthError`. Before a remote forward pass the NDIF host (``CONFIG.API.HOST``,
settable with ``NDIF_HOST``) gets a pre-flight TCP connect: at most 3 tries, each bounded
by a 3 s timeout (DNS included), with 0.5 s and 1 s back-off between tries, so an
unreachable server fails with :class:`NDIFUnreachableError` in about 10 s rather than
hanging. A host that accepts the connection but never answers (a stuck proxy, a
half-dead server) passes the pre-flight, so the rest of the set-up is bounded too: the
websocket handshake and the first message (the session id) each get at most
``HANDSHAKE_TIMEOUT`` (10 s) before the call fails with :class:`NDIFUnreachableError`
naming the host (nnsight itself passes no timeout there). Once the job is running, waiting
for its result is not bounded: a long job is not a hang. Cache hits need neither the key
check's network nor the pre-flight.

On the server, the named poolings (``last_token``, ``first_token``, ``mean``, ``max``,
``min``) are computed next to the model, so only ``(batch, hidden)`` vectors are
downloaded; callable poolings and per-token extraction download the full hidden states of
the requested layers and pool here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlparse

from .extractor import Extractor
from .models import LoadedModel, context_length, decoder_layers, text_config

#: Environment variable holding the NDIF API key.
API_KEY_ENV = "NNSIGHT_API_KEY"
#: Where to get an NDIF API key.
API_KEY_URL = "https://login.ndif.us"
#: The cache model-key suffix of activations computed on NDIF.
REMOTE_KEY_SUFFIX = "remote"

# Pre-flight connect to the NDIF host: tries, per-try timeout (s), back-off between tries (s).
PREFLIGHT_TRIES = 3
PREFLIGHT_TIMEOUT = 3.0
PREFLIGHT_BACKOFF = (0.5, 1.0, 2.0)
# A successful pre-flight is trusted for this long (s) before checking the host again.
PREFLIGHT_TTL = 60.0
#: Seconds the websocket handshake, and each wait for a message on it, may take.
HANDSHAKE_TIMEOUT = 10.0

# Poolings computed next to the model on NDIF (torch only; no lmprobe code ships there).
_SERVER_POOLINGS = ("last_token", "first_token", "mean", "max", "min")

_INSTALL_HINT = "pip install 'lmprobe-jupyter[nnsight]'"


class NDIFError(RuntimeError):
    """Remote execution on NDIF failed."""

    #: Another try may succeed (``max_retries`` retries it; see :mod:`.retry`).
    transient = True


class NDIFAuthError(NDIFError):
    """No NDIF API key was found."""

    transient = False


class NDIFUnreachableError(NDIFError, ConnectionError):
    """The NDIF server could not be reached."""


# ---------------------------------------------------------------------------- NDIF settings
def _nnsight_config():
    """nnsight's process-wide CONFIG (raises a clear ImportError without nnsight)."""
    try:
        from nnsight.schema.config import CONFIG
    except ImportError as exc:  # pragma: no cover - nnsight is a dev dependency
        raise ImportError(
            f"backend='nnsight' needs the nnsight package ({exc}); install it with "
            f"`{_INSTALL_HINT}`"
        ) from None
    return CONFIG


def ndif_api_key() -> str | None:
    """The NDIF API key: ``$NNSIGHT_API_KEY``, ``$NDIF_API_KEY`` or nnsight's config."""
    for env in (API_KEY_ENV, "NDIF_API_KEY"):
        value = os.environ.get(env, "").strip()
        if value:
            return value
    try:
        value = _nnsight_config().API.APIKEY
    except ImportError:
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def require_api_key() -> str:
    """Return the NDIF API key or raise :class:`NDIFAuthError` saying how to get one."""
    key = ndif_api_key()
    if not key:
        raise NDIFAuthError(
            f"remote=True runs the model on NDIF and needs an API key, but none was found: "
            f"set the {API_KEY_ENV} environment variable (get a key at {API_KEY_URL}), "
            "or pass remote=False to run the model locally"
        )
    return key


def ndif_host() -> str:
    """The NDIF API base URL nnsight will talk to (``CONFIG.API.HOST``, env ``NDIF_HOST``)."""
    return str(_nnsight_config().API.HOST)


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise NDIFError(
            f"NDIF host {url!r} is not an http(s) URL; set NDIF_HOST (or "
            "nnsight.CONFIG.API.HOST) to e.g. 'https://api.ndif.us'"
        )
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def _connect_once(host: str, port: int, timeout: float) -> None:
    """One TCP connect, DNS included, bounded by ``timeout`` (raises OSError on failure)."""
    result: dict = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            result["error"] = exc

    # getaddrinfo has no timeout of its own, so the whole attempt runs in a daemon thread.
    worker = threading.Thread(target=attempt, name="lmprobe-ndif-preflight", daemon=True)
    worker.start()
    worker.join(timeout)
    if result.get("ok"):
        return
    if "error" in result:
        raise OSError(str(result["error"]) or type(result["error"]).__name__)
    raise TimeoutError(f"no connection within {timeout:g} s")


_PREFLIGHT_OK: dict[str, float] = {}


def check_ndif_reachable(
    host: str | None = None,
    tries: int = PREFLIGHT_TRIES,
    timeout: float = PREFLIGHT_TIMEOUT,
    backoff: tuple[float, ...] = PREFLIGHT_BACKOFF,
) -> None:
    """Fail fast, with a clear error, when the NDIF host does not accept connections.

    Parameters
    ----------
    host : str, optional
        API base URL; default :func:`ndif_host`.
    tries : int, default 3
        Connect attempts.
    timeout : float, default 3.0
        Seconds per attempt (name resolution included).
    backoff : tuple of float
        Seconds to wait before the 2nd, 3rd, ... attempt.

    Raises
    ------
    NDIFUnreachableError
    """
    url = host or ndif_host()
    if time.monotonic() - _PREFLIGHT_OK.get(url, -1e9) < PREFLIGHT_TTL:
        return
    hostname, port = _host_port(url)
    errors = []
    for attempt in range(max(1, int(tries))):
        if attempt:
            time.sleep(backoff[min(attempt - 1, len(backoff) - 1)] if backoff else 0)
        try:
            _connect_once(hostname, port, timeout)
        except OSError as exc:
            errors.append(str(exc) or type(exc).__name__)
            continue
        _PREFLIGHT_OK[url] = time.monotonic()
        return
    raise NDIFUnreachableError(
        f"cannot reach the NDIF server at {url} ({hostname}:{port}) after {len(errors)} "
        f"tries, {timeout:g} s each (last error: {errors[-1]}). Check your network connection "
        "and https://ndif.us for service status, point NDIF_HOST at another server, or pass "
        "remote=False to run the model locally"
    )


@contextlib.contextmanager
def _nnsight_remote_settings(api_key: str, logging: bool):
    """Hand nnsight the API key (and our progress choice) for the duration of a trace."""
    config = _nnsight_config()
    old_key, old_log = config.API.APIKEY, config.APP.REMOTE_LOGGING
    config.API.APIKEY = api_key
    if not logging:
        config.APP.REMOTE_LOGGING = False
    try:
        yield
    finally:
        config.API.APIKEY, config.APP.REMOTE_LOGGING = old_key, old_log


_WS_LOCK = threading.Lock()
_WS_STATE: dict = {"depth": 0, "original": None}


@contextlib.contextmanager
def _bounded_handshake(timeout: float):
    """While active, nnsight's websocket opens with a ``timeout`` (it passes none).

    nnsight calls ``websocket.create_connection(url, header=...)`` with no timeout, so a
    host that accepts TCP and never answers blocks the handshake, and then the recv of the
    session id, forever. The timeout is the socket's, so it also bounds each later recv;
    nnsight's wait loop treats a recv timeout as "no news yet" and keeps waiting, so a
    long job still completes. Calls that pass their own timeout are left alone.
    """
    try:
        import websocket
    except ImportError:  # pragma: no cover - nnsight depends on websocket-client
        yield
        return
    with _WS_LOCK:
        if _WS_STATE["depth"] == 0:
            original = websocket.create_connection

            def create_connection(url, timeout_=None, *args, **kwargs):
                if "timeout" in kwargs:
                    timeout_ = kwargs.pop("timeout")
                return original(url, timeout if timeout_ is None else timeout_, *args, **kwargs)

            _WS_STATE["original"] = original
            websocket.create_connection = create_connection
        _WS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _WS_LOCK:
            _WS_STATE["depth"] -= 1
            if _WS_STATE["depth"] == 0:
                websocket.create_connection = _WS_STATE["original"]
                _WS_STATE["original"] = None


# ---------------------------------------------------------------------------- nnsight models
def _transformers_model_class():
    try:
        from nnsight.modeling.transformers import TransformersModel
    except ImportError as exc:
        raise ImportError(
            f"backend='nnsight' needs nnsight>=0.8 ({exc}); install it with `{_INSTALL_HINT}`"
        ) from None
    return TransformersModel


def _layers_path(module) -> str:
    """Dotted path of the decoder-layer ModuleList inside ``module``."""
    target = decoder_layers(module)
    for name, sub in module.named_modules():
        if sub is target:
            return name
    raise ValueError(f"cannot locate the decoder layers of {type(module).__name__}")


_REMOTE: dict[str, tuple] = {}
_WRAP_LOCK = threading.Lock()


def wrap_loaded(loaded: LoadedModel):
    """The nnsight model around an already loaded model (memoised), and its decoder-layer envoy.

    The weights are shared with the transformers backend; nothing is loaded or copied.
    """
    with _WRAP_LOCK:
        # Kept on the LoadedModel itself, so the wrapper lives and dies with the model.
        hit = loaded.extra.get("nnsight")
        if hit is not None:
            return hit
        cls = _transformers_model_class()
        model = loaded.model
        tok = loaded.tokenizer
        padding_side = tok.padding_side
        kwargs: dict = {"task": "text-generation", "tokenizer": tok}
        if getattr(model, "hf_device_map", None) is None:
            # Otherwise transformers' pipeline moves a CPU model onto cuda:0.
            kwargs["device"] = next(model.parameters()).device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lm = cls(model, **kwargs)
        # nnsight left-pads its own batches; ours are collated by the Extractor, and the
        # tokenizer is shared with the rest of the engine, so put its setting back.
        tok.padding_side = padding_side
        blocks = lm.get(_layers_path(model))
        loaded.extra["nnsight"] = (lm, blocks)
        return lm, blocks


def _seed_remote_id(name: str) -> None:
    """Resolve the hub ID nnsight puts in the remote model key, without an unbounded wait.

    nnsight canonicalizes the repo ID through the Hub (no timeout); we ask once with a
    5 s timeout and fall back to the ID as given.
    """
    try:
        from nnsight.modeling import huggingface as nn_hf
    except ImportError:  # pragma: no cover
        return
    cache = getattr(nn_hf, "_ID_CACHE", None)
    if not isinstance(cache, dict) or name in cache:
        return
    canonical = name
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        try:
            from huggingface_hub import HfApi

            canonical = HfApi().model_info(name, timeout=5).id or name
        except Exception:  # noqa: BLE001 - offline or unknown: NDIF resolves the ID itself
            canonical = name
    cache[name] = canonical


def remote_model(name: str):
    """A weightless (meta) nnsight model for ``name`` plus its LoadedModel stand-in.

    Only the config and the tokenizer are fetched; the weights stay on NDIF.
    """
    with _WRAP_LOCK:
        if name in _REMOTE:
            return _REMOTE[name]
        if Path(name).expanduser().exists():
            raise ValueError(
                f"remote=True runs hub models hosted on NDIF, but model={name!r} is a local "
                "folder; use its Hugging Face hub ID, or remote=False"
            )
        from transformers import AutoConfig, AutoTokenizer

        from .models import bundled_gguf, quiet_transformers, resolve_model

        source = resolve_model(name)[1] if bundled_gguf(name) is not None else name
        try:
            with warnings.catch_warnings(), quiet_transformers():
                warnings.simplefilter("ignore")
                config = AutoConfig.from_pretrained(source)
                tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:  # noqa: BLE001 - hub/network errors all mean "unavailable"
            raise FileNotFoundError(
                f"model {name!r}: could not fetch its config and tokenizer from the Hugging "
                f"Face hub ({type(exc).__name__}: {exc}); remote=True needs the hub ID of a "
                "model NDIF hosts (see https://nnsight.net/status)"
            ) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        padding_side = tokenizer.padding_side
        cls = _transformers_model_class()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lm = cls(name, task="text-generation", tokenizer=tokenizer, config=config)
        tokenizer.padding_side = padding_side
        _seed_remote_id(name)
        text_cfg = text_config(config)
        max_len = context_length(text_cfg, tokenizer)
        import torch

        module = lm._module
        loaded = LoadedModel(
            name=name,
            model=lm,
            tokenizer=tokenizer,
            fingerprint=REMOTE_KEY_SUFFIX,
            n_layers=len(decoder_layers(module)),
            hidden_size=int(text_cfg.hidden_size),
            device=torch.device("cpu"),
            dtype=_torch_dtype(getattr(text_cfg, "dtype", None)),
            max_length=max_len,
            extra={"remote": True},
        )
        blocks = lm.get(_layers_path(module))
        _REMOTE[name] = (loaded, lm, blocks)
        return _REMOTE[name]


def _torch_dtype(value):
    """The checkpoint's declared dtype as a torch dtype (float32 when unknown)."""
    import torch

    if isinstance(value, torch.dtype):
        return value
    resolved = getattr(torch, str(value).removeprefix("torch."), None) if value else None
    return resolved if isinstance(resolved, torch.dtype) else torch.float32


# ---------------------------------------------------------------------------- extractor
class NNsightExtractor(Extractor):
    """Pooled and per-token activations through nnsight, locally or on NDIF.

    Same interface and results as :class:`~.extraction.Extractor` (``pooled``,
    ``per_token``, ``n_layers``, ``last_hits``, ``loaded``); only the forward pass differs.

    Parameters
    ----------
    model_name : str or None
        Hub ID or local path (None: the bundled default model).
    remote : bool or "local", default False
        ``True`` runs on NDIF (API key from ``$NNSIGHT_API_KEY``); ``"local"`` is nnsight's
        serialize-and-run-here dry run of the remote path.
    device, dtype
        Local placement, as for :func:`~.models.load_model` (ignored when ``remote=True``:
        NDIF places the model). Pooled outputs are float32 whatever the model dtype.
    batch_size, progress, use_cache, padding_side
        As for :class:`~.extraction.Extractor`.
    loaded : LoadedModel, optional
        Wrap this already loaded model instead of loading ``model_name`` (local only).
    max_retries : int or None
        Retries of a remote batch that failed for a transient reason, with exponential
        backoff (see :mod:`.retry`); settable later as ``extractor.retry``.

    Raises
    ------
    NDIFAuthError
        ``remote=True`` without an API key (raised at once, before anything is fetched).
    """

    def __init__(
        self,
        model_name: str | None = None,
        remote: bool | str = False,
        device: str | None = "auto",
        dtype=None,
        batch_size: int = 8,
        progress: bool | None = None,
        use_cache: bool = True,
        padding_side: str = "right",
        loaded: LoadedModel | None = None,
        max_retries: int | None = None,
    ) -> None:
        from .retry import RetryPolicy

        self.retry = RetryPolicy(max_retries)
        if remote not in (True, False, "local"):
            raise ValueError(f"remote={remote!r} is not one of True, False, 'local'")
        _transformers_model_class()  # clear ImportError early when nnsight is missing
        self.remote = remote
        self.model_name = model_name
        self._api_key = require_api_key() if remote is True else None
        self._how = "full"
        if remote is True:
            if loaded is not None:
                raise ValueError("loaded= wraps a local model; it cannot be used with remote=True")
            from .models import DEFAULT_MODEL

            loaded, self._lm, self._blocks = remote_model(model_name or DEFAULT_MODEL)
        else:
            if loaded is None:
                from .models import load_model

                loaded = load_model(model_name, device=device, dtype=dtype)
            self._lm = self._blocks = None
        super().__init__(
            loaded,
            batch_size=batch_size,
            progress=progress,
            use_cache=use_cache,
            padding_side=padding_side,
        )

    @property
    def n_layers(self) -> int:
        """Number of decoder layers of the model."""
        return self.loaded.n_layers

    @property
    def model_key(self) -> str:
        """The activation-cache model key (see the module docstring)."""
        return self.loaded.key

    def _model(self):
        if self._lm is None:
            self._lm, self._blocks = wrap_loaded(self.loaded)
        return self._lm, self._blocks

    #: Remote poolings run next to the model, one named pooling per trace.
    shares_forward_passes = False

    def _compute_pooled(self, prompts, layers, pooling, token_masks=None):
        # Named poolings over all tokens run next to the model on NDIF; anything else
        # (callables, pooling over a subset of tokens) downloads hidden states.
        server_side = isinstance(pooling, str) and pooling in _SERVER_POOLINGS
        self._how = pooling if server_side and token_masks is None else "full"
        try:
            return super()._compute_pooled(prompts, layers, pooling, token_masks)
        finally:
            self._how = "full"

    def _forward(self, ids, mask, layers: list[int], capture) -> None:
        """Run the model up to ``max(layers)`` through nnsight, calling ``capture``; a
        remote batch that fails for a transient reason is rerun per ``self.retry``."""
        if self.remote is not True:
            return self._forward_once(ids, mask, layers, capture)
        # Remotely, capture runs only after the trace returned: a retry repeats no capture.
        return self.retry.run(lambda: self._forward_once(ids, mask, layers, capture))

    def _forward_once(self, ids, mask, layers: list[int], capture) -> None:
        import nnsight
        import torch

        from .extractor import progress_enabled

        lm, blocks = self._model()
        order = sorted(set(int(x) for x in layers))
        remote = self.remote
        how = self._how
        if remote is False:
            device = self.loaded.device
            ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids}
        rows = torch.arange(mask.shape[0])
        width = torch.arange(mask.shape[1]).expand_as(mask.cpu())
        last = (width * mask.cpu().long()).argmax(dim=1)
        first = mask.cpu().long().argmax(dim=1)
        # Locally the trace body pools in place through ``capture``; on NDIF (or its
        # dry run) the body may only use torch, so it reduces and ships tensors back.
        sink = capture if remote is False else None
        if remote is True:
            check_ndif_reachable()
            settings = _nnsight_remote_settings(self._api_key, progress_enabled(self.progress))
            bounded = _bounded_handshake(HANDSHAKE_TIMEOUT)
        else:
            settings = bounded = contextlib.nullcontext()
        Extractor.forward_calls += 1
        out = None
        try:
            with settings, bounded, torch.inference_mode():
                with lm.trace(inputs, remote=remote, use_cache=False) as tracer:
                    out = nnsight.save(dict())
                    for i in order:
                        h = blocks[i].output
                        if isinstance(h, (tuple, list)):
                            h = h[0]
                        if sink is not None:
                            sink(i, h, mask.to(h.device))
                        else:
                            mk = mask.to(h.device)
                            if how == "last_token":
                                r = h[rows.to(h.device), last.to(h.device)].float()
                            elif how == "first_token":
                                r = h[rows.to(h.device), first.to(h.device)].float()
                            elif how == "mean":
                                m = mk.to(torch.float32).unsqueeze(-1)
                                r = (h.float() * m).sum(1) / m.sum(1).clamp(min=1)
                            elif how == "max":
                                r = h.float().masked_fill(~mk.bool().unsqueeze(-1), float("-inf"))
                                r = r.amax(1)
                            elif how == "min":
                                r = h.float().masked_fill(~mk.bool().unsqueeze(-1), float("inf"))
                                r = r.amin(1)
                            else:
                                r = h
                            out[i] = r.detach().cpu()
                    tracer.stop()
        except NDIFError:
            raise
        except Exception as exc:
            if remote is not True:
                raise
            raise _remote_error(exc) from exc
        if sink is not None:
            return
        if not isinstance(out, dict) or any(i not in out for i in order):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise NDIFError(
                f"the nnsight trace returned no activations for layers {order} (got {got})"
            )
        cpu_mask = mask.cpu()
        one = torch.ones((mask.shape[0], 1), dtype=torch.long)
        for i in order:
            r = out[i]
            if how == "full":
                capture(i, r, cpu_mask.to(r.device))
            else:
                # A pooled vector is a one-token sequence that every named pooling returns as is.
                capture(i, r.float().unsqueeze(1), one.to(r.device))


def _remote_error(exc: BaseException) -> NDIFError:
    """Turn an nnsight/network failure of a remote trace into a clear NDIFError."""
    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return NDIFUnreachableError(
            f"the NDIF server at {ndif_host()} accepted the connection but did not answer "
            f"within {HANDSHAKE_TIMEOUT:g} s ({name}: {text}); check https://ndif.us for "
            "service status, point NDIF_HOST at another server, or pass remote=False"
        )
    if isinstance(exc, OSError) or any(
        k in name for k in ("Connect", "Timeout", "WebSocket", "Network")
    ):
        return NDIFUnreachableError(
            f"lost the connection to NDIF at {ndif_host()} ({name}: {text}); retry later or "
            "pass remote=False"
        )
    low = text.lower()
    if "401" in low or "403" in low or "api key" in low or "unauthorized" in low:
        return NDIFAuthError(
            f"NDIF refused the API key ({text}); check {API_KEY_ENV} (keys: {API_KEY_URL})"
        )
    return NDIFError(f"the remote NDIF job failed ({name}: {text})")
