"""``%probe_robustness``: a probe's robustness report on a held-out set.

::

    %probe_robustness probe test_prompts --labels test_labels
    %probe_robustness probe test_prompts --labels test_labels --transforms roleplay,base64 -o rep

One engine call (:meth:`Probe.robustness_report`), the report bound to ``-o``, returned
for display (chart, table, worst examples); user mistakes as one-line ``UsageError``.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import _args

__all__ = ["RobustnessMagics"]


@magics_class
class RobustnessMagics(Magics):
    """The ``%probe_robustness`` magic."""

    @magic_arguments()
    @argument("probe", help="variable holding a fitted binary Probe")
    @argument("prompts", help="variable holding the held-out prompts")
    @argument("--labels", required=True, help="variable holding one label per prompt")
    @argument(
        "--transforms",
        default=None,
        help="comma-separated transform names, or 'all' (default: the 8 default ones)",
    )
    @argument("--seed", type=int, default=0, help="seed of the transforms and bootstrap")
    @argument("--fpr", type=float, default=0.01, help="FPR at which TPR is read")
    @argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    @argument("--worst", type=int, default=2, help="worst examples kept per transform")
    @argument("-o", "--out", default=None, help="variable to bind the report to")
    @line_magic
    def probe_robustness(self, line: str) -> Any:
        """Score a probe on transformed copies of a held-out set (AUROC, TPR@FPR, CIs)."""
        args = parse_argstring(self.probe_robustness, line)
        _args.out_name(args.out)
        ns = self.shell.user_ns
        probe = _args.user_object(ns, args.probe, "PROBE")
        if not hasattr(probe, "robustness_report"):
            raise UsageError(f"PROBE {args.probe} is a {type(probe).__name__}, not a Probe")
        prompts = _args.user_list(ns, args.prompts, "PROMPTS")
        labels = _args.user_list(ns, args.labels, "--labels", strings=False)
        transforms = _args.unquote(args.transforms) if args.transforms else None
        with _args.user_errors("probe_robustness", ValueError, TypeError, KeyError):
            report = probe.robustness_report(
                prompts,
                labels,
                transforms,
                seed=args.seed,
                fpr=args.fpr,
                n_bootstrap=args.bootstrap,
                n_worst=args.worst,
            )
        if args.out:
            ns[args.out] = report
        return report
