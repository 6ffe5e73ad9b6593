"""lmprobe_jupyter: probes on language-model activations, native to Jupyter.

Public names are loaded lazily so ``import lmprobe_jupyter`` stays fast (no torch, no
sklearn at import time).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_EXPORTS = {
    # probes
    "Probe": "engine.probes.probe",
    "LinearProbe": "engine.probes.probe",
    "NotFittedError": "engine.probes.probe",
    "TokenScores": "engine.probes.inference",
    "ProbeEnsemble": "engine.probes.ensemble",
    "ActivationStore": "engine.cache.activation_store",
    "WarmupStats": "engine.cache.activation_store",
    # models and extraction
    "DEFAULT_MODEL": "engine.extraction.models",
    "load_model": "engine.extraction.models",
    "Extractor": "engine.extraction.extractor",
    # layer analysis
    "SweepResult": "engine.evaluation.sweep",
    "sweep_layers": "engine.probes.probe",
    # baselines
    "BaselineProbe": "engine.evaluation.baselines",
    "ActivationBaseline": "engine.evaluation.baselines",
    "BaselineBattery": "engine.evaluation.baselines",
    "BatteryResults": "engine.evaluation.baselines",
    "BaselineResult": "engine.evaluation.baselines",
    # cache
    "cache_info": "engine.cache.settings",
    "set_cache_backend": "engine.cache.settings",
    "set_cache_dtype": "engine.cache.settings",
    "set_cache_limit": "engine.cache.settings",
    "set_cache_enabled": "engine.cache.settings",
    "set_cache_tokens": "engine.cache.settings",
    "CacheInfo": "engine.cache.info",
    "CacheWarning": "engine.cache.errors",
    "clear_cache": "engine.cache.settings",
    # saving and sharing
    "ProbeCard": "engine.sharing.hub",
    "push_dataset": "engine.sharing.datasets",
    "pull_dataset": "engine.sharing.datasets",
    "load_activation_dataset": "engine.sharing.datasets",
    "ProbeFormatError": "engine.sharing.probe_format",
    "UntrustedPickleError": "engine.sharing.pickles",
    "MissingPromptsError": "engine.sharing.datasets",
    # remote execution
    "NDIFError": "engine.extraction.nnsight_backend",
    "NDIFAuthError": "engine.extraction.nnsight_backend",
    "NDIFUnreachableError": "engine.extraction.nnsight_backend",
    # monitoring
    "MonitorResult": "engine.monitoring.live",
    # robustness (Probe.robustness_report, Probe.drift)
    "RobustnessReport": "engine.evaluation.robustness",
    "DriftReport": "engine.monitoring.drift",
    "augment": "engine.evaluation.transforms",
    "apply_transform": "engine.evaluation.transforms",
    "register_transform": "engine.evaluation.transforms",
    "TRANSFORMS": "engine.evaluation.transforms",
    # error analysis and cascades (Probe.errors, Probe.cascade)
    "ErrorAnalysis": "engine.evaluation.error_analysis",
    "CascadeReport": "engine.evaluation.cascade",
    # span-labelled training (Probe.fit_spans)
    "background_documents": "engine.probes.span_data",
    "context_documents": "engine.probes.span_data",
    # lmprobe 0.10: cache tools and profiling
    "evict": "engine.cache.tools",
    "list_cached_prompts": "engine.cache.tools",
    "discover_cached": "engine.cache.tools",
    "clear_model_cache": "engine.cache.tools",
    "enable_cache_logging": "engine.cache.tools",
    "set_max_threads": "engine.cache.tools",
    "CachedPromptInfo": "engine.cache.tools",
    "ModelCacheInfo": "engine.cache.info",
    "set_profiling": "engine.profiling",
    "is_profiling": "engine.profiling",
    "last_profile": "engine.profiling",
    # lmprobe 0.10: bulk extraction, activation datasets, MoE, sample scans
    "extract": "engine.sharing.bulk",
    "load_manifest": "engine.sharing.bulk",
    "push_extraction": "engine.sharing.bulk",
    "consolidate_cache": "engine.sharing.bulk",
    "load_activations": "engine.sharing.bulk",
    "ExtractionManifest": "engine.sharing.bulk",
    "ManifestEntry": "engine.sharing.bulk",
    "detect_moe_info": "engine.extraction.moe",
    "MoEInfo": "engine.extraction.moe",
    "ActivationType": "engine.extraction.moe",
    "SampleScan": "engine.evaluation.sample_scan",
    "SeparabilityMap": "engine.evaluation.sample_scan",
}

# lmprobe's public names that are spelled differently here: alias -> (module, our name)
_ALIASES = {
    "LayerSweepResult": ("engine.evaluation.sweep", "SweepResult"),
    "BaselineResults": ("engine.evaluation.baselines", "BatteryResults"),
    "PerLayerScaler": ("engine.probes.features", "LayerNormalizer"),
}

__all__ = sorted([*_EXPORTS, *_ALIASES, "__version__", "load_ipython_extension"])


def __getattr__(name: str):
    module, attr = _EXPORTS.get(name), name
    if module is None and name in _ALIASES:
        module, attr = _ALIASES[name]
    if module is None:
        raise AttributeError(f"module 'lmprobe_jupyter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__


def load_ipython_extension(ipython) -> None:
    """``%load_ext lmprobe_jupyter``: register the probe magics."""
    from .jupyter import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext lmprobe_jupyter``: remove the input transformer and notebook bars."""
    from .jupyter import unload_ipython_extension as _unload

    _unload(ipython)
