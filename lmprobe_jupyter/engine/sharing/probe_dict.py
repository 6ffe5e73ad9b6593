"""A fitted probe <-> (``probe.json`` content, arrays): what is saved, and rebuilding from it.

:func:`probe_to_dict` describes a probe (header, human-readable summary, card, encoded
parameters and learned state, array manifest and hash); :func:`probe_from_dict` rebuilds
one through ``Probe.restore_state`` from that description, running no code from the file,
and checks the rebuilt pipeline on one zero row.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from .codec import SAFE_CLASSES, Decoder, Encoder, Unencodable, as_json_type, plain
from .pickles import function_kind, is_picklable_function
from .probe_format import (
    ARRAYS_NAME,
    FORMAT,
    FORMAT_VERSION,
    JSON_NAME,
    PICKLE_NAME,
    ProbeFormatError,
    UnsafeFormatError,
    arrays_digest,
    check_arrays,
    check_header,
    library_version,
)


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
            "lmprobe_jupyter": library_version(),
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
    }


def _pooling_name(p) -> str:
    from ..extraction.pooling import pooling_key

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
        "card": Encoder().encode(card or {}, "card"),
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
    enc = Encoder()
    params = probe.get_params()
    for key in ("pooling", "train_pooling", "inference_pooling"):
        fn = params.get(key)
        if callable(fn):
            name = getattr(fn, "__name__", repr(fn))
            if not is_picklable_function(fn):
                raise UnsafeFormatError(
                    f"{key} is {function_kind(fn)} ({name!r}); the safe format stores no code "
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
        except Unencodable:
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
        except Unencodable as exc:
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


def probe_from_dict(data: dict, arrays: dict[str, np.ndarray], source: str = "probe", *, probe_cls):
    """Rebuild a fitted probe of class ``probe_cls`` from :func:`probe_to_dict` output
    (runs no file code)."""
    check_header(data, source)
    check_arrays(data, arrays, source)
    dec = Decoder(arrays)
    try:
        params = {
            k: dec.decode(v)
            for k, v in as_json_type(dict, data.get("params") or {}, "params").items()
        }
        valid = set(probe_cls.param_names())
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ProbeFormatError(f"{source}: unknown Probe parameters {unknown}")
        if isinstance(params.get("score_roles"), list):
            params["score_roles"] = tuple(params["score_roles"])
        probe = probe_cls(**params)
        state = {}
        for k, v in as_json_type(dict, data.get("state") or {}, "state").items():
            if not (isinstance(k, str) and k.endswith("_") and not k.startswith("_")):
                raise ProbeFormatError(f"{source}: bad fitted attribute name {k!r:.60}")
            if k not in OBSOLETE_STATE:
                state[k] = dec.decode(v)
        if "pipeline_" not in state:
            raise ProbeFormatError(f"{source}: no fitted pipeline in {JSON_NAME}")
        fp = as_json_type(dict, data.get("summary") or {}, "summary").get("model_fingerprint")
        if fp:
            state["model_fingerprint_"] = fp
        labels = as_json_type(dict, data.get("card") or {}, "card").get("class_labels")
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
