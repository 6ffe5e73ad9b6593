"""Sample scans: a picture of the whole forward pass of a corpus.

:meth:`SampleScan.run` runs every prompt through the model once, capturing at every
decoder layer, for every token,

- ``residual``: the residual stream after the layer (the layer's output),
- ``attn_delta``: what the layer's attention adds to the stream,
- ``mlp_delta``: what the layer's MLP adds,

plus the model's surprise at each token (``-log p(token | previous tokens)``; the forward
pass and its hooks are :mod:`.scan_capture`). It then fits a PCA basis per (layer, signal)
and keeps only the per-token projections on it, so a scan of a corpus is small and
answers, without the model:

- :meth:`~SampleScan.plot`: tokens x layers, colour = the top three components as RGB,
  with a surprise row on top;
- :meth:`~SampleScan.separability_map`: per (layer, signal), the best single-component
  AUROC between two classes (where in the network the classes come apart);
- :meth:`~SampleScan.per_token`, :meth:`~SampleScan.project_prompt` (a new prompt is run
  through the model and projected on the stored bases).

Memory stays bounded: the raw per-token activations go to a temporary memory-mapped
file in ``scan_dir`` (deleted at the end), and each PCA is fitted on at most
``max_fit_tokens`` sampled tokens. The first position (an attention sink with outsized
activations) is projected but never used to fit a basis, or it would own the first
component.

Files in ``scan_dir``: ``scan.json`` (model, signals, prompts, labels, tokens),
``bases.safetensors`` (mean, components and explained variance per (layer, signal)),
``projections.safetensors`` (per signal ``(n_layers, n_tokens, k)``, surprise, offsets).
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .scan_capture import capture_signals

__all__ = ["SIGNALS", "SampleScan", "ScanImage", "ScanProjection", "SeparabilityMap"]

SIGNALS = ("residual", "attn_delta", "mlp_delta")
SCAN_FORMAT = "lmprobe-jupyter.sample-scan"


# ---------------------------------------------------------------------- results
@dataclass
class ScanProjection:
    """One prompt seen through a scan's bases.

    Attributes
    ----------
    prompt : str
    tokens : list of str
        The text piece of each token.
    surprise : ndarray of shape (n_tokens,)
        ``-log p(token | previous)`` in nats (NaN for the first token).
    projections : dict of str to ndarray of shape (n_layers, n_tokens, n_components)
    """

    prompt: str
    tokens: list[str]
    surprise: np.ndarray
    projections: dict[str, np.ndarray] = field(default_factory=dict)


def _png(rgb: np.ndarray, scale: int = 1) -> bytes:
    """A minimal RGB PNG of ``rgb`` (h, w, 3) uint8, each pixel ``scale`` x ``scale``."""
    if scale > 1:
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


@dataclass
class ScanImage:
    """What :meth:`SampleScan.plot` returns: a tokens x layers RGB picture.

    Attributes
    ----------
    prompt : str
    signal : str
    tokens : list of str
    rgb : ndarray of shape (n_layers + 1, n_tokens, 3), uint8
        Row 0 is the surprise row (white = expected, red = surprising); row ``1 + L`` is
        layer ``L``, colour = components 1-3 scaled by their 1st-99th percentile over the scan.
    surprise : ndarray of shape (n_tokens,)
    top : ndarray of shape (n_layers, n_tokens, 3)
        The raw values of the top three components (for hover read-outs).
    """

    prompt: str
    signal: str
    tokens: list[str]
    rgb: np.ndarray
    surprise: np.ndarray
    top: np.ndarray

    @property
    def n_layers(self) -> int:
        return self.rgb.shape[0] - 1

    def png(self, scale: int = 12) -> bytes:
        """The picture as PNG bytes (``scale`` pixels per cell)."""
        return _png(self.rgb, scale)

    def _repr_png_(self) -> bytes:
        return self.png()

    def data_uri(self, scale: int = 12) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png(scale)).decode()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict | None:
        from ...presentation.payload import repr_bundle

        return repr_bundle("scan", props=self.to_props())

    def _repr_html_(self) -> str:
        """Self-contained HTML: the PNG inlined, token labels, a layer axis; no scripts."""
        esc = html.escape
        cell = 12
        toks = "".join(
            f"<span style='display:inline-block;width:{cell}px;overflow:hidden;"
            f"writing-mode:vertical-rl;font-size:9px' title='{esc(t)}'>{esc(t.strip() or '·')}</span>"
            for t in self.tokens
        )
        return (
            f"<figure class='lmprobe-scan' style='margin:0'>"
            f"<figcaption>{esc(self.signal)}: top 3 components as RGB, layers 0 (top, under "
            f"the surprise row) to {self.n_layers - 1}</figcaption>"
            f"<img alt='sample scan of {esc(self.prompt[:80])}' src='{self.data_uri(cell)}' "
            f"width='{cell * len(self.tokens)}' height='{cell * (self.n_layers + 1)}' "
            "style='image-rendering:pixelated;display:block'/>"
            f"<div style='white-space:nowrap;line-height:1'>{toks}</div></figure>"
        )

    def to_props(self) -> dict:
        """JSON-ready summary for the notebook widget (no raw activations)."""
        return {
            "prompt": self.prompt,
            "signal": self.signal,
            "tokens": list(self.tokens),
            "n_layers": self.n_layers,
            "png": self.data_uri(1),
            "surprise": [None if not np.isfinite(v) else round(float(v), 3) for v in self.surprise],
            "top": np.round(self.top, 3).tolist(),
        }


@dataclass
class SeparabilityMap:
    """Per (layer, signal), the best single-component AUROC between two classes.

    A record of per-signal arrays that also behaves as the ``(n_layers, n_signals)`` AUROC
    array: ``np.asarray(m)`` gives it as floats (columns in :attr:`signals` order), so
    ``plt.imshow(m)`` draws it; ``m.shape`` is its shape; ``m.best_component`` is the
    matching integer array of component indices; ``m.to_frame()`` (and
    ``m.to_frame("component")``) is a pandas DataFrame with layer rows and signal columns.

    Attributes
    ----------
    auroc : dict of str to ndarray of shape (n_layers,)
        ``max(AUC, 1 - AUC)`` of the best component (0.5: no separation, 1: perfect).
    component : dict of str to ndarray of shape (n_layers,)
        Index of that component.
    classes : list
        The two classes (the second is the positive one).

    Examples
    --------
    >>> sep = scan.separability_map()  # doctest: +SKIP
    >>> np.asarray(sep).shape == sep.shape == (scan.n_layers, len(sep.signals))  # doctest: +SKIP
    True
    """

    auroc: dict[str, np.ndarray]
    component: dict[str, np.ndarray]
    classes: list

    def best(self) -> tuple[int, str, float]:
        """``(layer, signal, auroc)`` of the highest AUROC (earliest layer on ties)."""
        best = None
        for signal, row in self.auroc.items():
            for layer, v in enumerate(row):
                if (
                    best is None
                    or v > best[2] + 1e-12
                    or (abs(v - best[2]) <= 1e-12 and layer < best[0])
                ):
                    best = (layer, signal, float(v))
        return best

    def first_layer_above(self, threshold: float) -> int | None:
        """The first layer where any signal reaches ``threshold`` AUROC."""
        n = len(next(iter(self.auroc.values())))
        for layer in range(n):
            if any(row[layer] >= threshold for row in self.auroc.values()):
                return layer
        return None

    # ------------------------------------------------------------ as a (layers x signals) array
    @property
    def signals(self) -> list[str]:
        """The signals, in column order."""
        return list(self.auroc)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, n_signals)``, the shape of ``np.asarray(self)``."""
        return (len(next(iter(self.auroc.values()))), len(self.auroc))

    @property
    def ndim(self) -> int:
        return 2

    def _stack(self, per_signal: dict, dtype) -> np.ndarray:
        return np.stack([np.asarray(per_signal[s], dtype=dtype) for s in self.auroc], axis=1)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The AUROCs as a float array of shape ``(n_layers, n_signals)``."""
        if copy is False:
            raise ValueError(
                "a SeparabilityMap keeps one array per signal, so its (layers x signals) "
                "array is always built anew; call np.asarray(map) without copy=False"
            )
        out = self._stack(self.auroc, np.float64)
        return out if dtype is None else out.astype(dtype, copy=False)

    @property
    def best_component(self) -> np.ndarray:
        """Index of the best component per cell: int array of shape ``(n_layers, n_signals)``,
        beside ``np.asarray(self)``."""
        return self._stack(self.component, np.int64)

    def to_frame(self, values: str = "auroc"):
        """The map as a pandas DataFrame: one row per layer (index ``layer``), one column
        per signal (columns ``signal``).

        Parameters
        ----------
        values : {"auroc", "component"}, default "auroc"
            The best AUROC per cell, or the index of the component that reaches it.

        Returns
        -------
        pandas.DataFrame of shape (n_layers, n_signals)
        """
        import pandas as pd

        if values == "auroc":
            data = np.asarray(self)
        elif values == "component":
            data = self.best_component
        else:
            raise ValueError(f"values={values!r} is not one of 'auroc', 'component'")
        return pd.DataFrame(
            data,
            index=pd.RangeIndex(self.shape[0], name="layer"),
            columns=pd.Index(self.signals, name="signal"),
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        signals = list(self.auroc)
        n = len(self.auroc[signals[0]])
        head = "".join(f"<th>{esc(s)}</th>" for s in signals)
        body = []
        for layer in range(n):
            cells = []
            for s in signals:
                v = float(self.auroc[s][layer])
                shade = int(255 - 200 * max(0.0, (v - 0.5) * 2))
                cells.append(
                    f"<td style='background:rgb({shade},{shade},255);text-align:right'>{v:.3f}</td>"
                )
            body.append(f"<tr><th>{layer}</th>{''.join(cells)}</tr>")
        layer, signal, v = self.best()
        return (
            "<table class='lmprobe-separability'><caption>Best single-component AUROC "
            f"({esc(str(self.classes[0]))} vs {esc(str(self.classes[1]))}); best: layer {layer} "
            f"{esc(signal)} {v:.3f}</caption><thead><tr><th>layer</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )


def _auroc_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of each column of ``x`` (n, k) for binary ``y`` (ties counted half)."""
    from scipy.stats import rankdata

    ranks = rankdata(x, axis=0)
    pos = y.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    u = ranks[pos].sum(0) - n1 * (n1 + 1) / 2
    return u / (n1 * n0)


