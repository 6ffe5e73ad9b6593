"""Activation datasets: share extracted activations on the HuggingFace Hub, train without the model.

A dataset repo (``repo_type="dataset"``) written by :func:`push_dataset` holds::

    info.json                          model name + fingerprint, layers, pooling, hidden size,
                                       number of prompts, the model's layer count, and the
                                       SHA-256 of every other file
    index.parquet                      one row per prompt: row, prompt, prompt_sha256[, label]
    layer_16/shard_000.safetensors     tensor "activations" (rows, hidden) float32, rows in
    layer_16/shard_001.safetensors     index order, ``shard_rows`` rows per shard
    README.md                          dataset card

:class:`DatasetExtractor` (what ``Probe(dataset=repo_id)`` reads through) downloads the
index and only the shards of the layers and rows it needs, maps prompts by their SHA-256,
and stores what it pulled in the local activation cache under a dataset key, so repeated
calls never download again and no model is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..extraction.extractor import progress_enabled
from ..extraction.pooling import pooling_key

DATASET_FORMAT = "lmprobe-jupyter.activations"
DATASET_FORMAT_VERSION = 1
INFO_NAME = "info.json"
INDEX_NAME = "index.parquet"
README_NAME = "README.md"
TENSOR_KEY = "activations"
DEFAULT_SHARD_ROWS = 8192


class MissingPromptsError(ValueError):
    """Some prompts are not in an activation dataset (or not in the local cache)."""


def prompt_sha256(prompt: str) -> str:
    """The key a prompt is found by in a dataset: SHA-256 of its UTF-8 text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "activation datasets need pyarrow: pip install 'lmprobe-jupyter[hub]'"
        ) from None
    return pyarrow, pyarrow.parquet


def shard_name(layer: int, i: int) -> str:
    return f"layer_{layer}/shard_{i:03d}.safetensors"


# ---------------------------------------------------------------------------- push
def _model_identity(model_name: str, n_layers: int | None) -> tuple[str, str, int]:
    """(name, fingerprint, n_layers) of a model, reading only its files' identity and config."""
    if not isinstance(model_name, str) or not model_name:
        raise TypeError(f"model_name must be a model ID or path (str), got {model_name!r}")
    from ..extraction.models import model_n_layers, resolve_model

    if "@" in model_name and not Path(model_name).exists():
        # A full cache key "name@fingerprint" (as LoadedModel.key prints it).
        name, fingerprint = model_name.rsplit("@", 1)
    else:
        name, _, fingerprint = resolve_model(model_name)
    if n_layers is None:
        try:
            n_layers = model_n_layers(name)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot read the number of layers of {name!r} ({exc}); pass n_layers="
            ) from None
    return name, fingerprint, int(n_layers)


def _dtype_key(cache, name, fingerprint, prompts, layers, pk, dtype) -> str:
    """The cache key of ``name`` in ``dtype``; for None, the dtype whose entries cover the
    most (prompt, layer) pairs (float32 first on a tie)."""
    from ..extraction.models import format_model_key

    dtypes = ("float32", "bfloat16", "float16")
    if dtype is not None:
        if dtype not in dtypes:
            raise ValueError(f"dtype={dtype!r} is not one of {', '.join(map(repr, dtypes))}")
        return format_model_key(name, fingerprint, dtype)
    keys = [format_model_key(name, fingerprint, d) for d in dtypes]
    held = [sum(sum(cache.contains(k, prompts, layer, pk)) for layer in layers) for k in keys]
    return keys[max(range(len(keys)), key=lambda i: (held[i], -i))]


def _collect(cache, key: str, prompts: list[str], layers: list[int], pk: str, explicit: bool):
    """Cached vectors per layer; the layers to publish; a clear error for missing prompts."""
    out, missing = {}, {}
    for layer in layers:
        vecs = cache.lookup(key, prompts, layer, pk)
        gaps = sum(v is None for v in vecs)
        if gaps:
            missing[layer] = gaps
        else:
            out[layer] = np.stack([np.asarray(v, dtype=np.float32) for v in vecs])
    n = len(prompts)
    name = key.rsplit("@", 1)[0]
    hint = (
        f"extract them first, e.g. Probe(model={name!r}, layers=[...], pooling={pk!r})"
        ".warmup(prompts), then push again"
    )
    if explicit and missing:
        layer, gaps = next(iter(missing.items()))
        raise MissingPromptsError(
            f"{gaps} of {n} prompts have no cached activations for model {key!r} at layer "
            f"{layer} (pooling {pk!r}); {hint}"
        )
    if not out:
        gaps = min(missing.values()) if missing else n
        raise MissingPromptsError(
            f"no layer has cached activations for all {n} prompts of model {key!r} (pooling "
            f"{pk!r}); at best {gaps} of {n} prompts are not cached; {hint}"
        )
    return out


