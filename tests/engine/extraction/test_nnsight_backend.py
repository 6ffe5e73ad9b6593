"""The nnsight backend: parity with the transformers backend, remote (NDIF) path without network.

The remote tests never touch the network: the NDIF "server" is a fake installed at nnsight's
boundary (``RemoteBackend.request``, the method that would open the websocket), which
deserializes the real request payload exactly as NDIF does, with this package's modules
hidden, and runs it against the locally loaded bundled weights.
"""

from __future__ import annotations

import socket
import time
import types

import numpy as np
import pytest
import torch
from lmtest_helpers import BACKEND_PROMPTS, SENTIMENT_NEG, SENTIMENT_POS

from lmprobe_jupyter import Probe
from lmprobe_jupyter.engine.cache.settings import clear_cache, get_cache
from lmprobe_jupyter.engine.extraction import nnsight_backend as nb
from lmprobe_jupyter.engine.extraction.extractor import Extractor
from lmprobe_jupyter.engine.extraction.models import decoder_layers, load_model

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPTS = BACKEND_PROMPTS + ["Is this sentence true or false?"]
POS, NEG = SENTIMENT_POS, SENTIMENT_NEG


def _nnsight_config():
    from nnsight.schema.config import CONFIG

    return CONFIG


@pytest.fixture
def no_key(monkeypatch):
    """No NDIF key anywhere (env or nnsight's config)."""
    monkeypatch.delenv("NNSIGHT_API_KEY", raising=False)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(_nnsight_config().API, "APIKEY", None)


@pytest.fixture
def listening_host(monkeypatch):
    """Point nnsight's NDIF host at a local socket that accepts connections (pre-flight passes)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    host = f"http://127.0.0.1:{srv.getsockname()[1]}"
    monkeypatch.setattr(_nnsight_config().API, "HOST", host)
    yield host
    srv.close()


@pytest.fixture
def closed_port_host(monkeypatch):
    """Point nnsight's NDIF host at a local port nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    host = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(_nnsight_config().API, "HOST", host)
    return host


@pytest.fixture
def fake_ndif(monkeypatch, smollm):
    """Replace the websocket round trip of nnsight's RemoteBackend with an in-process server.

    Records what nnsight would send (API key, host, model key, payload size) and answers
    by deserializing the payload like NDIF (local modules hidden) and running it on the
    bundled weights.
    """
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.tracer import dec, inc

    server_model, _ = nb.wrap_loaded(smollm)
    calls: list[dict] = []

    def request(self, req, tracer):
        blob = self._serialize(tracer)
        calls.append(
            {
                "api_key": self.api_key,
                "host": self.host,
                "model_key": self.model_key,
                "request_key": req.model_key,
                "bytes": len(blob),
            }
        )
        sim = LocalSimulationBackend(server_model)
        hidden = sim._hide_local_modules()
        try:
            restored = RequestModel.deserialize(
                blob, server_model._remoteable_persistent_objects(), compress=self.compress
            )
        finally:
            sim._restore(hidden)
        inc()
        try:
            restored.execute(restored.info.code)
        finally:
            dec()
        return {"out": restored.info.frame.f_locals["out"]}

    monkeypatch.setattr(RemoteBackend, "request", request)
    return calls


def _assert_same(a: dict, b: dict, atol: float = 1e-4) -> None:
    assert sorted(a) == sorted(b)
    for layer in a:
        assert a[layer].dtype == np.float32 and b[layer].dtype == np.float32
        assert a[layer].shape == b[layer].shape
        np.testing.assert_allclose(a[layer], b[layer], atol=atol, rtol=0)


