"""The safe format on disk: probe folders replaced crash-safely, and single ``.safetensors`` files.

Saving over an existing probe folder replaces only the files the format owns
(:data:`.probe_format.OWNED_NAMES`), each written under a temporary name, fsynced and
renamed into place; a README, an evaluation CSV or a ``.git`` beside them are never
touched. The arrays are renamed first and ``probe.json`` last; ``probe.json``'s
replacement is written as ``.probe.json.pending`` beforehand, so a kill between the two
renames still loads the new probe (the pending file is used when its hash matches the
arrays). A folder (or file) that holds something other than a saved probe is refused
unless ``overwrite=True``.

Reading checks every tensor's dtype and shape in the safetensors header against the
manifest in ``probe.json`` before a byte of data is read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from .atomic import atomic_write, fsync_dir, fsync_file
from .probe_dict import probe_from_dict
from .probe_format import (
    ARRAYS_NAME,
    FORMAT,
    JSON_NAME,
    OWNED_NAMES,
    PENDING_NAME,
    PICKLE_NAME,
    SINGLE_FILE_SUFFIX,
    ProbeFormatError,
    arrays_digest,
    check_arrays,
    check_header,
    dumps_json,
    parse_json,
    read_json,
)

_META_KEY = "lmprobe_probe"


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(arrays, str(path))
    fsync_file(path)


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


def save_folder(path: Path, data: dict, arrays: dict[str, np.ndarray], overwrite: bool) -> None:
    """Save ``probe.json`` content ``data`` and ``arrays`` as the probe folder ``path``:
    a new folder renamed into place, or the owned files of an existing one replaced
    (refused, unless ``overwrite``, when it holds something that is not a saved probe)."""
    if path.exists():
        _check_folder_target(path, overwrite)
        _save_into_dir(path, data, arrays)
    else:
        _save_new_dir(path, data, arrays)


def save_single_file(path: Path, data: dict, arrays: dict[str, np.ndarray]) -> None:
    """Save ``data`` and ``arrays`` as one ``.safetensors`` file (written atomically): the
    arrays as tensors and ``probe.json`` (naming no weights file) as header metadata."""
    from safetensors.numpy import save

    data = {**data, "weights": None}
    atomic_write(path, save(arrays, metadata={_META_KEY: dumps_json(data)}))


def is_probe_file(path: Path) -> bool:
    """Is ``path`` a single-file probe (a safetensors file with lmprobe metadata)?"""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return _META_KEY in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - not a safetensors file at all
        return False


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
        check_arrays(data, header, "")
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
                check_arrays(candidates[0], header, source)  # raises the precise mismatch
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


def load_single_file(path: Path, probe_cls):
    """Load a single-file probe (the arrays and, as header metadata, ``probe.json``)."""
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
