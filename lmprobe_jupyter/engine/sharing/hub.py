"""Sharing probes on the HuggingFace Hub: :func:`push_to_hub`, :func:`from_hub`, :class:`ProbeCard`.

A pushed probe repo holds::

    probe.json           the safe-format description (see :mod:`.probe_format`)
    arrays.safetensors   its arrays            (or probe.pkl for estimators the safe
                                                format cannot store)
    README.md            model card with YAML metadata (base_model, library_name, tags,
                         metrics, pipeline_tag)
    training_data.json   prompts and labels, only with include_training_data

Everything here goes through ``huggingface_hub`` (the ``hub`` extra), imported lazily, so
tests can replace the transport at that boundary.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .codec import Decoder, plain
from .pickles import UntrustedPickleError, load_pickle, pickle_weights, untrusted_pickle_message
from .probe_dict import pickle_manifest, probe_to_dict
from .probe_format import (
    ARRAYS_NAME,
    JSON_NAME,
    PICKLE_NAME,
    ProbeFormatError,
    UnsafeFormatError,
    check_header,
    dumps_json,
    read_json,
)
from .safe_files import load_safe_files, write_safe_dir
from .serialization import check_load_overrides

LIBRARY_NAME = "lmprobe-jupyter"
README_NAME = "README.md"
TRAINING_NAME = "training_data.json"
SERIALIZATIONS = ("auto", "safe", "pickle")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def import_hub():
    """``huggingface_hub``, or an ImportError naming the extra to install."""
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(
            "sharing on the HuggingFace Hub needs huggingface_hub: "
            "pip install 'lmprobe-jupyter[hub]'"
        ) from None
    return huggingface_hub


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    hf = import_hub()
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{hf.constants.ENDPOINT}/{prefix}{repo_id}"


def download(
    repo_id: str,
    filename: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    token=None,
) -> Path:
    """Download one file of a hub repo (through huggingface_hub's cache); return its path."""
    hf = import_hub()
    kind = "dataset repo" if repo_type == "dataset" else "repo"
    try:
        path = hf.hf_hub_download(
            repo_id, filename, repo_type=repo_type, revision=revision, token=token
        )
    except hf.errors.LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"cannot fetch {filename} of the {kind} {repo_id!r}: the hub is unreachable or "
            "offline mode is on (HF_HUB_OFFLINE=1), and the file is not in the local hub cache"
        ) from None
    except hf.errors.EntryNotFoundError:
        raise FileNotFoundError(f"{filename} is not in the {kind} {repo_id!r}") from None
    except hf.errors.RevisionNotFoundError:
        raise FileNotFoundError(
            f"revision {revision!r} does not exist in the {kind} {repo_id!r}"
        ) from None
    except hf.errors.RepositoryNotFoundError:
        raise FileNotFoundError(
            f"the {kind} {repo_id!r} was not found on the hub (or it is private: pass token=)"
        ) from None
    return Path(path)


def upload_folder(
    folder: Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool = False,
    token=None,
    commit_message: str,
    delete_patterns: list[str] | None = None,
) -> str:
    """Create the repo if needed and commit ``folder``'s files to it; return the repo URL."""
    hf = import_hub()
    api = hf.HfApi(token=token)
    url = api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        commit_message=commit_message,
        delete_patterns=delete_patterns,
    )
    return str(url) if url else repo_url(repo_id, repo_type)


def is_hub_id(name) -> bool:
    """Looks like ``owner/name`` and is not a local path (usable as card ``base_model``)."""
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and not Path(name).exists()


# ---------------------------------------------------------------------------- push
def _check_class_labels(probe, class_labels) -> dict | None:
    if class_labels is None:
        return None
    if probe.task != "classification":
        raise ValueError("class_labels only applies to task='classification' probes")
    if not isinstance(class_labels, dict):
        raise TypeError(
            f"class_labels must be a dict mapping class -> name, got {type(class_labels).__name__}"
        )
    classes = [plain(c) for c in probe.classes_]
    bad = [k for k in class_labels if plain(k) not in classes]
    if bad:
        raise ValueError(
            f"class_labels has key(s) {bad!r} that are not classes of this probe; "
            f"its classes are {classes!r}"
        )
    return {plain(k): str(v) for k, v in class_labels.items()}


