"""S3 cache backend against a real S3-protocol server (moto) on loopback."""

from __future__ import annotations

import socket
import uuid
import warnings

import numpy as np
import pytest

from lmprobe_jupyter.engine.cache import settings as C
from lmprobe_jupyter.engine.cache.errors import CacheWarning
from lmprobe_jupyter.engine.cache.keys import entry_keys, group_hash

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")


class S3Server:
    """A moto S3 server on 127.0.0.1 that a test can stop."""

    def __init__(self, port: int = 0) -> None:
        self.server = moto_server.ThreadedMotoServer(
            ip_address="127.0.0.1", port=port, verbose=False
        )
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.running = True

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        if self.running:
            self.server.stop()
            self.server._server.server_close()  # refuse connections, like a dead host
            self.running = False


@pytest.fixture
def s3(monkeypatch):
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3):
    name = f"lmprobe-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vec(prompt: str) -> np.ndarray:
    seed = int.from_bytes(entry_keys("check", 0, "p", [prompt])[0][:4], "little")
    return np.random.default_rng(seed).standard_normal(48).astype(np.float32)


def use(s3, bucket, local, prefix="team/cache"):
    C.reset_cache()
    C.set_cache_backend(f"s3://{bucket}/{prefix}", endpoint_url=s3.endpoint, local_dir=local)
    c = C.get_cache()
    c.remote_sync_interval = 0.0
    return c


