"""``%probe_errors``: browse, relabel and refit a probe's mistakes on a labelled set.

::

    %probe_errors probe test_prompts --labels test_labels -o errs
    %probe_errors probe test_prompts --labels test_labels --metadata meta --static

One engine call (:meth:`Probe.errors`), the :class:`ErrorAnalysis` bound to ``-o``, and
the widget returned for display (``--static``: the analysis itself, whose HTML is the
exportable table); user mistakes as one-line ``UsageError``.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import _args

__all__ = ["ErrorsMagics"]


@magics_class
class ErrorsMagics(Magics):
    """The ``%probe_errors`` magic."""

    @magic_arguments()
    @argument("probe", help="variable holding a fitted binary Probe")
    @argument("prompts", help="variable holding the labelled (held-out) prompts")
    @argument("--labels", required=True, help="variable holding one label per prompt")
    @argument("--metadata", default=None, help="variable: dict of columns or DataFrame")
    @argument("--threshold", type=float, default=None, help="default: calibrated, else 0.5")
    @argument("--band", type=float, default=0.1, help="half-width of the uncertain band")
    @argument("--highlight", type=int, default=10, help="rows whose highlights are computed")
    @argument("--static", action="store_true", help="the static table instead of the widget")
    @argument("-o", "--out", default=None, help="variable to bind the ErrorAnalysis to")
    @line_magic
    def probe_errors(self, line: str) -> Any:
        """Table of a probe's mistakes with relabel / exclude / refit (widget)."""
        args = parse_argstring(self.probe_errors, line)
        _args.out_name(args.out)
        ns = self.shell.user_ns
        probe = _args.user_object(ns, args.probe, "PROBE")
        if not hasattr(probe, "errors"):
            raise UsageError(f"PROBE {args.probe} is a {type(probe).__name__}, not a Probe")
        prompts = _args.user_list(ns, args.prompts, "PROMPTS")
        labels = _args.user_list(ns, args.labels, "--labels", strings=False)
        metadata = _args.user_object(ns, args.metadata, "--metadata") if args.metadata else None
        with _args.user_errors("probe_errors", ValueError, TypeError, KeyError, IndexError):
            analysis = probe.errors(
                prompts,
                labels,
                metadata=metadata,
                threshold=args.threshold,
                band=args.band,
                n_highlight=args.highlight,
            )
        if args.out:
            ns[args.out] = analysis
        if args.static:
            return analysis
        from .errors_widget import ErrorsWidget

        return ErrorsWidget(analysis)