def _training_data(probe, include) -> dict | None:
    if include is False or include is None:
        return None
    if include is True:
        stored = probe.training_data
        if stored is None:
            raise ValueError(
                "this probe has no stored training prompts (it was fitted from activations "
                "or loaded from a file); pass include_training_data=(prompts, labels)"
            )
        prompts, labels = stored
    elif isinstance(include, tuple | list) and len(include) == 2:
        prompts, labels = include
    else:
        raise TypeError(
            "include_training_data must be True, False or a (prompts, labels) pair, got "
            f"{type(include).__name__}"
        )
    prompts, labels = list(prompts), plain(list(labels))
    if len(prompts) != len(labels):
        raise ValueError(f"got {len(prompts)} training prompts but {len(labels)} labels")
    return {"prompts": prompts, "labels": labels}


def _yaml(meta: dict) -> str:
    import yaml

    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=None)


def _card_metadata(summary: dict, card: dict, metrics: dict | None) -> dict:
    base = summary.get("model")
    meta: dict = {}
    if is_hub_id(base):
        meta["base_model"] = base
    meta["library_name"] = LIBRARY_NAME
    if summary.get("task") == "classification":
        meta["pipeline_tag"] = "text-classification"
    tags = [LIBRARY_NAME, "probe", "interpretability"]
    tags += [t for t in card.get("tags") or [] if t not in tags]
    meta["tags"] = tags
    if summary.get("dataset"):
        meta["datasets"] = [summary["dataset"]]
    if metrics:
        meta["metrics"] = list(metrics)
    meta["lmprobe"] = {
        "layers": summary["layers"],
        "pooling": summary["pooling"],
        "classifier": summary["classifier"]["type"],
        "task": summary["task"],
        "classes": summary.get("classes"),
        "class_labels": card.get("class_labels"),
        "threshold": summary.get("threshold"),
        "metrics": metrics or None,
        "format": card.get("format"),
    }
    return meta


def render_model_card(repo_id: str, summary: dict, card: dict, metrics: dict | None) -> str:
    """README.md text: YAML front matter, description, facts, metrics and usage."""
    meta = _card_metadata(summary, card, metrics)
    name = repo_id.split("/")[-1]
    lines = ["---", _yaml(meta).rstrip(), "---", "", f"# {name}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    model = summary.get("model")
    lines += [
        f"A linear probe on the residual-stream activations of `{model}`, trained with "
        f"[{LIBRARY_NAME}](https://pypi.org/project/{LIBRARY_NAME}/).",
        "",
        "| | |",
        "|---|---|",
        f"| Base model | `{model}` |",
    ]
    if summary.get("dataset"):
        lines.append(f"| Activation dataset | `{summary['dataset']}` |")
    pool = summary["pooling"]
    pooling = (
        pool["train"]
        if pool["train"] == pool["inference"]
        else f"{pool['train']} (train), {pool['inference']} (inference)"
    )
    lines += [
        f"| Layers | {', '.join(map(str, summary['layers'] or [])) or 'n/a'} |",
        f"| Pooling | {pooling} |",
        f"| Classifier | {summary['classifier']['type']} |",
        f"| Task | {summary['task']} |",
    ]
    if summary.get("classes") is not None:
        labels = card.get("class_labels") or {}
        shown = [f"{c} ({labels[c]})" if c in labels else str(c) for c in summary["classes"]]
        lines.append(f"| Classes | {', '.join(shown)} |")
    if summary.get("threshold") is not None:
        lines.append(f"| Decision threshold | {summary['threshold']} |")
    fmt = card.get("format", "safetensors")
    lines.append(f"| Weights | {fmt} |")
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        for k, v in metrics.items():
            lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    trust = ", trust_classifier=True" if fmt == "pickle" else ""
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from lmprobe_jupyter import Probe",
        "",
        f'probe = Probe.from_hub("{repo_id}"{trust})',
        'probe.predict(["your text here"])',
        "```",
        "",
    ]
    if fmt == "pickle":
        lines += [
            "This probe is stored as a pickle: loading it runs code from the file, so only "
            "load it if you trust its author.",
            "",
        ]
    return "\n".join(lines)


