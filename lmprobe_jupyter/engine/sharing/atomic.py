"""Durable file writes: fsync, and write-then-rename so readers never see part of a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush ``path``'s contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (a no-op where directories cannot be fsynced)."""
    try:
        fsync_file(folder)
    except OSError:
        pass


def atomic_write(path: Path, payload: bytes, *, prefix: str | None = None) -> None:
    """Write ``payload`` to ``path`` under a temporary name (starting ``prefix``, default
    ``.NAME.tmp-``), fsync it and rename it into place (readers see the old file or the
    new one, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
