"""Extraction: from a model name and prompts to activations.

Model resolution and loading (``models``), the one object that owns a probe's model
(``runtime``), the forward passes of each backend (``extractor`` for transformers,
``nnsight_backend`` locally and on NDIF), chat templates and role masks (``chat``), which
layers and tokens are read (``layers``, ``token_masks``), mixture-of-experts routers
(``moe``), and scale-out: bulk extraction to disk (``bulk``), Ray (``distributed``),
retries of remote batches (``retry``), where the time goes (``profiling``).
Uses ``cache``; never imports ``probes``, ``evaluation``, ``monitoring`` or ``sharing``
at module level.
"""