def push_to_hub(
    probe,
    repo_id: str,
    *,
    description: str | None = None,
    class_labels: dict | None = None,
    tags: list[str] | None = None,
    include_training_data=False,
    private: bool = False,
    token: str | None = None,
    metrics: dict | None = None,
    serialization: str = "auto",
    commit_message: str | None = None,
) -> str:
    """Upload a fitted probe and a model card to the HuggingFace Hub.

    Parameters
    ----------
    probe : Probe
        A fitted probe.
    repo_id : str
        ``"owner/name"``; created if missing.
    description : str, optional
        Shown at the top of the model card.
    class_labels : dict, optional
        Human names of the classes, e.g. ``{0: "cat", 1: "dog"}``.
    tags : list of str, optional
        Extra card tags.
    include_training_data : bool or (prompts, labels), default False
        Upload ``training_data.json``. True uses the prompts the probe was fitted on.
    private : bool, default False
    token : str, optional
        HuggingFace token (default: the logged-in one).
    metrics : dict, optional
        Metrics for the card (e.g. ``probe.evaluate(test, labels)``); default
        ``probe.metrics_`` if set.
    serialization : {"auto", "safe", "pickle"}, default "auto"
        "auto" uses the safe format and falls back to pickle (with a warning) for
        estimators it cannot store; loaders of a pickle need ``trust_classifier=True``.

    Returns
    -------
    str
        The repo URL.
    """
    probe.check_fitted()
    if not isinstance(repo_id, str) or "/" not in repo_id:
        raise ValueError(f"repo_id={repo_id!r} must look like 'owner/name'")
    if serialization not in SERIALIZATIONS:
        raise ValueError(
            f"serialization={serialization!r} is not one of {', '.join(map(repr, SERIALIZATIONS))}"
        )
    if tags is not None and (isinstance(tags, str) or not all(isinstance(t, str) for t in tags)):
        raise TypeError(f"tags must be a list of strings, got {tags!r}")
    labels = _check_class_labels(probe, class_labels)
    training = _training_data(probe, include_training_data)
    metrics = metrics if metrics is not None else getattr(probe, "metrics_", None)
    metrics = plain(dict(metrics)) if metrics else None
    card = {
        "description": description,
        "class_labels": labels,
        "tags": list(tags or []),
        "metrics": metrics,
    }

    with tempfile.TemporaryDirectory(prefix="lmprobe-push-") as tmp:
        folder = Path(tmp)
        fmt = "safetensors"
        if serialization in ("auto", "safe"):
            try:
                data, arrays = probe_to_dict(probe, card={**card, "format": fmt})
                write_safe_dir(folder, data, arrays)
            except UnsafeFormatError as exc:
                if serialization == "safe":
                    raise
                warnings.warn(
                    f"{exc}. Pushing a pickle instead; loading it will need trust_classifier=True",
                    UserWarning,
                    stacklevel=3,
                )
                fmt = "pickle"
        else:
            fmt = "pickle"
        if fmt == "pickle":
            import pickle

            payload = pickle.dumps(
                probe if training is not None else probe.without_training_data(), protocol=5
            )
            (folder / PICKLE_NAME).write_bytes(payload)
            data = pickle_manifest(probe, payload, card={**card, "format": fmt})
            (folder / JSON_NAME).write_text(dumps_json(data), encoding="utf-8")
        card["format"] = fmt
        (folder / README_NAME).write_text(
            render_model_card(repo_id, data["summary"], card, metrics), encoding="utf-8"
        )
        if training is not None:
            (folder / TRAINING_NAME).write_text(
                json.dumps(training, ensure_ascii=False, indent=1), encoding="utf-8"
            )
        # Files of an earlier push that this one does not replace must not linger.
        stale = [n for n in (ARRAYS_NAME, PICKLE_NAME, TRAINING_NAME) if not (folder / n).exists()]
        return upload_folder(
            folder,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message or f"Upload probe ({fmt}) with {LIBRARY_NAME}",
            delete_patterns=stale or None,
        )


# ---------------------------------------------------------------------------- load
def from_hub(
    repo_id: str,
    trust_classifier: bool = False,
    load_model: bool = True,
    device: str = "auto",
    revision: str | None = None,
    token: str | None = None,
    *,
    probe_cls,
    **overrides,
):
    """Download a probe pushed with :func:`push_to_hub` (``probe_cls``: the class to
    rebuild; ``Probe.from_hub`` passes itself).

    Parameters
    ----------
    repo_id : str
    trust_classifier : bool, default False
        Required for probes shared as a pickle (unpickling runs code from the file);
        safe-format probes load without it.
    **overrides
        Other constructor parameters to change (``batch_size=``, ...); ones the classifier
        was fitted on (``layers``, ``pooling``, ``classifier``, ...) are refused.
    load_model : bool, default True
        Load the base model now (otherwise on first use).
    device : str, default "auto"
    revision : str, optional
        Branch, tag or commit.
    token : str, optional
    **overrides
        Other constructor parameters to change (``batch_size=``, ...).

    Raises
    ------
    UntrustedPickleError
        The repo holds a pickle and ``trust_classifier`` is False.
    """
    source = f"hub repo {repo_id!r}"
    json_path = download(repo_id, JSON_NAME, revision=revision, token=token)
    data = read_json(json_path)
    check_header(data, source)
    weights = data.get("weights")
    digest = pickle_weights(data, source)
    if digest is not None:
        if not trust_classifier:
            raise UntrustedPickleError(untrusted_pickle_message(source))
        pkl = download(repo_id, PICKLE_NAME, revision=revision, token=token)
        probe = load_pickle(pkl, digest, probe_cls=probe_cls)
        labels = (data.get("card") or {}).get("class_labels")
        if labels:
            probe.restore_state({"class_labels_": Decoder({}).decode(labels)})
    elif weights == ARRAYS_NAME:
        arrays = download(repo_id, ARRAYS_NAME, revision=revision, token=token)
        probe = load_safe_files(json_path, arrays, source, probe_cls=probe_cls)
    else:
        raise ProbeFormatError(f"{source}: {JSON_NAME} names unknown weights {weights!r}")
    fp = (data.get("summary") or {}).get("model_fingerprint")
    state = {"hub_repo_id_": repo_id}
    if fp and not getattr(probe, "model_fingerprint_", None):
        state["model_fingerprint_"] = fp
    probe.restore_state(state)
    check_load_overrides(probe, overrides)
    probe.set_params(device=device, **overrides)
    if load_model and probe.dataset is None:
        probe.runtime.load()
        probe.check_model_identity(stacklevel=2)
    return probe


