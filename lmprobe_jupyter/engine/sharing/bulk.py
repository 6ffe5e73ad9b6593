"""Bulk extraction: pooled activations of a large prompt list, straight into a directory.

Layout of an extraction directory::

    manifest.json              model, layers, pooling, batch size, labels?, metadata, and one
                               entry per finished batch (file, rows, SHA-256)
    prompts.jsonl              one line per prompt: {"prompt", "sha256"[, "label", "metadata"]}
    batch_00000.safetensors    tensors "hidden.layer_<L>" of shape (rows, hidden) float32;
    batch_00001.safetensors    with extract_router=True also "router.layer_<L>"
    ...                        (tokens, n_experts) and "router.offsets" (rows + 1,)

Why it survives being killed
----------------------------
Batch ``i`` always holds prompts ``[i * batch_size, (i + 1) * batch_size)``, so a rerun
knows which batches remain from the manifest alone. Every file is written to a temporary
name, fsync-ed and ``os.replace``-d into place, and a batch enters the manifest only after
its file is durable; the manifest itself is replaced the same way. A run killed at any
point leaves complete files plus a manifest that lists a subset of them. A rerun skips the
listed batches, adopts a finished batch file the manifest missed (killed between the two
renames) after checking its header, and computes the rest: no batch is computed or written
twice, and the files equal those of an uninterrupted run byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..profiling import operation
from .atomic import atomic_write
from .datasets import file_sha256

__all__ = [
    "ExtractionManifest",
    "ManifestEntry",
    "consolidate_cache",
    "extract",
    "load_activations",
    "load_manifest",
    "push_extraction",
]

FORMAT = "lmprobe-jupyter.extraction"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PROMPTS_NAME = "prompts.jsonl"
_TMP_PREFIX = ".tmp-"
#: Seconds before the first retry of a failed batch; doubled each time, capped.
RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 30.0


def batch_file(index: int) -> str:
    return f"batch_{index:05d}.safetensors"


def _prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def _rows_digest(hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


@dataclass
class ManifestEntry:
    """One finished batch file.

    Attributes
    ----------
    index : int
    file : str
        File name inside the extraction directory.
    start, stop : int
        Rows (prompt positions) it holds: ``prompts[start:stop]``.
    sha256 : str
        SHA-256 of the file.
    prompts_sha256 : str
        SHA-256 over its prompts' hashes (ties the file to its prompts).
    """

    index: int
    file: str
    start: int
    stop: int
    sha256: str
    prompts_sha256: str

    @property
    def n_prompts(self) -> int:
        return self.stop - self.start


@dataclass
class ExtractionManifest:
    """What :func:`load_manifest` returns: the extraction's settings and progress.

    Attributes
    ----------
    model_name, model_key : str
        The model and its cache identity (``name@fingerprint``).
    n_layers, hidden_size : int
    layers : list of int
    pooling : str
    batch_size : int
    dtype : str or None
        The model dtype used (stored tensors are always float32).
    n_prompts : int
    prompts : list of str
    prompt_hashes : list of str
        SHA-256 of each prompt.
    labels : list or None
    metadata : dict
        Free-form metadata given to :func:`extract`.
    prompt_metadata : list of dict or None
        Per-prompt metadata, when given as a list.
    extract_router : bool
    router_layers : list of int
        MoE layers with router logits in the batch files.
    entries : list of ManifestEntry
        Finished batches, in index order.
    """

    model_name: str
    model_key: str
    n_layers: int
    hidden_size: int
    layers: list[int]
    pooling: str
    batch_size: int
    dtype: str | None
    n_prompts: int
    prompts: list[str] = field(default_factory=list, repr=False)
    prompt_hashes: list[str] = field(default_factory=list, repr=False)
    labels: list | None = field(default=None, repr=False)
    metadata: dict = field(default_factory=dict)
    prompt_metadata: list | None = field(default=None, repr=False)
    extract_router: bool = False
    router_layers: list[int] = field(default_factory=list)
    entries: list[ManifestEntry] = field(default_factory=list, repr=False)

    @property
    def n_batches(self) -> int:
        return -(-self.n_prompts // self.batch_size)

    @property
    def complete(self) -> bool:
        """Every batch is written."""
        return len(self.entries) == self.n_batches

    @property
    def n_done(self) -> int:
        """Prompts in finished batches."""
        return sum(e.n_prompts for e in self.entries)

    @classmethod
    def for_prompts(
        cls, prompts: list[str], labels, metadata: dict, prompt_metadata, **settings
    ) -> ExtractionManifest:
        """A manifest with no finished batch yet for ``prompts`` (their count and hashes
        filled in); ``settings`` are the other attributes (model, layers, pooling, ...)."""
        return cls(
            n_prompts=len(prompts),
            prompts=prompts,
            prompt_hashes=[_prompt_sha256(p) for p in prompts],
            labels=labels,
            metadata=metadata,
            prompt_metadata=prompt_metadata,
            **settings,
        )

    def _settings(self) -> dict:
        d = asdict(self)
        for k in ("prompts", "prompt_hashes", "labels", "prompt_metadata", "entries"):
            d.pop(k)
        return d


# ------------------------------------------------------------------ durable writes
def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"), prefix=_TMP_PREFIX)


def _write_manifest(out: Path, m: ExtractionManifest) -> None:
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, **m._settings()}
    body["entries"] = [asdict(e) for e in m.entries]
    _write_text(out / MANIFEST_NAME, json.dumps(body, indent=1))


def _write_prompts(out: Path, m: ExtractionManifest) -> None:
    lines = []
    for i, (p, h) in enumerate(zip(m.prompts, m.prompt_hashes)):
        row = {"prompt": p, "sha256": h}
        if m.labels is not None:
            row["label"] = m.labels[i]
        if m.prompt_metadata is not None:
            row["metadata"] = m.prompt_metadata[i]
        lines.append(json.dumps(row, ensure_ascii=False))
    _write_text(out / PROMPTS_NAME, "\n".join(lines) + "\n")


def load_manifest(directory) -> ExtractionManifest:
    """Read an extraction directory's manifest (and its prompt list).

    Raises
    ------
    FileNotFoundError
        ``directory`` holds no ``manifest.json``.
    ValueError
        The manifest is not an lmprobe-jupyter extraction manifest.
    """
    out = Path(directory).expanduser()
    path = out / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{str(out)!r} has no {MANIFEST_NAME}; it is not an extraction directory written by "
            "extract() or consolidate_cache()"
        )
    body = json.loads(path.read_text(encoding="utf-8"))
    if body.get("format") != FORMAT or not isinstance(body.get("format_version"), int):
        raise ValueError(f"{str(path)!r} is not an lmprobe-jupyter extraction manifest")
    if body["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} uses extraction format {body['format_version']}, newer than this "
            f"lmprobe-jupyter reads ({FORMAT_VERSION}); upgrade it"
        )
    entries = [ManifestEntry(**e) for e in body.pop("entries")]
    body.pop("format"), body.pop("format_version")
    rows = [json.loads(line) for line in (out / PROMPTS_NAME).read_text("utf-8").splitlines()]
    m = ExtractionManifest(**body)
    m.prompts = [r["prompt"] for r in rows]
    m.prompt_hashes = [r["sha256"] for r in rows]
    m.labels = [r["label"] for r in rows] if rows and "label" in rows[0] else None
    m.prompt_metadata = [r["metadata"] for r in rows] if rows and "metadata" in rows[0] else None
    m.entries = sorted(entries, key=lambda e: e.index)
    return m


# ------------------------------------------------------------------ batches
def _batch_meta(m: ExtractionManifest, index: int, start: int, stop: int) -> dict[str, str]:
    return {
        "format": FORMAT,
        "model_key": m.model_key,
        "pooling": m.pooling,
        "batch": str(index),
        "start": str(start),
        "stop": str(stop),
        "prompts_sha256": _rows_digest(m.prompt_hashes[start:stop]),
    }


_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}


def safetensors_bytes(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
    """A safetensors file whose bytes depend only on its contents.

    ``safetensors.numpy.save_file`` orders the metadata as a hash map does, so two equal
    batches could differ in bytes; here the header is JSON with sorted keys and tensors
    are laid out in name order.
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype not in _ST_DTYPES:
            raise TypeError(f"tensor {name!r} has dtype {a.dtype}; expected float32 or int64")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _ST_DTYPES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def _save_batch(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    atomic_write(path, safetensors_bytes(tensors, meta), prefix=_TMP_PREFIX)


def _adoptable(path: Path, meta: dict[str, str], layers: list[int]) -> bool:
    """A batch file the manifest missed is kept if its header says it is this batch."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            ok = f.metadata() == meta
            return ok and all(f"hidden.layer_{layer}" in f.keys() for layer in layers)
    except Exception:  # noqa: BLE001 - unreadable file: recompute it
        return False


def _retrying(fn, max_retries: int | None):
    tries = 0
    while True:
        try:
            return fn()
        except (ValueError, TypeError, KeyboardInterrupt):
            raise
        except Exception:
            if max_retries is None or tries >= max_retries:
                raise
            time.sleep(min(RETRY_BASE_DELAY * 2**tries, RETRY_MAX_DELAY))
            tries += 1


def _check_resume(old: ExtractionManifest, new: ExtractionManifest, out: Path) -> None:
    diffs = [
        k
        for k in ("model_key", "layers", "pooling", "batch_size", "extract_router")
        if getattr(old, k) != getattr(new, k)
    ]
    if old.prompt_hashes != new.prompt_hashes:
        diffs.append("prompts")
    if old.labels != new.labels:
        diffs.append("labels")
    if diffs:
        raise ValueError(
            f"output_dir {str(out)!r} holds an extraction with other {', '.join(diffs)}; "
            "give a new output_dir to start another, or delete it to start over"
        )


def _output_dir(output_dir, model_name: str) -> Path:
    if output_dir is not None:
        return Path(output_dir).expanduser()
    from ..extraction.models import cache_root

    return cache_root() / "extractions" / model_name.replace("/", "--")


def _backend_extractor(model_name, remote, backend, dtype, device, batch_size):
    if backend not in ("local", "nnsight"):
        raise ValueError(f"backend={backend!r} is not one of 'local', 'nnsight'")
    if remote and backend != "nnsight":
        raise ValueError("remote=True runs on NDIF through nnsight: pass backend='nnsight'")
    if backend == "nnsight":
        from ..extraction.nnsight_backend import NNsightExtractor

        return NNsightExtractor(
            model_name,
            remote=remote,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            progress=False,
        )
    from ..extraction.extractor import Extractor
    from ..extraction.models import load_model

    loaded = load_model(model_name, device=device, dtype=dtype)
    return Extractor(loaded, batch_size=batch_size, progress=False, use_cache=False)


def _check_labels_metadata(prompts, labels, metadata):
    n = len(prompts)
    if labels is not None:
        labels = [x.item() if hasattr(x, "item") else x for x in labels]
        if len(labels) != n:
            raise ValueError(f"got {n} prompts but {len(labels)} labels")
    prompt_meta = None
    if metadata is None:
        metadata = {}
    elif isinstance(metadata, list | tuple):
        if len(metadata) != n:
            raise ValueError(f"metadata is a list of {len(metadata)} items for {n} prompts")
        prompt_meta, metadata = list(metadata), {}
    elif not isinstance(metadata, dict):
        raise TypeError("metadata must be a dict (for the extraction) or a list (one per prompt)")
    json.dumps([labels, metadata, prompt_meta])  # must be JSON-serialisable
    return labels, metadata, prompt_meta


def extract(
    model_name: str,
    prompts,
    layers="all",
    labels=None,
    metadata=None,
    output_dir=None,
    batch_size: int = 32,
    remote: bool = False,
    backend: str = "local",
    dtype: str | None = None,
    max_retries: int | None = 3,
    pooling: str = "last_token",
    extract_router: bool = False,
    *,
    device: str = "auto",
    progress: bool | None = None,
) -> Path:
    """Extract pooled activations of many prompts into a resumable directory.

    Parameters
    ----------
    model_name : str
        Hub ID or local path.
    prompts : list of str
    layers : int, list of int or str, default "all"
        Any ``layers=`` spec.
    labels : array-like of shape (n_prompts,), optional
        Stored with the prompts (``load_activations(..., return_labels=True)``).
    metadata : dict or list of dict, optional
        A dict describing the extraction, or one JSON-serialisable dict per prompt.
    output_dir : path-like, optional
        Default ``$LMPROBE_CACHE_DIR/extractions/<model>``. Running again with the same
        directory and arguments resumes an interrupted run (or does nothing if complete).
    batch_size : int, default 32
        Prompts per batch file (and per forward pass).
    remote : bool, default False
        Run on NDIF (needs ``backend="nnsight"``).
    backend : {"local", "nnsight"}
    dtype : {"float32", "float16", "bfloat16"} or None
        Model dtype; stored tensors are float32.
    max_retries : int or None, default 3
        Retries of a failed batch, with exponential backoff from 1 s (capped at 30 s).
    pooling : str, default "last_token"
        Activation-level pooling (``last_token``, ``mean``, ``first_token``, ``max``, ``min``).
    extract_router : bool, default False
        Also save each MoE layer's router logits per token (MoE models only).
    device : str, default "auto"
    progress : bool or None
        Show a progress bar over batches.

    Returns
    -------
    pathlib.Path
        The extraction directory.
    """
    from ..extraction.layers import resolve_layers
    from ..extraction.pooling import pooling_key

    with operation("extract"):
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of str")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts is empty; give the prompts to extract")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        if not isinstance(pooling, str) or pooling not in (
            "last_token",
            "mean",
            "first_token",
            "max",
            "min",
        ):
            raise ValueError(
                f"pooling={pooling!r} is not one of 'last_token', 'mean', 'first_token', "
                "'max', 'min'"
            )
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise ValueError(f"max_retries={max_retries!r} must be an int >= 0 or None")
        labels, metadata, prompt_meta = _check_labels_metadata(prompts, labels, metadata)
        ext = _backend_extractor(model_name, remote, backend, dtype, device, batch_size)
        loaded = ext.loaded
        layer_list = sorted(set(resolve_layers(layers, loaded.n_layers)))
        router_layers: list[int] = []
        if extract_router:
            if backend != "local":
                raise ValueError("extract_router=True needs backend='local'")
            from ..extraction.moe import require_routers

            router_layers = sorted(require_routers(loaded))
        out = _output_dir(output_dir, str(model_name))
        out.mkdir(parents=True, exist_ok=True)
        m = ExtractionManifest.for_prompts(
            prompts,
            labels,
            metadata,
            prompt_meta,
            model_name=loaded.name,
            model_key=loaded.key,
            n_layers=loaded.n_layers,
            hidden_size=loaded.hidden_size,
            layers=layer_list,
            pooling=pooling_key(pooling),
            batch_size=batch_size,
            dtype=dtype,
            extract_router=bool(extract_router),
            router_layers=router_layers,
        )
        for stray in out.glob(f"{_TMP_PREFIX}*"):  # left by a killed run
            stray.unlink(missing_ok=True)
        if (out / MANIFEST_NAME).exists():
            old = load_manifest(out)
            _check_resume(old, m, out)
            m.entries = old.entries
        else:
            _write_prompts(out, m)
            _write_manifest(out, m)
        done = {e.index for e in m.entries}
        todo = [i for i in range(m.n_batches) if i not in done]
        from ..extraction.extractor import progress_enabled

        batches = todo
        if progress_enabled(progress) and len(todo) > 1:
            from ..progress import progress_bar

            batches = progress_bar(todo, desc="extracting", unit="batch")
        for index in batches:
            start, stop = index * batch_size, min((index + 1) * batch_size, len(prompts))
            meta = _batch_meta(m, index, start, stop)
            path = out / batch_file(index)
            if not (path.exists() and _adoptable(path, meta, layer_list)):
                chunk = prompts[start:stop]
                tensors = _retrying(
                    lambda chunk=chunk: _batch_tensors(ext, chunk, m, pooling), max_retries
                )
                _save_batch(path, tensors, meta)
            entry = ManifestEntry(
                index=index,
                file=path.name,
                start=start,
                stop=stop,
                sha256=file_sha256(path),
                prompts_sha256=meta["prompts_sha256"],
            )
            m.entries = sorted([*m.entries, entry], key=lambda e: e.index)
            _write_manifest(out, m)
        return out


def _batch_tensors(ext, chunk: list[str], m: ExtractionManifest, pooling) -> dict[str, np.ndarray]:
    if m.extract_router:
        from ..extraction.moe import router_forward

        hidden, router = router_forward(ext.loaded, chunk, m.layers, pooling, len(chunk))
    else:
        hidden, router = ext.pooled(chunk, m.layers, pooling), {}
    tensors = {f"hidden.layer_{layer}": np.asarray(v, np.float32) for layer, v in hidden.items()}
    if router:
        lengths = [len(x) for x in next(iter(router.values()))]
        tensors["router.offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        for layer, rows in router.items():
            tensors[f"router.layer_{layer}"] = np.concatenate(rows).astype(np.float32)
    return tensors


# ------------------------------------------------------------------ reading back
def _read_dir(out: Path, m: ExtractionManifest, layers: list[int], kind: str = "hidden"):
    from safetensors import safe_open

    if not m.complete:
        raise ValueError(
            f"the extraction in {str(out)!r} is incomplete ({len(m.entries)} of {m.n_batches} "
            "batches); run extract() again with the same arguments to finish it"
        )
    parts: dict[int, list] = {layer: [] for layer in layers}
    for e in m.entries:
        with safe_open(str(out / e.file), framework="numpy") as f:
            for layer in layers:
                parts[layer].append(f.get_tensor(f"{kind}.layer_{layer}"))
    return {layer: np.concatenate(v) for layer, v in parts.items()}


def load_router_logits(directory, layer: int) -> list[np.ndarray]:
    """Per prompt, the router logits ``(n_tokens, n_experts)`` of one MoE layer."""
    from safetensors import safe_open

    out = Path(directory).expanduser()
    m = load_manifest(out)
    if layer not in m.router_layers:
        raise ValueError(
            f"layer {layer} has no router logits in {str(out)!r}; layers with them: "
            f"{m.router_layers or 'none (extract with extract_router=True)'}"
        )
    rows = []
    for e in m.entries:
        with safe_open(str(out / e.file), framework="numpy") as f:
            flat, off = f.get_tensor(f"router.layer_{layer}"), f.get_tensor("router.offsets")
        rows += [flat[a:b] for a, b in zip(off[:-1], off[1:])]
    return rows


def _select(prompts_all: list[str], prompts) -> list[int]:
    from .datasets import MissingPromptsError

    where: dict[str, int] = {}
    for i, p in enumerate(prompts_all):
        where.setdefault(p, i)
    rows, missing = [], []
    for p in prompts:
        (rows.append(where[p]) if p in where else missing.append(p))
    if missing:
        raise MissingPromptsError(
            f"{len(missing)} of {len(prompts)} prompts are not in the dataset (first: "
            f"{missing[0][:60]!r})"
        )
    return rows


def load_activations(
    dataset, prompts=None, layers=None, pooling: str = "last_token", return_labels: bool = False
):
    """Activations of an extraction directory or an activation dataset repo.

    Parameters
    ----------
    dataset : path-like or str
        An extraction directory (from :func:`extract`) or a dataset repo ID (from
        :func:`push_extraction` or ``push_dataset``).
    prompts : list of str, optional
        Rows to return, in this order (default: all, in stored order).
    layers : int or list of int, optional
        Default: every stored layer.
    pooling : str, default "last_token"
        Must match the stored pooling (checked).
    return_labels : bool, default False

    Returns
    -------
    dict of int to ndarray of shape (n, hidden)
        And the labels (list, or None without labels) when ``return_labels``.
    """
    local = Path(str(dataset)).expanduser()
    if (local / MANIFEST_NAME).exists():
        m = load_manifest(local)
        stored_layers, stored_pooling, all_prompts, labels = (
            m.layers,
            m.pooling,
            m.prompts,
            m.labels,
        )
        source = str(local)
    elif local.exists():
        raise FileNotFoundError(f"{str(local)!r} has no {MANIFEST_NAME}")
    else:
        from .datasets import fetch_info

        info, _ = fetch_info(str(dataset))
        stored_layers, stored_pooling, source = info["layers"], info["pooling"], str(dataset)
        all_prompts, labels = None, None
    if pooling != stored_pooling:
        raise ValueError(
            f"pooling={pooling!r} but {source!r} holds {stored_pooling!r} activations; pass "
            f"pooling={stored_pooling!r}"
        )
    if layers is None:
        wanted = list(stored_layers)
    else:
        wanted = [int(x) for x in ([layers] if isinstance(layers, int) else layers)]
        bad = [x for x in wanted if x not in stored_layers]
        if bad:
            raise ValueError(f"layers {bad} are not in {source!r}; stored layers: {stored_layers}")
    if all_prompts is not None:
        acts = _read_dir(local, m, wanted)
    else:
        from .datasets import load_activation_dataset

        tensors, info = load_activation_dataset(str(dataset), wanted)
        acts = {layer: tensors[f"hidden.layer_{layer}"] for layer in wanted}
        all_prompts, labels = info["prompts"], info["labels"]
    if prompts is not None:
        rows = _select(all_prompts, list(prompts))
        acts = {layer: a[rows] for layer, a in acts.items()}
        labels = None if labels is None else [labels[i] for i in rows]
    return (acts, labels) if return_labels else acts


# ------------------------------------------------------------------ publishing
def push_extraction(
    directory,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    description: str | None = None,
) -> str:
    """Publish an extraction directory as an activation dataset (``push_dataset``'s layout).

    The activations are put in the local activation cache under the extraction's model
    key and published by :func:`~.datasets.push_dataset`, so the dataset is the one
    ``Probe(dataset=repo_id)`` and :func:`load_activations` read. Returns the dataset URL.
    """
    from ..cache.settings import get_cache
    from .datasets import push_dataset

    out = Path(directory).expanduser()
    m = load_manifest(out)
    acts = _read_dir(out, m, m.layers)
    cache = get_cache()
    for layer, mat in acts.items():
        cache.store(m.model_key, m.prompts, layer, m.pooling, list(mat))
    return push_dataset(
        repo_id,
        m.model_key,
        m.prompts,
        labels=m.labels,
        description=description or m.metadata.get("description"),
        private=private,
        layers=m.layers,
        pooling=m.pooling,
        token=token,
        n_layers=m.n_layers,
    )


def consolidate_cache(
    model_name: str,
    prompts,
    layers,
    output_dir=None,
    *,
    pooling: str = "last_token",
    labels=None,
    metadata=None,
    batch_size: int = 32,
) -> Path:
    """Write what the activation cache holds for ``prompts`` as an extraction directory.

    No model runs: every (prompt, layer) must be cached (``MissingPromptsError`` says how
    many are not). The files have :func:`extract`'s format, so :func:`load_activations`
    and :func:`push_extraction` read them.
    """
    from ..cache.settings import get_cache
    from ..extraction.layers import resolve_layers
    from ..extraction.models import model_n_layers, resolve_model
    from .datasets import MissingPromptsError

    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a non-empty list of str")
    if "@" in str(model_name) and not Path(str(model_name)).exists():
        name, fingerprint = str(model_name).rsplit("@", 1)
    else:
        name, _, fingerprint = resolve_model(model_name)
    key = f"{name}@{fingerprint}"
    n_layers = model_n_layers(name)
    layer_list = sorted(set(resolve_layers(layers, n_layers)))
    labels, metadata, prompt_meta = _check_labels_metadata(prompts, labels, metadata)
    cache = get_cache()
    acts = {}
    for layer in layer_list:
        vecs = cache.lookup(key, prompts, layer, pooling)
        gaps = sum(v is None for v in vecs)
        if gaps:
            raise MissingPromptsError(
                f"{gaps} of {len(prompts)} prompts have no cached {pooling!r} activations of "
                f"{key!r} at layer {layer}; extract them first (extract() or Probe.warmup)"
            )
        acts[layer] = np.stack(vecs).astype(np.float32)
    out = _output_dir(output_dir, str(model_name))
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST_NAME).exists():
        raise FileExistsError(f"{str(out)!r} already holds an extraction; give a new output_dir")
    m = ExtractionManifest.for_prompts(
        prompts,
        labels,
        metadata,
        prompt_meta,
        model_name=name,
        model_key=key,
        n_layers=n_layers,
        hidden_size=int(next(iter(acts.values())).shape[1]),
        layers=layer_list,
        pooling=pooling,
        batch_size=batch_size,
        dtype=None,
    )
    _write_prompts(out, m)
    for index in range(m.n_batches):
        start, stop = index * batch_size, min((index + 1) * batch_size, len(prompts))
        meta = _batch_meta(m, index, start, stop)
        path = out / batch_file(index)
        _save_batch(path, {f"hidden.layer_{k}": v[start:stop] for k, v in acts.items()}, meta)
        m.entries.append(
            ManifestEntry(index, path.name, start, stop, file_sha256(path), meta["prompts_sha256"])
        )
    _write_manifest(out, m)
    return out
