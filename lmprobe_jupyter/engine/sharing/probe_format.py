"""The probe file format: its names, versions, bounds, errors and the checks every reader runs.

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
How fitted estimators become ``probe.json`` + arrays is :mod:`.codec` and
:mod:`.probe_dict`; writing and reading the files is :mod:`.safe_files` (pickles:
:mod:`.pickles`).

``probe.json`` records the SHA-256 of the array contents and every array's dtype and shape
(:func:`check_arrays`), so a tampered or mismatched arrays file is refused; a file written
by a newer format version is refused with both versions named (:func:`check_format`).

What a file can ask for is bounded before anything is allocated: ``probe.json`` size and
nesting depth (:func:`read_json`, :func:`parse_json`), string-array widths
(:data:`.codec.MAX_STRING_ARRAY_BYTES`), and every tensor's dtype and shape in the
safetensors header (checked against the manifest in ``probe.json`` before a byte of data
is read).
"""

from __future__ import annotations

import hashlib
import json
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

# Bounds on what a probe file may ask for before anything is allocated. A real probe.json
# is a few KB to a few MB (string classes, metrics, a card) and nests about 10 deep.
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64


class ProbeFormatError(ValueError):
    """A saved probe is malformed, tampered with, or from a newer format version."""


class UnsafeFormatError(TypeError):
    """Something in the probe cannot be stored in the safe format (use a ``.pkl`` path)."""


def library_version() -> str:
    """The installed lmprobe-jupyter version (recorded in every file's header)."""
    from ... import __version__

    return __version__


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
            f"{written}), but this lmprobe-jupyter {library_version()} reads format version "
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


def check_arrays(data: dict, arrays: dict, source: str) -> None:
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


def dumps_json(data: dict) -> str:
    """``probe.json`` text (UTF-8, no NaN: non-finite floats are tagged)."""
    return json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False)


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
