"""Monitoring: thresholds with a known false-positive rate, scores during generation.

``calibration`` (calibrate, flag, prompt scores over long inputs, metrics at the
threshold), ``live`` (per-token scores while a model generates), ``drift`` (does a
calibrated threshold still hold on new traffic). Uses ``probes``, ``extraction``.
"""