# ----------------------------------------------------------------------------- local parity
@pytest.mark.real_model
def test_local_parity_with_transformers_backend(smollm):
    prompts = PROMPTS[:4]  # one batch of 4 (two lengths of padding) per pooled call
    ref = Extractor(smollm, batch_size=4, use_cache=False)
    nn = nb.NNsightExtractor(BUNDLED, device="cpu", batch_size=4, use_cache=False)
    # The same loaded weights (no second copy), hence the same cache model key.
    assert nn.loaded is smollm and nn.model_key == smollm.key
    assert nn.n_layers == 30 and nn.remote is False
    for pooling in ("last_token", "mean", "max"):
        a = ref.pooled(prompts, [3, 15, 29], pooling)
        b = nn.pooled(prompts, [3, 15, 29], pooling)
        assert b[15].shape == (len(prompts), 576)
        _assert_same(a, b)
    ta, tb = ref.per_token(prompts[:2], [15]), nn.per_token(prompts[:2], [15])
    for x, y in zip(ta, tb):
        assert x.tokens == y.tokens
        np.testing.assert_allclose(x.acts[15], y.acts[15], atol=1e-4, rtol=0)
    # nnsight left-pads its own batches; the shared tokenizer keeps the engine's setting.
    assert smollm.tokenizer.padding_side == "right"


@pytest.mark.real_model
def test_probe_predictions_match_across_backends(smollm):
    kw = dict(model=BUNDLED, device="cpu", layers=[15], random_state=0, progress=False)
    local = Probe(**kw).fit(POS, NEG)
    clear_cache()  # the nnsight probe must compute, not read the first probe's activations
    calls = Extractor.forward_calls
    nn = Probe(backend="nnsight", **kw).fit(POS, NEG)
    assert Extractor.forward_calls > calls
    assert isinstance(nn.runtime.extractor(), nb.NNsightExtractor)
    test = ["I adore it", "I loathe it", "Fantastic work", "Dreadful work"]
    np.testing.assert_array_equal(local.predict(test), nn.predict(test))
    np.testing.assert_allclose(local.predict_proba(test), nn.predict_proba(test), atol=1e-5)
    assert list(nn.predict(POS + NEG)) == [1] * 4 + [0] * 4


def test_callable_pooling_and_dtype_float32(tiny_model_path):
    ref = Extractor(load_model(tiny_model_path, device="cpu"), batch_size=2, use_cache=False)
    nn = nb.NNsightExtractor(tiny_model_path, device="cpu", batch_size=2, use_cache=False)
    for pooling in ("first_token", "min", lambda h: h[-2:].mean(0)):
        _assert_same(ref.pooled(PROMPTS, [0, 3], pooling), nn.pooled(PROMPTS, [0, 3], pooling))


def test_forward_stops_after_deepest_layer(tiny_model_path):
    nn = nb.NNsightExtractor(tiny_model_path, device="cpu", use_cache=False)
    model = nn.loaded.model
    ran: list[str] = []
    blocks = decoder_layers(model)
    handles = [
        b.register_forward_pre_hook(lambda *a, i=i: ran.append(f"L{i}"))
        for i, b in enumerate(blocks)
    ]
    handles.append(model.lm_head.register_forward_pre_hook(lambda *a: ran.append("head")))
    try:
        out = nn.pooled(["one prompt", "two prompts here"], [1], "mean")
    finally:
        for h in handles:
            h.remove()
    assert out[1].shape == (2, 32)
    assert ran == ["L0", "L1"]  # blocks 2, 3, the final norm and the LM head never ran


def test_cache_is_shared_with_transformers_backend(tiny_model_path):
    loaded = load_model(tiny_model_path, device="cpu")
    first = Extractor(loaded).pooled(PROMPTS, [2], "mean")
    calls = Extractor.forward_calls
    nn = nb.NNsightExtractor(tiny_model_path, device="cpu")
    again = nn.pooled(PROMPTS, [2], "mean")
    assert Extractor.forward_calls == calls and nn.last_hits == len(PROMPTS)
    np.testing.assert_array_equal(first[2], again[2])
    assert get_cache().lookup(loaded.key, PROMPTS, 2, "mean")[0] is not None


