"""Extraction: from a model name and prompts to activations.

Model resolution and loading (``models``), the one object that owns a probe's model
(``runtime``), the forward passes of each backend (``extractor`` for transformers,
``nnsight_backend`` locally and on NDIF, ``distributed`` on Ray, with ``retry`` for remote
batches), chat templates and role masks (``chat``), which layers and tokens are read
(``layers``, ``token_masks``), how token activations become one vector per prompt on the
device (``pooling``) and how token scores become one score (``windows``), mixture-of-experts
routers (``moe``), batching helpers (``_batching``). Uses ``cache`` and the engine root.
"""
