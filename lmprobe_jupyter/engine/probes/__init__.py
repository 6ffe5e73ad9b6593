"""Probes: the estimators that read activations.

``probe`` (``Probe``: parameters, fit, evaluate; owns its learned state), ``fitting``
(its fitting paths and cross-validation refits), ``inference`` (its base class: model
access, predict, token scores),
``classifiers`` (names to sklearn estimators), ``features`` (preprocessing between
extraction and the classifier), ``scoring`` (per-token rows, prompt-level outputs),
``token_probes`` / ``sequence_base`` / ``sequence_probes`` / ``token_linear`` (token-level
probes: attention, MultiMax, MIL, every-token linear from the token store), ``span_data``
(span-labelled
training texts), ``ensemble`` (``ProbeEnsemble``).
Uses ``extraction`` and ``cache``; evaluation, monitoring and sharing are imported lazily
by the ``Probe`` methods that delegate to them.
"""
