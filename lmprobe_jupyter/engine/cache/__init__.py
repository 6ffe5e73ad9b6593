"""The activation cache: what was extracted once is never extracted again.

``store`` (the cache object: lookup and store), ``keys`` (entry keys, group hashes, shard
names), ``index`` (the sqlite index, read-only mode, repair of a damaged index), ``upkeep``
(compaction, LRU eviction), ``mirror`` (the S3 mirror's use), ``settings`` (the process-wide
cache and the ``set_cache_*`` functions), ``info`` and ``errors`` (what the cache reports
and raises), ``_shard`` (immutable self-describing safetensors shards), ``_s3`` (the S3
backend), ``_events`` (hit/miss logs), ``tools`` (lmprobe 0.10's cache tools),
``token_store`` (per-token activations on disk, read a minibatch at a time),
``activation_store`` (pooled vectors held in memory). The bottom layer of the engine:
imports nothing else of the engine but its root modules (``inputs``, ``progress``,
``profiling``).
"""