def test_remote_local_dry_run_matches(tiny_model_path):
    """nnsight's remote="local": the remote trace body, serialized with lmprobe hidden."""
    ref = nb.NNsightExtractor(tiny_model_path, device="cpu", batch_size=2, use_cache=False)
    sim = nb.NNsightExtractor(
        tiny_model_path, remote="local", device="cpu", batch_size=2, use_cache=False
    )
    assert sim.model_key == ref.model_key  # same local weights, same numbers
    for pooling in ("last_token", "mean", "max", lambda h: h.sum(0)):
        _assert_same(ref.pooled(PROMPTS, [1, 3], pooling), sim.pooled(PROMPTS, [1, 3], pooling))
    for x, y in zip(ref.per_token(PROMPTS, [2]), sim.per_token(PROMPTS, [2])):
        np.testing.assert_allclose(x.acts[2], y.acts[2], atol=1e-6, rtol=0)


def test_token_masks_pool_the_selected_tokens(tiny_model_path):
    """Pooling over a subset of tokens (score_roles) is done here, also on the remote path."""
    ref = Extractor(load_model(tiny_model_path, device="cpu"), batch_size=2, use_cache=False)
    n_tok = [len(x) for x in ref.encode(PROMPTS)]
    masks = [np.arange(n) % 2 == 1 if n > 1 else np.ones(n, bool) for n in n_tok]
    want = ref.pooled(PROMPTS, [2], "mean", token_masks=masks)
    for remote in (False, "local"):
        nn = nb.NNsightExtractor(
            tiny_model_path, remote=remote, device="cpu", batch_size=2, use_cache=False
        )
        _assert_same(want, nn.pooled(PROMPTS, [2], "mean", token_masks=masks))
    assert not np.allclose(want[2], ref.pooled(PROMPTS, [2], "mean")[2])


def test_bfloat16_model_gives_float32_features(tiny_model_path):
    for backend in ("local", "nnsight"):
        p = Probe(
            model=tiny_model_path,
            device="cpu",
            dtype="bfloat16",
            layers=[1, 3],
            backend=backend,
            random_state=0,
            progress=False,
        ).fit(POS, NEG)
        assert p.runtime.loaded.dtype == torch.bfloat16
        assert next(p.runtime.loaded.model.parameters()).dtype == torch.bfloat16
        feats = p._features(POS, "mean")
        assert all(v.dtype == np.float32 and v.shape == (4, 32) for v in feats.values())
        assert np.isfinite(feats[3]).all()
        assert p.predict(POS + NEG).shape == (8,)


def test_invalid_remote_value(tiny_model_path):
    with pytest.raises(ValueError, match="remote='yes' is not one of True, False, 'local'"):
        nb.NNsightExtractor(tiny_model_path, remote="yes")


# ----------------------------------------------------------------------------- remote path
@pytest.mark.real_model
def test_remote_call_goes_through_nnsight_with_key(monkeypatch, listening_host, fake_ndif, smollm):
    from nnsight.modeling.mixins.remotable import Remotable

    traced: list = []
    real_trace = Remotable.trace

    def spy(self, *args, **kwargs):
        traced.append(kwargs.get("remote"))
        return real_trace(self, *args, **kwargs)

    monkeypatch.setattr(Remotable, "trace", spy)
    monkeypatch.setenv("NNSIGHT_API_KEY", "ndif-test-key-123")
    monkeypatch.setattr(_nnsight_config().API, "APIKEY", "some-other-saved-key")

    ext = nb.NNsightExtractor(BUNDLED, remote=True, batch_size=3)
    assert ext.model_key == f"{BUNDLED}@remote" and ext.n_layers == 30
    got = ext.pooled(PROMPTS, [3, 15], "mean")

    assert traced == [True, True]  # two batches, both traced with remote=True
    assert len(fake_ndif) == 2
    for call in fake_ndif:
        assert call["api_key"] == "ndif-test-key-123"  # what nnsight itself sends
        assert call["host"] == listening_host
        assert f'"repo_id": "{BUNDLED}"' in call["model_key"]
        assert call["request_key"] == call["model_key"]
        assert call["bytes"] > 0
    # nnsight's own setting is left as it was.
    assert _nnsight_config().API.APIKEY == "some-other-saved-key"
    # The "server" computed the named pooling next to the model: same numbers as locally.
    ref = Extractor(smollm, batch_size=3, use_cache=False).pooled(PROMPTS, [3, 15], "mean")
    _assert_same(ref, got)
    # Remote activations are cached under their own key, never mixed with local ones.
    again = ext.pooled(PROMPTS, [3, 15], "mean")
    assert len(fake_ndif) == 2 and ext.last_hits == len(PROMPTS)
    np.testing.assert_array_equal(again[15], got[15])
    assert get_cache().lookup(smollm.key, PROMPTS, 15, "mean")[0] is None


