"""``Probe(classifier="attention" | "multimax" | "mil")``: sequence probes inside ``Probe``
(and ``Probe(train_pooling="rolling_max:K")``, which fits the MIL probe).

The estimators of :mod:`.sequence_probes` read every token of a prompt. This module is
the glue :class:`~.probe.Probe` uses for them: which options they accept and the
estimator built from ``classifier_kwargs``. Their per-token inputs (the probe's layers
side by side per token, masked by ``score_special_tokens`` / ``score_roles``) come from
:meth:`.ModelRuntime.token_source`, which keeps them on disk (:mod:`.token_store`) and
hands them to the estimator one minibatch at a time.

The fitted sequence probe is the last (only) step of the probe's ``pipeline_``, so
saving, summaries and ``classifier_`` treat it like any classifier.
"""

from __future__ import annotations

from .sequence_probes import SEQUENCE_CLASSIFIERS, is_sequence_probe, make_sequence_probe

__all__ = [
    "SEQUENCE_CLASSIFIERS",
    "build_sequence_probe",
    "check_sequence_options",
    "mil_window",
    "uses_sequence_probe",
]

#: Poolings a sequence probe accepts (it aggregates tokens itself): the default
#: (unset) and ``"all"`` (``inference_pooling="all"``: per-token contributions).
_ALLOWED_POOLINGS = ("last_token", "all", None)


def mil_window(probe) -> int | None:
    """``K`` when ``probe`` is trained *through* ``rolling_max:K``, else None.

    An explicit ``train_pooling="rolling_max:K"`` (or ``"score:rolling_max:K"``) with the
    default classifier fits :class:`~.sequence_probes.MILProbe` (``window=K``): a linear
    token probe by gradient descent, the prompt's label supervising its top window. (A
    window as the *base* ``pooling`` keeps training a linear probe on every token, which
    did better on ``bench/token_probes.py``; see the README.)
    """
    from ..extraction.pooling import parse_pooling

    tp = probe.train_pooling
    if not isinstance(tp, str) or probe.classifier != "logistic_regression":
        return None
    spec = parse_pooling(tp, "train_pooling", role="train")
    if spec.stage == "score" and spec.name == "rolling_max":
        return int(spec.arg)
    return None


def _kind(probe) -> str:
    return "mil" if mil_window(probe) is not None else probe.classifier


def uses_sequence_probe(probe) -> bool:
    """Does ``probe`` fit (or hold) a sequence probe (``classifier="mil"|"attention"|...``,
    or ``train_pooling="rolling_max:K"``)?"""
    fitted = probe.__dict__.get("pipeline_")
    if fitted is not None:
        return is_sequence_probe(fitted.steps[-1][1])
    if isinstance(probe.classifier, str) and probe.classifier in SEQUENCE_CLASSIFIERS:
        return True
    return mil_window(probe) is not None


def check_sequence_options(probe, *, from_activations: bool = False) -> None:
    """Raise a ValueError naming the option a sequence classifier cannot use with.

    Parameters
    ----------
    probe : Probe
        With ``classifier`` one of :data:`SEQUENCE_CLASSIFIERS`.
    from_activations : bool
        True for ``fit_from_activations`` (checked there, by the shape of ``X``).
    """
    from ..extraction.layers import is_selection_spec

    window = mil_window(probe)
    name = (
        probe.classifier
        if window is None
        else f"logistic_regression, train_pooling={probe.train_pooling!r}"
    )
    fix = "use it with a model and fixed layers, or a pooled classifier"
    bad = []
    if probe.dataset is not None and not from_activations:
        bad.append(
            f"dataset={probe.dataset!r} (activation datasets hold pooled vectors, and "
            f"classifier={name!r} reads every token)"
        )
    if probe.task != "classification":
        bad.append(f"task={probe.task!r} (sequence probes are binary classifiers)")
    if is_selection_spec(probe.layers):
        bad.append(f"layers={probe.layers!r} (layer selection fits pooled probes)")
    if probe.preprocessing not in (None, "auto"):
        bad.append(f"preprocessing={probe.preprocessing!r} (sequence probes standardize tokens)")
    if probe.mass_mean_augment:
        bad.append("mass_mean_augment=True")
    if probe.compute_backend != "sklearn":
        bad.append(f"compute_backend={probe.compute_backend!r} (they train with torch)")
    for key in ("pooling", "train_pooling", "inference_pooling"):
        value = getattr(probe, key)
        if window is not None and key == "train_pooling":
            continue  # the window it is trained through
        if window is not None and key == "inference_pooling" and value is not None:
            from ..extraction.pooling import parse_pooling

            if not callable(value) and parse_pooling(value, key).canonical in (
                "all",
                parse_pooling(probe.train_pooling, "train_pooling").canonical,
            ):
                continue
        if callable(value) or value not in _ALLOWED_POOLINGS:
            bad.append(
                f"{key}={value!r} (classifier={name!r} aggregates the tokens itself; leave "
                "the poolings unset, or inference_pooling='all' for per-token contributions)"
            )
    if bad:
        raise ValueError(f"classifier={name!r} cannot be used with {'; '.join(bad)}; {fix}")


def build_sequence_probe(probe):
    """The unfitted sequence estimator for ``probe.classifier`` and ``classifier_kwargs``.

    ``heads`` is accepted for ``n_heads``; ``random_state`` defaults to the probe's (0
    when None). ``mil`` takes ``window`` (default 16: ``rolling_max:16``).
    """
    kwargs = dict(probe.classifier_kwargs or {})
    if "heads" in kwargs:
        kwargs["n_heads"] = kwargs.pop("heads")
    kwargs.setdefault("random_state", 0 if probe.random_state is None else probe.random_state)
    window = mil_window(probe)
    if window is not None:
        if kwargs.setdefault("window", window) != window:
            raise ValueError(
                f"train_pooling={probe.train_pooling!r} trains through windows of {window} "
                f"tokens, but classifier_kwargs has window={kwargs['window']!r}; give one"
            )
    return make_sequence_probe(_kind(probe), **kwargs)
