"""Ray extraction: same vectors as one process, lost workers, cache hits, clean shutdown.

Ray is started once for the module (2 CPUs; each worker reserves 1 CPU and runs one torch
thread) and the fixture asserts at teardown that no Ray process is left behind. The first
test runs before that fixture exists and checks that a call with no Ray running starts a
local instance itself and shuts it down.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest
from lmtest_helpers import MIXED_PROMPTS

# What lmprobe sets before it first imports Ray for a local instance; this module imports
# Ray itself first, so it sets it too (every socket of the local instance on loopback).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

from lmprobe_jupyter import Probe  # noqa: E402
from lmprobe_jupyter.engine.cache import _shard  # noqa: E402
from lmprobe_jupyter.engine.cache.settings import (  # noqa: E402
    cache_info,
    get_cache,
    reset_cache,
    set_cache_enabled,
)
from lmprobe_jupyter.engine.extraction.distributed import (  # noqa: E402
    RayExtractor,
    check_executor,
    check_worker_dependencies,
    ray_session,
)
from lmprobe_jupyter.engine.extraction.extractor import Extractor  # noqa: E402
from lmprobe_jupyter.engine.extraction.models import load_model  # noqa: E402
from lmprobe_jupyter.engine.extraction.pooling import pooling_key  # noqa: E402

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Callables in this module travel to the workers by value (the workers cannot import
# tests/ as a package).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROMPTS = MIXED_PROMPTS + [
    "How do I reset my router password without losing the settings I already configured?",
    "ok",
    "Summarise the plot of a novel about a lighthouse keeper in three sentences.",
]
MANY = [f"{p} (variant {i})" for i in range(5) for p in PROMPTS]  # 40 distinct prompts


def _ray_processes() -> set[int]:
    """PIDs of Ray's daemons and workers on this machine."""
    names = ("raylet", "gcs_server", "ray::", "default_worker.py")
    out = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(n in cmd for n in names):
            out.add(proc.info["pid"])
    return out


def _listening_ips(pids: set[int]) -> set[str]:
    ips = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    ips.add(conn.laddr.ip)
    return ips


def _assert_no_new_ray_processes(before: set[int]) -> None:
    # Ray's workers exit asynchronously after shutdown: seconds on a quiet machine, but
    # over 30 s were seen on 2 saturated cores, so allow 2 minutes before calling it a leak.
    deadline = time.monotonic() + 120
    while True:
        left = _ray_processes() - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not ray.is_initialized()
    alive = {}
    for pid in sorted(left):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            alive[pid] = (proc.status(), " ".join(proc.cmdline())[:120])
    assert not alive, f"Ray processes still running: {alive}"


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return load_model(tiny_model_path, device="cpu")


def _local(loaded, prompts, layers, pooling):
    return Extractor(loaded, batch_size=3, use_cache=False).pooled(prompts, layers, pooling)


