"""``ProbeEnsemble``: several probes voting as one, and bootstrap ensembles for uncertainty.

Members are :class:`~.probe.Probe` objects, and ``fit`` fits the members themselves (as
lmprobe's ensemble does): after ``ProbeEnsemble([p1, p2]).fit(pos, neg)``, ``p1`` and
``p2`` are fitted and can be compared with the ensemble or saved alone, and
``probes_[i] is probes[i]``. A probe listed twice is fitted once (its weight counts twice).
:meth:`ProbeEnsemble.bootstrap` is the exception: it makes its own clones of the base
probe (it owns them), so the base probe is never touched. To keep your probes untouched,
fit ``sklearn.base.clone(ensemble)`` (which clones the members), as cross-validation
does. Members that read the same model share one :class:`~.runtime.ModelRuntime` and one
extraction: before any member fits (or predicts), the prompts go through the model once,
pooled at every layer and in every way some member reads
(:meth:`~.runtime.ModelRuntime.pooled_many`), and every member then reads its
activations from the activation cache. With the cache turned off
(``set_cache_enabled(False)``) each member extracts on its own.

Soft voting averages the members' class probabilities (weighted); hard voting counts
their predictions (weighted), ties going to the lower class, and reports vote fractions as
probabilities. :meth:`ProbeEnsemble.bootstrap` fits clones of one probe on bootstrap
resamples (of whole groups, given ``groups``); :meth:`ProbeEnsemble.prediction_std` is
then the spread of the members' positive-class probability: an uncertainty per prompt.

Saved ensembles are a folder: one safe-format probe folder per member (``member_00``,
...) and ``ensemble.json`` (voting, weights, classes, the member folders in order).
Nothing is pickled. Saving over an earlier ensemble writes the new members into unused
``member_NN`` folders, then replaces ``ensemble.json`` atomically (the commit point), then
removes the old members: a kill at any moment leaves a loadable ensemble (old or new), and
nothing else in the folder (a README, a ``.git``) is touched. A folder that holds something
other than a saved ensemble is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..inputs import check_prompts, check_scoring_data, parse_fit_args
from .probe import NotFittedError, Probe
from .scoring import compute_metrics

VOTING = ("soft", "hard")
FORMAT = "lmprobe-jupyter.ensemble"
FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = (1,)
JSON_NAME = "ensemble.json"
MAX_MEMBERS = 4096
_MEMBER_NAME = re.compile(r"member_\d{2,}")


def _owned(name: str) -> bool:
    """Names an ensemble folder's format owns: ``ensemble.json`` (and its temporary
    files) and the ``member_NN`` probe folders."""
    return (
        name == JSON_NAME
        or name.startswith(f".{JSON_NAME}.tmp-")
        or _MEMBER_NAME.fullmatch(name) is not None
    )


def is_ensemble_folder(folder) -> bool:
    """Does ``folder`` hold a saved ensemble (an ``ensemble.json`` in this format)?"""
    from ..sharing.probe_format import ProbeFormatError, read_json

    try:
        data = read_json(Path(folder) / JSON_NAME)
    except (OSError, ProbeFormatError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _read_meta(folder: Path) -> dict:
    """The checked ``ensemble.json`` of ``folder`` (bounded size and depth, a known format
    version, a bounded list of distinct member folder names)."""
    from ..sharing.probe_format import ProbeFormatError, check_format, read_json

    meta_path = folder / JSON_NAME
    meta = read_json(meta_path)
    source = str(meta_path)
    check_format(meta, source, format=FORMAT, known_versions=KNOWN_FORMAT_VERSIONS, what="ensemble")
    names = meta.get("members")
    if not isinstance(names, list) or not names:
        raise ProbeFormatError(f"{source} lists no members")
    if len(names) > MAX_MEMBERS:
        raise ProbeFormatError(
            f"{source} lists {len(names):,} members; a saved ensemble has at most "
            f"{MAX_MEMBERS:,}, so the file is corrupt or crafted"
        )
    for name in names:
        if not isinstance(name, str) or not _MEMBER_NAME.fullmatch(name):
            raise ProbeFormatError(
                f"{source}: bad member folder name {name!r:.60}; member folders are named "
                "member_00, member_01, ... inside the ensemble folder"
            )
    if len(set(names)) != len(names):
        raise ProbeFormatError(f"{source} lists a member folder twice")
    n_train = meta.get("n_train", 0)
    if not isinstance(n_train, int) or isinstance(n_train, bool) or n_train < 0:
        raise ProbeFormatError(f"{source} has an invalid n_train {n_train!r:.60}")
    return meta


def _has_no_probabilities(probe: Probe) -> bool:
    clf = probe.classifier
    if isinstance(clf, str):
        return clf == "ridge"
    return not hasattr(clf, "predict_proba")


def _share_key(probe: Probe) -> tuple:
    """Members with equal keys read the same model through the same runtime and prepare
    prompts alike: one extraction (the union of their layers and poolings) serves them."""
    return (id(probe.runtime), bool(probe.chat_template), repr(probe.score_roles))


class ProbeEnsemble:
    """Several probes that vote.

    Parameters
    ----------
    probes : sequence of Probe
        The members. ``fit`` fits these very objects (they are the ``probes_``); a probe
        listed twice is fitted once. Each bootstrap member must be a distinct object.
    weights : sequence of float or None
        One non-negative weight per member (None: equal weights).
    voting : {"soft", "hard"}, default "soft"
        ``"soft"``: the weighted mean of the members' probabilities. ``"hard"``: weighted
        majority vote of their predictions, ties to the lower class, probabilities are the
        (weighted) vote fractions. Ridge members have no probabilities: use ``"hard"``.
    resample : bool, default False
        Fit each member on a bootstrap resample of the training set (what
        :meth:`bootstrap` sets up).
    random_state : int or None
        Seeds the resamples.

    Attributes
    ----------
    probes_ : list of Probe
        The fitted members: the objects in ``probes``, in order.
    classes_ : ndarray of shape (n_classes,)
        Shared by every member (classification).
    weights_ : ndarray of shape (n_members,)
        Normalized to sum to 1.
    resample_indices_ : list of ndarray
        With ``resample=True``: the training rows each member was fitted on.
    """

    def __init__(
        self,
        probes: Sequence[Probe],
        weights: Sequence[float] | None = None,
        voting: str = "soft",
        *,
        resample: bool = False,
        random_state: int | None = None,
    ) -> None:
        self.probes = probes
        self.weights = weights
        self.voting = voting
        self.resample = resample
        self.random_state = random_state

    # ------------------------------------------------------------------ sklearn API
    _PARAMS = ("probes", "weights", "voting", "resample", "random_state")

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> ProbeEnsemble:
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(
                    f"{k!r} is not a ProbeEnsemble parameter; valid: {', '.join(self._PARAMS)}"
                )
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        n = len(self.probes) if isinstance(self.probes, Sequence) else "?"
        return f"ProbeEnsemble({n} probes, voting={self.voting!r})"

    def __len__(self) -> int:
        return len(self.probes)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_configs(
        cls,
        model: str | None = None,
        configs: Sequence[dict] = (),
        voting: str = "soft",
        weights: Sequence[float] | None = None,
        **shared,
    ) -> ProbeEnsemble:
        """One member per config dict; ``model`` and ``shared`` go to every member (a
        config's own keys win).

        Examples
        --------
        >>> ProbeEnsemble.from_configs(
        ...     model="HuggingFaceTB/SmolLM2-135M-Instruct",
        ...     configs=[{"classifier": "logistic_regression"}, {"classifier": "mass_mean"}],
        ...     layers=16,
        ... )
        ProbeEnsemble(2 probes, voting='soft')
        """
        configs = list(configs)
        if not configs or not all(isinstance(c, dict) for c in configs):
            raise ValueError(
                "configs must be a non-empty list of dicts of Probe parameters, e.g. "
                '[{"classifier": "logistic_regression"}, {"classifier": "mass_mean"}]'
            )
        probes = [Probe(**{"model": model, **shared, **c}) for c in configs]
        return cls(probes, weights=weights, voting=voting)

    @classmethod
    def bootstrap(
        cls, base_probe: Probe, n_resamples: int = 10, random_state: int | None = None
    ) -> ProbeEnsemble:
        """``n_resamples`` clones of ``base_probe``, each to be fitted on a bootstrap
        resample of the training set (whole groups when ``fit`` gets ``groups=``).

        The clones are made here (``sklearn.base.clone``: same parameters, unfitted) and
        belong to the ensemble: fitting it fits them, never ``base_probe`` itself.
        """
        from sklearn.base import clone

        if not isinstance(n_resamples, int) or isinstance(n_resamples, bool) or n_resamples < 2:
            raise ValueError(f"n_resamples={n_resamples!r} must be an int >= 2")
        if not isinstance(base_probe, Probe):
            raise TypeError(f"base_probe must be a Probe, got {type(base_probe).__name__}")
        return cls(
            [clone(base_probe) for _ in range(n_resamples)],
            voting="soft",
            resample=True,
            random_state=random_state,
        )

    # ------------------------------------------------------------------ validation
    def _validate(self) -> list[Probe]:
        probes = list(self.probes) if isinstance(self.probes, Sequence) else None
        if not probes:
            raise ValueError("probes must be a non-empty list of Probe objects")
        for i, p in enumerate(probes):
            if not isinstance(p, Probe):
                raise TypeError(
                    f"probes[{i}] is a {type(p).__name__}; every member must be a Probe"
                )
        if self.voting not in VOTING:
            raise ValueError(f"voting={self.voting!r} is not one of {', '.join(map(repr, VOTING))}")
        tasks = {p.task for p in probes}
        if len(tasks) > 1:
            raise ValueError(f"members mix tasks {sorted(tasks)}; an ensemble needs one task")
        if self.voting == "soft" and "classification" in tasks:
            bad = [i for i, p in enumerate(probes) if _has_no_probabilities(p)]
            if bad:
                raise ValueError(
                    f"probes[{bad[0]}] uses classifier={probes[bad[0]].classifier!r}, which has "
                    "no probabilities, so it cannot take part in soft voting; use "
                    'voting="hard" (majority vote of predictions)'
                )
        self._weights(len(probes))
        return probes

    def _weights(self, n: int) -> np.ndarray:
        if self.weights is None:
            return np.full(n, 1.0 / n)
        w = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        if len(w) != n or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"weights={self.weights!r} must be {n} non-negative numbers (one per member) "
                "with a positive sum, or None for equal weights"
            )
        return w / w.sum()

    def _check_fitted(self) -> None:
        if not hasattr(self, "probes_"):
            raise NotFittedError(
                "this ProbeEnsemble is not fitted yet; call fit(positive, negative) or "
                "fit(prompts, labels) first"
            )

    @staticmethod
    def _check_distinct(probes: list[Probe]) -> None:
        """Bootstrap members are fitted on different resamples, so each must be its own
        object (fitting one object twice would keep only the last resample)."""
        first: dict[int, int] = {}
        for i, p in enumerate(probes):
            j = first.setdefault(id(p), i)
            if j != i:
                raise ValueError(
                    f"probes[{i}] is the same Probe object as probes[{j}]; with resample=True "
                    "every member is fitted on its own resample, so each must be a distinct "
                    "Probe: use ProbeEnsemble.bootstrap(probe, n_resamples=...), which "
                    "makes the clones, or pass sklearn.base.clone(probe) copies"
                )

    @property
    def task(self) -> str:
        return next(iter(self.probes)).task

    # ------------------------------------------------------------------ fit
    def _resamples(self, labels: np.ndarray, groups, n: int) -> list[np.ndarray]:
        rng = np.random.default_rng(self.random_state)
        if groups is None:
            units = [np.array([i]) for i in range(len(labels))]
        else:
            groups = np.asarray(groups)
            if len(groups) != len(labels):
                raise ValueError(f"got {len(groups)} groups for {len(labels)} training prompts")
            units = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        classify = self.task == "classification"
        out = []
        for _ in range(n):
            for _attempt in range(100):
                picks = rng.integers(0, len(units), size=len(units))
                idx = np.concatenate([units[j] for j in picks])
                if not classify or len(np.unique(labels[idx])) > 1:
                    break
            else:
                raise ValueError(
                    "100 bootstrap resamples in a row held a single class; give more "
                    "examples (or more groups) of each class"
                )
            out.append(idx)
        return out

    @staticmethod
    def _share_runtimes(members: list[Probe]) -> None:
        """Members that run the same model get the same :class:`~.runtime.ModelRuntime`
        (one tokenizer, one set of weights, one extractor)."""
        shared: list = []
        for m in members:
            for rt in shared:
                if rt.serves(m.get_params()):
                    m.runtime = rt
                    break
            else:
                shared.append(m.runtime)

    def _share_extraction(
        self, members: list[Probe], prompts: list, inference: bool = False, **kwargs
    ) -> None:
        """Extract ``prompts`` once per group of members that read the same model: every
        layer and every pooling any of them reads, in one forward pass per batch, so each
        member's fit (or, with ``inference``, its prediction) reads the cache.

        ``kwargs``: per-call ``remote``, ``batch_size``, ``max_retries``.
        """
        from ..cache.settings import get_cache
        from ..extraction.layers import is_selection_spec, resolve_layers
        from ..extraction.pooling import extractor_pooling, is_token_level, pooling_stage

        if not get_cache().enabled:
            return
        groups: dict[tuple, tuple[Probe, set, dict]] = {}
        for m in members:
            if inference:
                how = m.inference_pooling_
                if is_token_level(how):
                    continue
                layers = m.layers_
            else:
                how = m.train_pooling_
                if is_selection_spec(m.layers) or pooling_stage(how, role="train") != "activation":
                    continue
                layers = resolve_layers(m.layers, m.n_model_layers())
            first, union, poolings = groups.setdefault(_share_key(m), (m, set(), {}))
            union.update(int(x) for x in layers)
            name = extractor_pooling(how)
            poolings.setdefault(repr(name) if callable(name) else name, name)
        for first, union, poolings in groups.values():
            rt = first.runtime
            prepared = rt.prepare(prompts, chat_template=first.chat_template)
            rt.pooled_many(
                prepared, sorted(union), list(poolings.values()), roles=first.score_roles, **kwargs
            )

    def fit(
        self,
        X,
        y=None,
        *,
        labels=None,
        sample_weight=None,
        groups=None,
        **fit_kwargs,
    ) -> ProbeEnsemble:
        """Fit every member: the ``Probe`` objects passed in, not copies.

        All members read the training prompts from one shared extraction (when they share
        a model). Afterwards each member is fitted on its own (``probes[0].predict_proba``
        works) and ``probes_`` lists those same objects. A probe listed twice is fitted
        once. If a member's fit fails, the members fitted before it stay fitted.

        Parameters
        ----------
        X : list of str
            Positive prompts (with ``y`` the negative ones) or all prompts (with labels).
        y : list of str or array-like of shape (n_samples,)
        labels : array-like of shape (n_samples,), optional
        sample_weight : array-like of shape (n_samples,), optional
            Passed to every member's ``fit`` (resampled with the rows).
        groups : array-like of shape (n_samples,), optional
            Bootstrap ensembles resample whole groups (prompts of one source stay together).
        **fit_kwargs
            Per-call options passed to each member's ``fit`` (``remote=``, ...).
        """
        probes = self._validate()
        if self.resample:
            self._check_distinct(probes)
        prompts, y_all = parse_fit_args(X, y, labels, self.task)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (len(prompts),):
                raise ValueError(
                    f"sample_weight has shape {sample_weight.shape}; it needs one weight per "
                    f"training prompt ({len(prompts)},)"
                )
        if groups is not None and not self.resample:
            raise ValueError(
                "groups= only matters for bootstrap ensembles (resample=True, see "
                "ProbeEnsemble.bootstrap); leave it out here"
            )
        members = probes
        self._share_runtimes(members)
        extract_kwargs = {
            k: v for k, v in fit_kwargs.items() if k in ("remote", "batch_size", "max_retries")
        }
        self._share_extraction(members, prompts, **extract_kwargs)
        if self.resample:
            indices = self._resamples(y_all, groups, len(members))
        else:
            indices = [None] * len(members)
        fitted: set[int] = set()
        for m, idx in zip(members, indices):
            if id(m) in fitted:  # listed twice without resampling: same data, same fit
                continue
            fitted.add(id(m))
            kw = dict(fit_kwargs)
            if idx is None:
                p_i, y_i, w_i = prompts, y_all, sample_weight
            else:
                p_i = [prompts[i] for i in idx]
                y_i = y_all[idx]
                w_i = None if sample_weight is None else sample_weight[idx]
            if w_i is not None:
                kw["sample_weight"] = w_i
            m.fit(p_i, labels=y_i, **kw)
        if self.task == "classification":
            classes = members[0].classes_
            for i, m in enumerate(members[1:], 1):
                if not np.array_equal(m.classes_, classes):
                    raise ValueError(
                        f"member {i} learned classes {list(m.classes_)} but member 0 learned "
                        f"{list(classes)}; every member must see every class"
                    )
            self.classes_ = np.asarray(classes)
        self.probes_ = members
        self.weights_ = self._weights(len(members))
        if self.resample:
            self.resample_indices_ = indices
        self.n_train_ = len(prompts)
        return self

    # ------------------------------------------------------------------ inference
    def _prepare_members(self, prompts, kwargs) -> None:
        """Members that share a model read ``prompts`` from one extraction."""
        if len(self.probes_) > 1:
            extract = {
                k: v for k, v in kwargs.items() if k in ("remote", "batch_size", "max_retries")
            }
            self._share_extraction(self.probes_, prompts, inference=True, **extract)

    def _member_proba(self, prompts, **kwargs) -> np.ndarray:
        """(n_members, n_prompts, n_classes) probabilities of every member."""
        self._prepare_members(prompts, kwargs)
        out = []
        for m in self.probes_:
            p = m.predict_proba(prompts, **kwargs)
            if isinstance(p, np.ma.MaskedArray):
                raise ValueError(
                    "ensemble members must give one score per prompt; a member with "
                    "inference_pooling='all' scores every token: use 'max', 'mean', ..."
                )
            out.append(np.asarray(p, dtype=np.float64))
        return np.stack(out)

    def _votes(self, prompts, **kwargs) -> np.ndarray:
        """(n_prompts, n_classes) weighted vote fractions."""
        self._prepare_members(prompts, kwargs)
        votes = np.zeros((len(prompts), len(self.classes_)))
        for w, m in zip(self.weights_, self.probes_):
            pred = np.asarray(m.predict(prompts, **kwargs))
            if pred.ndim != 1:
                raise ValueError(
                    "ensemble members must give one prediction per prompt; a member with "
                    "inference_pooling='all' predicts every token"
                )
            idx = np.searchsorted(self.classes_, pred)
            votes[np.arange(len(pred)), idx] += w
        return votes

    def predict_proba(self, prompts, **kwargs) -> np.ndarray:
        """Class probabilities, shape (n_prompts, n_classes).

        Soft voting: the weighted mean of the members' probabilities. Hard voting: the
        weighted fraction of members voting for each class.
        """
        self._check_fitted()
        if self.task == "regression":
            raise ValueError("predict_proba is not defined for task='regression'; use predict")
        prompts = check_prompts(prompts)
        if self.voting == "hard":
            return self._votes(prompts, **kwargs)
        return np.tensordot(self.weights_, self._member_proba(prompts, **kwargs), axes=1)

    def predict(self, prompts, **kwargs) -> np.ndarray:
        """Predicted classes (ties to the lower class), or the weighted mean prediction for
        regression members."""
        self._check_fitted()
        prompts = check_prompts(prompts)
        if self.task == "regression":
            self._prepare_members(prompts, kwargs)
            preds = np.stack([np.asarray(m.predict(prompts, **kwargs)) for m in self.probes_])
            return np.tensordot(self.weights_, preds.astype(np.float64), axes=1)
        # argmax takes the first maximum: a tie goes to the lower class.
        return self.classes_[self.predict_proba(prompts, **kwargs).argmax(axis=1)]

    def prediction_std(self, prompts, **kwargs) -> np.ndarray:
        """Spread of the members' outputs per prompt: the (weighted) standard deviation of
        their positive-class probability.

        Returns
        -------
        ndarray of shape (n_prompts,), or (n_prompts, n_classes) for more than two classes
        (one per class), or of the predictions for regression members.
        """
        self._check_fitted()
        prompts = check_prompts(prompts)
        if self.task == "regression":
            values = np.stack([np.asarray(m.predict(prompts, **kwargs)) for m in self.probes_])
            values = values.astype(np.float64)
        else:
            values = self._member_proba(prompts, **kwargs)
            if values.shape[2] == 2:
                values = values[:, :, 1]
        w = self.weights_.reshape(-1, *([1] * (values.ndim - 1)))
        mean = (w * values).sum(0)
        return np.sqrt(np.maximum((w * (values - mean) ** 2).sum(0), 0.0))

    def score(self, prompts, labels, **kwargs) -> float:
        """Accuracy (classification) or R^2 (regression) of :meth:`predict`."""
        from .scoring import score_value

        prompts, y = check_scoring_data(prompts, labels, self.task)
        return score_value(y, self.predict(prompts, **kwargs), self.task)

    def evaluate(self, prompts, labels, **kwargs) -> dict:
        """accuracy, f1, precision, recall, auroc (r2, mse, mae for regression)."""
        prompts, y = check_scoring_data(prompts, labels, self.task)
        if self.task == "regression":
            return compute_metrics(y, self.predict(prompts, **kwargs), None, "regression")
        proba = self.predict_proba(prompts, **kwargs)
        pred = self.classes_[proba.argmax(1)]
        return compute_metrics(y, pred, proba, self.task, self.classes_)

    # ------------------------------------------------------------------ persistence
    def _meta(self, names: list[str]) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "voting": self.voting,
            "weights": None if self.weights is None else [float(w) for w in self.weights],
            "resample": bool(self.resample),
            "random_state": self.random_state,
            "task": self.task,
            "classes": None
            if self.task == "regression"
            else [c.item() if hasattr(c, "item") else c for c in self.classes_],
            "n_train": int(self.n_train_),
            "members": names,
        }

    def _write(self, folder: Path, names: list[str]) -> None:
        """Save the members into the (absent) ``folder / name`` folders, then
        ``ensemble.json`` last; on failure remove the member folders written here."""
        from ..sharing.atomic import atomic_write
        from ..sharing.probe_format import dumps_json

        written = []
        try:
            for m, name in zip(self.probes_, names):
                m.save(folder / name)
                written.append(folder / name)
            atomic_write(folder / JSON_NAME, dumps_json(self._meta(names)).encode("utf-8"))
        except BaseException:
            for member in written:
                shutil.rmtree(member, ignore_errors=True)
            raise

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Save to a folder: ``ensemble.json`` plus one safe-format probe folder per
        member. Nothing is pickled (a member the safe format cannot store is an error).

        Parameters
        ----------
        path : str or Path
        overwrite : bool, default False
            Saving over an earlier saved ensemble always works and replaces only the
            ensemble's own files (``ensemble.json`` and the ``member_NN`` folders); a
            README or ``.git`` beside them is kept. A folder that holds other data but no
            saved ensemble is refused unless ``overwrite=True``; even then only the
            ensemble's own files are written.

        Returns
        -------
        Path
        """
        from ..sharing.atomic import fsync_dir
        from ..sharing.safe_files import check_save_folder, is_probe_folder

        self._check_fitted()
        path = Path(path).expanduser()
        n = len(self.probes_)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
            try:
                self._write(tmp, [f"member_{i:02d}" for i in range(n)])
                os.replace(tmp, path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(path.parent)
            return path
        if not path.is_dir():
            raise FileExistsError(
                f"{str(path)!r} is a file, so an ensemble folder cannot be saved there; "
                "choose another path"
            )
        check_save_folder(
            path,
            overwrite,
            what="ensemble",
            json_name=JSON_NAME,
            is_saved=is_ensemble_folder,
            owns=_owned,
            files=f"{JSON_NAME}, member_00, ...",
        )
        try:
            old = set(_read_meta(path)["members"])
        except (OSError, ValueError):  # no (valid) earlier ensemble here
            old = set()
        taken = {p.name for p in path.iterdir()}
        free = (f"member_{i:02d}" for i in range(len(taken) + n))
        names = [name for name in free if name not in taken][:n]
        self._write(path, names)  # ensemble.json now names the new members
        for p in path.iterdir():
            stale = p.name not in names and _MEMBER_NAME.fullmatch(p.name) is not None
            if stale and p.is_dir() and (p.name in old or is_probe_folder(p)):
                shutil.rmtree(p)
        fsync_dir(path)
        return path

    @classmethod
    def load(cls, path, **overrides) -> ProbeEnsemble:
        """Load an ensemble written by :meth:`save` (runs no code from the files).

        ``overrides`` (``device=``, ``batch_size=``, ...) go to every member's
        :meth:`Probe.load`.

        Raises
        ------
        FileNotFoundError
            No ``ensemble.json`` at ``path``.
        ProbeFormatError
            ``ensemble.json`` is malformed, oversized, of an unknown format version, or
            names a member folder outside the ensemble.
        """
        path = Path(path).expanduser()
        if not (path / JSON_NAME).is_file():
            raise FileNotFoundError(f"no saved ensemble at {str(path)!r} (no {JSON_NAME})")
        meta = _read_meta(path)
        members = [Probe.load(path / name, **overrides) for name in meta["members"]]
        ens = cls(
            members,
            weights=meta.get("weights"),
            voting=meta.get("voting", "soft"),
            resample=bool(meta.get("resample", False)),
            random_state=meta.get("random_state"),
        )
        return ens.restore_state(members, n_train=meta.get("n_train", 0))

    def restore_state(self, members: list[Probe], n_train: int = 0) -> ProbeEnsemble:
        """Take fitted ``members`` as this ensemble's ``probes_`` (what :meth:`load`
        does), checked as ``fit`` checks them. Returns ``self``."""
        self._validate()
        for i, m in enumerate(members):
            m.check_fitted()
            if self.task == "classification" and not np.array_equal(
                m.classes_, members[0].classes_
            ):
                raise ValueError(f"member {i} has classes {list(m.classes_)}, unlike member 0")
        self._share_runtimes(members)
        self.probes_ = list(members)
        self.weights_ = self._weights(len(members))
        self.n_train_ = int(n_train)
        if self.task == "classification":
            self.classes_ = np.asarray(members[0].classes_)
        return self
