"""Pickled probes: saving, loading only with trust, and reading pickles from before the re-layout.

A path ending in ``.pkl`` / ``.pickle`` uses pickle, which can hold any sklearn estimator.
Unpickling runs code chosen by whoever wrote the file, and where a file came from cannot be
told from its path (a pickle copied out of the hub cache looks like one you wrote), so
*every* pickle load needs ``trust_classifier=True``, whatever the path or ``probe.json``
says. A ``probe.json`` that names a pickle is only ever followed with that flag, and its
recorded SHA-256 is checked before unpickling (:func:`pickle_weights`, :func:`load_pickle`).
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
from pathlib import Path

from .atomic import atomic_write
from .probe_format import JSON_NAME, PICKLE_NAME, ProbeFormatError


class UntrustedPickleError(PermissionError):
    """A pickle was about to be loaded without ``trust_classifier=True``."""


class UnpicklableProbeError(TypeError):
    """The probe holds something pickle cannot store (a lambda or a local function)."""


def is_picklable_function(fn) -> bool:
    """Can pickle store ``fn``? It stores a function by reference (module + qualified name),
    so lambdas and functions defined inside other functions cannot be stored."""
    import importlib
    import types

    if not isinstance(fn, types.FunctionType):
        return True  # partials, callable instances: pickle itself decides
    name, module = fn.__qualname__, fn.__module__
    if "<lambda>" in name or "<locals>" in name or not module:
        return False
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return False
    return obj is fn


def function_kind(fn) -> str:
    """What kind of function ``fn`` is, for messages about why pickle cannot store it."""
    name = getattr(fn, "__qualname__", "") or ""
    if "<lambda>" in name:
        return "a lambda"
    if "<locals>" in name:
        return "a function defined inside another function"
    return "a function pickle cannot find by its module and name"


def check_picklable(probe) -> None:
    """Refuse (:class:`UnpicklableProbeError`) a probe whose pooling pickle cannot store."""
    for key in ("pooling", "train_pooling", "inference_pooling"):
        fn = getattr(probe, key, None)
        if callable(fn) and not is_picklable_function(fn):
            raise UnpicklableProbeError(
                f"{key} is {function_kind(fn)} ({getattr(fn, '__name__', fn)!r}), which "
                "pickle cannot store: pickle saves a function by its module and name. Define "
                "it as a named function at module level in an importable module "
                "(def my_pool(h): ...), refit, and save again; or use a named pooling: "
                "'last_token', 'mean', 'first_token', 'max', 'min', 'all'"
            )


def save_pickle(probe, path: Path) -> None:
    """Pickle a fitted ``probe`` to ``path`` (written atomically).

    Raises
    ------
    UnpicklableProbeError
        The probe holds a lambda, a local function or another object pickle cannot store.
    """
    check_picklable(probe)
    try:
        payload = pickle.dumps(probe, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise UnpicklableProbeError(
            f"the probe cannot be pickled ({exc}); a parameter or fitted estimator holds "
            "an object pickle cannot store (a lambda, a local function, an open handle)"
        ) from None
    atomic_write(path, payload)


def untrusted_pickle_message(source: str) -> str:
    """The message of the :class:`UntrustedPickleError` for a pickle at ``source``."""
    return (
        f"{source} stores the probe as a pickle. Unpickling runs arbitrary code chosen by "
        "whoever wrote the file, and neither a file's path nor its probe.json can show who "
        "that was, so lmprobe-jupyter never unpickles without trust_classifier=True. If you "
        "trust the author (or wrote the file yourself), pass trust_classifier=True; otherwise "
        "ask for the safe format (probe.save('name') / push_to_hub, which store arrays in "
        "safetensors)"
    )


#: Where the engine's modules were before its subpackage layout (pickles name classes by
#: module path, so a probe pickled then says ``lmprobe_jupyter.engine.probe``).
FLAT_MODULES = {
    "probe": "probes.probe",
    "classifiers": "probes.classifiers",
    "features": "probes.features",
    "sequence_probes": "probes.sequence_probes",
    "ensemble": "probes.ensemble",
    "pooling": "extraction.pooling",
    "windows": "extraction.windows",
    "token_probes": "probes.token_probes",
    "runtime": "extraction.runtime",
    "layers": "extraction.layers",
}


def relayout_module(module: str) -> str:
    """The current home of a module named in a pickle written before the re-layout."""
    prefix = "lmprobe_jupyter.engine."
    if module.startswith(prefix):
        head, _, rest = module[len(prefix) :].partition(".")
        if head in FLAT_MODULES:
            return prefix + FLAT_MODULES[head] + (f".{rest}" if rest else "")
    return module


class RelayoutUnpickler(pickle.Unpickler):
    """Unpickler that finds classes pickled under their pre-re-layout module paths."""

    def find_class(self, module, name):
        return super().find_class(relayout_module(module), name)


def load_pickle(path: Path, expected_sha256: str | None = None, *, probe_cls):
    """Unpickle a probe (callers check ``trust_classifier``); checks the recorded hash first."""

    payload = Path(path).read_bytes()
    if expected_sha256 is not None and hashlib.sha256(payload).hexdigest() != expected_sha256:
        raise ProbeFormatError(
            f"{path}: the pickle's SHA-256 does not match the one recorded in {JSON_NAME}; "
            "the file was modified after it was shared"
        )
    import io

    probe = RelayoutUnpickler(io.BytesIO(payload)).load()
    if not isinstance(probe, probe_cls):
        raise ProbeFormatError(f"{path} holds a {type(probe).__name__}, not a Probe")
    # a constructor option added after the pickle was written takes its default, as it
    # does when a probe.json without it loads
    for name, param in inspect.signature(probe_cls.__init__).parameters.items():
        if name != "self" and name not in probe.__dict__:
            probe.__dict__[name] = param.default
    return probe


def pickle_weights(data: dict, source: str) -> str | None:
    """The pickle's SHA-256 if ``probe.json`` names a pickle, else None; a JSON naming a
    pickle without recording its hash is refused (:func:`pickle_manifest` always does)."""
    if data.get("weights") != PICKLE_NAME:
        return None
    digest = data.get("pickle_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ProbeFormatError(
            f"{source}: {JSON_NAME} names a pickle ({PICKLE_NAME}) without its SHA-256; only "
            "a pushed-pickle manifest may name one, and it always records the hash"
        )
    return digest
