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
Unpickling runs code chosen by whoever wrote the file, so pickles that come from a shared
source (the HuggingFace Hub, its download cache) need ``trust_classifier=True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np

FORMAT = "lmprobe-jupyter.probe"
FORMAT_VERSION = 1
JSON_NAME = "probe.json"
ARRAYS_NAME = "arrays.safetensors"
PICKLE_NAME = "probe.pkl"
PICKLE_SUFFIXES = (".pkl", ".pickle")
SINGLE_FILE_SUFFIX = ".safetensors"
_META_KEY = "lmprobe_probe"

# Allow-list of classes the safe format can rebuild: short name -> (module, attribute).
SAFE_CLASSES: dict[str, tuple[str, str]] = {
    "Pipeline": ("sklearn.pipeline", "Pipeline"),
    "LayerNormalizer": ("lmprobe_jupyter.engine.features", "LayerNormalizer"),
    "MassMeanAugmenter": ("lmprobe_jupyter.engine.features", "MassMeanAugmenter"),
    "StandardScaler": ("sklearn.preprocessing", "StandardScaler"),
    "PCA": ("sklearn.decomposition", "PCA"),
    "LabelBinarizer": ("sklearn.preprocessing", "LabelBinarizer"),
    "LogisticRegression": ("sklearn.linear_model", "LogisticRegression"),
    "RidgeProbaClassifier": ("lmprobe_jupyter.engine.classifiers", "RidgeProbaClassifier"),
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
    "MassMeanClassifier": ("lmprobe_jupyter.engine.classifiers", "MassMeanClassifier"),
    "CVLogisticRegression": ("lmprobe_jupyter.engine.classifiers", "CVLogisticRegression"),
    "LogisticEnsembleClassifier": (
        "lmprobe_jupyter.engine.classifiers",
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
    """A pickle from a shared source was loaded without ``trust_classifier=True``."""


def _library_version() -> str:
    from .. import __version__

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
_SAFETENSORS_KINDS = "biuf"  # bool, signed int, unsigned int, float


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
            return {"__strarray__": a.tolist(), "dtype": a.dtype.str, "shape": list(a.shape)}
        raise _Unencodable(where, a)

    def estimator(self, est, where: str):
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
            if name not in self.arrays:
                raise ProbeFormatError(
                    f"{JSON_NAME} refers to array {name!r}, which is not in the arrays file"
                )
            self.used.add(name)
            return self.arrays[name]
        if "__strarray__" in v:
            dtype = np.dtype(v["dtype"])
            if dtype.kind not in "UO":
                raise ProbeFormatError(f"string array with dtype {v['dtype']!r}")
            arr = np.array(v["__strarray__"], dtype=dtype)
            return arr.reshape(v["shape"])
        if "__np__" in v:
            dtype = np.dtype(v["__np__"])
            if dtype.kind not in _SAFETENSORS_KINDS + "U":
                raise ProbeFormatError(f"numpy scalar with dtype {v['__np__']!r}")
            return dtype.type(self.decode(v["value"]))
        if "__float__" in v:
            if v["__float__"] not in ("nan", "inf", "-inf"):
                raise ProbeFormatError(f"bad float {v['__float__']!r}")
            return float(v["__float__"])
        if "__tuple__" in v:
            return tuple(self.decode(x) for x in v["__tuple__"])
        if "__items__" in v:
            return {self.decode(k): self.decode(x) for k, x in v["__items__"]}
        if "__estimator__" in v:
            return self.estimator(v)
        bad = [k for k in v if k.startswith("__")]
        if bad:
            raise ProbeFormatError(
                f"unknown tag {bad[0]!r} in {JSON_NAME}; the file is corrupt or from a newer "
                "version of lmprobe-jupyter"
            )
        return {k: self.decode(x) for k, x in v.items()}

    def estimator(self, v):
        name = v["__estimator__"]
        cls = _safe_class(name)
        if name == "Pipeline":
            return cls([(step, self.estimator(sub)) for step, sub in v["steps"]])
        params = {k: self.decode(x) for k, x in v.get("params", {}).items()}
        try:
            est = cls(**params)
        except TypeError as exc:
            raise ProbeFormatError(
                f"cannot rebuild {name} with the saved parameters: {exc}"
            ) from None
        for k, x in v.get("state", {}).items():
            if not isinstance(k, str) or k.startswith("__"):
                raise ProbeFormatError(f"bad attribute name {k!r} for {name}")
            setattr(est, k, self.decode(x))
        return est


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
    from .pooling import pooling_key

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
        if callable(params.get(key)):
            raise UnsafeFormatError(
                f"{key} is a callable ({getattr(params[key], '__name__', params[key])!r}); the "
                "safe format stores no code. Save to a '.pkl' path instead (pickle), or use a "
                "named pooling: 'last_token', 'mean', 'first_token', 'max', 'min', 'all'"
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


def check_header(data, source: str) -> None:
    """Refuse files that are not lmprobe probes or come from a newer format version."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ProbeFormatError(
            f'{source} is not an lmprobe-jupyter probe (missing "format": {FORMAT!r})'
        )
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProbeFormatError(f"{source} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        written = (data.get("library") or {}).get("lmprobe_jupyter", "?")
        raise ProbeFormatError(
            f"{source} uses probe format version {version} (written by lmprobe-jupyter "
            f"{written}), but this lmprobe-jupyter {_library_version()} reads format version "
            f"{FORMAT_VERSION} at most; upgrade lmprobe-jupyter to load it"
        )


def _check_arrays(data: dict, arrays: dict[str, np.ndarray], source: str) -> None:
    manifest = data.get("arrays")
    if not isinstance(manifest, dict):
        raise ProbeFormatError(f"{source}: {JSON_NAME} has no array manifest")
    missing = sorted(set(manifest) - set(arrays))
    extra = sorted(set(arrays) - set(manifest))
    if missing or extra:
        raise ProbeFormatError(
            f"{source}: the arrays file does not match {JSON_NAME} (missing: {missing[:5]}, "
            f"unexpected: {extra[:5]}); the files were modified or mixed up"
        )
    for name, spec in manifest.items():
        a = arrays[name]
        if a.dtype.name != spec.get("dtype") or list(a.shape) != list(spec.get("shape", [])):
            raise ProbeFormatError(
                f"{source}: array {name!r} is {a.dtype.name}{list(a.shape)} but {JSON_NAME} "
                f"records {spec.get('dtype')}{spec.get('shape')}; the files were modified"
            )
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
    Probe = probe_cls
    check_header(data, source)
    _check_arrays(data, arrays, source)
    dec = Decoder(arrays)
    params = {k: dec.decode(v) for k, v in (data.get("params") or {}).items()}
    valid = set(Probe.param_names())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ProbeFormatError(f"{source}: unknown Probe parameters {unknown}")
    if isinstance(params.get("score_roles"), list):
        params["score_roles"] = tuple(params["score_roles"])
    probe = Probe(**params)
    state = {}
    for k, v in (data.get("state") or {}).items():
        if not (isinstance(k, str) and k.endswith("_") and not k.startswith("_")):
            raise ProbeFormatError(f"{source}: bad fitted attribute name {k!r}")
        if k not in OBSOLETE_STATE:
            state[k] = dec.decode(v)
    if "pipeline_" not in state:
        raise ProbeFormatError(f"{source}: no fitted pipeline in {JSON_NAME}")
    fp = (data.get("summary") or {}).get("model_fingerprint")
    if fp:
        state["model_fingerprint_"] = fp
    labels = (data.get("card") or {}).get("class_labels")
    if labels:
        state["class_labels_"] = dec.decode(labels)
    try:
        probe.restore_state(state)
    except ValueError as exc:
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = probe.pipeline_.predict(np.zeros((1, int(n))))
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
    return json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False)


def _atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_safe_dir(folder: Path, data: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``probe.json`` + ``arrays.safetensors`` into an existing (empty) folder."""
    from safetensors.numpy import save_file

    save_file(arrays, str(folder / ARRAYS_NAME))
    (folder / JSON_NAME).write_text(dumps_json(data), encoding="utf-8")


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` folder to ``path``, replacing an earlier saved probe."""
    if not path.exists():
        os.replace(tmp, path)
        return
    if not path.is_dir() or not ((path / JSON_NAME).exists() or not any(path.iterdir())):
        raise FileExistsError(f"{str(path)!r} exists and is not a saved probe; choose another path")
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _is_pickle_path(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def save_probe(probe, path, *, card: dict | None = None) -> Path:
    """Save a fitted probe.

    Parameters
    ----------
    probe : Probe
    path : str or Path
        ``*.pkl``/``*.pickle``: pickle. ``*.safetensors``: the safe format in one file.
        Anything else: the safe format as a directory (``probe.json`` + ``arrays.safetensors``).
    card : dict, optional
        Extra sharing metadata stored in ``probe.json`` (description, class_labels, tags).

    Returns
    -------
    Path
        Where the probe was written.

    Raises
    ------
    UnsafeFormatError
        The probe holds something the safe format cannot store (a callable pooling, an
        estimator outside the allow-list); the message suggests a ``.pkl`` path.
    """
    path = Path(path).expanduser()
    if _is_pickle_path(path):
        import pickle

        probe.check_fitted()
        _atomic_write(path, pickle.dumps(probe, protocol=pickle.HIGHEST_PROTOCOL))
        return path
    data, arrays = probe_to_dict(probe, card=card)
    if path.suffix.lower() == SINGLE_FILE_SUFFIX:
        from safetensors.numpy import save

        data = {**data, "weights": None}
        _atomic_write(path, save(arrays, metadata={_META_KEY: dumps_json(data)}))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write_safe_dir(tmp, data, arrays)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ProbeFormatError(f"{path} is not valid JSON ({exc})") from None


def load_safe_files(json_path, arrays_path, source: str | None = None, *, probe_cls):
    """Load the safe format from a ``probe.json`` and an ``arrays.safetensors`` path."""
    from safetensors.numpy import load_file

    source = source or str(Path(json_path).parent)
    data = read_json(Path(json_path))
    check_header(data, source)
    try:
        arrays = load_file(str(arrays_path))
    except Exception as exc:  # noqa: BLE001 - a corrupt header or truncated file
        raise ProbeFormatError(f"{source}: cannot read {ARRAYS_NAME} ({exc})") from None
    return probe_from_dict(data, arrays, source, probe_cls=probe_cls)


def _load_single_file(path: Path, probe_cls):
    from safetensors.numpy import load

    raw = path.read_bytes()
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        arrays = load(raw)
    except Exception as exc:  # noqa: BLE001
        raise ProbeFormatError(f"{path} is not a readable safetensors file ({exc})") from None
    if _META_KEY not in meta:
        raise ProbeFormatError(
            f"{path} is a safetensors file without lmprobe metadata; it is not a saved probe"
        )
    try:
        data = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise ProbeFormatError(f"{path}: probe metadata is not valid JSON ({exc})") from None
    return probe_from_dict(data, arrays, str(path), probe_cls=probe_cls)


def _in_hub_cache(path: Path) -> bool:
    """Is ``path`` inside huggingface_hub's download cache (a shared source)?"""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    try:
        cache = Path(constants.HF_HUB_CACHE).expanduser().resolve()
        return path.resolve().is_relative_to(cache)
    except (OSError, ValueError):
        return False


def untrusted_pickle_message(source: str) -> str:
    return (
        f"{source} stores the probe as a pickle. Unpickling runs arbitrary code chosen by "
        "whoever wrote the file, so lmprobe-jupyter will not load pickles from a shared "
        "source by default. If you trust the author, pass trust_classifier=True; otherwise "
        "ask them to share the safe format (probe.save('name') / push_to_hub, which store "
        "arrays in safetensors)"
    )


def load_pickle(path: Path, expected_sha256: str | None = None, *, probe_cls):
    """Unpickle a probe (callers decide trust); checks the recorded hash first if given."""
    import pickle

    Probe = probe_cls

    payload = Path(path).read_bytes()
    if expected_sha256 is not None and hashlib.sha256(payload).hexdigest() != expected_sha256:
        raise ProbeFormatError(
            f"{path}: the pickle's SHA-256 does not match the one recorded in {JSON_NAME}; "
            "the file was modified after it was shared"
        )
    probe = pickle.loads(payload)
    if not isinstance(probe, Probe):
        raise ProbeFormatError(f"{path} holds a {type(probe).__name__}, not a Probe")
    return probe


def load_probe(path, trust_classifier: bool = False, *, probe_cls, **overrides):
    """Load a probe written by :func:`save_probe`.

    Parameters
    ----------
    path : str or Path
        A safe-format directory, a ``.safetensors`` file, a ``probe.json`` inside a
        directory, or a ``.pkl``/``.pickle`` file.
    trust_classifier : bool, default False
        Needed to unpickle a file from a shared source (the HuggingFace Hub download
        cache). Local pickles you wrote load without it. Ignored by the safe format.
    probe_cls : type
        The probe class to rebuild (``Probe.load`` passes itself).
    **overrides
        Constructor parameters to change after loading (``device=``, ``batch_size=``, ...).

    Raises
    ------
    ProbeFormatError
        Not a probe, a newer format version, or files modified after saving.
    UntrustedPickleError
        A pickle from a shared source without ``trust_classifier=True``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no saved probe at {str(path)!r}")
    if path.is_dir():
        json_path = path / JSON_NAME
        if not json_path.exists():
            raise ProbeFormatError(f"{path} has no {JSON_NAME}; it is not a saved probe folder")
        data = read_json(json_path)
        check_header(data, str(path))
        if data.get("weights") == PICKLE_NAME:
            pkl = path / PICKLE_NAME
            if not trust_classifier and _in_hub_cache(pkl):
                raise UntrustedPickleError(untrusted_pickle_message(str(path)))
            probe = load_pickle(pkl, data.get("pickle_sha256"), probe_cls=probe_cls)
            return probe.set_params(**overrides)
        probe = load_safe_files(json_path, path / ARRAYS_NAME, str(path), probe_cls=probe_cls)
    elif path.name == JSON_NAME:
        return load_probe(
            path.parent, trust_classifier=trust_classifier, probe_cls=probe_cls, **overrides
        )
    elif _is_pickle_path(path):
        if not trust_classifier and _in_hub_cache(path):
            raise UntrustedPickleError(untrusted_pickle_message(str(path)))
        probe = load_pickle(path, probe_cls=probe_cls)
    elif path.suffix.lower() == SINGLE_FILE_SUFFIX:
        probe = _load_single_file(path, probe_cls)
    else:
        raise ProbeFormatError(
            f"{path} is not a saved probe: expected a folder with {JSON_NAME}, a "
            f"'{SINGLE_FILE_SUFFIX}' file or a '.pkl' file"
        )
    return probe.set_params(**overrides)
