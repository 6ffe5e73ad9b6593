"""S3 mirror of the activation cache's shard files (``boto3``, the ``s3`` extra).

The remote holds the same immutable shard files as the local store, under
``s3://bucket/prefix/shards/<group>/<name>.safetensors``. Every operation is
best-effort: the first failure to reach the bucket (no endpoint, no credentials, no
bucket, a timeout) issues one :class:`~lmprobe_jupyter.engine.cache.errors.CacheWarning` and
switches the remote off for this backend, and caching carries on locally. Timeouts are
short and retries few, so an unreachable endpoint costs seconds, not minutes.

Listed keys are returned as they are (relative to the prefix); the cache, not this
module, decides which of them are shard names it will download (a bucket others can
write to is untrusted input).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

#: botocore settings: fail fast, the local cache is always there to fall back on.
CLIENT_CONFIG = {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}}


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into (bucket, prefix without slashes at the ends)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"cache backend {url!r} is not an 's3://bucket/prefix' URL")
    return parsed.netloc, parsed.path.strip("/")


class ObjectTooLarge(ValueError):
    """An object is larger than the caller allows (a shared bucket is untrusted input)."""


class S3Remote:
    """Best-effort S3 store for shard files; ``online`` goes False after the first failure.

    Parameters
    ----------
    url : str
        ``s3://bucket/prefix``.
    endpoint_url : str, optional
        S3-compatible endpoint (MinIO, moto, ...); defaults to ``$AWS_ENDPOINT_URL``.
    warning_category : type[Warning]
        Category of the single "S3 unreachable" warning.
    """

    def __init__(
        self, url: str, endpoint_url: str | None = None, warning_category=UserWarning
    ) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.online = True
        self.error: str | None = None
        self._warning_category = warning_category
        self._client_obj = None

    # ------------------------------------------------------------------ plumbing
    def _client(self):
        if self._client_obj is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError(
                    "the S3 cache backend needs boto3: pip install 'lmprobe-jupyter[s3]'"
                ) from exc
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            self._client_obj = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=region or "us-east-1",
                config=Config(**CLIENT_CONFIG),
            )
        return self._client_obj

    def key(self, rel: str) -> str:
        """Object key of a path relative to the cache root (``shards/g/n.safetensors``)."""
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _fail(self, what: str, exc: BaseException) -> None:
        if self.online:
            self.online = False
            self.error = f"{type(exc).__name__}: {exc}"
            where = f" at {self.endpoint_url}" if self.endpoint_url else ""
            warnings.warn(
                f"S3 cache backend {self.url}{where} is unreachable ({what}: {self.error}); "
                "continuing with the local cache only. Call set_cache_backend() again to retry.",
                self._warning_category,
                stacklevel=4,
            )

    @staticmethod
    def _is_missing_key(exc: BaseException) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("NoSuchKey", "404", "NotFound")

    # ---------------------------------------------------------------- operations
    def check(self) -> bool:
        """Probe the bucket once (HEAD); False (with the one warning) if unreachable."""
        if not self.online:
            return False
        try:
            self._client().head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - any failure means "work locally"
            self._fail("checking the bucket", exc)
        return self.online

    def put(self, rel: str, path: Path) -> bool:
        """Upload one file; True on success."""
        if not self.online:
            return False
        try:
            # one PUT (no s3transfer threads or hidden retries); shards are at most ~64 MB
            with open(path, "rb") as f:
                self._client().put_object(Bucket=self.bucket, Key=self.key(rel), Body=f)
        except Exception as exc:  # noqa: BLE001
            self._fail("uploading a shard", exc)
            return False
        return True

    def list(self, rel_prefix: str) -> list[str] | None:
        """Relative paths of the objects under ``rel_prefix``; None if offline."""
        if not self.online:
            return None
        base = self.key("")
        out: list[str] = []
        try:
            pages = self._client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.key(rel_prefix)):
                for obj in page.get("Contents", []):
                    if obj["Key"].startswith(base):  # the caller still validates the rest
                        out.append(obj["Key"][len(base) :])
        except Exception as exc:  # noqa: BLE001
            self._fail("listing shards", exc)
            return None
        return out

    def get(self, rel: str, dest: Path, max_bytes: int | None = None) -> bool:
        """Download one object to ``dest``; False if offline, gone or over ``max_bytes``."""
        if not self.online:
            return False
        try:
            body = self._client().get_object(Bucket=self.bucket, Key=self.key(rel))["Body"]
            size = 0
            with open(dest, "wb") as f:
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        body.close()
                        raise ObjectTooLarge(f"{self.key(rel)} is over {max_bytes} bytes")
                    f.write(chunk)
        except ObjectTooLarge:
            raise
        except Exception as exc:  # noqa: BLE001
            if self._is_missing_key(exc):  # removed by another machine's compaction
                return False
            self._fail("downloading a shard", exc)
            return False
        return True

    def delete(self, rels: list[str]) -> None:
        """Delete objects (best effort)."""
        if not self.online or not rels:
            return
        try:
            client = self._client()
            for i in range(0, len(rels), 1000):
                chunk = rels[i : i + 1000]
                client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.key(r)} for r in chunk], "Quiet": True},
                )
        except Exception as exc:  # noqa: BLE001
            self._fail("deleting shards", exc)

    def status(self) -> str:
        """One line for cache_info()."""
        if self.online:
            return f"{self.url} (online)"
        return f"{self.url} (offline: {self.error})"
