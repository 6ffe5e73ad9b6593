""":class:`BaselineBattery`: every applicable baseline at once, optionally beside a probe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._common import (
    ACTIVATION_METHODS,
    ALL_METHODS,
    TEXT_METHODS,
    as_prompt_list,
    check_labels,
    quoted,
    split_fit_args,
)
from .activation import ActivationBaseline
from .results import BaselineResult, BatteryResults, result_from, score_probe, timed
from .text import BaselineProbe


class BaselineBattery:
    """Run every applicable baseline at once, optionally next to a probe.

    Parameters
    ----------
    model : str, LoadedModel or None
        The model for activation baselines. ``None`` runs text baselines only, unless a
        probe is given: then its model is used.
    layers : int, list of int, str or None
        Layers for ``random_direction``, ``pca`` and activation-based ``shuffled_labels``.
        None: the probe's fitted layers when a probe is given, else ``-1`` (last layer).
    include : list of str or None
        Baselines to run. None: all text baselines, plus the activation baselines when
        there is a model. (``sentence_transformers`` is left out of a default battery,
        with the reason in ``results.skipped``, when its package is missing.)
    exclude : list of str or None
        Baselines to leave out.
    random_state : int or None
    probe : Probe or None
        A probe to score alongside the baselines (fitted on the training data if it is
        not fitted yet). Its cached activations are reused.
    pooling : str, callable or None
        Activation pooling; None: the probe's training pooling, else ``"last_token"``.
    classifier : str or sklearn estimator, default "logistic_regression"
    device : str, default "auto"
    batch_size : int, default 8
    progress : bool or None

    Examples
    --------
    >>> battery = BaselineBattery(model=None, random_state=42)
    >>> results = battery.fit(positive_prompts, negative_prompts, test_prompts, test_labels)
    >>> print(results.summary())
    """

    def __init__(
        self,
        model: Any = None,
        layers: Any = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        random_state: int | None = None,
        probe: Any = None,
        pooling: Any = None,
        classifier: Any = "logistic_regression",
        device: str = "auto",
        batch_size: int = 8,
        progress: bool | None = None,
    ) -> None:
        self.model = model
        self.layers = layers
        self.include = include
        self.exclude = exclude
        self.random_state = random_state
        self.probe = probe
        self.pooling = pooling
        self.classifier = classifier
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        self.probe_name = "probe"

    def add_probe(self, probe: Any, name: str = "probe") -> BaselineBattery:
        """Score ``probe`` alongside the baselines in the next :meth:`fit`."""
        self.probe = probe
        self.probe_name = name
        return self

    # -- planning ------------------------------------------------------------------

    @staticmethod
    def _check_names(names: Sequence[str] | None, what: str) -> list[str]:
        if names is None:
            return []
        if isinstance(names, str):
            names = [names]
        names = list(dict.fromkeys(names))
        bad = [n for n in names if n not in ALL_METHODS]
        if bad:
            raise ValueError(
                f"{what}={bad!r} names unknown baselines; valid baselines are {quoted(ALL_METHODS)}"
            )
        return names

    def _plan(self, probe: Any) -> tuple[list[str], dict[str, str]]:
        include = self._check_names(self.include, "include")
        exclude = set(self._check_names(self.exclude, "exclude"))
        has_model = self.model is not None or probe is not None
        skipped: dict[str, str] = {}
        if self.include is None:
            methods = list(TEXT_METHODS) + (list(ACTIVATION_METHODS) if has_model else [])
            from ._embeddings import embeddings_available

            reason = embeddings_available()
            if reason is not None and "sentence_transformers" not in exclude:
                methods.remove("sentence_transformers")
                skipped["sentence_transformers"] = reason
        else:
            methods = include
            needs = [m for m in methods if m in ACTIVATION_METHODS]
            if needs and not has_model:
                raise ValueError(
                    f"activation baselines {needs!r} need a model: "
                    "BaselineBattery(model=...) or a probe (probe=...)"
                )
        return [m for m in methods if m not in exclude], skipped

    def _activation_source(self, probe: Any) -> Any:
        """The Probe whose extractor (and cache entries) activation baselines share."""
        from ...extraction.models import LoadedModel

        if self.model is None:
            return probe
        name = self.model.name if isinstance(self.model, LoadedModel) else self.model
        if probe is not None and getattr(probe, "model_name", None) == name:
            return probe
        helper = ActivationBaseline(
            "pca",
            model=self.model,
            device=self.device,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        return helper.source_probe()

    # -- running -------------------------------------------------------------------

    def fit(
        self,
        positive: Sequence[str],
        negative: Sequence[Any],
        test_prompts: Sequence[str],
        test_labels: Sequence[Any],
        probe: Any = None,
    ) -> BatteryResults:
        """Fit every baseline on the training data and score it on the test set.

        Parameters
        ----------
        positive, negative : list of str
            Contrastive training prompts, or (prompts, labels).
        test_prompts : list of str
        test_labels : array-like of shape (n_test,)
        probe : Probe, optional
            Score this probe too (overrides the constructor's ``probe``).

        Returns
        -------
        BatteryResults
        """
        probe = probe if probe is not None else self.probe
        train_prompts, y = split_fit_args(positive, negative)
        test_prompts = as_prompt_list(test_prompts, "test_prompts")
        y_test = check_labels(test_prompts, test_labels)
        methods, skipped = self._plan(probe)

        rows: list[BaselineResult] = []
        # The probe goes first: its extraction fills the cache the activation baselines read.
        if probe is not None:
            rows.append(score_probe(probe, self.probe_name, train_prompts, y, test_prompts, y_test))

        act_kwargs: dict[str, Any] = {}
        needs_acts = any(m in ACTIVATION_METHODS for m in methods) or (
            "shuffled_labels" in methods and (self.model is not None or probe is not None)
        )
        if needs_acts:
            source = self._activation_source(probe)
            layers = self.layers
            if layers is None:
                layers = list(probe.layers_) if hasattr(probe, "layers_") else -1
            pooling = self.pooling
            if pooling is None:
                pooling = getattr(probe, "train_pooling_", "last_token") if probe else "last_token"
                if pooling == "all":
                    pooling = "last_token"
            act_kwargs = dict(
                probe=source,
                layers=layers,
                pooling=pooling,
                random_state=self.random_state,
                batch_size=self.batch_size,
                classifier=self.classifier,
                progress=self.progress,
            )

        for method in methods:
            if method in ACTIVATION_METHODS:
                rows.append(
                    self._run_activation(method, act_kwargs, train_prompts, y, test_prompts, y_test)
                )
            elif method == "shuffled_labels" and act_kwargs:
                rows.append(
                    self._run_shuffled_on_activations(
                        act_kwargs, train_prompts, y, test_prompts, y_test
                    )
                )
            else:
                rows.append(self._run_text(method, train_prompts, y, test_prompts, y_test))

        results = BatteryResults(rows, skipped, (train_prompts, y), (test_prompts, y_test))
        self.results_ = results
        return results

    def _run_text(self, method, train_prompts, y, test_prompts, y_test) -> BaselineResult:
        b = BaselineProbe(
            method=method,
            classifier=self.classifier,
            random_state=self.random_state,
            device=self.device,
        )
        _, fit_seconds = timed(b.fit, train_prompts, y)
        detail = {
            "shuffled_labels": f"{b.shuffle_features} features, permuted labels",
            "sentence_transformers": b.embedding_model,
        }.get(method, "")
        return result_from(
            method, "text", detail, b, fit_seconds, lambda: b.predict_both(test_prompts), y_test
        )

    def _run_activation(
        self, method, act_kwargs, train_prompts, y, test_prompts, y_test
    ) -> BaselineResult:
        b = ActivationBaseline(method=method, **act_kwargs)
        _, fit_seconds = timed(b.fit, train_prompts, y)
        detail = {
            "perplexity": "mean token log-likelihood",
            "layer_0": "input embeddings",
        }.get(method, f"layers {b.layers_}")
        return result_from(
            method,
            "activation",
            detail,
            b,
            fit_seconds,
            lambda: b.predict_both(test_prompts),
            y_test,
        )

    def _run_shuffled_on_activations(
        self, act_kwargs, train_prompts, y, test_prompts, y_test
    ) -> BaselineResult:
        reader = ActivationBaseline(method="random_direction", **act_kwargs)
        reader.validate_params()
        layers = reader.resolved_layers()
        b = BaselineProbe(
            method="shuffled_labels", classifier=self.classifier, random_state=self.random_state
        )

        def fit():
            X = reader.layer_matrix(reader.prepare(train_prompts), layers)
            b.fit_from_activations(X, y)

        def predict():
            X = reader.layer_matrix(reader.prepare(test_prompts), layers)
            return b.predict_both_from_activations(X)

        _, fit_seconds = timed(fit)
        return result_from(
            "shuffled_labels",
            "activation",
            f"layers {layers} activations, permuted labels",
            b,
            fit_seconds,
            predict,
            y_test,
        )
