"""Sharing: probes and activations leave the process.

``serialization`` (the safe format: safetensors + JSON, pickle on request), ``hub``
(push/pull probes and cards on the HuggingFace Hub), ``datasets`` (activation datasets on
the Hub, probes trained without the model). Uses ``probes``, ``extraction``, ``cache``.
"""
