"""What the activation cache tells :mod:`.tools`: a prompt ledger and hit/miss logs.

The cache keys entries by a hash that mixes the prompt with its (model, layer, pooling)
group, so the index alone cannot say which entries belong to one prompt. Each store also
records ``(model key, layer, pooling, prompt hash, prompt)`` in a small sqlite ledger
beside the index (``prompts-v1.sqlite``); :func:`.tools.list_cached_prompts` reads
it and checks every row against the index, so evicted or cleared entries never show.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

LEDGER_NAME = "prompts-v1.sqlite"

logger = logging.getLogger("lmprobe")

#: Logging level of hit/miss messages (None: not logged). Set by ``enable_cache_logging``.
log_level: int | None = None

_lock = threading.Lock()
_conns: dict[tuple[str, int], sqlite3.Connection] = {}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts(
    model_key TEXT NOT NULL, layer INTEGER NOT NULL, pooling TEXT NOT NULL,
    prompt_hash TEXT NOT NULL, prompt TEXT NOT NULL,
    PRIMARY KEY(model_key, layer, pooling, prompt_hash)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prompts_model ON prompts(model_key);
"""


def prompt_hash(prompt: str) -> str:
    """SHA-256 of a prompt's UTF-8 text (the same key activation datasets use)."""
    return hashlib.sha256(str(prompt).encode("utf-8", "surrogatepass")).hexdigest()


def ledger(path: Path) -> sqlite3.Connection:
    """The ledger connection of the cache at ``path`` (one per process)."""
    key = (str(path), os.getpid())
    with _lock:
        conn = _conns.get(key)
        if conn is None:
            path.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path / LEDGER_NAME, timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            _conns[key] = conn
        return conn


def on_store(path: Path, model_key: str, layer: int, pooling: str, prompts: list[str]) -> None:
    """Record stored prompts in the ledger; a ledger failure never breaks a store."""
    rows = [(model_key, int(layer), pooling, prompt_hash(p), str(p)) for p in prompts]
    try:
        conn = ledger(path)
        with _lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
    except sqlite3.Error:
        pass
    if log_level is not None:
        logger.log(
            log_level,
            "cache store: %d prompts, model=%s layer=%d pooling=%s",
            len(prompts),
            model_key,
            layer,
            pooling,
        )


def on_lookup(model_key: str, layer: int, pooling: str, hits: int, total: int) -> None:
    """Log one lookup's hits and misses (when cache logging is on)."""
    if log_level is not None and total:
        logger.log(
            log_level,
            "cache %s: %d hits, %d misses, model=%s layer=%d pooling=%s",
            "hit" if hits == total else ("miss" if hits == 0 else "partial hit"),
            hits,
            total - hits,
            model_key,
            layer,
            pooling,
        )


def forget(path: Path) -> None:
    """Close this process's ledger connection of the cache at ``path``."""
    with _lock:
        conn = _conns.pop((str(path), os.getpid()), None)
    if conn is not None:
        conn.close()