# -------------------------------------------------------------------------- scan
class SampleScan:
    """A scan of a corpus (see the module docstring). Load a saved one with ``SampleScan(dir)``.

    Parameters
    ----------
    scan_dir : path-like
        A directory written by :meth:`run`.
    """

    def __init__(self, scan_dir) -> None:
        from safetensors.numpy import load_file

        self.scan_dir = Path(scan_dir).expanduser()
        meta_path = self.scan_dir / "scan.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{str(self.scan_dir)!r} has no scan.json; create a scan with SampleScan.run(...)"
            )
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != SCAN_FORMAT:
            raise ValueError(f"{str(meta_path)!r} is not an lmprobe-jupyter sample scan")
        self.bases = load_file(str(self.scan_dir / "bases.safetensors"))
        proj = load_file(str(self.scan_dir / "projections.safetensors"))
        self.offsets = proj.pop("offsets")
        self.surprise = proj.pop("surprise")
        self.scale_lo = {s: proj.pop(f"{s}.lo") for s in self.signals}
        self.scale_hi = {s: proj.pop(f"{s}.hi") for s in self.signals}
        self.projections = proj  # signal -> (n_layers, n_tokens, k)
        self._loaded = None

    # ------------------------------------------------------------ attributes
    @property
    def model_name(self) -> str:
        return self.meta["model_name"]

    @property
    def signals(self) -> list[str]:
        return list(self.meta["signals"])

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def n_components(self) -> int:
        return int(self.meta["n_components"])

    @property
    def prompts(self) -> list[str]:
        return list(self.meta["prompts"])

    @property
    def labels(self) -> list | None:
        return self.meta.get("labels")

    @property
    def tokens(self) -> list[list[str]]:
        return self.meta["tokens"]

    def __len__(self) -> int:
        return len(self.meta["prompts"])

    def __repr__(self) -> str:
        return (
            f"SampleScan({str(self.scan_dir)!r}: {len(self)} prompts, model "
            f"{self.model_name!r}, {self.n_layers} layers x {self.signals}, "
            f"{self.n_components} components)"
        )

    def explained_variance_ratio(self, layer: int, signal: str = "residual") -> np.ndarray:
        """Variance share of each component of one basis, shape (n_components,)."""
        return self.bases[
            f"{self._signal(signal)}.layer_{self._layer(layer)}.explained_variance_ratio"
        ]

    # ------------------------------------------------------------ building
    @classmethod
    def run(
        cls,
        prompts,
        labels=None,
        model_name: str | None = None,
        scan_dir=None,
        signals=SIGNALS,
        n_components: int = 64,
        *,
        device: str = "auto",
        dtype: str | None = None,
        batch_size: int = 8,
        max_tokens: int = 256,
        max_fit_tokens: int = 20_000,
        random_state: int = 0,
    ) -> SampleScan:
        """Scan a corpus in one pass and save the result to ``scan_dir``.

        Parameters
        ----------
        prompts : list of str
        labels : array-like of shape (n_prompts,), optional
            Kept for :meth:`separability_map`.
        model_name : str, optional
            Default: the bundled SmolLM2.
        scan_dir : path-like, optional
            Default ``$LMPROBE_CACHE_DIR/scans/<model>``; replaced if it holds a scan.
        signals : list of {"residual", "attn_delta", "mlp_delta"}
        n_components : int, default 64
            Components per basis (at most the hidden size and the fitted tokens - 1).
        device, dtype : str
            As for :func:`~.models.load_model`.
        batch_size : int, default 8
        max_tokens : int, default 256
            Tokens kept per prompt (longer prompts are truncated).
        max_fit_tokens : int, default 20000
            Tokens sampled to fit each basis (bounds time and memory).
        random_state : int, default 0
        """
        from ..extraction.extractor import Extractor
        from ..extraction.models import load_model

        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a non-empty list of str")
        prompts = list(prompts)
        signals = list(signals)
        bad = [s for s in signals if s not in SIGNALS]
        if bad or not signals:
            raise ValueError(
                f"signals={signals!r}: each must be one of {', '.join(map(repr, SIGNALS))}"
            )
        if labels is not None:
            labels = [x.item() if hasattr(x, "item") else x for x in labels]
            if len(labels) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(labels)} labels")
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 3:
            raise ValueError(f"n_components={n_components!r} must be an int >= 3 (RGB needs 3)")
        loaded = load_model(model_name, device=device, dtype=dtype)
        out = Path(scan_dir).expanduser() if scan_dir is not None else _default_dir(loaded.name)
        out.mkdir(parents=True, exist_ok=True)
        limit = min(max_tokens, loaded.max_length)
        lengths = [
            min(len(x), limit)
            for x in loaded.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        ]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n_tok, n_layers, d = int(offsets[-1]), loaded.n_layers, loaded.hidden_size
        work = Path(tempfile.mkdtemp(prefix=".tmp-scan-", dir=out))
        try:
            raw = {
                s: np.lib.format.open_memmap(
                    work / f"{s}.npy", mode="w+", dtype=np.float32, shape=(n_layers, n_tok, d)
                )
                for s in signals
            }
            surprise = np.empty(n_tok, np.float32)

            def sink(rows, lens, arrays, surp):
                for r, (i, n) in enumerate(zip(rows, lens)):
                    a, b = offsets[i], offsets[i] + n
                    for s in signals:
                        raw[s][:, a:b] = arrays[s][r, :, :n]
                    surprise[a:b] = surp[r, :n]

            capture_signals(loaded, prompts, signals, batch_size, max_tokens, sink)
            rng = np.random.default_rng(random_state)
            fit_rows = np.setdiff1d(np.arange(n_tok), offsets[:-1])  # never the first token
            if len(fit_rows) < 4:
                fit_rows = np.arange(n_tok)
            if len(fit_rows) > max_fit_tokens:
                fit_rows = np.sort(rng.choice(fit_rows, max_fit_tokens, replace=False))
            k = int(min(n_components, d, len(fit_rows) - 1))
            if k < 3:
                raise ValueError(f"the corpus has {n_tok} tokens; a scan needs at least 5")
            bases, proj = {}, {}
            for s in signals:
                p = np.empty((n_layers, n_tok, k), np.float32)
                for layer in range(n_layers):
                    x = np.asarray(raw[s][layer])
                    mean, comps, evr = _pca(x[fit_rows], k, random_state)
                    bases[f"{s}.layer_{layer}.mean"] = mean
                    bases[f"{s}.layer_{layer}.components"] = comps
                    bases[f"{s}.layer_{layer}.explained_variance_ratio"] = evr
                    p[layer] = (x - mean) @ comps.T
                proj[s] = p
                fitted = p[:, fit_rows, :3]
                proj[f"{s}.lo"] = np.percentile(fitted, 1, axis=1).astype(np.float32)
                proj[f"{s}.hi"] = np.percentile(fitted, 99, axis=1).astype(np.float32)
            raw.clear()  # close the memory maps before their files go
        finally:
            shutil.rmtree(work, ignore_errors=True)
        ext = Extractor(loaded, progress=False, use_cache=False)
        tokens = [ext.token_pieces(p, n)[1] for p, n in zip(prompts, lengths)]
        meta = {
            "format": SCAN_FORMAT,
            "format_version": 1,
            "model_name": loaded.name,
            "model_key": loaded.key,
            "n_layers": n_layers,
            "hidden_size": d,
            "signals": signals,
            "n_components": k,
            "max_tokens": limit,
            "prompts": prompts,
            "labels": labels,
            "tokens": tokens,
            "fit_tokens": int(len(fit_rows)),
        }
        _save(out, meta, bases, {**proj, "offsets": offsets, "surprise": surprise})
        scan = cls(out)
        scan._loaded = loaded
        return scan

    # ------------------------------------------------------------ reading
    def _signal(self, signal: str) -> str:
        if signal not in self.signals:
            raise ValueError(f"signal={signal!r} is not in this scan; it has {self.signals}")
        return signal

    def _layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
            raise TypeError(f"layer must be an int, got {layer!r}")
        if not -self.n_layers <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is out of range (0..{self.n_layers - 1})")
        return int(layer) % self.n_layers

    def _sample(self, sample_id) -> int:
        if isinstance(sample_id, str):
            try:
                return self.prompts.index(sample_id)
            except ValueError:
                raise KeyError(f"prompt {sample_id[:60]!r} is not in this scan") from None
        if isinstance(sample_id, bool) or not isinstance(sample_id, int | np.integer):
            raise TypeError(f"sample_id must be an int or a prompt of the scan, got {sample_id!r}")
        if not 0 <= sample_id < len(self):
            raise IndexError(f"sample_id={sample_id} is out of range (0..{len(self) - 1})")
        return int(sample_id)

    def per_token(self, sample_id, layer: int, signal: str = "residual") -> np.ndarray:
        """Per-token projections of one scanned prompt at one layer.

        Returns
        -------
        ndarray of shape (n_tokens, n_components)
        """
        i = self._sample(sample_id)
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.projections[self._signal(signal)][self._layer(layer), a:b]

    def _model(self):
        if self._loaded is None:
            from ..extraction.models import load_model

            self._loaded = load_model(self.model_name, device="auto")
        return self._loaded

    def project_prompt(self, prompt) -> ScanProjection:
        """A prompt's per-token projections on the scan's bases (runs the model if new)."""
        if isinstance(prompt, int | np.integer) or prompt in self.prompts:
            i = self._sample(prompt)
            a, b = self.offsets[i], self.offsets[i + 1]
            return ScanProjection(
                prompt=self.prompts[i],
                tokens=list(self.tokens[i]),
                surprise=self.surprise[a:b].copy(),
                projections={s: self.projections[s][:, a:b].copy() for s in self.signals},
            )
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str or a sample id, got {type(prompt).__name__}")
        from ..extraction.extractor import Extractor

        loaded = self._model()
        got: dict = {}

        def sink(rows, lens, arrays, surp):
            n = lens[0]
            got["surprise"] = surp[0, :n].astype(np.float32)
            for s in self.signals:
                x = arrays[s][0, :, :n]  # (L, n, d)
                got[s] = np.stack(
                    [
                        (x[layer] - self.bases[f"{s}.layer_{layer}.mean"])
                        @ self.bases[f"{s}.layer_{layer}.components"].T
                        for layer in range(self.n_layers)
                    ]
                ).astype(np.float32)

        capture_signals(loaded, [prompt], self.signals, 1, int(self.meta["max_tokens"]), sink)
        n = len(got["surprise"])
        tokens = Extractor(loaded, progress=False, use_cache=False).token_pieces(prompt, n)[1]
        return ScanProjection(
            prompt=prompt,
            tokens=tokens,
            surprise=got["surprise"],
            projections={s: got[s] for s in self.signals},
        )

    def plot(self, prompt, signal: str = "residual") -> ScanImage:
        """Tokens x layers image of a prompt, top three components as RGB, surprise on top.

        Parameters
        ----------
        prompt : str or int
            A scanned prompt (or its index), or any text (run through the model).
        signal : {"residual", "attn_delta", "mlp_delta"}
        """
        signal = self._signal(signal)
        p = self.project_prompt(prompt)
        top = p.projections[signal][:, :, :3]  # (L, n, 3)
        lo, hi = self.scale_lo[signal][:, None, :], self.scale_hi[signal][:, None, :]
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        rgb = np.clip((top - lo) / span, 0, 1)
        s = np.nan_to_num(p.surprise, nan=0.0)
        finite = self.surprise[np.isfinite(self.surprise)]
        smax = float(np.percentile(finite, 99)) if finite.size else 1.0
        heat = np.clip(s / (smax or 1.0), 0, 1)
        surprise_row = np.stack([np.ones_like(heat), 1 - heat, 1 - heat], -1)[None]
        img = (np.concatenate([surprise_row, rgb]) * 255).round().astype(np.uint8)
        return ScanImage(
            prompt=p.prompt, signal=signal, tokens=p.tokens, rgb=img, surprise=p.surprise, top=top
        )

    def prompt_means(self, signal: str = "residual") -> np.ndarray:
        """Per prompt, the mean projection over its tokens after the first.

        Returns
        -------
        ndarray of shape (n_prompts, n_layers, n_components)
        """
        p = self.projections[self._signal(signal)]
        out = np.empty((len(self), self.n_layers, p.shape[2]), np.float32)
        for i in range(len(self)):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            a = a + 1 if b - a > 1 else a
            out[i] = p[:, a:b].mean(1)
        return out

    def separability_map(self, labels=None) -> SeparabilityMap:
        """Per (layer, signal), the best single-component AUROC between two classes.

        Each prompt is its mean projection over tokens (the first, an attention sink, left
        out); each component's AUROC is folded to ``max(AUC, 1 - AUC)``.

        Parameters
        ----------
        labels : array-like of shape (n_prompts,), optional
            Two classes; default: the labels given to :meth:`run`.

        Returns
        -------
        SeparabilityMap
            Per-signal records (``auroc``, ``component``) that also act as the
            ``(n_layers, n_signals)`` AUROC array (``np.asarray``, ``shape``,
            ``to_frame()``), with ``best_component`` beside it.
        """
        labels = self.labels if labels is None else list(labels)
        if labels is None:
            raise ValueError("this scan has no labels; pass separability_map(labels=[...])")
        if len(labels) != len(self):
            raise ValueError(f"got {len(labels)} labels for {len(self)} scanned prompts")
        classes = sorted(set(labels), key=str)
        if len(classes) != 2:
            raise ValueError(
                f"separability_map needs exactly two classes, got {len(classes)}: {classes[:5]}"
            )
        y = np.asarray([lab == classes[1] for lab in labels])
        auroc, comp = {}, {}
        for s in self.signals:
            means = self.prompt_means(s)
            best = np.empty(self.n_layers)
            which = np.empty(self.n_layers, np.int64)
            for layer in range(self.n_layers):
                auc = _auroc_columns(means[:, layer], y)
                folded = np.maximum(auc, 1 - auc)
                which[layer] = int(np.argmax(folded))
                best[layer] = folded[which[layer]]
            auroc[s], comp[s] = best, which
        return SeparabilityMap(auroc=auroc, component=comp, classes=classes)


