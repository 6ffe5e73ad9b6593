"""Saving and loading probes: a safe format by default, pickle on request.

Safe format (loading it runs no code: no pickle, no eval, no imports named by the file)
------------------------------------------------------------------------------------------
``probe.save("my_probe")`` writes a *directory*::

    my_probe/
      probe.json          format version, library versions, model id + fingerprint,
                          constructor parameters, layers, pooling, task, classes,
                          threshold, metrics, and the layout of every fitted step
      arrays.safetensors  every array (normalizer, scaler, PCA, classifier weights, ...)

``probe.save("my_probe.safetensors")`` writes the same content as *one file*: the arrays
as tensors and ``probe.json`` as the safetensors header metadata (key ``lmprobe_probe``).

Fitted sklearn objects are rebuilt from an allow-list of classes (:data:`SAFE_CLASSES`) by
calling their constructor with the saved parameters and setting the saved attributes.
``probe.json`` records the SHA-256 of the array contents and every array's dtype and shape,
so a tampered or mismatched arrays file is refused; a file written by a newer format
version is refused with both versions named.

Pickle
------
A path ending in ``.pkl`` / ``.pickle`` uses pickle, which can hold any sklearn estimator.
Unpickling runs code chosen by whoever wrote the file, and where a file came from cannot be
told from its path (a pickle copied out of the hub cache looks like one you wrote), so
*every* pickle load needs ``trust_classifier=True``, whatever the path or ``probe.json``
says. A ``probe.json`` that names a pickle is only ever followed with that flag.

What a file can ask for is bounded before anything is allocated: ``probe.json`` size and
nesting depth, string-array widths, and every tensor's dtype and shape in the safetensors
header (checked against the manifest in ``probe.json`` before a byte of data is read).

Saving over an existing probe folder replaces only the files the format owns
(:data:`OWNED_NAMES`), each written under a temporary name, fsynced and renamed into
place; a README, an evaluation CSV or a ``.git`` beside them are never touched. The arrays
are renamed first and ``probe.json`` last; ``probe.json``'s replacement is written as
``.probe.json.pending`` beforehand, so a kill between the two renames still loads the new
probe (the pending file is used when its hash matches the arrays). A folder (or file) that
holds something other than a saved probe is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np

FORMAT = "lmprobe-jupyter.probe"
FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = (1,)
JSON_NAME = "probe.json"
ARRAYS_NAME = "arrays.safetensors"
PICKLE_NAME = "probe.pkl"
PICKLE_SUFFIXES = (".pkl", ".pickle")
SINGLE_FILE_SUFFIX = ".safetensors"
PENDING_NAME = ".probe.json.pending"
OWNED_NAMES = (JSON_NAME, ARRAYS_NAME, PICKLE_NAME, PENDING_NAME)
_META_KEY = "lmprobe_probe"

# Bounds on what a probe file may ask for before anything is allocated. A real probe.json
# is a few KB to a few MB (string classes, metrics, a card) and nests about 10 deep.
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64
MAX_STRING_ARRAY_BYTES = 16 * 2**20

# Constructor parameters that fix what the classifier was fitted on: changing one on a
# loaded probe would feed the classifier features it never saw, so load() refuses them.
FITTED_STRUCTURE_PARAMS = (
    "layers",
    "pooling",
    "train_pooling",
    "classifier",
    "classifier_kwargs",
    "task",
    "normalize_layers",
    "preprocessing",
    "pca_components",
    "fast_auto_top_k",
    "auto_candidates",
    "auto_alpha",
)

# Allow-list of classes the safe format can rebuild: short name -> (module, attribute).
SAFE_CLASSES: dict[str, tuple[str, str]] = {
    "Pipeline": ("sklearn.pipeline", "Pipeline"),
    "LayerNormalizer": ("lmprobe_jupyter.engine.probes.features", "LayerNormalizer"),
    "MassMeanAugmenter": ("lmprobe_jupyter.engine.probes.features", "MassMeanAugmenter"),
    "StandardScaler": ("sklearn.preprocessing", "StandardScaler"),
    "PCA": ("sklearn.decomposition", "PCA"),
    "LabelBinarizer": ("sklearn.preprocessing", "LabelBinarizer"),
    "LogisticRegression": ("sklearn.linear_model", "LogisticRegression"),
    "RidgeProbaClassifier": ("lmprobe_jupyter.engine.probes.classifiers", "RidgeProbaClassifier"),
    "RidgeClassifier": ("sklearn.linear_model", "RidgeClassifier"),
    "Ridge": ("sklearn.linear_model", "Ridge"),
    "LinearRegression": ("sklearn.linear_model", "LinearRegression"),
    "LinearDiscriminantAnalysis": (
        "sklearn.discriminant_analysis",
        "LinearDiscriminantAnalysis",
    ),
    "SVC": ("sklearn.svm", "SVC"),
    "SVR": ("sklearn.svm", "SVR"),
    "LinearSVC": ("sklearn.svm", "LinearSVC"),
    "SGDClassifier": ("sklearn.linear_model", "SGDClassifier"),
    "SGDRegressor": ("sklearn.linear_model", "SGDRegressor"),
    "MassMeanClassifier": ("lmprobe_jupyter.engine.probes.classifiers", "MassMeanClassifier"),
    "CVLogisticRegression": ("lmprobe_jupyter.engine.probes.classifiers", "CVLogisticRegression"),
    "LogisticEnsembleClassifier": (
        "lmprobe_jupyter.engine.probes.classifiers",
        "LogisticEnsembleClassifier",
    ),
}

# Fitted attributes that only matter while fitting (and are not plain data): not saved.
_FIT_ONLY_ATTRS = {
    "SGDClassifier": {"_loss_function_"},
    "SGDRegressor": {"_loss_function_"},
}


class ProbeFormatError(ValueError):
    """A saved probe is malformed, tampered with, or from a newer format version."""


class UnsafeFormatError(TypeError):
    """Something in the probe cannot be stored in the safe format (use a ``.pkl`` path)."""


class UntrustedPickleError(PermissionError):
    """A pickle was about to be loaded without ``trust_classifier=True``."""


class UnpicklableProbeError(TypeError):
    """The probe holds something pickle cannot store (a lambda or a local function)."""


def _library_version() -> str:
    from ... import __version__

    return __version__


def _safe_class(name: str):
    if name not in SAFE_CLASSES:
        raise ProbeFormatError(
            f"saved probe names class {name!r}, which is not in the safe-format allow-list "
            f"({', '.join(sorted(SAFE_CLASSES))}); the file is corrupt or from a newer version"
        )
    import importlib

    module, attr = SAFE_CLASSES[name]
    return getattr(importlib.import_module(module), attr)


def _class_name(obj) -> str | None:
    """The allow-list name of ``obj``'s exact class (subclasses do not count), or None."""
    cls = type(obj)
    for name, (_module, attr) in SAFE_CLASSES.items():
        if attr == cls.__name__ and cls is _safe_class(name):
            return name
    return None