def _write_index(path: Path, prompts: list[str], labels) -> None:
    pa, pq = _pyarrow()

    cols = {
        "row": pa.array(np.arange(len(prompts), dtype=np.int64)),
        "prompt": pa.array(prompts, type=pa.string()),
        "prompt_sha256": pa.array([prompt_sha256(p) for p in prompts], type=pa.string()),
    }
    if labels is not None:
        values = np.asarray(labels)
        try:
            cols["label"] = pa.array(values.tolist())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TypeError(f"labels must all be ints, all floats or all strings ({exc})") from None
    pq.write_table(pa.table(cols), path)


def _dataset_card(repo_id: str, info: dict) -> str:
    import yaml

    meta = {
        "tags": ["lmprobe-jupyter", "activations", "interpretability"],
        "configs": [{"config_name": "default", "data_files": INDEX_NAME}],
    }
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]
    lines += [f"# {repo_id.split('/')[-1]}", ""]
    if info.get("description"):
        lines += [info["description"], ""]
    lines += [
        f"Pooled residual-stream activations of `{info['model_name']}` for "
        f"{info['n_prompts']} prompts, written by lmprobe-jupyter.",
        "",
        "| | |",
        "|---|---|",
        f"| Model | `{info['model_name']}` (fingerprint `{info['model_fingerprint']}`) |",
        f"| Layers | {', '.join(map(str, info['layers']))} (of {info['n_layers']}) |",
        f"| Pooling | {info['pooling']} |",
        f"| Hidden size | {info['hidden_size']} |",
        f"| Labels | {'yes' if info['has_labels'] else 'no'} |",
        "",
        "```python",
        "from lmprobe_jupyter import Probe",
        "",
        f'probe = Probe(dataset="{repo_id}", layers={info["layers"][0]})',
        "probe.fit(positive_prompts, negative_prompts)  # no model is loaded",
        "```",
        "",
    ]
    return "\n".join(lines)