def _pca(x: np.ndarray, k: int, random_state: int = 0):
    """Mean, top-``k`` components (k, d) and explained-variance ratios of ``x`` (m, d).

    An exact thin SVD when there are fewer samples than dimensions or ``k`` is a large
    share of the rank, else a randomized SVD (a scan fits one basis per layer and signal,
    90 for SmolLM2, so an eigendecomposition of every covariance adds up).
    """
    mean = x.mean(0)
    xc = (x - mean).astype(np.float64)
    m, d = xc.shape
    if m <= d or 2 * k >= min(m, d):
        _, sv, vt = np.linalg.svd(xc, full_matrices=False)
        sv, comps = sv[:k], vt[:k]
    else:
        from sklearn.utils.extmath import randomized_svd

        _, sv, comps = randomized_svd(xc, k, n_iter=5, random_state=random_state)
    # a deterministic sign: the largest-magnitude loading of each component is positive
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    total = float((xc**2).sum()) or 1.0
    evr = sv**2 / total
    return mean.astype(np.float32), comps.astype(np.float32), evr.astype(np.float32)


def _default_dir(model_name: str) -> Path:
    from ..extraction.models import cache_root

    return cache_root() / "scans" / model_name.replace("/", "--").strip("-.")


def _save(out: Path, meta: dict, bases: dict, proj: dict) -> None:
    from safetensors.numpy import save_file

    for name, payload in (("bases.safetensors", bases), ("projections.safetensors", proj)):
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=out)
        os.close(fd)
        save_file({k: np.ascontiguousarray(v) for k, v in payload.items()}, tmp)
        os.replace(tmp, out / name)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False)
    os.replace(tmp, out / "scan.json")
