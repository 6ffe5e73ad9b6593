"""The sample-scan widget: a scan's tokens x layers picture, with a hover read-out.

Synced state is the picture's summary (:meth:`ScanImage.to_props`: tokens, a 1-pixel-per-
cell PNG, surprise, the top three component values), never activations. The view scales
the PNG up and shows, under the pointer, the token, the layer and its components. Exports
(nbviewer, GitHub, nbconvert) get the self-contained ``text/html`` of
:meth:`ScanImage._repr_html_` (the PNG inlined as a data: URI, no scripts) and an
``image/png``; JupyterLab with the project's extension draws the saved
``application/vnd.lmprobe.v1+json`` payload when the kernel is gone.
"""

from __future__ import annotations

import base64
from typing import Any

import anywidget
import traitlets

from ..presentation import STATIC_DIR
from ..presentation import payload as schema
from .widgets import add_static_copies

__all__ = ["ScanWidget", "show_scan"]

_STATIC = STATIC_DIR


class ScanWidget(anywidget.AnyWidget):
    """Tokens x layers RGB picture of one prompt of a :class:`~lmprobe_jupyter.SampleScan`.

    Parameters
    ----------
    image : ScanImage
        What ``scan.plot(prompt, signal=...)`` returns.
    cell : int, default 14
        Pixels per (token, layer) cell in the view.
    """

    _esm = _STATIC / "scan.js"
    _css = _STATIC / "scan.css"
    props = traitlets.Dict().tag(sync=True)
    cell = traitlets.Int(14).tag(sync=True)

    def __init__(self, image: Any, cell: int = 14, **kwargs: Any) -> None:
        self.image = image
        super().__init__(props=image.to_props(), cell=cell, **kwargs)

    def _repr_html_(self) -> str:
        return self.image._repr_html_()

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:
        extra = {
            "image/png": base64.b64encode(self.image.png()).decode(),
            schema.MIME_TYPE: schema.payload("scan", props=self.props),
        }
        return add_static_copies(
            super()._repr_mimebundle_(**kwargs), self.image._repr_html_(), extra
        )


def show_scan(scan: Any, prompt: Any = 0, signal: str = "residual", cell: int = 14) -> ScanWidget:
    """A :class:`ScanWidget` of ``scan.plot(prompt, signal=signal)``."""
    return ScanWidget(scan.plot(prompt, signal=signal), cell=cell)