def _front_matter(text: str) -> tuple[dict, str]:
    import yaml

    m = re.match(r"^---\s*\n(.*?)\n---\s*\n?(.*)$", text, re.S)
    if not m:
        return {}, text
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        meta = {}
    return (meta if isinstance(meta, dict) else {}), m.group(2)


@dataclass
class ProbeCard:
    """What a pushed probe is, read from its ``probe.json`` and ``README.md`` only.

    No weights are downloaded and nothing is unpickled.
    """

    repo_id: str
    base_model: str | None
    layers: list[int]
    classifier_type: str | None
    metrics: dict
    pooling: str | None
    inference_pooling: str | None = None
    task: str | None = None
    classes: list | None = None
    class_labels: dict | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    threshold: float | None = None
    format: str | None = None
    dataset: str | None = None
    library_version: str | None = None
    metadata: dict = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return repo_url(self.repo_id)

    @property
    def trust_required(self) -> bool:
        """True when loading needs ``trust_classifier=True`` (a pickled probe)."""
        return self.format == "pickle"

    @classmethod
    def from_hub(cls, repo_id: str, revision: str | None = None, token: str | None = None):
        """Read a pushed probe's card (``probe.json`` and ``README.md``)."""
        data = read_json(download(repo_id, JSON_NAME, revision=revision, token=token))
        check_header(data, f"hub repo {repo_id!r}")
        try:
            text = download(repo_id, README_NAME, revision=revision, token=token).read_text(
                encoding="utf-8"
            )
        except FileNotFoundError:
            text = ""
        meta, _ = _front_matter(text)
        return cls.from_dict(repo_id, data, meta)

    @classmethod
    def from_dict(cls, repo_id: str, data: dict, meta: dict | None = None) -> ProbeCard:
        """The card of ``data`` (a ``probe.json``) and ``meta`` (README front matter).

        Raises
        ------
        ProbeFormatError
            ``data`` is not shaped like a ``probe.json`` (a list where a mapping belongs, ...).
        """
        try:
            return cls._from_dict(repo_id, data, meta)
        except ProbeFormatError:
            raise
        except (AttributeError, TypeError, ValueError) as exc:
            raise ProbeFormatError(
                f"hub repo {repo_id!r}: {JSON_NAME} or the README metadata is malformed "
                f"({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def _from_dict(cls, repo_id: str, data: dict, meta: dict | None) -> ProbeCard:
        meta = meta or {}
        s = data.get("summary") or {}
        card = Decoder({}).decode(data.get("card") or {})
        pool = s.get("pooling") or {}
        lm = meta.get("lmprobe") or {}
        metrics = card.get("metrics") or s.get("metrics") or lm.get("metrics") or {}
        tags = list(card.get("tags") or [])
        tags += [t for t in meta.get("tags") or [] if t not in tags]
        return cls(
            repo_id=repo_id,
            base_model=meta.get("base_model") or s.get("model"),
            layers=list(s.get("layers") or []),
            classifier_type=(s.get("classifier") or {}).get("type"),
            metrics=dict(metrics),
            pooling=pool.get("train"),
            inference_pooling=pool.get("inference"),
            task=s.get("task"),
            classes=s.get("classes"),
            class_labels=card.get("class_labels"),
            description=card.get("description"),
            tags=tags,
            threshold=s.get("threshold"),
            format="pickle" if data.get("weights") == PICKLE_NAME else "safetensors",
            dataset=s.get("dataset"),
            library_version=(data.get("library") or {}).get("lmprobe_jupyter"),
            metadata=meta,
        )