def push_dataset(
    repo_id: str,
    model_name: str,
    prompts,
    labels=None,
    description: str | None = None,
    private: bool = False,
    layers=None,
    pooling="last_token",
    *,
    token: str | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    n_layers: int | None = None,
    dtype: str | None = None,
) -> str:
    """Publish cached activations as a HuggingFace dataset repo.

    Parameters
    ----------
    repo_id : str
        ``"owner/name"`` of the dataset repo (created if missing).
    model_name : str
        The model the activations were extracted from (as given to ``Probe(model=...)``),
        or its full cache key ``"name@fingerprint"``.
    prompts : list of str
        The prompts, exactly as extracted (after any chat template).
    labels : array-like of shape (n_prompts,), optional
        Stored in the Parquet index.
    description : str, optional
    private : bool, default False
    layers : int, list of int, str or None
        Layers to publish (any ``layers=`` spec). None: every layer cached for all prompts.
    pooling : str, default "last_token"
    token : str, optional
    shard_rows : int, default 8192
        Rows per safetensors shard.
    n_layers : int, optional
        The model's layer count when its config cannot be read here.
    dtype : {"float32", "bfloat16", "float16"}, optional
        The compute dtype the activations were extracted in (part of their cache key:
        ``Probe(dtype="auto")`` runs bfloat16 on CPUs and GPUs with native support). By
        default the dtype whose cached activations cover the most of ``prompts`` (float32
        on a tie). Ignored when ``model_name`` is a full cache key.

    Returns
    -------
    str
        The dataset URL.

    Raises
    ------
    ValueError
        Some prompts are not in the local cache (the message says how many).
    """
    from ..cache.settings import get_cache
    from ..extraction.layers import resolve_layers
    from ..inputs import check_prompts
    from .hub import import_hub, upload_folder

    import_hub()
    _pyarrow()
    if not isinstance(repo_id, str) or "/" not in repo_id:
        raise ValueError(f"repo_id={repo_id!r} must look like 'owner/name'")
    prompts = check_prompts(prompts, allow_messages=False)
    if not prompts:
        raise ValueError("prompts is empty; give the prompts whose activations to publish")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(labels)} labels")
    if not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows={shard_rows!r} must be a positive int")
    pk = pooling_key(pooling)
    name, fingerprint, n_model_layers = _model_identity(model_name, n_layers)
    cache = get_cache()
    if not cache.enabled:
        raise ValueError("the activation cache is disabled; push_dataset reads activations from it")
    explicit = layers is not None
    wanted = resolve_layers(layers, n_model_layers) if explicit else list(range(n_model_layers))
    if ":" in fingerprint:  # a full cache key with its dtype
        key = f"{name}@{fingerprint}"
    else:
        key = _dtype_key(cache, name, fingerprint, prompts, wanted, pk, dtype)
    acts = _collect(cache, key, prompts, wanted, pk, explicit)
    hidden = next(iter(acts.values())).shape[1]

    import tempfile

    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory(prefix="lmprobe-dataset-") as tmp:
        folder = Path(tmp)
        _write_index(folder / INDEX_NAME, prompts, labels)
        shards: dict[str, list] = {}
        for layer, mat in sorted(acts.items()):
            (folder / f"layer_{layer}").mkdir()
            entries = []
            for i, start in enumerate(range(0, len(prompts), shard_rows)):
                stop = min(start + shard_rows, len(prompts))
                fname = shard_name(layer, i)
                save_file({TENSOR_KEY: np.ascontiguousarray(mat[start:stop])}, str(folder / fname))
                entries.append(
                    {
                        "file": fname,
                        "start": start,
                        "stop": stop,
                        "sha256": file_sha256(folder / fname),
                    }
                )
            shards[str(layer)] = entries
        from ... import __version__

        info = {
            "format": DATASET_FORMAT,
            "format_version": DATASET_FORMAT_VERSION,
            "library_version": __version__,
            "model_name": name,
            "model_fingerprint": fingerprint,
            "model_key": key,
            "n_layers": n_model_layers,
            "layers": sorted(acts),
            "pooling": pk,
            "hidden_size": int(hidden),
            "dtype": "float32",
            "n_prompts": len(prompts),
            "has_labels": labels is not None,
            "description": description,
            "shard_rows": shard_rows,
            "index": {"file": INDEX_NAME, "sha256": file_sha256(folder / INDEX_NAME)},
            "shards": shards,
        }
        (folder / INFO_NAME).write_text(json.dumps(info, indent=1), encoding="utf-8")
        (folder / README_NAME).write_text(_dataset_card(repo_id, info), encoding="utf-8")
        return upload_folder(
            folder,
            repo_id,
            repo_type="dataset",
            private=private,
            token=token,
            commit_message=f"Upload activations of {name} ({len(prompts)} prompts)",
            delete_patterns=["layer_*"],
        )


# ---------------------------------------------------------------------------- read
def fetch_info(repo_id: str, revision: str | None = None, token=None) -> tuple[dict, str]:
    """(info.json of a dataset repo, SHA-256 of its bytes)."""
    from .hub import download

    path = download(repo_id, INFO_NAME, repo_type="dataset", revision=revision, token=token)
    raw = path.read_bytes()
    try:
        info = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{INFO_NAME} of dataset {repo_id!r} is not valid JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        raise ValueError(
            f"dataset {repo_id!r} is not an lmprobe-jupyter activation dataset "
            f'({INFO_NAME} lacks "format": {DATASET_FORMAT!r})'
        )
    version = info.get("format_version")
    if not isinstance(version, int) or version > DATASET_FORMAT_VERSION:
        raise ValueError(
            f"dataset {repo_id!r} uses activation-dataset format version {version!r}, but this "
            f"lmprobe-jupyter reads version {DATASET_FORMAT_VERSION} at most; upgrade it"
        )
    return info, hashlib.sha256(raw).hexdigest()