def test_starts_and_stops_its_own_local_ray(tiny_model_path, tiny):
    assert not ray.is_initialized()
    before = _ray_processes()
    ext = RayExtractor(
        tiny_model_path, device="cpu", num_workers=2, batch_size=3, chunk_size=6, progress=False
    )
    got = ext.pooled(PROMPTS, [1, 3], "mean")
    ref = _local(tiny, PROMPTS, [1, 3], "mean")
    for layer in (1, 3):
        np.testing.assert_allclose(got[layer], ref[layer], atol=1e-5)
    assert ext.last_misses == len(PROMPTS) and ext.last_forward_calls >= 2
    sec = ext.last_seconds
    assert 0 < sec["extract"] and 0 < sec["startup"] < sec["wall"]
    _assert_no_new_ray_processes(before)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, loopback, no dashboard) for the rest of the module."""
    before = _ray_processes()
    with ray_session(num_cpus=2) as started:
        assert started
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        ips = _listening_ips(_ray_processes() - before)
        assert ips and ips <= {"127.0.0.1", "::ffff:127.0.0.1"}, ips
        yield
    _assert_no_new_ray_processes(before)


def _ray_ext(model, **kw):
    kw = {"device": "cpu", "num_workers": 2, "batch_size": 3, "chunk_size": 6, **kw}
    return RayExtractor(model, progress=False, **kw)


def _last_plus_mean(h):
    # A user's callable pooling: it must reach the workers and key the cache the same way.
    return h[-1] + h.mean(0)


@pytest.mark.parametrize(
    "layers,pooling",
    [([0, 2, 3], "mean"), ([1, 3], "max"), ([2], _last_plus_mean)],
    ids=["mean-0,2,3", "max-1,3", "callable-2"],
)
def test_matches_single_process_tiny(local_ray, tiny_model_path, tiny, layers, pooling):
    got = _ray_ext(tiny_model_path).pooled(MANY, layers, pooling)
    ref = _local(tiny, MANY, layers, pooling)
    assert sorted(got) == layers
    for layer in layers:
        assert got[layer].shape == (len(MANY), 32) and got[layer].dtype == np.float32
        np.testing.assert_allclose(got[layer], ref[layer], atol=1e-5)


@pytest.mark.real_model
def test_matches_single_process_smollm(local_ray, smollm):
    layers = [3, 12, 29]
    got = _ray_ext(BUNDLED, chunk_size=3).pooled(PROMPTS, layers, "last_token")
    ref = _local(smollm, PROMPTS, layers, "last_token")
    for layer in layers:
        assert got[layer].shape == (len(PROMPTS), 576)
        # fp32 residual stream up to ~100 at deep layers: batch shapes differ between the
        # workers and the local run, so kernels sum in another order; the error scales with
        # the row's magnitude, not the element's (2e-5 apart at x = 0.72, layer 29, seen)
        scale = float(np.abs(ref[layer]).max())
        np.testing.assert_allclose(got[layer], ref[layer], rtol=1e-5, atol=1e-6 * scale)


def test_rerun_sends_only_uncached_prompts_and_then_nothing(local_ray, tiny_model_path, tiny):
    # A driver interrupted after half the prompts: they are in the cache. The new call
    # also repeats prompts and keeps its own order.
    Extractor(tiny, batch_size=3).pooled(MANY[:20], [1, 3], "last_token")
    prompts = MANY[::-1] + MANY[25:30] + MANY[:3]
    ext = _ray_ext(tiny_model_path)
    first = ext.pooled(prompts, [1, 3], "last_token")
    assert (ext.last_hits, ext.last_misses) == (20 + 3, 20 + 5)
    assert ext.last_forward_calls >= 20 // 3
    ref = _local(tiny, prompts, [1, 3], "last_token")
    for layer in (1, 3):
        assert first[layer].shape == (len(prompts), 32)
        np.testing.assert_allclose(first[layer], ref[layer], atol=1e-5)
    second = ext.pooled(prompts, [1, 3], "last_token")
    assert (ext.last_hits, ext.last_misses) == (len(prompts), 0)
    assert ext.last_forward_calls == 0 and ext.last_attempts == 0
    for layer in (1, 3):
        np.testing.assert_array_equal(first[layer], second[layer])
    assert cache_info().entries == 2 * len(MANY)


@ray.remote(num_cpus=0)
class _KillSpy:
    """Kills the first worker that reports in, while that worker is mid-chunk."""

    def __init__(self, no_restart: bool) -> None:
        self.no_restart = no_restart
        self.killed: list[int] = []

    def report(self, pid: int, handle) -> None:
        if not self.killed:
            self.killed.append(pid)
            ray.kill(handle, no_restart=self.no_restart)

    def victims(self) -> list[int]:
        return self.killed


def _spy_mean(h):
    import os

    import ray

    spy = ray.get_actor("kill-spy")
    ray.get(spy.report.remote(os.getpid(), ray.get_runtime_context().current_actor))
    return h.mean(0)


def _verify_cache_files(cache_dir: Path) -> int:
    """Check every shard's CRCs from its own header; return the number of entries."""
    n = 0
    for path in sorted(cache_dir.rglob(f"*{_shard.SUFFIX}")):
        _meta, entries = _shard.read_header(path)
        _shard.verify(path, entries)
        n += len(entries)
    return n


@pytest.mark.parametrize("no_restart", [False, True], ids=["restarted", "killed-for-good"])
def test_worker_killed_mid_run_loses_nothing(
    local_ray, tiny_model_path, tiny, cache_dir, no_restart
):
    spy = _KillSpy.options(name="kill-spy").remote(no_restart)
    try:
        ext = _ray_ext(tiny_model_path)
        got = ext.pooled(MANY, [1, 3], _spy_mean)
        victims = ray.get(spy.victims.remote())
    finally:
        ray.kill(spy)
    assert len(victims) == 1
    # A restarted worker retries its chunk inside the same run; a worker gone for good
    # fails the run, and the driver runs again on what it had not stored.
    assert ext.last_attempts == (2 if no_restart else 1)
    ref = _local(tiny, MANY, [1, 3], _plain_mean)
    for layer in (1, 3):
        np.testing.assert_allclose(got[layer], ref[layer], atol=1e-5)
    # Every entry written exactly once, intact on disk and read back equal.
    assert cache_info().entries == 2 * len(MANY)
    assert _verify_cache_files(cache_dir) == 2 * len(MANY)
    reset_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for layer in (1, 3):
            back = get_cache().lookup(ext.key(), MANY, layer, pooling_key(_spy_mean))
            np.testing.assert_array_equal(np.stack(back), got[layer])


def _plain_mean(h):
    return h.mean(0)