@pytest.mark.real_model
def test_remote_per_token_and_callable(monkeypatch, listening_host, fake_ndif, smollm):
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    ext = nb.NNsightExtractor(BUNDLED, remote=True, batch_size=4, use_cache=False)
    ref = Extractor(smollm, batch_size=4, use_cache=False)
    pool = lambda h: h.abs().mean(0)  # noqa: E731
    _assert_same(ref.pooled(PROMPTS[:3], [8], pool), ext.pooled(PROMPTS[:3], [8], pool))
    for x, y in zip(ref.per_token(PROMPTS[:3], [8]), ext.per_token(PROMPTS[:3], [8])):
        assert x.tokens == y.tokens
        np.testing.assert_allclose(x.acts[8], y.acts[8], atol=1e-4, rtol=0)


@pytest.mark.real_model
def test_probe_remote_per_call_override(monkeypatch, listening_host, fake_ndif):
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    p = Probe(
        model=BUNDLED, backend="nnsight", remote=True, device="cpu", layers=[15], random_state=0
    )
    p.fit(POS, NEG)
    assert len(fake_ndif) == 1
    pred_remote = p.predict(["I adore it", "I loathe it"])
    assert len(fake_ndif) == 2
    pred_local = p.predict(["I adore it", "I loathe it"], remote=False)
    assert len(fake_ndif) == 2  # the local call ran here
    np.testing.assert_array_equal(pred_remote, pred_local)
    assert list(pred_local) == [1, 0]


def test_missing_key_fails_fast(no_key):
    t = time.monotonic()
    with pytest.raises(nb.NDIFAuthError) as err:
        nb.NNsightExtractor(BUNDLED, remote=True)
    assert time.monotonic() - t < 1.0
    msg = str(err.value)
    assert "NNSIGHT_API_KEY" in msg and "https://login.ndif.us" in msg and "remote=False" in msg


def test_missing_key_fails_fast_through_probe(no_key):
    p = Probe(model=BUNDLED, backend="nnsight", remote=True, layers=[3])
    t = time.monotonic()
    with pytest.raises(nb.NDIFAuthError, match="NNSIGHT_API_KEY"):
        p.fit(POS, NEG)
    assert time.monotonic() - t < 1.0


def test_key_sources(monkeypatch, no_key):
    assert nb.ndif_api_key() is None
    monkeypatch.setattr(_nnsight_config().API, "APIKEY", "from-config")
    assert nb.ndif_api_key() == "from-config"
    monkeypatch.setenv("NDIF_API_KEY", "from-ndif-env")
    assert nb.ndif_api_key() == "from-ndif-env"
    monkeypatch.setenv("NNSIGHT_API_KEY", "  from-nnsight-env ")
    assert nb.require_api_key() == "from-nnsight-env"