def test_write_through_and_another_machine_reads_from_s3(s3, bucket, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = use(s3, bucket, tmp_path / "machine-a")
        prompts = [f"p{i}" for i in range(12)]
        a.store("m@1", prompts, 4, "mean", [vec(p) for p in prompts])
        local = sorted(p.relative_to(a.path).as_posix() for p in a.path.glob("shards/*/*"))
        assert s3.keys(bucket) == [f"team/cache/{r}" for r in local] and len(local) == 1
        assert "online" in C.cache_info().backend

        b = use(s3, bucket, tmp_path / "machine-b")
        assert b.path == tmp_path / "machine-b" and b.info().entries == 0
        got = b.lookup("m@1", prompts + ["not cached"], 4, "mean")
    assert got[-1] is None
    for p, g in zip(prompts, got):
        np.testing.assert_array_equal(g, vec(p))
    # the shard is now a local copy on machine b: reads keep working without S3
    s3.stop()
    b.remote_sync_interval = 1e9
    np.testing.assert_array_equal(b.lookup("m@1", ["p3"], 4, "mean")[0], vec("p3"))
    assert len(list((tmp_path / "machine-b").glob("shards/*/*.safetensors"))) == 1


def test_compaction_is_mirrored_on_s3(s3, bucket, tmp_path):
    c = use(s3, bucket, tmp_path / "a")
    for i in range(20):
        c.store("m", [f"p{i}"], 0, "mean", [vec(f"p{i}")])
    local = sorted(
        f"team/cache/{p.relative_to(c.path).as_posix()}" for p in c.path.glob("shards/*/*")
    )
    assert len(local) < 20 and s3.keys(bucket) == local
    b = use(s3, bucket, tmp_path / "b")
    got = b.lookup("m", [f"p{i}" for i in range(20)], 0, "mean")
    assert all(g is not None for g in got)


def test_unreachable_endpoint_warns_once_and_caches_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.warns(CacheWarning) as record:
        C.set_cache_backend("s3://bucket/x", endpoint_url=endpoint, local_dir=tmp_path / "l")
        c = C.get_cache()
        c.store("m", ["a"], 0, "mean", [vec("a")])
        assert c.lookup("m", ["b"], 0, "mean") == [None]
        np.testing.assert_array_equal(c.lookup("m", ["a"], 0, "mean")[0], vec("a"))
        c.store("m", ["b"], 0, "mean", [vec("b")])
    assert len(record) == 1
    assert "unreachable" in str(record[0].message) and endpoint in str(record[0].message)
    assert "offline" in C.cache_info().backend


def test_missing_bucket_warns_once(s3, tmp_path):
    with pytest.warns(CacheWarning, match="NoSuchBucket|Not Found|404") as record:
        c = use(s3, "no-such-bucket", tmp_path / "l")
        c.store("m", ["a"], 0, "mean", [vec("a")])
        c.lookup("m", ["zz"], 0, "mean")
    assert len(record) == 1
    assert c.lookup("m", ["a"], 0, "mean")[0] is not None


def test_endpoint_from_environment(s3, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C.set_cache_backend(f"s3://{bucket}", local_dir=tmp_path / "l")
        C.get_cache().store("m", ["a"], 0, "mean", [vec("a")])
    assert len(s3.keys(bucket)) == 1 and s3.keys(bucket)[0].startswith("shards/")


def test_damaged_object_on_s3_is_skipped_with_a_warning(s3, bucket, tmp_path):
    a = use(s3, bucket, tmp_path / "a")
    a.store("m", ["a"], 0, "mean", [vec("a")])
    (key,) = s3.keys(bucket)
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.client().put_object(Bucket=bucket, Key=key, Body=body[:-5] + b"\0\0\0\0\0")
    b = use(s3, bucket, tmp_path / "b")
    with pytest.warns(CacheWarning, match="skipped damaged shard"):
        assert b.lookup("m", ["a"], 0, "mean") == [None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert b.lookup("m", ["a"], 0, "mean") == [None]  # not fetched again
        b.store("m", ["a"], 0, "mean", [vec("a")])
        np.testing.assert_array_equal(b.lookup("m", ["a"], 0, "mean")[0], vec("a"))


def test_evicted_local_copy_is_fetched_again_from_s3(s3, bucket, tmp_path):
    c = use(s3, bucket, tmp_path / "a")
    c.store("m", ["a"], 0, "mean", [vec("a")])
    c.store("m", ["b"], 1, "mean", [vec("b")])
    C.set_cache_limit(1e-9)  # keeps only the most recent shard locally
    assert c.info().shards == 1 and len(s3.keys(bucket)) == 2
    np.testing.assert_array_equal(c.lookup("m", ["a"], 0, "mean")[0], vec("a"))


def test_clear_cache_remote_deletes_s3_copies(s3, bucket, tmp_path):
    c = use(s3, bucket, tmp_path / "a")
    c.store("m@1", ["a"], 0, "mean", [vec("a")])
    c.store("n@1", ["a"], 0, "mean", [vec("a")])
    assert C.clear_cache("m") == 1  # local only by default
    assert len(s3.keys(bucket)) == 2
    np.testing.assert_array_equal(c.lookup("m@1", ["a"], 0, "mean")[0], vec("a"))  # re-fetched
    assert C.clear_cache("m", remote=True) == 1
    assert len(s3.keys(bucket)) == 1
    assert C.clear_cache(remote=True) == 1 and s3.keys(bucket) == []


def test_server_stopped_mid_run_probe_still_fits(s3, bucket, tmp_path, tiny_model_path):
    from lmprobe_jupyter.engine.extraction.extractor import Extractor
    from lmprobe_jupyter.engine.probes.probe import Probe

    pos = ["good day", "lovely weather", "nice work", "great news"]
    neg = ["bad day", "awful rain", "poor work", "sad news"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        use(s3, bucket, tmp_path / "a")
        probe = Probe(model=tiny_model_path, layers=[1, 2], device="cpu", random_state=0)
        probe.fit(pos, neg)
    assert len(s3.keys(bucket)) >= 2  # one shard per layer went up
    s3.stop()
    more = ["fine morning", "horrible night"]
    with pytest.warns(CacheWarning, match="unreachable") as record:
        probe2 = Probe(model=tiny_model_path, layers=[1, 2], device="cpu", random_state=0)
        probe2.fit(pos + more[:1], neg + more[1:])
        calls = Extractor.forward_calls
        proba = probe2.predict_proba(pos + neg + more)
    assert len([w for w in record if issubclass(w.category, CacheWarning)]) == 1
    assert Extractor.forward_calls == calls  # everything it fitted on is cached locally
    assert proba.shape == (10, 2) and np.allclose(proba.sum(1), 1)
    assert "offline" in C.cache_info().backend


# ----------------------------------------------------------------- untrusted bucket contents
def _plant(s3, bucket, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def test_crafted_key_cannot_write_outside_the_cache(s3, bucket, tmp_path, tiny_model_path):
    """Reproduces issue 15 #1: an object ``<prefix>/shards/<group>/../../../victim/...``
    listed from a shared bucket was joined onto the local cache path and ``os.replace``-d
    over a file outside the cache (a valid shard body of the right group passes every
    check). A plain ``set_cache_backend("s3://..."); Probe(...).fit(...)`` must leave the
    victim file untouched and warn with the rejected key."""
    from lmprobe_jupyter.engine.probes.probe import Probe

    pos, neg = ["good day", "nice work"], ["bad day", "poor work"]
    use(s3, bucket, tmp_path / "attacker")
    Probe(model=tiny_model_path, layers=[1], device="cpu", random_state=0).fit(pos, neg)
    (real,) = s3.keys(bucket)  # team/cache/shards/<group>/<name>.safetensors
    group = real.split("/")[3]
    body = s3.client().get_object(Bucket=bucket, Key=real)["Body"].read()
    s3.client().delete_object(Bucket=bucket, Key=real)  # the victim must miss locally
    victim = tmp_path / "models" / "m" / "model.safetensors"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"precious weights")
    local = tmp_path / "victim-cache"  # <local>/shards/<group>/../../../ == tmp_path
    evil = f"team/cache/shards/{group}/../../../models/m/model.safetensors"
    _plant(s3, bucket, evil, body)
    _plant(s3, bucket, f"team/cache/shards/{group}/sub/x.safetensors", body)
    assert evil in s3.keys(bucket)  # the server keeps the dot segments as they are

    use(s3, bucket, local)
    with pytest.warns(CacheWarning, match="rejected") as record:
        Probe(model=tiny_model_path, layers=[1], device="cpu", random_state=0).fit(pos, neg)
    assert victim.read_bytes() == b"precious weights"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["model.safetensors"]
    text = " ".join(str(w.message) for w in record)
    assert "../../../models/m/model.safetensors" in text and "sub/x.safetensors" in text
    inside = [p for p in local.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(local.resolve()) for p in inside)
    C.clear_cache()  # eviction/clear never reach outside either
    assert victim.read_bytes() == b"precious weights"


def test_shards_stored_while_s3_was_down_are_uploaded_on_the_next_sync(s3, bucket, tmp_path):
    """issue 15 (smaller): shards written while the bucket was unreachable stayed local
    for ever. They are remembered as pending and uploaded when the backend reconnects
    (``set_cache_backend`` again, or the next process), so other machines get them."""
    a = use(s3, bucket, tmp_path / "a")
    a.store("m", ["p0"], 0, "mean", [vec("p0")])
    assert len(s3.keys(bucket)) == 1
    port = int(s3.endpoint.rsplit(":", 1)[1])
    s3.stop()
    with pytest.warns(CacheWarning, match="unreachable"):
        a.store("m", ["p1", "p2"], 0, "mean", [vec("p1"), vec("p2")])
        a.store("m", ["p3"], 2, "mean", [vec("p3")])
    assert a.info().shards == 3

    restarted = S3Server(port=port)  # same address; moto keeps the bucket in this process
    try:
        assert len(restarted.keys(bucket)) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            a = use(restarted, bucket, tmp_path / "a")  # reconnect: back-fill runs
        local = sorted(
            f"team/cache/{p.relative_to(a.path).as_posix()}" for p in a.path.rglob("*.safetensors")
        )
        assert restarted.keys(bucket) == local and len(local) == 3
        b = use(restarted, bucket, tmp_path / "b")
        got = b.lookup("m", ["p0", "p1", "p2"], 0, "mean") + b.lookup("m", ["p3"], 2, "mean")
        for p, g in zip(["p0", "p1", "p2", "p3"], got):
            np.testing.assert_array_equal(g, vec(p))
        assert use(restarted, bucket, tmp_path / "a").sync_up() == 0  # nothing left pending
    finally:
        restarted.stop()


@pytest.mark.parametrize(
    "items,meta_change",
    [
        ([("../../evil", "F32", (4,), bytes(16))], {}),
        ([("ab" * 16, "F64", (2,), bytes(16))], {}),
        ([("ab" * 16, "F32", (9,), bytes(16))], {}),
        ([("ab" * 16, "F32", (4,), bytes(16))], {"layer": 7}),
    ],
    ids=["entry-name", "dtype", "shape-vs-bytes", "other-group"],
)
def test_well_named_but_crafted_shard_is_verified_before_use(
    s3, bucket, tmp_path, items, meta_change
):
    """A correctly named object whose header lies (entry names that are not keys, an
    unknown dtype, a shape that does not match its bytes, another group) is skipped with
    a warning before it replaces anything; it used to crash the lookup (``fromhex``) or be
    indexed."""
    from lmprobe_jupyter.engine.cache import _shard

    ghash = group_hash("m", 0, "mean")
    meta = {"model_key": "m", "layer": 0, "pooling": "mean", **meta_change}
    crafted = tmp_path / "crafted.safetensors"
    _shard.write_shard(crafted, meta, items)
    _plant(s3, bucket, f"team/cache/shards/{ghash}/{'c' * 32}.safetensors", crafted.read_bytes())
    b = use(s3, bucket, tmp_path / "b")
    with pytest.warns(CacheWarning, match="skipped damaged shard"):
        assert b.lookup("m", ["a"], 0, "mean") == [None]
    assert list(b.path.rglob("*.safetensors")) == [] and b.info().entries == 0


def test_oversized_object_is_not_downloaded_past_the_bound(s3, bucket, tmp_path):
    """A correctly named but huge object (planted to fill the disk) stops downloading at
    ``MAX_DOWNLOAD`` bytes and is rejected; nothing of it stays on disk."""
    ghash = group_hash("m", 0, "mean")
    key = f"team/cache/shards/{ghash}/{'d' * 32}.safetensors"
    _plant(s3, bucket, key, b"\0" * (3 << 20))
    b = use(s3, bucket, tmp_path / "b")
    b.MAX_DOWNLOAD = 1 << 20
    with pytest.warns(CacheWarning, match=r"rejected S3 object.*over 1048576 bytes"):
        assert b.lookup("m", ["a"], 0, "mean") == [None]
    assert [p for p in b.path.rglob("*") if p.is_file() and "shards" in p.parts] == []
