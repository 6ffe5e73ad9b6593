"""Sharing: probes and activations leave the process.

Saving probes: ``serialization`` (``save_probe`` / ``load_probe``: the path picks the
format), ``probe_format`` (file names, versions, bounds, errors, header and manifest
checks), ``codec`` (estimators <-> JSON + arrays through an allow-list), ``probe_dict`` (a
fitted probe <-> ``probe.json`` content), ``safe_files`` (probe folders and single
``.safetensors`` files on disk), ``pickles`` (pickle with trust checks, pre-re-layout
pickles), ``atomic`` (durable writes). ``hub`` (push/pull probes and cards on the
HuggingFace Hub), ``datasets`` (activation datasets on the Hub, probes trained without the
model), ``bulk`` (resumable bulk extraction into a directory of shards). Uses ``probes``, ``extraction``, ``cache``.
"""