@pytest.mark.real_model
def test_unreachable_server_fails_fast_and_clear(monkeypatch, closed_port_host):
    from nnsight.intervention.backends.remote import RemoteBackend

    sent: list = []
    monkeypatch.setattr(RemoteBackend, "request", lambda *a: sent.append(a))
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    ext = nb.NNsightExtractor(BUNDLED, remote=True)
    t = time.monotonic()
    with pytest.raises(nb.NDIFUnreachableError) as err:
        ext.pooled(["hello"], [3], "mean")
    elapsed = time.monotonic() - t
    assert elapsed < 15.0
    assert isinstance(err.value, ConnectionError)
    msg = str(err.value)
    assert closed_port_host in msg and "3 tries" in msg and "remote=False" in msg
    assert sent == []  # nothing was submitted


def test_unresponsive_host_is_bounded(monkeypatch):
    """A connect that never returns (black-holed packets, stuck DNS) still ends in < 15 s."""

    def hang(*args, **kwargs):
        time.sleep(60)

    monkeypatch.setattr(nb.socket, "create_connection", hang)
    t = time.monotonic()
    with pytest.raises(nb.NDIFUnreachableError, match="192.0.2.1"):
        nb.check_ndif_reachable("https://192.0.2.1")
    elapsed = time.monotonic() - t
    # 3 tries x 3 s + 0.5 s + 1 s back-off.
    assert 9.0 < elapsed < 15.0


def test_bad_host_url():
    with pytest.raises(nb.NDIFError, match="not an http"):
        nb.check_ndif_reachable("ftp://example.org")


def test_remote_rejects_local_folder(monkeypatch, tiny_model_path):
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    with pytest.raises(ValueError, match="local folder"):
        nb.NNsightExtractor(tiny_model_path, remote=True)


@pytest.mark.real_model
def test_server_error_becomes_ndif_error(monkeypatch, listening_host):
    from nnsight.intervention.backends.remote import RemoteBackend, RemoteError

    def fail(self, req, tracer):
        raise RemoteError("model is not deployed")

    monkeypatch.setattr(RemoteBackend, "request", fail)
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    ext = nb.NNsightExtractor(BUNDLED, remote=True, use_cache=False)
    with pytest.raises(nb.NDIFError, match="remote NDIF job failed.*not deployed"):
        ext.pooled(["hello"], [3], "mean")


@pytest.mark.real_model
def test_remote_chat_template_needs_no_local_weights(monkeypatch, listening_host, fake_ndif):
    """chat_template=True formats prompts with the remote model's tokenizer: no weights load."""
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    p = Probe(
        model=BUNDLED, backend="nnsight", remote=True, device="cpu", layers=[15], chat_template=True
    )

    from lmprobe_jupyter.engine.extraction import models

    def no_weights(*args, **kwargs):
        raise AssertionError("remote chat formatting loaded the model's weights")

    monkeypatch.setattr(models, "load_model", no_weights)
    p.fit(POS, NEG)
    assert len(fake_ndif) == 1
    assert p._prepare_prompts(["hi"])[0].startswith("<|im_start|>")


@pytest.mark.real_model
def test_remote_score_roles_needs_no_local_weights(monkeypatch, listening_host, fake_ndif):
    """Bug: score_roles built its token masks from locally loaded weights, so a remote
    probe with score_roles loaded the whole model on this machine."""
    from lmprobe_jupyter.engine.extraction import models

    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    p = Probe(
        model=BUNDLED,
        backend="nnsight",
        remote=True,
        device="cpu",
        layers=[15],
        chat_template=True,
        score_roles=("user",),
        pooling="mean",
    )

    def no_weights(*args, **kwargs):
        raise AssertionError("remote score_roles loaded the model's weights")

    monkeypatch.setattr(models, "load_model", no_weights)
    p.fit(POS, NEG)
    assert len(fake_ndif) == 1
    assert p.predict(POS[:2]).tolist() == [1, 1]