POS = [f"alpha {w} alpha beta" for w in ("one", "two", "three", "four", "five", "six")]
NEG = [f"omega {w} delta omega" for w in ("one", "two", "three", "four", "five", "six")]
HELD_OUT = ["alpha alpha beta", "omega delta delta", "alpha seven", "omega seven omega"]


def test_probe_fit_and_predict_with_executor_ray_equal_local(local_ray, tiny_model_path):
    def make():
        return Probe(
            model=tiny_model_path, layers=[1, 3], pooling="mean", device="cpu", random_state=0
        )

    set_cache_enabled(False)
    local = make().fit(POS, NEG)
    local_proba = local.predict_proba(HELD_OUT)
    set_cache_enabled(True)

    distributed = make().fit(POS, NEG, executor="ray", num_workers=2)
    rt = distributed.runtime
    assert not rt.is_loaded  # the driver never loaded the weights
    assert distributed.train_cache_hits_ == 0 and cache_info().entries == 2 * len(POS + NEG)
    np.testing.assert_allclose(
        distributed.classifier_.coef_, local.classifier_.coef_, rtol=1e-4, atol=1e-6
    )
    proba = distributed.predict_proba(HELD_OUT, executor="ray", num_workers=2)
    np.testing.assert_allclose(proba, local_proba, atol=1e-5)
    ray_ext = rt.ray_extractor(2)
    assert ray_ext.last_misses == len(HELD_OUT)
    # Everything is cached now: a Ray warm-up runs no forward pass and starts no Ray work,
    # and the local path reads the same entries.
    distributed.warmup(POS + HELD_OUT, executor="ray", num_workers=2)
    assert ray_ext.last_hits == len(POS + HELD_OUT) and ray_ext.last_forward_calls == 0
    assert ray_ext.last_attempts == 0 and not rt.is_loaded
    np.testing.assert_array_equal(distributed.predict(HELD_OUT), local.predict(HELD_OUT))
    assert rt.last_hits == len(HELD_OUT)


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda m: Probe(model=m, layers=[1], device="cpu").fit(POS, NEG, executor="dask"),
            "executor='dask' is not one of 'local', 'ray'",
        ),
        (
            lambda m: Probe(model=m, layers=[1], device="cpu", pooling="all").fit(
                POS, NEG, executor="ray"
            ),
            "per-token activations .* run with executor='local'",
        ),
        (
            lambda m: Probe(model=m, layers=[1], backend="nnsight").fit(POS, NEG, executor="ray"),
            "executor='ray' runs the transformers backend .* backend='nnsight'",
        ),
        (
            lambda m: Probe.sweep_layers(m, POS, NEG, layers=[1], executor="ray", num_workers=0),
            "num_workers=0 must be a positive int",
        ),
        (
            lambda m: Probe(model=m, layers=[1], device="cpu").warmup(POS, num_workers=3),
            "num_workers=3 needs executor='ray'",
        ),
    ],
    ids=["unknown-executor", "per-token", "nnsight", "sweep-zero-workers", "workers-local"],
)
def test_probe_executor_arguments_checked_before_any_work(tiny_model_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_model_path)


def test_worker_error_reaches_the_driver(local_ray, tiny_model_path):
    ext = _ray_ext(tiny_model_path, model_key="someone-else@0000")
    with pytest.raises(
        RuntimeError,
        match="^Ray workers could not start: RuntimeError: the Ray worker on .* loaded model "
        ".* but the driver caches it as 'someone-else@0000'",
    ):
        ext.pooled(PROMPTS[:2], [1], "mean")
    assert ext.last_attempts == 1  # a worker that cannot start is not retried
    assert cache_info().entries == 0


def test_missing_worker_dependency_is_named():
    check_worker_dependencies(("torch", "transformers"))
    with pytest.raises(ImportError, match="cannot import 'no_such_dependency'.*lmprobe-jupyter"):
        check_worker_dependencies(("torch", "no_such_dependency"))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"executor": "dask"}, "executor='dask' is not one of 'local', 'ray'"),
        ({"executor": "ray", "num_workers": 0}, "num_workers=0 must be a positive int"),
        ({"executor": "local", "num_workers": 4}, "num_workers=4 needs executor='ray'"),
    ],
    ids=["unknown-executor", "zero-workers", "workers-without-ray"],
)
def test_bad_executor_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        check_executor(kw["executor"], kw.get("num_workers"))


@pytest.mark.parametrize(
    "pooling,match",
    [("all", "score-level pooling"), ("avg", "pooling='avg' is not one of")],
    ids=["score-level", "unknown"],
)
def test_bad_pooling_is_refused_before_ray_starts(tiny_model_path, pooling, match):
    with pytest.raises(ValueError, match=match):
        RayExtractor(tiny_model_path, progress=False).pooled(PROMPTS, [1], pooling)
