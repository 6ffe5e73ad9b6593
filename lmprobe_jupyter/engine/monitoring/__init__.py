"""Monitoring: calibrated thresholds, flagging, live per-token scores while a model
generates (``live``), and whether a threshold still holds on new traffic (``drift``).
Uses ``probes`` and ``extraction``.
"""