class SilentServer:
    """A loopback listener that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.conns: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)  # held open, never answered

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.real_model
def test_host_that_accepts_but_never_answers_fails_within_the_bound(monkeypatch):
    """Reproduces issue 15 #6: a host that accepts TCP but never answers passed the
    pre-flight, then nnsight's websocket handshake (no timeout) hung forever. The set-up
    is now bounded: NDIFUnreachableError naming the host, in about HANDSHAKE_TIMEOUT s."""
    server = SilentServer()
    try:
        monkeypatch.setattr(_nnsight_config().API, "HOST", server.url)
        monkeypatch.setenv("NNSIGHT_API_KEY", "k")
        ext = nb.NNsightExtractor(BUNDLED, remote=True, use_cache=False)
        t = time.monotonic()
        with pytest.raises(nb.NDIFUnreachableError) as err:
            ext.pooled(["hello"], [3], "mean")
        elapsed = time.monotonic() - t
        assert server.conns  # the pre-flight and the handshake did connect
    finally:
        server.stop()
    assert elapsed < 20.0  # a hang check: it used to never return
    msg = str(err.value)
    assert server.url in msg and "did not answer" in msg and "remote=False" in msg
    import websocket

    assert websocket.create_connection.__module__ == "websocket._core"  # patch undone


@pytest.mark.real_model
def test_remote_batch_is_retried_with_backoff(monkeypatch, listening_host, fake_ndif, smollm):
    from nnsight.intervention.backends.remote import RemoteBackend

    from lmprobe_jupyter.engine.extraction.retry import RetryPolicy

    answer = RemoteBackend.request  # the fake server installed by fake_ndif
    failures = [ConnectionResetError("connection reset by peer")]

    def flaky(self, req, tracer):
        if failures:
            raise failures.pop()
        return answer(self, req, tracer)

    monkeypatch.setattr(RemoteBackend, "request", flaky)
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    ext = nb.NNsightExtractor(BUNDLED, remote=True, batch_size=8, use_cache=False, max_retries=2)
    waits = []
    ext.retry = RetryPolicy(2, sleep=waits.append)
    got = ext.pooled(PROMPTS, [4], "last_token")
    assert waits == [1.0] and len(fake_ndif) == 1
    ref = Extractor(smollm, batch_size=8, use_cache=False).pooled(PROMPTS, [4], "last_token")
    _assert_same(ref, got)
    # without retries the same failure reaches the caller, as a clear NDIF error
    failures.append(ConnectionResetError("connection reset by peer"))
    ext.retry = RetryPolicy(None)
    with pytest.raises(nb.NDIFUnreachableError, match="lost the connection to NDIF"):
        ext.pooled(PROMPTS, [4], "last_token")


@pytest.mark.real_model
def test_probe_max_retries_per_call(monkeypatch, listening_host, fake_ndif):
    from nnsight.intervention.backends.remote import RemoteBackend

    from lmprobe_jupyter.engine.extraction import retry

    answer = RemoteBackend.request
    failures = []

    def flaky(self, req, tracer):
        if failures:
            raise failures.pop()
        return answer(self, req, tracer)

    waits = []
    monkeypatch.setattr(RemoteBackend, "request", flaky)
    monkeypatch.setattr(retry, "time", types.SimpleNamespace(sleep=waits.append))
    monkeypatch.setenv("NNSIGHT_API_KEY", "k")
    p = Probe(model=BUNDLED, backend="nnsight", remote=True, device="cpu", layers=[6])
    failures[:] = [TimeoutError("read timed out")] * 2
    p.fit(POS, NEG, max_retries=2)
    assert waits == [1.0, 2.0]
    failures[:] = [TimeoutError("read timed out")]
    with pytest.raises(nb.NDIFUnreachableError):
        p.predict(["I adore it"])  # max_retries=None: the first failure is raised
    failures[:] = [TimeoutError("read timed out")]
    assert list(p.predict(["I adore it"], max_retries=1)) in ([0], [1])
    assert waits == [1.0, 2.0, 1.0]