# ---------------------------------------------------------------------------- encoding
_SAFETENSORS_KINDS = "biuf"
#: ``__estimator__`` tag of a sequence probe (:mod:`.sequence_probes`), stored through its
#: ``get_state()`` arrays and JSON rather than the allow-list's attribute walk.
SEQUENCE_PROBE_TAG = "SequenceProbe"  # bool, signed int, unsigned int, float


class _Unencodable(Exception):
    def __init__(self, where: str, value) -> None:
        super().__init__(where)
        self.where = where
        self.value = value


class _Encoder:
    """Value -> JSON-able structure; numeric arrays go to ``self.arrays`` by name.

    Tags keep types exact across the round trip: ``__array__`` (a tensor in the arrays
    file), ``__strarray__``, ``__np__`` (numpy scalar), ``__float__`` (nan/inf),
    ``__tuple__``, ``__items__`` (a dict with non-string keys), ``__estimator__``.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, v, where: str):
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, np.generic):
            if v.dtype.kind not in _SAFETENSORS_KINDS + "U":
                raise _Unencodable(where, v)
            return {"__np__": v.dtype.str, "value": self.encode(v.item(), where)}
        if isinstance(v, np.ndarray):
            return self._array(v, where)
        if isinstance(v, tuple):
            return {"__tuple__": [self.encode(x, f"{where}.{i}") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self.encode(x, f"{where}.{i}") for i, x in enumerate(v)]
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in v):
                return {k: self.encode(x, f"{where}.{k}") for k, x in v.items()}
            return {
                "__items__": [
                    [self.encode(k, f"{where}.key{i}"), self.encode(x, f"{where}.{i}")]
                    for i, (k, x) in enumerate(v.items())
                ]
            }
        return self.estimator(v, where)

    def _array(self, a: np.ndarray, where: str):
        if a.dtype.kind in _SAFETENSORS_KINDS and a.dtype.itemsize <= 8:
            if where in self.arrays:
                raise ValueError(f"duplicate array name {where!r}")
            self.arrays[where] = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"))
            return {"__array__": where}
        if a.dtype.kind == "U" or (
            a.dtype.kind == "O" and all(isinstance(x, str) for x in a.ravel())
        ):
            if a.dtype.kind == "U" and a.nbytes > MAX_STRING_ARRAY_BYTES:
                raise _Unencodable(where, a)  # a loader would refuse it (see _strarray)
            return {"__strarray__": a.tolist(), "dtype": a.dtype.str, "shape": list(a.shape)}
        raise _Unencodable(where, a)

    def estimator(self, est, where: str):
        from ..probes.sequence_probes import is_sequence_probe

        if is_sequence_probe(est):
            # MIL / attention / multimax probes: their own arrays + JSON state, no pickle.
            arrays, meta = est.get_state()
            return {
                "__estimator__": SEQUENCE_PROBE_TAG,
                "meta": self.encode(meta, f"{where}.meta"),
                "arrays": {
                    k: self._array(np.asarray(v), f"{where}.{k}") for k, v in arrays.items()
                },
            }
        name = _class_name(est)
        if name is None:
            raise _Unencodable(where, est)
        if name == "Pipeline":
            return {
                "__estimator__": "Pipeline",
                "steps": [
                    [step, self.estimator(sub, f"{where}.{step}")] for step, sub in est.steps
                ],
            }
        params = est.get_params(deep=False)
        skip = _FIT_ONLY_ATTRS.get(name, set())
        state = {k: v for k, v in vars(est).items() if k not in params and k not in skip}
        return {
            "__estimator__": name,
            "params": {k: self.encode(v, f"{where}.params.{k}") for k, v in params.items()},
            "state": {k: self.encode(v, f"{where}.{k}") for k, v in state.items()},
        }


def _dtype(spec, what: str) -> np.dtype:
    if not isinstance(spec, str):
        raise ProbeFormatError(f"{what} has dtype {spec!r:.60}, which is not a dtype string")
    try:
        return np.dtype(spec)
    except (TypeError, ValueError):
        raise ProbeFormatError(f"{what} has an unknown dtype {spec!r:.60}") from None


def _strarray(v: dict) -> np.ndarray:
    """A string array from its JSON form, refusing widths/shapes the data cannot back."""
    dtype = _dtype(v.get("dtype"), "a string array")
    if dtype.kind not in "UO":
        raise ProbeFormatError(f"string array with dtype {v.get('dtype')!r}")
    shape = v.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ProbeFormatError(f"string array with invalid shape {shape!r:.60}")
    flat: list = []
    stack = [v["__strarray__"]]
    while stack:  # iterative: the nesting depth was bounded when the JSON was read
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, str):
            flat.append(x)
        else:
            raise ProbeFormatError(f"string array holds a {type(x).__name__}, not a str")
    if math.prod(shape) != len(flat):
        raise ProbeFormatError(
            f"string array of shape {shape} holds {len(flat)} strings; the file is corrupt"
        )
    # numpy allocates itemsize bytes per element whatever the strings hold, so a tiny file
    # could ask for gigabytes (dtype '<U200000000'): bound the array before building it.
    longest = max((len(x) for x in flat), default=0)
    if dtype.kind == "U":
        width = dtype.itemsize // 4
        if width < longest or dtype.itemsize * len(flat) > MAX_STRING_ARRAY_BYTES:
            raise ProbeFormatError(
                f"string array declares dtype {dtype.str!r} ({dtype.itemsize * len(flat):,} "
                f"bytes) for {len(flat)} strings of at most {longest} characters; the file is "
                f"corrupt or crafted (a saved string array is at most "
                f"{MAX_STRING_ARRAY_BYTES:,} bytes)"
            )
    return np.array(v["__strarray__"], dtype=dtype).reshape(shape)


class Decoder:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.used: set[str] = set()

    def decode(self, v):
        if v is None or isinstance(v, bool | int | float | str):
            return v
        if isinstance(v, list):
            return [self.decode(x) for x in v]
        if not isinstance(v, dict):
            raise ProbeFormatError(f"unexpected value {v!r:.60} in {JSON_NAME}")
        if "__array__" in v:
            name = v["__array__"]
            if not isinstance(name, str) or name not in self.arrays:
                raise ProbeFormatError(
                    f"{JSON_NAME} refers to array {name!r:.60}, which is not in the arrays file"
                )
            self.used.add(name)
            return self.arrays[name]
        if "__strarray__" in v:
            return _strarray(v)
        if "__np__" in v:
            dtype = _dtype(v["__np__"], "a numpy scalar")
            if dtype.kind not in _SAFETENSORS_KINDS + "U":
                raise ProbeFormatError(f"numpy scalar with dtype {v['__np__']!r}")
            value = self.decode(v.get("value"))
            if not isinstance(value, bool | int | float | str):
                raise ProbeFormatError(f"numpy scalar with value {value!r:.60}")
            try:
                return dtype.type(value)
            except (TypeError, ValueError, OverflowError):
                raise ProbeFormatError(f"bad {dtype} value {value!r:.60}") from None
        if "__float__" in v:
            if v["__float__"] not in ("nan", "inf", "-inf"):
                raise ProbeFormatError(f"bad float {v['__float__']!r:.60}")
            return float(v["__float__"])
        if "__tuple__" in v:
            return tuple(self.decode(x) for x in _as(list, v["__tuple__"], "__tuple__"))
        if "__items__" in v:
            items = _as(list, v["__items__"], "__items__")
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise ProbeFormatError("__items__ must hold [key, value] pairs")
            out = {}
            for k, x in items:
                key = self.decode(k)
                try:
                    out[key] = self.decode(x)
                except TypeError:  # an unhashable key
                    raise ProbeFormatError(f"unusable dict key {key!r:.60}") from None
            return out
        if "__estimator__" in v:
            return self.estimator(v)
        bad = [k for k in v if k.startswith("__")]
        if bad:
            raise ProbeFormatError(
                f"unknown tag {bad[0]!r:.60} in {JSON_NAME}; the file is corrupt or from a "
                "newer version of lmprobe-jupyter"
            )
        return {k: self.decode(x) for k, x in v.items()}

    def estimator(self, v):
        if not isinstance(v, dict) or not isinstance(v.get("__estimator__"), str):
            raise ProbeFormatError(f"expected a saved estimator, got {v!r:.60}")
        name = v["__estimator__"]
        if name == SEQUENCE_PROBE_TAG:
            return self.sequence_probe(v)
        cls = _safe_class(name)
        if name == "Pipeline":
            steps = _as(list, v.get("steps"), "Pipeline steps")
            if not steps or not all(
                isinstance(st, list) and len(st) == 2 and isinstance(st[0], str) for st in steps
            ):
                raise ProbeFormatError("Pipeline steps must be [name, estimator] pairs")
            return cls([(step, self.estimator(sub)) for step, sub in steps])
        params = {k: self.decode(x) for k, x in _as(dict, v.get("params", {}), name).items()}
        try:
            est = cls(**params)
        except TypeError as exc:
            raise ProbeFormatError(
                f"cannot rebuild {name} with the saved parameters: {exc}"
            ) from None
        for k, x in _as(dict, v.get("state", {}), name).items():
            if not isinstance(k, str) or k.startswith("__"):
                raise ProbeFormatError(f"bad attribute name {k!r} for {name}")
            try:
                setattr(est, k, self.decode(x))
            except AttributeError:  # a read-only property
                raise ProbeFormatError(f"{name} has no settable attribute {k!r}") from None
        return est

    def sequence_probe(self, v):
        """A fitted MIL / attention / multimax probe from its arrays and JSON state (only
        the kinds :func:`.sequence_probes.sequence_probe_from_state` knows are built)."""
        from ..probes.sequence_probes import sequence_probe_from_state

        meta = self.decode(_as(dict, v.get("meta"), "sequence probe meta"))
        arrays = {
            k: self.decode(x)
            for k, x in _as(dict, v.get("arrays"), "sequence probe arrays").items()
        }
        if not isinstance(meta, dict) or not all(
            isinstance(a, np.ndarray) for a in arrays.values()
        ):
            raise ProbeFormatError("a saved sequence probe needs a JSON meta object and arrays")
        try:
            return sequence_probe_from_state(arrays, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProbeFormatError(f"cannot rebuild the saved sequence probe: {exc}") from None


def _as(kind: type, v, what: str):
    if not isinstance(v, kind):
        raise ProbeFormatError(
            f"{what} in {JSON_NAME} must be a {'list' if kind is list else 'JSON object'}, "
            f"got {type(v).__name__}"
        )
    return v


def plain(v):
    """A JSON-able plain-Python copy of simple values (for the human-readable summary)."""
    if isinstance(v, np.ndarray):
        return [plain(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        return plain(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return repr(v)


# ---------------------------------------------------------------------------- hashing
def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``arrays`` (order independent)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(b"\0")
        h.update(a.dtype.newbyteorder("<").str.encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- probe <-> dict
def _fingerprint(probe) -> str | None:
    """Fingerprint of the weights the probe was trained on (never of the ones loaded now)."""
    fp = getattr(probe, "model_fingerprint_", None)
    if fp:
        return fp
    if getattr(probe, "dataset", None) is not None:
        return (probe.dataset_info_ or {}).get("model_fingerprint")
    return None


#: Learned attributes older files may hold that are no longer state (they are derived).
OBSOLETE_STATE = frozenset({"last_cache_hits_", "dataset_info_", "sweep_result_"})


def _header() -> dict:
    import sklearn

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library": {
            "lmprobe_jupyter": _library_version(),
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
    }


def _pooling_name(p) -> str:
    from ..probes.pooling import pooling_key

    return p if isinstance(p, str) else f"{getattr(p, '__name__', 'callable')} ({pooling_key(p)})"


def probe_summary(probe) -> dict:
    """Human-readable facts about a fitted probe (model, layers, pooling, classifier, ...)."""
    pipe = probe.pipeline_
    clf = pipe.steps[-1][1]
    layers = getattr(probe, "layers_", None)
    # The model it was trained on (kept even when loaded with model=other); a probe fitted
    # from activations has no layers_ and may never have named a model.
    model = getattr(probe, "trained_model_", None) or (
        probe.model_name if layers is not None else (probe.model or probe.dataset)
    )
    return {
        "model": model,
        "model_fingerprint": _fingerprint(probe),
        "compute_dtype": getattr(probe, "compute_dtype_", None),
        "dataset": probe.dataset,
        "task": probe.task,
        "layers": None if layers is None else [int(x) for x in layers],
        "candidate_layers": plain(getattr(probe, "candidate_layers_", None)),
        "selected_layers": plain(getattr(probe, "selected_layers_", None)),
        "pooling": {
            "train": _pooling_name(probe.train_pooling_),
            "inference": _pooling_name(probe.inference_pooling_),
        },
        "classes": plain(getattr(probe, "classes_", None)),
        "threshold": plain(getattr(probe, "threshold_", None)),
        "metrics": plain(getattr(probe, "metrics_", None)),
        "classifier": {
            "type": type(clf).__name__,
            "params": plain(clf.get_params(deep=False)),
        },
        "steps": [{"name": name, "type": type(step).__name__} for name, step in pipe.steps[:-1]],
        "n_features_in": int(probe.n_features_in_),
    }


def pickle_manifest(probe, payload: bytes, card: dict | None = None) -> dict:
    """``probe.json`` for a probe shared as a pickle: metadata only, plus the pickle's hash."""
    return {
        **_header(),
        "summary": probe_summary(probe),
        "card": _Encoder().encode(card or {}, "card"),
        "weights": PICKLE_NAME,
        "pickle_sha256": hashlib.sha256(payload).hexdigest(),
    }


