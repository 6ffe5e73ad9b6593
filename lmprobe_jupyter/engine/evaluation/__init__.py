"""Evaluation: is the probe right, where does the signal live, and does it hold up.

``sweep`` (one probe per layer from one extraction), ``layer_selection`` and
``group_lasso`` (which layers matter), ``baselines`` (text and activation baselines, the
battery), ``sample_scan`` (a picture of the whole forward pass), ``transforms`` and
``robustness`` (scores on shifted copies of a held-out set), ``error_analysis`` (browse,
relabel, refit) and ``cascade`` (probe -> judge). Uses ``probes``, ``extraction``,
``cache``.
"""
