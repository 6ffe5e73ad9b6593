"""The ``%probe_*`` magics: probing as a notebook conversation.

Each magic parses its arguments (:mod:`._args`), makes one engine call, binds the
result to a user variable and returns something displayable (a widget or an
:class:`~.views.HTMLView`). User mistakes raise ``UsageError``: one line, no
traceback. Registered by ``%load_ext lmprobe_jupyter``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Unicode
from traitlets.config import Configurable

from . import _args
from .views import cache_view, evaluation_view, probe_card, probe_summary

__all__ = ["DEFAULT_MODEL", "ProbeMagics"]

#: Same value as ``engine.models.DEFAULT_MODEL`` (kept literal so loading the
#: extension imports no torch); a test checks they agree.
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Errors that describe a user's mistake: shown as one-line UsageErrors. Every error
# type the project defines for bad input derives from one of the builtins here
# (NotFittedError, ProbeFormatError, MissingPromptsError, ShardError: ValueError;
# UnsafeFormatError: TypeError) or is listed by module and name below, looked up in
# sys.modules so loading the extension imports no engine module (an error of a module
# never imported cannot have been raised).
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
_PROJECT_USER_ERRORS = (
    ("lmprobe_jupyter.engine.sharing.pickles", "UntrustedPickleError"),
    ("lmprobe_jupyter.engine.cache.errors", "CacheReadOnlyError"),
    ("lmprobe_jupyter.engine.extraction.nnsight_backend", "NDIFError"),
)


def is_user_error(exc: BaseException) -> bool:
    """True when ``exc`` reports bad input (shown as a UsageError) rather than a bug."""
    if isinstance(exc, _USER_ERRORS):
        return True
    for module, name in _PROJECT_USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


@contextlib.contextmanager
def _user_errors(what: str) -> Iterator[None]:
    try:
        yield
    except UsageError:
        raise
    except Exception as exc:
        if not is_user_error(exc):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"{what}: {msg}") from None


def _labels_for(positive: Sequence[str], negative: Sequence[str]) -> list[int]:
    return [1] * len(positive) + [0] * len(negative)


@magics_class
class ProbeMagics(Magics, Configurable):
    """Magics that fit, sweep, compare and inspect probes.

    ``%config ProbeMagics.model = "..."`` sets the model used when ``--model`` is not
    given (default: the bundled SmolLM2-135M-Instruct).
    """

    model = Unicode(
        DEFAULT_MODEL, help="Model used by the %probe_* magics when --model is not given."
    ).tag(config=True)

    # ------------------------------------------------------------------ helpers
    @property
    def _ns(self) -> dict[str, Any]:
        return self.shell.user_ns

    def _bind(self, name: str | None, value: Any) -> None:
        if name:
            self._ns[name] = value

    def _probe(self, name: str) -> Any:
        probe = _args.user_object(self._ns, name, "PROBE")
        if not hasattr(probe, "token_scores") or not hasattr(probe, "evaluate"):
            raise UsageError(f"{name} is a {type(probe).__name__}, not a Probe")
        if not hasattr(probe, "pipeline_") and not hasattr(probe, "classifier_"):
            raise UsageError(f"probe {name} is not fitted yet; fit it first (%%probe_fit {name})")
        return probe

    def _contrastive(
        self, args: Any, cell: str | None, required: bool = True
    ) -> tuple[list[str], list[str]] | None:
        """Positive and negative prompts from ``+``/``-`` cell lines or --positive/--negative."""
        pos_var, neg_var = getattr(args, "positive", None), getattr(args, "negative", None)
        if (pos_var is None) != (neg_var is None):
            raise UsageError("give both --positive VAR and --negative VAR")
        if pos_var is not None:
            if cell is not None and cell.strip():
                raise UsageError("give prompts either in the cell or with --positive/--negative")
            return (
                _args.user_list(self._ns, pos_var, "--positive"),
                _args.user_list(self._ns, neg_var, "--negative"),
            )
        if cell is None or not cell.strip():
            if not required:
                return None
            raise UsageError(
                "no prompts: the cell body holds one prompt per line, '+ ' before each "
                "positive example and '- ' before each negative one (e.g. '+ Fetch the "
                "ball!' and '- Purring softly.'); or pass --positive VAR --negative VAR"
            )
        positive, negative = _args.parse_labeled_lines(cell)
        if not positive or not negative:
            missing = "positive ('+ ...')" if not positive else "negative ('- ...')"
            raise UsageError(f"no {missing} prompts: a probe needs examples of both classes")
        return positive, negative

    def _test_set(self, args: Any, required: bool) -> tuple[list[str], list[Any]] | None:
        test_var, labels_var = getattr(args, "test", None), getattr(args, "labels", None)
        if test_var is None and labels_var is None:
            if required:
                raise UsageError("give the held-out set with --test VAR --labels VAR")
            return None
        if test_var is None or labels_var is None:
            raise UsageError("give both --test VAR and --labels VAR")
        test = _args.user_list(self._ns, test_var, "--test")
        labels = _args.user_list(self._ns, labels_var, "--labels", strings=False)
        if len(test) != len(labels):
            raise UsageError(
                f"--test {test_var} has {len(test)} prompts but --labels {labels_var} has "
                f"{len(labels)} labels"
            )
        return test, labels

    # ------------------------------------------------------------------ %%probe_fit
    @magic_arguments()
    @argument("name", help="variable the fitted probe is bound to")
    @argument("--positive", metavar="VAR", help="list of positive prompts (instead of the cell)")
    @argument("--negative", metavar="VAR", help="list of negative prompts")
    @argument("--prompts", metavar="VAR", help="list of prompts, with --labels")
    @argument("--labels", metavar="VAR", help="their labels (ints, strings or floats)")
    @argument("--cv", type=int, default=5, help="folds of the cross-validated accuracy (0: skip)")
    @_args.probe_options()
    @line_cell_magic
    def probe_fit(self, line: str, cell: str | None = None) -> Any:
        """Fit a probe and bind it to NAME.

        In the cell, lines starting ``+ `` are positive prompts and ``- `` negative ones;
        blank lines and ``#`` comments are ignored. Every Probe option is a flag, e.g.
        ``--layers 15``, ``--layers 14,15,16``, ``--pooling mean``, ``--classifier ridge``.
        Shows a card: model, layers, pooling, classifier, counts, training and
        cross-validated accuracy, fit time and cache hits.
        """
        args = parse_argstring(self.probe_fit, line)
        if not args.name.isidentifier():
            raise UsageError(f"NAME must be a variable name, got {args.name!r}")
        kwargs = _args.probe_kwargs(args, self.model)
        if args.prompts is not None or args.labels is not None:
            if args.prompts is None or args.labels is None:
                raise UsageError("give both --prompts VAR and --labels VAR")
            if args.positive is not None or (cell is not None and cell.strip()):
                raise UsageError(
                    "give prompts one way: cell lines, --positive/--negative, or --prompts/--labels"
                )
            prompts = _args.user_list(self._ns, args.prompts, "--prompts")
            labels = _args.user_list(self._ns, args.labels, "--labels", strings=False)
            positive = negative = None
            # by keyword: a list of string class labels must not read as negative prompts
            fit_args: tuple[Any, ...] = (prompts,)
            fit_kwargs: dict[str, Any] = {"labels": labels}
        else:
            positive, negative = self._contrastive(args, cell)  # type: ignore[misc]
            prompts, labels = positive + negative, _labels_for(positive, negative)
            fit_args, fit_kwargs = (positive, negative), {}

        from ..engine.probes.probe import Probe

        with _user_errors("probe_fit"):
            probe = Probe(**kwargs).fit(*fit_args, **fit_kwargs)
            # both reuse the activations just extracted (cache hits, no forward pass)
            train = probe.score(prompts, labels)
            cv = probe.cross_validate(args.cv) if args.cv >= 2 else None
        self._bind(args.name, probe)
        summary = probe_summary(
            probe,
            args.name,
            n_positive=None if positive is None else len(positive),
            n_negative=None if negative is None else len(negative),
            train_accuracy=train,
            cv_accuracy=cv,
        )
        if getattr(probe, "task", "classification") == "regression":
            summary["train_r2"] = summary.pop("train_accuracy")
            summary["cv_r2"] = summary.pop("cv_accuracy")
        return probe_card(summary)

    # ------------------------------------------------------------------ %probe_sweep
    @magic_arguments()
    @argument("--positive", metavar="VAR", help="list of positive prompts (or '+ ' cell lines)")
    @argument("--negative", metavar="VAR", help="list of negative prompts (or '- ' cell lines)")
    @argument("--test", metavar="VAR", help="held-out prompts")
    @argument("--labels", metavar="VAR", help="held-out labels")
    @argument("-o", "--out", metavar="VAR", default="sweep", help="variable for the result")
    @argument("--cv", type=int, default=5, help="folds of the cross-validated curve (0: skip)")
    @_args.probe_options()
    @line_cell_magic
    def probe_sweep(self, line: str, cell: str | None = None) -> Any:
        """Train one probe per layer and show the score curve (``--layers all`` by default).

        Binds the sweep result to ``-o`` (default ``sweep``) and shows the sweep-curve
        widget: the cross-validated training score per layer, and the test score when
        ``--test`` and ``--labels`` are given. Clicking a layer sets the widget's
        ``selected_layer``.
        """
        args = parse_argstring(self.probe_sweep, line)
        out = _args.out_name(args.out)
        positive, negative = self._contrastive(args, cell)  # type: ignore[misc]
        test = self._test_set(args, required=False)
        if args.cv < 2 and test is None:
            raise UsageError("with --cv 0 the sweep needs --test VAR --labels VAR to score layers")
        kwargs = _args.probe_kwargs(args, self.model)
        kwargs.setdefault("layers", "all")
        test_prompts, test_labels = test if test is not None else (None, None)

        from ..engine.probes.probe import Probe

        with _user_errors("probe_sweep"):
            result = Probe.sweep_layers(
                positive_prompts=positive,
                negative_prompts=negative,
                cv=args.cv if args.cv >= 2 else None,
                test_prompts=test_prompts,
                test_labels=test_labels,
                **kwargs,
            )
            widget = result.show()
        self._bind(out, result)
        return widget

    # ------------------------------------------------------------------ %probe_battery
    @magic_arguments()
    @argument("probe", metavar="PROBE", help="fitted probe variable")
    @argument("--positive", metavar="VAR", help="list of positive training prompts")
    @argument("--negative", metavar="VAR", help="list of negative training prompts")
    @argument("--test", metavar="VAR", help="held-out prompts")
    @argument("--labels", metavar="VAR", help="held-out labels")
    @argument("--include", help="comma list of baselines, e.g. bow,tfidf,random_direction")
    @argument("-o", "--out", metavar="VAR", default="battery", help="variable for the results")
    @line_cell_magic
    def probe_battery(self, line: str, cell: str | None = None) -> Any:
        """Run the baseline battery on the probe's data; show it against the probe's score.

        Training prompts come from ``--positive/--negative`` or ``+``/``-`` cell lines;
        the held-out set from ``--test/--labels``. Activation baselines use the probe's
        model and layers. Binds the results to ``-o`` (default ``battery``).
        """
        args = parse_argstring(self.probe_battery, line)
        out = _args.out_name(args.out)
        probe = self._probe(args.probe)
        positive, negative = self._contrastive(args, cell)  # type: ignore[misc]
        test, labels = self._test_set(args, required=True)  # type: ignore[misc]
        include = _args.parse_value(_args.unquote(args.include)) if args.include else None
        if isinstance(include, str):
            include = [include]

        from ..engine.evaluation.baselines import BaselineBattery

        with _user_errors("probe_battery"):
            battery = BaselineBattery(include=include, random_state=probe.random_state)
            # the probe's row is scored by the battery itself, from its cached activations
            results = battery.add_probe(probe, name=args.probe).fit(
                positive, negative, test, labels
            )
            widget = results.show()
        self._bind(out, results)
        return widget

    # ------------------------------------------------------------------ %probe_tokens
    @magic_arguments()
    @argument("probe", metavar="PROBE", help="fitted probe variable")
    @argument("text", nargs="*", help="the text to score (line form); the cell: one text per line")
    @argument("--texts", metavar="VAR", help="list of texts from the namespace")
    @argument("--threshold", type=float, default=None, help="marker threshold (default: 0.5)")
    @argument("-o", "--out", metavar="VAR", default=None, help="variable for the token scores")
    @line_cell_magic
    def probe_tokens(self, line: str, cell: str | None = None) -> Any:
        """Per-token score highlights of texts under a fitted probe.

        ``%probe_tokens PROBE some text`` scores one text; in ``%%probe_tokens PROBE``
        each non-blank cell line is a text; ``--texts VAR`` takes a list. The widget
        colours tokens blue (low) to red (high) and marks those over the threshold.
        """
        args = parse_argstring(self.probe_tokens, line)
        out = _args.out_name(args.out)
        probe = self._probe(args.probe)
        texts: list[str] = []
        if args.text:
            texts.append(" ".join(_args.unquote(t) for t in args.text))
        if cell is not None:
            texts.extend(t for t in cell.splitlines() if t.strip())
        if args.texts is not None:
            texts.extend(_args.user_list(self._ns, args.texts, "--texts"))
        if not texts:
            raise UsageError("no texts: write them after PROBE, in the cell, or pass --texts VAR")
        threshold = args.threshold
        if threshold is None:
            threshold = float(getattr(probe, "threshold_", None) or 0.5)

        from .widgets import show_tokens

        with _user_errors("probe_tokens"):
            scores = probe.token_scores(texts)
        self._bind(out, scores)
        note_of = getattr(probe, "token_level_note", None)
        return show_tokens(scores, threshold=threshold, note=note_of() if note_of else "")

    # ------------------------------------------------------------------ %probe_eval
    @magic_arguments()
    @argument("probe", metavar="PROBE", help="fitted probe variable")
    @argument("--test", metavar="VAR", help="held-out prompts")
    @argument("--labels", metavar="VAR", help="held-out labels")
    @argument("-o", "--out", metavar="VAR", default=None, help="variable for the metrics dict")
    @line_magic
    def probe_eval(self, line: str) -> Any:
        """Metrics of a fitted probe on a held-out set: a table plus the ROC curve."""
        args = parse_argstring(self.probe_eval, line)
        out = _args.out_name(args.out)
        probe = self._probe(args.probe)
        test, labels = self._test_set(args, required=True)  # type: ignore[misc]
        with _user_errors("probe_eval"):
            metrics = probe.evaluate(test, labels)
            roc = _roc_points(probe, test, labels)
        self._bind(out, metrics)
        return evaluation_view(metrics, roc=roc, title=f"{args.probe} on {args.test}")

    # ------------------------------------------------------------------ %probe_monitor
    @magic_arguments()
    @argument("probe", metavar="PROBE", help="fitted probe variable")
    @argument("prompt", nargs="*", help="the prompt to continue (or the cell)")
    @argument("--max-new-tokens", type=int, default=32, help="tokens to generate")
    @argument("--threshold", type=float, default=None, help="flag threshold (default: calibrated)")
    @argument("--stop-on-flag", action="store_true", help="stop at the first flagged token")
    @argument(
        "--chat-template",
        default=None,
        help="true/false: render the prompt as a user turn with the model's chat template "
        "(default: true when the model has one)",
    )
    @argument("-o", "--out", metavar="VAR", default=None, help="variable for the MonitorResult")
    @line_cell_magic
    def probe_monitor(self, line: str, cell: str | None = None) -> Any:
        """Generate from a prompt while the probe scores every new token.

        Tokens stream into a live monitor widget as they are generated (in a notebook);
        tokens over the threshold are marked and the first one raises the alarm. Binds
        the ``MonitorResult`` to ``-o``. An instruct model's prompt is rendered with its
        chat template by default (the widget's prompt line says so);
        ``--chat-template false`` sends the bare text.
        """
        args = parse_argstring(self.probe_monitor, line)
        out = _args.out_name(args.out)
        probe = self._probe(args.probe)
        prompt = " ".join(_args.unquote(t) for t in args.prompt)
        if cell is not None and cell.strip():
            prompt = (prompt + "\n" if prompt else "") + cell.strip("\n")
        if not prompt.strip():
            raise UsageError("no prompt: write it after PROBE or in the cell")
        chat = (
            None
            if args.chat_template is None
            else _args.parse_bool(args.chat_template, "--chat-template")
        )

        from .monitor_widget import MonitorWidget

        widget = MonitorWidget()
        live = getattr(self.shell, "kernel", None) is not None
        handle = None
        if live:  # on screen before generating, so tokens appear as they are written
            from IPython.display import display

            handle = display(widget, display_id=True)
        with _user_errors("probe_monitor"):
            result = widget.run(
                probe,
                prompt,
                max_new_tokens=args.max_new_tokens,
                threshold=args.threshold,
                stop_on_flag=args.stop_on_flag,
                chat_template=chat,
            )
        self._bind(out, result)
        if handle is not None:
            # Re-send the finished widget so the saved output's static HTML fallback shows
            # the final state, not the "waiting" one it had when generation began.
            handle.update(widget)
        # in a notebook the widget is already shown; returning it would show it twice
        return None if live else widget

    # ------------------------------------------------------------------ %probe_cache
    @magic_arguments()
    @argument("--clear", action="store_true", help="delete cached activations first")
    @argument("--model", default=None, help="with --clear: only this model's entries")
    @line_magic
    def probe_cache(self, line: str) -> Any:
        """The activation cache's state as a table (``--clear`` empties it first)."""
        args = parse_argstring(self.probe_cache, line)
        if args.model is not None and not args.clear:
            raise UsageError("--model only applies with --clear")
        from ..engine.cache.settings import cache_info, clear_cache

        with _user_errors("probe_cache"):
            removed = clear_cache(model=args.model) if args.clear else None
            info = cache_info()
        return cache_view(info, removed=removed)


# ---------------------------------------------------------------------- helpers


def _roc_points(probe: Any, prompts: list[str], labels: list[Any]) -> dict[str, list] | None:
    """ROC curve points for a binary classification probe, else None."""
    import numpy as np

    if getattr(probe, "task", "classification") != "classification":
        return None
    classes = getattr(probe, "classes_", None)
    if classes is None or len(classes) != 2:
        return None
    y = np.asarray(labels)
    if len(np.unique(y)) < 2:
        return None
    proba = probe.predict_proba(prompts)
    proba = np.ma.getdata(proba)
    if proba.ndim != 2 or proba.shape[1] != 2:
        return None
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y == classes[1], proba[:, 1])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