def probe_to_dict(probe, card: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Describe a fitted probe as (``probe.json`` content, arrays).

    Raises
    ------
    UnsafeFormatError
        For callable poolings and estimators outside :data:`SAFE_CLASSES`.
    """
    probe.check_fitted()
    enc = _Encoder()
    params = probe.get_params()
    for key in ("pooling", "train_pooling", "inference_pooling"):
        fn = params.get(key)
        if callable(fn):
            name = getattr(fn, "__name__", repr(fn))
            if not is_picklable_function(fn):
                raise UnsafeFormatError(
                    f"{key} is {_function_kind(fn)} ({name!r}); the safe format stores no code "
                    "and pickle cannot store it either. Define it as a named function at "
                    "module level in an importable module (def my_pool(h): ...) and save to a "
                    "'.pkl' path, or use a named pooling: 'last_token', 'mean', "
                    "'first_token', 'max', 'min', 'all'"
                )
            raise UnsafeFormatError(
                f"{key} is a callable ({name!r}); the safe format stores no code. Save to a "
                "'.pkl' path instead (pickle stores the function by its module and name, so "
                "that module must be importable where the probe is loaded), or use a named "
                "pooling: 'last_token', 'mean', 'first_token', 'max', 'min', 'all'"
            )
    enc_params = {}
    for k, v in params.items():
        try:
            enc_params[k] = enc.encode(v, f"params.{k}")
        except _Unencodable:
            hint = (
                f"classifier={type(v).__name__} is not one the safe format can store "
                f"({', '.join(sorted(SAFE_CLASSES))})"
                if k == "classifier"
                else f"parameter {k}={v!r:.60} is not JSON-serializable"
            )
            raise UnsafeFormatError(
                f"{hint}; save to a '.pkl' path instead (pickle keeps any estimator, and "
                "loading it from a shared source needs trust_classifier=True)"
            ) from None
    state, dropped = {}, []
    for k, v in probe.learned_state().items():
        try:
            state[k] = enc.encode(v, k)
        except _Unencodable as exc:
            if k == "pipeline_":
                raise UnsafeFormatError(
                    f"the fitted {type(exc.value).__name__} cannot be stored in the safe format "
                    f"(supported: {', '.join(sorted(SAFE_CLASSES))}); save to a '.pkl' path "
                    "instead (pickle)"
                ) from None
            dropped.append(k)
            for name in [n for n in enc.arrays if n == k or n.startswith(k + ".")]:
                del enc.arrays[name]
    if dropped:
        warnings.warn(
            f"not saved (not storable in the safe format): {', '.join(sorted(dropped))}",
            UserWarning,
            stacklevel=3,
        )
    summary = probe_summary(probe)
    data = {
        **_header(),
        "summary": summary,
        "card": enc.encode(card or {}, "card"),
        "params": enc_params,
        "state": state,
        "not_saved": sorted(dropped),
        "weights": ARRAYS_NAME,
        "arrays": {
            name: {"dtype": a.dtype.name, "shape": list(a.shape)} for name, a in enc.arrays.items()
        },
        "arrays_sha256": arrays_digest(enc.arrays),
    }
    return data, enc.arrays


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


def _function_kind(fn) -> str:
    name = getattr(fn, "__qualname__", "") or ""
    if "<lambda>" in name:
        return "a lambda"
    if "<locals>" in name:
        return "a function defined inside another function"
    return "a function pickle cannot find by its module and name"


def check_format(
    data,
    source: str,
    *,
    format: str = FORMAT,
    known_versions: tuple[int, ...] = KNOWN_FORMAT_VERSIONS,
    what: str = "probe",
) -> int:
    """Refuse ``data`` unless its ``"format"`` is ``format`` and its ``"format_version"``
    one of ``known_versions`` (newer versions ask for an upgrade; 0, negative or unknown
    versions are corrupt). ``what`` names the kind of file in the messages. Returns the
    version."""
    if not isinstance(data, dict) or data.get("format") != format:
        raise ProbeFormatError(
            f'{source} is not an lmprobe-jupyter {what} (missing "format": {format!r})'
        )
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProbeFormatError(f"{source} has an invalid format_version {version!r:.60}")
    newest = max(known_versions)
    if version > newest:
        written = data.get("library")
        written = written.get("lmprobe_jupyter", "?") if isinstance(written, dict) else "?"
        raise ProbeFormatError(
            f"{source} uses {what} format version {version} (written by lmprobe-jupyter "
            f"{written}), but this lmprobe-jupyter {_library_version()} reads format version "
            f"{newest} at most; upgrade lmprobe-jupyter to load it"
        )
    if version not in known_versions:
        raise ProbeFormatError(
            f"{source} has format_version {version}, which no lmprobe-jupyter ever wrote "
            f"(known: {', '.join(map(str, known_versions))}); the file is corrupt or "
            "was edited by hand"
        )
    return version


def check_header(data, source: str) -> None:
    """Refuse files that are not lmprobe probes or use a format version this code lacks."""
    check_format(data, source)


def _check_arrays(data: dict, arrays: dict, source: str) -> None:
    """``arrays`` (name -> ndarray, or name -> (dtype name, shape) from a file header) must
    match the manifest in ``probe.json``; with ndarrays, the recorded hash too."""
    manifest = data.get("arrays")
    if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
        raise ProbeFormatError(f"{source}: {JSON_NAME} has no valid array manifest")
    missing = sorted(set(manifest) - set(arrays))
    extra = sorted(set(arrays) - set(manifest))
    if missing or extra:
        raise ProbeFormatError(
            f"{source}: the arrays file does not match {JSON_NAME} (missing: {missing[:5]}, "
            f"unexpected: {extra[:5]}); the files were modified or mixed up"
        )
    for name, spec in manifest.items():
        a = arrays[name]
        dtype, shape = (a.dtype.name, list(a.shape)) if isinstance(a, np.ndarray) else a
        if dtype != spec.get("dtype") or list(shape) != list(spec.get("shape") or []):
            raise ProbeFormatError(
                f"{source}: array {name!r} is {dtype}{list(shape)} but {JSON_NAME} "
                f"records {spec.get('dtype')}{spec.get('shape')}; the files were modified"
            )
    if not all(isinstance(a, np.ndarray) for a in arrays.values()):
        return
    digest = arrays_digest(arrays)
    if digest != data.get("arrays_sha256"):
        raise ProbeFormatError(
            f"{source}: the arrays' SHA-256 ({digest[:12]}...) does not match the one recorded "
            f"in {JSON_NAME} ({str(data.get('arrays_sha256'))[:12]}...); the arrays were "
            "modified after saving"
        )


def probe_from_dict(data: dict, arrays: dict[str, np.ndarray], source: str = "probe", *, probe_cls):
    """Rebuild a fitted probe of class ``probe_cls`` from :func:`probe_to_dict` output
    (runs no file code)."""
    check_header(data, source)
    _check_arrays(data, arrays, source)
    dec = Decoder(arrays)
    try:
        params = {
            k: dec.decode(v) for k, v in _as(dict, data.get("params") or {}, "params").items()
        }
        valid = set(probe_cls.param_names())
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ProbeFormatError(f"{source}: unknown Probe parameters {unknown}")
        if isinstance(params.get("score_roles"), list):
            params["score_roles"] = tuple(params["score_roles"])
        probe = probe_cls(**params)
        state = {}
        for k, v in _as(dict, data.get("state") or {}, "state").items():
            if not (isinstance(k, str) and k.endswith("_") and not k.startswith("_")):
                raise ProbeFormatError(f"{source}: bad fitted attribute name {k!r:.60}")
            if k not in OBSOLETE_STATE:
                state[k] = dec.decode(v)
        if "pipeline_" not in state:
            raise ProbeFormatError(f"{source}: no fitted pipeline in {JSON_NAME}")
        fp = _as(dict, data.get("summary") or {}, "summary").get("model_fingerprint")
        if fp:
            state["model_fingerprint_"] = fp
        labels = _as(dict, data.get("card") or {}, "card").get("class_labels")
        if labels:
            state["class_labels_"] = dec.decode(labels)
        try:
            probe.restore_state(state)
        except ValueError as exc:  # a name that is not learned state (train_pooling_, ...)
            raise ProbeFormatError(f"{source}: {exc}") from None
    except ProbeFormatError as exc:
        if str(exc).startswith(source):
            raise
        raise ProbeFormatError(f"{source}: {exc}") from None
    _check_consistent(probe, source)
    return probe


def _check_consistent(probe, source: str) -> None:
    """Run the rebuilt pipeline on one zero row: shape mismatches fail here, not later."""
    n = getattr(probe, "n_features_in_", None)
    if not isinstance(n, int | np.integer) or n < 1:
        raise ProbeFormatError(f"{source}: invalid n_features_in_ {n!r}")
    layers = getattr(probe, "layers_", None)
    if layers is not None and (not isinstance(layers, list) or not layers):
        raise ProbeFormatError(f"{source}: invalid layers_ {layers!r}")
    from ..probes.sequence_probes import is_sequence_probe

    # A sequence probe reads token sequences: one prompt of two zero tokens.
    zeros = np.zeros((1, int(n)))
    if is_sequence_probe(probe.pipeline_.steps[-1][1]):
        zeros = [np.zeros((2, int(n)))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = probe.pipeline_.predict(zeros)
    except Exception as exc:  # noqa: BLE001 - any failure means inconsistent arrays
        raise ProbeFormatError(
            f"{source}: the saved arrays are inconsistent with each other "
            f"({type(exc).__name__}: {exc})"
        ) from None
    classes = getattr(probe, "classes_", None)
    if probe.task == "classification" and classes is not None and out[0] not in set(classes):
        raise ProbeFormatError(f"{source}: predictions are not among classes_ {classes!r}")


# ---------------------------------------------------------------------------- files
def dumps_json(data: dict) -> str:
    """``probe.json`` text (UTF-8, no NaN: non-finite floats are tagged)."""
    return json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (a no-op where directories cannot be fsynced)."""
    try:
        _fsync_file(folder)
    except OSError:
        pass


def atomic_write(path: Path, payload: bytes, *, prefix: str | None = None) -> None:
    """Write ``payload`` to ``path`` under a temporary name (starting ``prefix``, default
    ``.NAME.tmp-``), fsync it and rename it into place (readers see the old file or the
    new one, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(arrays, str(path))
    _fsync_file(path)


def write_safe_dir(folder: Path, data: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``probe.json`` + ``arrays.safetensors`` into a new, empty folder (fsynced)."""
    _write_arrays(folder / ARRAYS_NAME, arrays)
    payload = dumps_json(data).encode("utf-8")
    with open(folder / JSON_NAME, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def _is_temp_name(name: str) -> bool:
    return any(name.startswith(f".{n}.tmp-") for n in (ARRAYS_NAME, JSON_NAME, PENDING_NAME))


def is_probe_folder(folder: Path) -> bool:
    """Does ``folder`` hold a saved probe (a ``probe.json`` in this library's format)?"""
    try:
        data = read_json(Path(folder) / JSON_NAME)
    except (OSError, ProbeFormatError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _owned_by_probe(name: str) -> bool:
    return name in OWNED_NAMES or _is_temp_name(name)


def check_save_folder(
    path: Path,
    overwrite: bool,
    *,
    what: str = "probe",
    json_name: str = JSON_NAME,
    is_saved=is_probe_folder,
    owns=_owned_by_probe,
    files: str = f"{JSON_NAME}, {ARRAYS_NAME}",
) -> None:
    """May a ``what`` be saved into the existing folder ``path``?

    Yes when it holds an earlier save (``is_saved(path)``), nothing, or only names the
    format owns (``owns(name)``); otherwise (a foreign ``json_name``, or other files and no
    ``json_name``) :class:`FileExistsError` unless ``overwrite``. ``files`` lists the
    format's files for the message.
    """
    if overwrite:
        return
    has_json = (path / json_name).exists()
    if has_json and not is_saved(path):
        raise FileExistsError(
            f"{str(path)!r} holds a {json_name} that is not a saved lmprobe-jupyter {what}; "
            "choose another path, or pass overwrite=True to replace that file (other files "
            "in the folder are left alone)"
        )
    others = sorted(n.name for n in path.iterdir() if not owns(n.name))
    if others and not has_json:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise FileExistsError(
            f"{str(path)!r} exists and is not a saved {what} (it holds {shown}); choose "
            f"another path, or pass overwrite=True to write the {what}'s files ({files}) "
            "into it (other files are left alone)"
        )


def _check_folder_target(path: Path, overwrite: bool) -> None:
    if not path.is_dir():
        raise FileExistsError(
            f"{str(path)!r} is a file, so a probe folder cannot be saved there; choose another "
            f"path, or end it in '{SINGLE_FILE_SUFFIX}' (one file) or '.pkl' (pickle)"
        )
    check_save_folder(path, overwrite)


def _recover_pending(folder: Path) -> None:
    """Finish (or drop) a save of ``folder`` that was killed between its two renames."""
    pending = folder / PENDING_NAME
    if not pending.exists():
        return
    if _choose_json(folder, str(folder)) == pending:
        os.replace(pending, folder / JSON_NAME)
        fsync_dir(folder)
    else:
        pending.unlink(missing_ok=True)


def _save_into_dir(folder: Path, data: dict, arrays: dict[str, np.ndarray]) -> None:
    """Replace the owned files of an existing folder, leaving every other file alone.

    The arrays are written and fsynced under a temporary name and ``probe.json``'s new
    text as :data:`PENDING_NAME`; then the arrays are renamed into place and the pending
    JSON last. A kill between the renames leaves new arrays with the old ``probe.json``:
    the loader then uses the pending JSON, whose hash matches them.
    """
    try:
        _recover_pending(folder)
    except (OSError, ProbeFormatError):
        (folder / PENDING_NAME).unlink(missing_ok=True)
    tmp_arrays = folder / f".{ARRAYS_NAME}.tmp-{uuid.uuid4().hex[:8]}"
    pending = folder / PENDING_NAME
    committed = False
    try:
        _write_arrays(tmp_arrays, arrays)
        atomic_write(pending, dumps_json(data).encode("utf-8"))
        os.replace(tmp_arrays, folder / ARRAYS_NAME)
        committed = True
        os.replace(pending, folder / JSON_NAME)
        fsync_dir(folder)
    finally:
        tmp_arrays.unlink(missing_ok=True)
        if not committed:
            pending.unlink(missing_ok=True)
    # A pickle left by an earlier save of this folder (a pushed-pickle layout) is stale now.
    (folder / PICKLE_NAME).unlink(missing_ok=True)


def _save_new_dir(path: Path, data: dict, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write_safe_dir(tmp, data, arrays)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def _is_pickle_path(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def _is_probe_file(path: Path) -> bool:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return _META_KEY in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - not a safetensors file at all
        return False


def _check_file_target(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a directory, but a '{path.suffix}' probe is one file; choose "
            f"another path, or save to {str(path.with_suffix(''))!r} (no suffix) for a probe "
            "folder"
        )
    if (
        path.suffix.lower() == SINGLE_FILE_SUFFIX
        and path.exists()
        and not overwrite
        and not _is_probe_file(path)
    ):
        raise FileExistsError(
            f"{str(path)!r} exists and is not a saved probe (it may be model weights); choose "
            "another path, or pass overwrite=True to replace it"
        )


def _check_picklable(probe) -> None:
    for key in ("pooling", "train_pooling", "inference_pooling"):
        fn = getattr(probe, key, None)
        if callable(fn) and not is_picklable_function(fn):
            raise UnpicklableProbeError(
                f"{key} is {_function_kind(fn)} ({getattr(fn, '__name__', fn)!r}), which "
                "pickle cannot store: pickle saves a function by its module and name. Define "
                "it as a named function at module level in an importable module "
                "(def my_pool(h): ...), refit, and save again; or use a named pooling: "
                "'last_token', 'mean', 'first_token', 'max', 'min', 'all'"
            )


def save_probe(probe, path, *, card: dict | None = None, overwrite: bool = False) -> Path:
    """Save a fitted probe.

    Parameters
    ----------
    probe : Probe
    path : str or Path
        ``*.pkl``/``*.pickle``: pickle. ``*.safetensors``: the safe format in one file.
        Anything else: the safe format as a directory (``probe.json`` + ``arrays.safetensors``).
    card : dict, optional
        Extra sharing metadata stored in ``probe.json`` (description, class_labels, tags).
    overwrite : bool, default False
        Saving over an earlier saved probe always works and replaces only the probe's own
        files (:data:`OWNED_NAMES`); anything else in the folder (a README, results, a
        ``.git``) is kept. A folder that holds other data but no saved probe, or an
        existing ``.safetensors`` file that is not a saved probe, is refused unless
        ``overwrite=True``; even then only the probe's own files are written.

    Returns
    -------
    Path
        Where the probe was written.

    Raises
    ------
    UnsafeFormatError
        The probe holds something the safe format cannot store (a callable pooling, an
        estimator outside the allow-list); the message says what to do instead.
    UnpicklableProbeError
        A ``.pkl`` path, but the probe holds a lambda or local function.
    FileExistsError, IsADirectoryError
        The path holds something that is not a saved probe (see ``overwrite``).
    """
    path = Path(path).expanduser()
    if _is_pickle_path(path):
        probe.check_fitted()
        _check_file_target(path, overwrite)
        _check_picklable(probe)
        try:
            payload = pickle.dumps(probe, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise UnpicklableProbeError(
                f"the probe cannot be pickled ({exc}); a parameter or fitted estimator holds "
                "an object pickle cannot store (a lambda, a local function, an open handle)"
            ) from None
        atomic_write(path, payload)
        return path
    data, arrays = probe_to_dict(probe, card=card)
    if path.suffix.lower() == SINGLE_FILE_SUFFIX:
        from safetensors.numpy import save

        _check_file_target(path, overwrite)
        data = {**data, "weights": None}
        atomic_write(path, save(arrays, metadata={_META_KEY: dumps_json(data)}))
        return path
    if path.exists():
        _check_folder_target(path, overwrite)
        _save_into_dir(path, data, arrays)
    else:
        _save_new_dir(path, data, arrays)
    return path


# ---------------------------------------------------------------------------- reading
def _check_depth(data, source: str) -> None:
    stack = [(data, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ProbeFormatError(
                f"{source} nests deeper than {MAX_JSON_DEPTH} levels; a saved probe nests "
                "about 10 deep, so the file is corrupt or crafted"
            )
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


def parse_json(text: str, source: str):
    """``probe.json`` text -> data, with every failure a :class:`ProbeFormatError`."""
    if len(text) > MAX_JSON_BYTES:
        raise ProbeFormatError(
            f"{source} is {len(text):,} characters; a probe description is at most "
            f"{MAX_JSON_BYTES:,}"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeFormatError(f"{source} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ProbeFormatError(
            f"{source} nests too deeply to be a saved probe; the file is corrupt or crafted"
        ) from None
    _check_depth(data, source)
    return data


def read_json(path: Path):
    """Read a ``probe.json`` (bounded size and depth; errors are :class:`ProbeFormatError`)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ProbeFormatError(
            f"{path} is {size:,} bytes; a probe description is at most {MAX_JSON_BYTES:,}"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ProbeFormatError(f"{path} is not UTF-8 text, so not a {JSON_NAME}") from None
    return parse_json(text, str(path))


_ST_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
}


def _arrays_header(f, source: str) -> dict[str, tuple[str, list[int]]]:
    """name -> (numpy dtype name, shape) from an open safetensors file, reading no data."""
    out = {}
    for name in f.keys():
        sl = f.get_slice(name)
        code = sl.get_dtype()
        if code not in _ST_DTYPES:
            raise ProbeFormatError(f"{source}: array {name!r} has unsupported dtype {code}")
        out[name] = (_ST_DTYPES[code], list(sl.get_shape()))
    return out


def _fits(data, header) -> bool:
    try:
        _check_arrays(data, header, "")
    except ProbeFormatError:
        return False
    return True


def _read_arrays(path: Path, candidates: list[dict], source: str):
    """Check the safetensors header against the manifests before reading any data; return
    (arrays, the candidate whose manifest and hash match them, or the first)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = _arrays_header(f, source)
            fitting = [d for d in candidates if _fits(d, header)]
            if not fitting:
                _check_arrays(candidates[0], header, source)  # raises the precise mismatch
            arrays = {name: f.get_tensor(name) for name in header}
    except (ProbeFormatError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt header or truncated file
        raise ProbeFormatError(f"{source}: cannot read {path.name} ({exc})") from None
    if len(fitting) > 1:
        digest = arrays_digest(arrays)
        fitting = [d for d in fitting if d.get("arrays_sha256") == digest] or fitting
    return arrays, fitting[0]


def _choose_json(folder: Path, source: str):
    """The path of the JSON that describes ``folder``'s arrays: ``probe.json``, or the
    pending one of a save killed between its renames."""
    json_path, pending = folder / JSON_NAME, folder / PENDING_NAME
    data = read_json(json_path)
    check_header(data, source)
    if not pending.exists():
        return json_path
    try:
        pdata = read_json(pending)
        check_header(pdata, source)
    except ProbeFormatError:
        return json_path
    _arrays, chosen = _read_arrays(folder / ARRAYS_NAME, [data, pdata], source)
    return pending if chosen is pdata else json_path


def load_safe_files(json_path, arrays_path, source: str | None = None, *, probe_cls):
    """Load the safe format from a ``probe.json`` and an ``arrays.safetensors`` path."""
    json_path = Path(json_path)
    source = source or str(json_path.parent)
    data = read_json(json_path)
    check_header(data, source)
    candidates = [data]
    pending = json_path.parent / PENDING_NAME
    if json_path.name == JSON_NAME and pending.exists():
        try:
            pdata = read_json(pending)
            check_header(pdata, source)
            candidates.append(pdata)
        except ProbeFormatError:
            pass
    for d in candidates:
        if d.get("weights") != ARRAYS_NAME:
            raise ProbeFormatError(
                f"{source}: {JSON_NAME} names weights {d.get('weights')!r:.60}; the safe format "
                f"always stores them in {ARRAYS_NAME!r}"
            )
    arrays, data = _read_arrays(Path(arrays_path), candidates, source)
    return probe_from_dict(data, arrays, source, probe_cls=probe_cls)


def _load_single_file(path: Path, probe_cls):
    from safetensors import safe_open

    source = str(path)
    try:
        with safe_open(source, framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001
        raise ProbeFormatError(f"{path} is not a readable safetensors file ({exc})") from None
    if _META_KEY not in meta:
        raise ProbeFormatError(
            f"{path} is a safetensors file without lmprobe metadata; it is not a saved probe"
        )
    data = parse_json(meta[_META_KEY], f"{path}: probe metadata")
    check_header(data, source)
    if data.get("weights") is not None:
        raise ProbeFormatError(
            f"{path}: its metadata names weights {data.get('weights')!r:.60}; a single-file "
            "probe holds its arrays itself"
        )
    arrays, data = _read_arrays(path, [data], source)
    return probe_from_dict(data, arrays, source, probe_cls=probe_cls)


def untrusted_pickle_message(source: str) -> str:
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
    "pooling": "probes.pooling",
    "windows": "probes.windows",
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


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays, estimators without __eq__
        return False


def check_load_overrides(probe, overrides: dict) -> None:
    """Refuse overrides of what the loaded classifier was fitted on.

    Parameters that fix the features (:data:`FITTED_STRUCTURE_PARAMS`: layers, pooling,
    classifier, ...) are refused unless equal to the saved value: the saved classifier
    would be fed features it never saw, or ignore the new value silently. Other
    parameters (``device``, ``batch_size``, ``inference_pooling``, ``model``) may change.
    """
    for k, v in overrides.items():
        if k in FITTED_STRUCTURE_PARAMS and not _same(v, getattr(probe, k, None)):
            fitted = getattr(probe, "layers_", None)
            extra = f" (layers_={fitted})" if k == "layers" and fitted is not None else ""
            raise ValueError(
                f"{k}={v!r:.60} cannot be changed when loading: the saved classifier was fitted "
                f"with {k}={getattr(probe, k)!r:.60}{extra} and only predicts correctly with "
                f"it. Drop the {k}= override, or fit a new Probe({k}=...) on your data"
            )


def _with_overrides(probe, overrides: dict):
    check_load_overrides(probe, overrides)
    return probe.set_params(**overrides)


def load_probe(path, trust_classifier: bool = False, *, probe_cls, **overrides):
    """Load a probe written by :func:`save_probe`.

    Parameters
    ----------
    path : str or Path
        A safe-format directory, a ``.safetensors`` file, a ``probe.json`` inside a
        directory, or a ``.pkl``/``.pickle`` file.
    trust_classifier : bool, default False
        Needed for every pickle (a ``.pkl`` path, or a folder whose ``probe.json`` names
        one): unpickling runs code from the file, and no path or JSON can prove who wrote
        it. The safe format never needs it.
    probe_cls : type
        The probe class to rebuild (``Probe.load`` passes itself).
    **overrides
        Constructor parameters to change after loading (``device=``, ``batch_size=``, ...);
        parameters the classifier was fitted on (``layers``, ``pooling``, ``classifier``,
        ...) are refused.

    Raises
    ------
    ProbeFormatError
        Not a probe, an unknown format version, a malformed or oversized file, or files
        modified after saving.
    UntrustedPickleError
        A pickle without ``trust_classifier=True``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no saved probe at {str(path)!r}")
    if path.is_dir():
        json_path = path / JSON_NAME
        if not json_path.is_file():
            raise ProbeFormatError(f"{path} has no {JSON_NAME}; it is not a saved probe folder")
        data = read_json(json_path)
        check_header(data, str(path))
        digest = pickle_weights(data, str(path))
        if digest is not None:
            if not trust_classifier:
                raise UntrustedPickleError(untrusted_pickle_message(str(path)))
            probe = load_pickle(path / PICKLE_NAME, digest, probe_cls=probe_cls)
            return _with_overrides(probe, overrides)
        probe = load_safe_files(json_path, path / ARRAYS_NAME, str(path), probe_cls=probe_cls)
    elif path.name == JSON_NAME:
        return load_probe(
            path.parent, trust_classifier=trust_classifier, probe_cls=probe_cls, **overrides
        )
    elif _is_pickle_path(path):
        if not trust_classifier:
            raise UntrustedPickleError(untrusted_pickle_message(str(path)))
        probe = load_pickle(path, probe_cls=probe_cls)
    elif path.suffix.lower() == SINGLE_FILE_SUFFIX:
        probe = _load_single_file(path, probe_cls)
    else:
        raise ProbeFormatError(
            f"{path} is not a saved probe: expected a folder with {JSON_NAME}, a "
            f"'{SINGLE_FILE_SUFFIX}' file or a '.pkl' file"
        )
    return _with_overrides(probe, overrides)