class DatasetExtractor:
    """Pooled activations read from an activation dataset instead of a model.

    Same interface as :class:`~.extraction.Extractor` for pooled features (``pooled``,
    ``n_layers``, ``last_hits``); per-token features are not in datasets.

    Parameters
    ----------
    repo_id : str
    progress : bool or None
    revision : str, optional
    token : str, optional
    """

    def __init__(self, repo_id: str, progress=None, revision=None, token=None) -> None:
        if not isinstance(repo_id, str) or "/" not in repo_id:
            raise ValueError(f"dataset={repo_id!r} must be a dataset repo ID like 'owner/name'")
        self.repo_id = repo_id
        self.progress = progress
        self.revision = revision
        self.token = token
        self.info, digest = fetch_info(repo_id, revision, token)
        self.n_layers = int(self.info["n_layers"])
        self.hidden_size = int(self.info["hidden_size"])
        self.model_name = self.info["model_name"]
        #: activation-cache model key: the dataset's identity, never the model's own key
        self.key = f"dataset:{repo_id}@{digest[:16]}"
        self.last_hits = 0
        self.last_misses = 0
        self.downloads = 0
        self._index = None

    @property
    def layers(self) -> list[int]:
        return [int(x) for x in self.info["layers"]]

    def __repr__(self) -> str:
        return (
            f"DatasetExtractor({self.repo_id!r}, model={self.model_name!r}, layers={self.layers})"
        )

    # ------------------------------------------------------------------ files
    def _download(self, filename: str, sha256: str | None) -> Path:
        from .hub import download

        path = download(
            self.repo_id,
            filename,
            repo_type="dataset",
            revision=self.revision,
            token=self.token,
        )
        self.downloads += 1
        if sha256 is not None and file_sha256(path) != sha256:
            raise ValueError(
                f"{filename} of dataset {self.repo_id!r} does not match the SHA-256 recorded "
                f"in {INFO_NAME}; the dataset was modified or the download is corrupt"
            )
        return path

    def index(self):
        """The dataset's index as a ``pyarrow.Table`` (downloaded once)."""
        if self._index is None:
            _, pq = _pyarrow()

            entry = self.info["index"]
            table = pq.read_table(self._download(entry["file"], entry.get("sha256")))
            rows: dict[str, int] = {}
            for i, h in enumerate(table.column("prompt_sha256").to_pylist()):
                rows.setdefault(h, i)
            self._index = (table, rows)
        return self._index[0]

    def rows_of(self, prompts: list[str]) -> list[int]:
        """Index rows of ``prompts``; a clear error if any is not in the dataset."""
        self.index()
        rows = self._index[1]
        found = [rows.get(prompt_sha256(p)) for p in prompts]
        missing = [p for p, r in zip(prompts, found) if r is None]
        if missing:
            raise MissingPromptsError(
                f"{len(missing)} of {len(prompts)} prompts are not in dataset {self.repo_id!r} "
                f"(first missing: {missing[0]!r:.80}); the dataset holds "
                f"{self.info['n_prompts']} prompts, matched by exact text"
            )
        return found

    def _check_layers(self, layers) -> list[int]:
        layers = sorted({int(x) for x in layers})
        have = self.layers
        bad = [x for x in layers if x not in have]
        if bad:
            raise ValueError(
                f"layer(s) {bad} are not in dataset {self.repo_id!r}; it holds layers {have} "
                f"(pass layers={have[0] if len(have) == 1 else have})"
            )
        return layers

    def _check_pooling(self, pooling) -> str:
        pk = pooling_key(pooling)
        if pk != self.info["pooling"]:
            raise ValueError(
                f"dataset {self.repo_id!r} holds {self.info['pooling']!r}-pooled activations; "
                f"pooling={pk!r} is not available from it (use pooling="
                f"{self.info['pooling']!r}, or a model to extract other poolings)"
            )
        return pk

    def read_rows(self, layer: int, rows: list[int]) -> np.ndarray:
        """Activations of index ``rows`` at ``layer``, downloading only the shards they sit in."""
        from safetensors.numpy import load_file

        out = np.empty((len(rows), self.hidden_size), dtype=np.float32)
        rows_arr = np.asarray(rows, dtype=np.int64)
        entries = self.info["shards"][str(layer)]
        needed = [e for e in entries if np.any((rows_arr >= e["start"]) & (rows_arr < e["stop"]))]
        if progress_enabled(self.progress) and len(needed) > 1:
            from ..progress import progress_bar

            needed = progress_bar(needed, desc=f"layer {layer} shards", unit="shard")
        for e in needed:
            mat = load_file(str(self._download(e["file"], e.get("sha256"))))[TENSOR_KEY]
            if mat.shape != (e["stop"] - e["start"], self.hidden_size):
                raise ValueError(
                    f"{e['file']} of dataset {self.repo_id!r} has shape {mat.shape}, expected "
                    f"({e['stop'] - e['start']}, {self.hidden_size})"
                )
            sel = (rows_arr >= e["start"]) & (rows_arr < e["stop"])
            out[sel] = mat[rows_arr[sel] - e["start"]]
        return out

    # ------------------------------------------------------------------ extractor API
    def pooled(self, prompts, layers, pooling) -> dict[int, np.ndarray]:
        """Pooled activations, (n_prompts, hidden) float32 per layer, from the dataset.

        Looks in the local activation cache first; pulls only missing prompts' shards and
        caches them.
        """
        from ..cache.settings import get_cache

        prompts = list(prompts)
        layers = self._check_layers(layers)
        pk = self._check_pooling(pooling)
        n = len(prompts)
        cache = get_cache()
        use_cache = cache.enabled
        out: dict[int, list] = {layer: [None] * n for layer in layers}
        if use_cache:
            for layer in layers:
                out[layer] = list(cache.lookup(self.key, prompts, layer, pk))
        need = [i for i in range(n) if any(out[layer][i] is None for layer in layers)]
        self.last_hits = n - len(need)
        self.last_misses = len(need)
        if need:
            unique = list(dict.fromkeys(prompts[i] for i in need))
            rows = self.rows_of(unique)
            pos = {p: j for j, p in enumerate(unique)}
            for layer in layers:
                mat = self.read_rows(layer, rows)
                if use_cache:
                    cache.store(self.key, unique, layer, pk, list(mat))
                for i in need:
                    out[layer][i] = mat[pos[prompts[i]]]
        return {
            layer: (
                np.stack(v).astype(np.float32, copy=False)
                if n
                else np.zeros((0, self.hidden_size), np.float32)
            )
            for layer, v in out.items()
        }

    def per_token(self, prompts, layers):
        raise ValueError(
            f"dataset {self.repo_id!r} holds {self.info['pooling']!r}-pooled activations only; "
            "per-token features (token_scores, pooling 'all'/'max'/'min' at inference, "
            "train_pooling='all') need the model: use Probe(model="
            f"{self.model_name!r}) for those"
        )


