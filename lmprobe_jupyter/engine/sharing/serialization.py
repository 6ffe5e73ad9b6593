"""Saving and loading probes: the path picks the format, and loading applies overrides.

A folder path or ``*.safetensors`` uses the safe format (:mod:`.probe_format`; written
and read by :mod:`.safe_files`), whose loading runs no code. A ``*.pkl`` / ``*.pickle``
path uses pickle (:mod:`.pickles`), which holds any estimator but is only ever loaded
with ``trust_classifier=True``. Parameters a loaded classifier was fitted on cannot be
overridden at load time (:func:`check_load_overrides`).
"""

from __future__ import annotations

from pathlib import Path

from .pickles import (
    UntrustedPickleError,
    load_pickle,
    pickle_weights,
    save_pickle,
    untrusted_pickle_message,
)
from .probe_dict import probe_to_dict
from .probe_format import (
    ARRAYS_NAME,
    JSON_NAME,
    PICKLE_NAME,
    PICKLE_SUFFIXES,
    SINGLE_FILE_SUFFIX,
    ProbeFormatError,
    check_header,
    read_json,
)
from .safe_files import (
    is_probe_file,
    load_safe_files,
    load_single_file,
    save_folder,
    save_single_file,
)

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


def _is_pickle_path(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


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
        and not is_probe_file(path)
    ):
        raise FileExistsError(
            f"{str(path)!r} exists and is not a saved probe (it may be model weights); choose "
            "another path, or pass overwrite=True to replace it"
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
        files (:data:`.probe_format.OWNED_NAMES`); anything else in the folder (a README,
        results, a ``.git``) is kept. A folder that holds other data but no saved probe, or an
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
        save_pickle(probe, path)
        return path
    data, arrays = probe_to_dict(probe, card=card)
    if path.suffix.lower() == SINGLE_FILE_SUFFIX:
        _check_file_target(path, overwrite)
        save_single_file(path, data, arrays)
        return path
    save_folder(path, data, arrays, overwrite)
    return path


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
        probe = load_single_file(path, probe_cls)
    else:
        raise ProbeFormatError(
            f"{path} is not a saved probe: expected a folder with {JSON_NAME}, a "
            f"'{SINGLE_FILE_SUFFIX}' file or a '.pkl' file"
        )
    return _with_overrides(probe, overrides)
