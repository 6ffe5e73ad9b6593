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
    "Probe": "engine.probe",
    "LinearProbe": "engine.probe",
    "NotFittedError": "engine.probe",
    "TokenScores": "engine.probe",
    "ProbeEnsemble": "engine.ensemble",
    "ActivationStore": "engine.activation_store",
    "WarmupStats": "engine.activation_store",
    # models and extraction
    "DEFAULT_MODEL": "engine.models",
    "load_model": "engine.models",
    "Extractor": "engine.extraction",
    # layer analysis
    "SweepResult": "engine.sweep",
    "sweep_layers": "engine.probe",
    # baselines
    "BaselineProbe": "engine.baselines",
    "ActivationBaseline": "engine.baselines",
    "BaselineBattery": "engine.baselines",
    "BatteryResults": "engine.baselines",
    "BaselineResult": "engine.baselines",
    # cache
    "cache_info": "engine.cache",
    "set_cache_backend": "engine.cache",
    "set_cache_dtype": "engine.cache",
    "set_cache_limit": "engine.cache",
    "set_cache_enabled": "engine.cache",
    "set_cache_tokens": "engine.cache",
    "CacheInfo": "engine.cache",
    "CacheWarning": "engine.cache",
    "clear_cache": "engine.cache",
    # saving and sharing
    "ProbeCard": "engine.hub",
    "push_dataset": "engine.datasets",
    "pull_dataset": "engine.datasets",
    "load_activation_dataset": "engine.datasets",
    "ProbeFormatError": "engine.serialization",
    "UntrustedPickleError": "engine.serialization",
    "MissingPromptsError": "engine.datasets",
    # remote execution
    "NDIFError": "engine.nnsight_backend",
    "NDIFAuthError": "engine.nnsight_backend",
    "NDIFUnreachableError": "engine.nnsight_backend",
    # monitoring
    "MonitorResult": "engine.monitoring",
    # robustness (Probe.robustness_report, Probe.drift)
    "RobustnessReport": "engine.robustness",
    "DriftReport": "engine.drift",
    "augment": "engine.transforms",
    "apply_transform": "engine.transforms",
    "register_transform": "engine.transforms",
    "TRANSFORMS": "engine.transforms",
    # error analysis and cascades (Probe.errors, Probe.cascade)
    "ErrorAnalysis": "engine.error_analysis",
    "CascadeReport": "engine.cascade",
    # span-labelled training (Probe.fit_spans)
    "background_documents": "engine.span_data",
    "context_documents": "engine.span_data",
    # lmprobe 0.10: cache tools and profiling
    "evict": "engine.cache_tools",
    "list_cached_prompts": "engine.cache_tools",
    "discover_cached": "engine.cache_tools",
    "clear_model_cache": "engine.cache_tools",
    "enable_cache_logging": "engine.cache_tools",
    "set_max_threads": "engine.cache_tools",
    "CachedPromptInfo": "engine.cache_tools",
    "ModelCacheInfo": "engine.cache",
    "set_profiling": "engine.profiling",
    "is_profiling": "engine.profiling",
    "last_profile": "engine.profiling",
    # lmprobe 0.10: bulk extraction, activation datasets, MoE, sample scans
    "extract": "engine.bulk",
    "load_manifest": "engine.bulk",
    "push_extraction": "engine.bulk",
    "consolidate_cache": "engine.bulk",
    "load_activations": "engine.bulk",
    "ExtractionManifest": "engine.bulk",
    "ManifestEntry": "engine.bulk",
    "detect_moe_info": "engine.moe",
    "MoEInfo": "engine.moe",
    "ActivationType": "engine.moe",
    "SampleScan": "engine.sample_scan",
    "SeparabilityMap": "engine.sample_scan",
}

# lmprobe's public names that are spelled differently here: alias -> (module, our name)
_ALIASES = {
    "LayerSweepResult": ("engine.sweep", "SweepResult"),
    "BaselineResults": ("engine.baselines", "BatteryResults"),
    "PerLayerScaler": ("engine.features", "LayerNormalizer"),
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
