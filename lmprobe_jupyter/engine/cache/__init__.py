"""The activation cache: what was extracted once is never extracted again.

``store`` (keys, the sqlite index, shard files, eviction, the S3 mirror's use), ``_shard``
(immutable self-describing safetensors shards), ``_s3`` (the S3 backend), ``_events``
(hit/miss logs), ``tools`` (lmprobe 0.10's cache tools), ``token_store`` (per-token
activations on disk, read a minibatch at a time), ``activation_store`` (pooled vectors
held in memory). The bottom layer of the engine: imports nothing else of it but
``progress`` and ``inputs``.
"""
