"""Fitted estimators and values <-> JSON + named arrays, rebuilt only from an allow-list.

Fitted sklearn objects are rebuilt from an allow-list of classes (:data:`SAFE_CLASSES`) by
calling their constructor with the saved parameters and setting the saved attributes;
numeric arrays go to the arrays file by name, everything else into ``probe.json`` with
tags that keep types exact. Decoding runs no code named by the file: no pickle, no eval,
and no import outside the allow-list.
"""

from __future__ import annotations

import math

import numpy as np

from .probe_format import JSON_NAME, ProbeFormatError

# Bound on one string array (numpy allocates its declared width for every element, so the
# width a file asks for is checked against the strings it holds; see _strarray).
MAX_STRING_ARRAY_BYTES = 16 * 2**20

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
_SAFETENSORS_KINDS = "biuf"  # bool, signed int, unsigned int, float
#: ``__estimator__`` tag of a sequence probe (:mod:`.sequence_probes`), stored through its
#: ``get_state()`` arrays and JSON rather than the allow-list's attribute walk.
SEQUENCE_PROBE_TAG = "SequenceProbe"


class Unencodable(Exception):
    """``value`` (at ``where``) cannot be stored in the safe format."""

    def __init__(self, where: str, value) -> None:
        super().__init__(where)
        self.where = where
        self.value = value


class Encoder:
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
                raise Unencodable(where, v)
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
                raise Unencodable(where, a)  # a loader would refuse it (see _strarray)
            return {"__strarray__": a.tolist(), "dtype": a.dtype.str, "shape": list(a.shape)}
        raise Unencodable(where, a)

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
            raise Unencodable(where, est)
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
    """JSON-able structure (from :class:`Encoder`) -> value, taking arrays from ``arrays``
    by name and recording which were ``used``."""

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
            return tuple(self.decode(x) for x in as_json_type(list, v["__tuple__"], "__tuple__"))
        if "__items__" in v:
            items = as_json_type(list, v["__items__"], "__items__")
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
            steps = as_json_type(list, v.get("steps"), "Pipeline steps")
            if not steps or not all(
                isinstance(st, list) and len(st) == 2 and isinstance(st[0], str) for st in steps
            ):
                raise ProbeFormatError("Pipeline steps must be [name, estimator] pairs")
            return cls([(step, self.estimator(sub)) for step, sub in steps])
        params = {
            k: self.decode(x) for k, x in as_json_type(dict, v.get("params", {}), name).items()
        }
        try:
            est = cls(**params)
        except TypeError as exc:
            raise ProbeFormatError(
                f"cannot rebuild {name} with the saved parameters: {exc}"
            ) from None
        for k, x in as_json_type(dict, v.get("state", {}), name).items():
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

        meta = self.decode(as_json_type(dict, v.get("meta"), "sequence probe meta"))
        arrays = {
            k: self.decode(x)
            for k, x in as_json_type(dict, v.get("arrays"), "sequence probe arrays").items()
        }
        if not isinstance(meta, dict) or not all(
            isinstance(a, np.ndarray) for a in arrays.values()
        ):
            raise ProbeFormatError("a saved sequence probe needs a JSON meta object and arrays")
        try:
            return sequence_probe_from_state(arrays, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProbeFormatError(f"cannot rebuild the saved sequence probe: {exc}") from None


def as_json_type(kind: type, v, what: str):
    """``v`` itself if it is a ``kind`` (``list`` or ``dict``), else a
    :class:`ProbeFormatError` naming ``what``."""
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