def _layer_list(ext: DatasetExtractor, layers) -> list[int]:
    if layers is None:
        return ext.layers
    if isinstance(layers, int | np.integer):
        layers = [int(layers)]
    return ext._check_layers(layers)


def pull_dataset(repo_id: str, layers=None, *, revision=None, token=None, progress=None) -> int:
    """Download a dataset's activations into the local activation cache.

    Parameters
    ----------
    repo_id : str
    layers : int or list of int, optional
        Layers to fetch (default: all the dataset holds).

    Returns
    -------
    int
        Number of prompts pulled.
    """
    ext = DatasetExtractor(repo_id, progress=progress, revision=revision, token=token)
    wanted = _layer_list(ext, layers)
    prompts = list(dict.fromkeys(ext.index().column("prompt").to_pylist()))
    ext.pooled(prompts, wanted, ext.info["pooling"])
    return len(prompts)


def load_activation_dataset(
    repo_id: str, layers=None, *, revision=None, token=None, progress=None
) -> tuple[dict[str, np.ndarray], dict]:
    """Raw activation tensors of a dataset.

    Returns
    -------
    tensors : dict
        ``{"hidden.layer_16": ndarray of shape (n_prompts, hidden)}``, rows in index order.
    info : dict
        The dataset's ``info.json`` plus ``"prompts"`` and ``"labels"`` (None without labels).
    """
    ext = DatasetExtractor(repo_id, progress=progress, revision=revision, token=token)
    wanted = _layer_list(ext, layers)
    table = ext.index()
    rows = list(range(table.num_rows))
    tensors = {f"hidden.layer_{layer}": ext.read_rows(layer, rows) for layer in wanted}
    info = dict(ext.info)
    info["prompts"] = table.column("prompt").to_pylist()
    info["labels"] = table.column("label").to_pylist() if "label" in table.column_names else None
    return tensors, info
