"""``%probe_scan``: run, load or show a sample scan of a corpus.

::

    %probe_scan prompts --labels labels -o scan     # scan the corpus (one forward pass each)
    %probe_scan scan --show 3 --signal mlp_delta    # picture of prompt 3 of a scan variable
    %probe_scan scan --map                          # where the two classes come apart
    %probe_scan --load path/to/scan_dir -o scan     # reload a saved scan

A separate ``Magics`` class (registered by ``load_ipython_extension``) so the probe magics
stay as they are; it follows the same rules: one engine call, the result bound to ``-o``,
a displayable return value, user mistakes as one-line ``UsageError``.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import _args

__all__ = ["ScanMagics"]

_SIGNALS = ("residual", "attn_delta", "mlp_delta")


def _show_target(text: str | None) -> int | str:
    if text is None:
        return 0
    value = _args.unquote(text)
    return int(value) if value.lstrip("-").isdigit() else value


@magics_class
class ScanMagics(Magics):
    """The ``%probe_scan`` magic."""

    @magic_arguments()
    @argument("source", nargs="?", default=None, help="a list of prompts or a SampleScan variable")
    @argument("--labels", default=None, help="variable holding one label per prompt")
    @argument("--model", default=None, help="model ID or path (default: the probe magics' model)")
    @argument("--dir", default=None, help="where the scan is saved (default: the lmprobe cache)")
    @argument("--load", default=None, help="reload a scan saved in this directory")
    @argument("--components", type=int, default=64, help="PCA components per (layer, signal)")
    @argument("--signal", default="residual", choices=_SIGNALS, help="signal shown")
    @argument("--show", default=None, help="prompt to show: its index in the scan, or a text")
    @argument("--map", action="store_true", help="show the separability map instead")
    @argument("--static", action="store_true", help="a static picture instead of the widget")
    @argument("-o", "--out", default=None, help="variable to bind the SampleScan to")
    @line_magic
    def probe_scan(self, line: str) -> Any:
        """Scan a corpus (residual, attention and MLP contributions at every layer)."""
        args = parse_argstring(self.probe_scan, line)
        _args.out_name(args.out)
        ns = self.shell.user_ns
        errors = (ValueError, TypeError, KeyError, IndexError, FileNotFoundError)
        with _args.user_errors("probe_scan", *errors):
            scan = self._scan(args, ns)
            if args.out:
                ns[args.out] = scan
            if args.map:
                return scan.separability_map(
                    _args.user_list(ns, args.labels, "--labels", strings=False)
                    if args.labels
                    else None
                )
            image = scan.plot(_show_target(args.show), signal=args.signal)
        if args.static:
            return image
        from .scan_widget import ScanWidget

        return ScanWidget(image)

    def _scan(self, args, ns) -> Any:
        from ..engine.evaluation.sample_scan import SampleScan

        if args.load is not None:
            if args.source is not None:
                raise UsageError("give either a source variable or --load DIR, not both")
            return SampleScan(_args.unquote(args.load))
        if args.source is None:
            raise UsageError("%probe_scan needs a list of prompts, a SampleScan or --load DIR")
        value = _args.user_object(ns, args.source, "SOURCE")
        if isinstance(value, SampleScan):
            return value
        prompts = _args.user_list(ns, args.source, "SOURCE")
        labels = (
            _args.user_list(ns, args.labels, "--labels", strings=False) if args.labels else None
        )
        model = args.model or self._default_model()
        return SampleScan.run(
            prompts,
            labels,
            model_name=_args.unquote(model),
            scan_dir=_args.unquote(args.dir) if args.dir else None,
            n_components=args.components,
        )

    def _default_model(self) -> str:
        probe_magics = self.shell.magics_manager.registry.get("ProbeMagics")
        return getattr(probe_magics, "model", None) or "HuggingFaceTB/SmolLM2-135M-Instruct"
