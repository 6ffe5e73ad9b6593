"""Baselines that tell whether a probe learned more than surface features.

Three public pieces, following the reference's "Baseline Comparisons":

- :class:`BaselineProbe`: text-only baselines (bag of words, TF-IDF, sentence length,
  sentence embeddings, random, majority, shuffled labels); no language model needed.
- :class:`ActivationBaseline`: baselines on the language model itself (a random direction,
  top principal components, layer 0, the model's own perplexity). Features come through
  the engine's :class:`~lmprobe_jupyter.engine.probes.probe.Probe`, so they share the activation
  cache: baselines run after a probe fit on the same prompts extract nothing new.
- :class:`BaselineBattery`: runs every applicable baseline (and optionally a probe) and
  returns :class:`BatteryResults` (text summary, best baseline, DataFrame, bar chart).
"""

from __future__ import annotations

from ._common import ACTIVATION_METHODS, ALL_METHODS, TEXT_METHODS, length_features
from .activation import ActivationBaseline, mean_token_logprob
from .battery import BaselineBattery
from .results import BaselineResult, BatteryResults
from .text import BaselineProbe

__all__ = [
    "ACTIVATION_METHODS",
    "ALL_METHODS",
    "TEXT_METHODS",
    "ActivationBaseline",
    "BaselineBattery",
    "BaselineProbe",
    "BaselineResult",
    "BatteryResults",
    "length_features",
    "mean_token_logprob",
]
