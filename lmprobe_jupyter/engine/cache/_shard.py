"""Shard files of the activation cache: immutable, self-describing safetensors files.

A shard holds the arrays of one (model, layer, pooling) group. It is a valid safetensors
file: an 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
Tensor names are the entries' key hashes (hex); ``__metadata__`` records the format, the
group (model key, layer, pooling) and a CRC32 per tensor. Because the file describes
itself, the index can be rebuilt from shards alone and a shard downloaded from S3 can be
ingested without any side channel.

Files are written once, to a temporary name in the destination folder, flushed to disk
and then ``os.replace``-d into place, so a reader (or a crashed writer) never sees a
half-written shard under its final name.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "lmprobe-activation-cache"
VERSION = "1"
SUFFIX = ".safetensors"
TMP_PREFIX = ".tmp-"

#: storage dtype name -> (safetensors dtype code, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "float32": ("F32", 4),
    "float16": ("F16", 2),
    "bfloat16": ("BF16", 2),
}
_NUMPY_OF_CODE = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
# Refuse absurd headers from damaged files instead of allocating gigabytes.
_MAX_HEADER = 256 * 1024 * 1024
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}
_ENTRY_NAME = re.compile(r"[0-9a-f]{32}")  # the hex of a 16-byte entry key


class ShardError(ValueError):
    """A shard file is truncated, corrupted or not a cache shard."""


@dataclass(frozen=True)
class ShardEntry:
    """One array inside a shard: where its bytes are and how to decode them."""

    name: str  # hex key hash
    code: str  # safetensors dtype code: F32, F16 or BF16
    shape: tuple[int, ...]
    offset: int  # absolute offset in the file
    nbytes: int
    crc: int


def encode(array: np.ndarray, dtype: str) -> tuple[str, bytes]:
    """Encode a float array for storage as ``dtype``; returns (dtype code, raw bytes)."""
    a = np.ascontiguousarray(array, dtype=np.float32)
    if dtype == "float32":
        return "F32", a.astype("<f4", copy=False).tobytes()
    if dtype == "float16":
        return "F16", a.astype("<f2").tobytes()
    if dtype == "bfloat16":
        bits = a.view(np.uint32).astype(np.uint64)
        # round to nearest even on the 16 dropped mantissa bits
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        rounded[np.isnan(a)] = 0x7FC0
        return "BF16", rounded.astype("<u2", copy=False).tobytes()
    raise ValueError(f"dtype={dtype!r} is not one of {sorted(DTYPES)}")


def decode(raw: bytes | memoryview, code: str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode stored bytes to a fresh, writable float32 array of ``shape``."""
    try:
        np_dtype = _NUMPY_OF_CODE[code]
    except KeyError:
        raise ShardError(f"unknown dtype code {code!r}") from None
    flat = np.frombuffer(raw, dtype=np_dtype)
    if code == "BF16":
        out = (flat.astype(np.uint32) << 16).view(np.float32)
    else:
        out = flat.astype(np.float32)  # always a copy, so the result is writable
    return out.reshape(shape)


def new_name() -> str:
    """A collision-free shard name (several processes write into one folder)."""
    return uuid.uuid4().hex


def write_shard(
    path: Path, meta: dict[str, str], items: list[tuple[str, str, tuple[int, ...], bytes]]
) -> list[ShardEntry]:
    """Write a shard atomically; ``items`` are (name, dtype code, shape, raw bytes).

    Returns the entries with absolute offsets and CRC32s. The file appears under ``path``
    only once it is complete and flushed.
    """
    header: dict[str, object] = {}
    crcs: dict[str, int] = {}
    pos = 0
    for name, code, shape, raw in items:
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + len(raw)]}
        crcs[name] = zlib.crc32(raw)
        pos += len(raw)
    header["__metadata__"] = {
        **{k: str(v) for k, v in meta.items()},
        "format": FORMAT,
        "version": VERSION,
        "crc32": json.dumps(crcs, separators=(",", ":")),
    }
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)  # safetensors aligns the data start to 8 bytes
    data_start = 8 + len(hbytes)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hbytes)))
            f.write(hbytes)
            for _name, _code, _shape, raw in items:
                f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    out = []
    for name, code, shape, raw in items:
        start = header[name]["data_offsets"][0]  # type: ignore[index]
        out.append(ShardEntry(name, code, tuple(shape), data_start + start, len(raw), crcs[name]))
    return out


def read_header(path: Path) -> tuple[dict[str, str], list[ShardEntry]]:
    """Parse a shard's header; raises :class:`ShardError` if it is not a complete shard."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ShardError(f"{path}: truncated header")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > min(size - 8, _MAX_HEADER):
                raise ShardError(f"{path}: header length {hlen} exceeds file size {size}")
            header = json.loads(f.read(hlen))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ShardError(f"{path}: unreadable header ({exc})") from exc
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != FORMAT:
        raise ShardError(f"{path}: not an lmprobe cache shard")
    try:
        crcs = json.loads(meta["crc32"])
        data_start = 8 + hlen
        entries = []
        for name, spec in header.items():
            a, b = (int(x) for x in spec["data_offsets"])
            code = spec["dtype"]
            shape = tuple(int(d) for d in spec["shape"])
            # Shards can come from a shared bucket: accept only what write_shard writes.
            if not isinstance(name, str) or not _ENTRY_NAME.fullmatch(name):
                raise ValueError(f"entry name {name!r} is not a 32-digit hex key")
            if code not in _ITEMSIZE or any(d < 0 for d in shape) or not 0 <= a <= b:
                raise ValueError(f"entry {name}: bad dtype, shape or offsets")
            if (b - a) != math.prod(shape) * _ITEMSIZE[code]:
                raise ValueError(f"entry {name}: {b - a} bytes do not fit {code}{list(shape)}")
            entries.append(
                ShardEntry(
                    name=name,
                    code=code,
                    shape=shape,
                    offset=data_start + a,
                    nbytes=b - a,
                    crc=int(crcs[name]),
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ShardError(f"{path}: malformed header ({exc})") from exc
    end = max((e.offset + e.nbytes for e in entries), default=data_start)
    if end > size:
        raise ShardError(f"{path}: truncated ({size} bytes, header needs {end})")
    return meta, entries


def verify(path: Path, entries: list[ShardEntry]) -> None:
    """Check every entry's CRC32; raises :class:`ShardError` on the first mismatch."""
    with open(path, "rb") as f:
        for e in entries:
            f.seek(e.offset)
            raw = f.read(e.nbytes)
            if len(raw) != e.nbytes or zlib.crc32(raw) != e.crc:
                raise ShardError(f"{path}: checksum mismatch for entry {e.name}")
