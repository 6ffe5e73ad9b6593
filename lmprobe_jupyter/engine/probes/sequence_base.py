"""Shared machinery of the sequence probes: token sources, minibatch training, inference, state.

The estimators of :mod:`.sequence_probes` (MIL, attention, multimax) differ only in how
they turn a prompt's tokens into a logit. Everything else lives here, in
:class:`SequenceProbe` (their base class) and :class:`PrefixScorer` (the base of their
streaming scorers): reading prompts, standardizing, the training loop, inference,
per-token contributions, saving and streaming.

Inputs are per-prompt token activations: a list of ``(seq_i, hidden)`` arrays (float16
is fine), an ``(n, seq, hidden)`` array with an ``(n, seq)`` mask, or any
:class:`TokenSource`, which hands out prompts by index, so training reads minibatches
(``batch_size`` prompts at a time; never all ``(n, seq, hidden)`` at once) and a source
can read them lazily from the activation cache (:class:`CallableTokenSource`).

Training is full-precision torch on the CPU: Adam, class weights, an L2 penalty on the
weights, early stopping on a stratified held-out fold (best epoch restored), features
standardized per dimension over the scored training tokens, deterministic for a given
``random_state``. Learned state is plain arrays plus JSON-able metadata
(:meth:`SequenceProbe.get_state` / :func:`.sequence_probes.sequence_probe_from_state`),
no pickle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

from ..cache.token_store import TokenSource


# ---------------------------------------------------------------- token sources
class ArrayTokenSource(TokenSource):
    """Token activations held in memory.

    Parameters
    ----------
    sequences : list of array-like of shape (seq_i, hidden), or ndarray of shape (n, seq, hidden)
    masks : list of bool array-like of shape (seq_i,), or bool ndarray of shape (n, seq), optional
        True at scored tokens; default all tokens (of a padded array: give the mask).
    """

    def __init__(self, sequences, masks=None) -> None:
        if isinstance(sequences, np.ndarray) and sequences.ndim == 3:
            seqs = list(sequences)
        elif isinstance(sequences, np.ndarray) and sequences.ndim != 3:
            raise ValueError(
                f"token activations of shape {sequences.shape} are not (n, seq, hidden); "
                "give an (n, seq, hidden) array with an (n, seq) mask or a list of "
                "(seq_i, hidden) arrays"
            )
        else:
            seqs = list(sequences)
        for i, s in enumerate(seqs):
            if np.ndim(s) != 2:
                raise ValueError(
                    f"prompt #{i} has token activations of shape {np.shape(s)}, not (seq, hidden)"
                )
        widths = {np.shape(s)[1] for s in seqs}
        if len(widths) > 1:
            raise ValueError(f"prompts have different hidden sizes {sorted(widths)}")
        if masks is None:
            ms = [np.ones(len(s), dtype=bool) for s in seqs]
        else:
            ms = [np.asarray(m, dtype=bool) for m in masks]
            if len(ms) != len(seqs):
                raise ValueError(f"got {len(ms)} masks for {len(seqs)} prompts")
            for i, (s, m) in enumerate(zip(seqs, ms)):
                if m.shape != (len(s),):
                    raise ValueError(
                        f"mask #{i} has shape {m.shape}; prompt #{i} has {len(s)} tokens"
                    )
        self.sequences = seqs
        self.masks = ms
        self.n_features = widths.pop() if widths else None

    def __len__(self) -> int:
        return len(self.sequences)

    def take(self, indices):
        return [(np.asarray(self.sequences[i]), self.masks[i]) for i in indices]


class CallableTokenSource(TokenSource):
    """Token activations read on demand, e.g. from the activation cache.

    Parameters
    ----------
    n : int
        Number of prompts.
    fetch : callable
        ``fetch(indices) -> list`` of ``(seq_i, hidden)`` arrays or of ``(array, mask)``
        pairs, one per index, in order. Called with at most ``batch_size`` indices.
    n_features : int, optional
    """

    def __init__(self, n: int, fetch: Callable, n_features: int | None = None) -> None:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n={n!r} must be a non-negative int")
        if not callable(fetch):
            raise ValueError(f"fetch={fetch!r} must be callable: fetch(indices) -> list of arrays")
        self.n = int(n)
        self.fetch = fetch
        self.n_features = n_features

    def __len__(self) -> int:
        return self.n

    def take(self, indices):
        got = list(self.fetch(list(indices)))
        if len(got) != len(indices):
            raise ValueError(f"fetch returned {len(got)} prompts for {len(indices)} indices")
        out = []
        for item in got:
            if isinstance(item, tuple):
                a, m = item
                out.append((np.asarray(a), np.asarray(m, dtype=bool)))
            else:
                a = np.asarray(item)
                out.append((a, np.ones(len(a), dtype=bool)))
        return out


class SubsetTokenSource(TokenSource):
    """The prompts of ``source`` at ``indices``, in that order (cross-validation folds
    of a lazy source, read one minibatch at a time like the source itself)."""

    def __init__(self, source: TokenSource, indices) -> None:
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.n_features = source.n_features

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        got = self.source.take([int(self.indices[i]) for i in indices])
        self.n_features = self.source.n_features
        return got


def as_token_source(X, mask=None) -> TokenSource:
    """Wrap token activations as a :class:`TokenSource` (a source passes through)."""
    if isinstance(X, TokenSource):
        if mask is not None:
            raise ValueError("mask= goes with arrays; a TokenSource carries its own masks")
        return X
    return ArrayTokenSource(X, mask)


# ---------------------------------------------------------------- torch helpers
def _collate(pairs, mean, scale, torch_dtype):
    """(b, L, d) standardized activations (0 at unscored) and the (b, L) bool mask."""
    import torch

    b = len(pairs)
    width = max((len(a) for a, _ in pairs), default=0)
    d = len(mean)
    x = np.zeros((b, width, d), dtype=np.float32 if torch_dtype == torch.float32 else np.float64)
    m = np.zeros((b, width), dtype=bool)
    for r, (a, mk) in enumerate(pairs):
        if a.ndim != 2 or a.shape[1] != d:
            raise ValueError(f"token activations of shape {a.shape} do not have hidden size {d}")
        x[r, : len(a)] = (np.asarray(a, dtype=np.float64) - mean) / scale
        m[r, : len(a)] = mk
    x[~m] = 0.0
    return torch.from_numpy(x), torch.from_numpy(m)


def _class_weights(y01: np.ndarray, class_weight, classes) -> np.ndarray:
    if class_weight is None:
        return np.ones(len(y01))
    if class_weight == "balanced":
        counts = np.bincount(y01, minlength=2).astype(float)
        w = len(y01) / (2.0 * np.maximum(counts, 1))
        return w[y01]
    if isinstance(class_weight, dict):
        missing = [c for c in class_weight if c not in list(classes)]
        if missing:
            raise ValueError(
                f"class_weight has labels {missing} that are not among the classes {list(classes)}"
            )
        w = np.asarray([float(class_weight.get(c, 1.0)) for c in classes])
        return w[y01]
    raise ValueError(
        f"class_weight={class_weight!r} is not one of None, 'balanced' or a dict label -> weight"
    )


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------- base estimator
class SequenceProbe(ClassifierMixin, BaseEstimator):
    """Shared training loop, inference, contributions and state for sequence probes.

    The base of :class:`~.sequence_probes.MILProbe`, :class:`~.sequence_probes.AttentionProbe`
    and :class:`~.sequence_probes.MultiMaxProbe`; a kind supplies its parameters, its
    forward pass, its per-token contributions and its streaming scorer.
    """

    kind = ""
    _weight_names: tuple[str, ...] = ()

    # -- per-kind pieces ------------------------------------------------------
    def _init_params(self, d: int, gen) -> dict:
        raise NotImplementedError  # pragma: no cover

    def _forward(self, p: dict, x, m):
        """Prompt logits (b,) for standardized (b, L, d) ``x`` and (b, L) mask ``m``."""
        raise NotImplementedError  # pragma: no cover

    def _contributions(self, p: dict, x, m):
        """(prompt logits (b,), contributions (b, L) with NaN at unscored)."""
        raise NotImplementedError  # pragma: no cover

    def _check_kind_params(self) -> None:
        pass

    def _warm_start(self, p: dict, w, b: float, gen) -> None:
        """Start from the mean-pooled linear probe ``w``, ``b`` (standardized space)."""
        raise NotImplementedError  # pragma: no cover

    def _pooled_start(self, source, train, y01, weights, mean, scale):
        """Logistic regression on the mean of each prompt's scored, standardized tokens.

        Its penalty matches ``l2`` (sklearn's ``C = 1 / (2 l2 sum(weights))``), so the warm
        start is the minimizer of this probe's own loss for mean pooling.
        """
        from sklearn.linear_model import LogisticRegression

        rows = []
        for s in range(0, len(train), self.batch_size):
            for a, mk in source.take(train[s : s + self.batch_size]):
                a = (np.asarray(a, dtype=np.float64)[np.asarray(mk, dtype=bool)] - mean) / scale
                rows.append(a.mean(0) if len(a) else np.zeros(len(mean)))
        C = 1.0 / (2.0 * max(self.l2, 1e-12) * float(weights.sum()))
        lr = LogisticRegression(C=min(C, 1e6), max_iter=5000)
        lr.fit(np.stack(rows), y01, sample_weight=weights)
        return lr.coef_[0], lr.intercept_[0]

    # -- validation -----------------------------------------------------------
    def _check_params(self) -> None:
        checks = {
            "l2": (self.l2, lambda v: isinstance(v, (int, float)) and v >= 0, "a float >= 0"),
            "learning_rate": (
                self.learning_rate,
                lambda v: isinstance(v, (int, float)) and v > 0,
                "a float > 0",
            ),
            "max_epochs": (
                self.max_epochs,
                lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                "an int >= 1",
            ),
            "batch_size": (
                self.batch_size,
                lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                "an int >= 1",
            ),
            "validation_fraction": (
                self.validation_fraction,
                lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
                "a float in [0, 1)",
            ),
            "init": (self.init, lambda v: v in ("pooled", "random"), "'pooled' or 'random'"),
            "patience": (
                self.patience,
                lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                "an int >= 1",
            ),
        }
        for name, (value, ok, want) in checks.items():
            if not ok(value):
                raise ValueError(f"{name}={value!r} must be {want}")
        self._check_kind_params()

    # -- fit ------------------------------------------------------------------
    def fit(self, X, y, mask=None):
        """Fit on token sequences.

        Parameters
        ----------
        X : list of array-like of shape (seq_i, hidden), ndarray of shape (n, seq, hidden), or TokenSource
        y : array-like of shape (n,)
            Two classes; the second of ``sorted(unique(y))`` is the positive one.
        mask : bool array-like of shape (n, seq) or list of (seq_i,), optional
            True at tokens the probe may use (default all; required for padded arrays).

        Returns
        -------
        self
        """
        import torch

        self._check_params()
        source = as_token_source(X, mask)
        y = np.asarray(y)
        n = len(source)
        if len(y) != n:
            raise ValueError(f"got {len(y)} labels for {n} prompts")
        classes = unique_labels(y)
        if len(classes) != 2:
            raise ValueError(
                f"{type(self).__name__} is a binary probe; y has {len(classes)} class(es) "
                f"{list(classes)[:5]}; give exactly two labels"
            )
        y01 = (y == classes[1]).astype(np.int64)
        weights = _class_weights(y01, self.class_weight, classes)
        rng = np.random.RandomState(self.random_state)
        train, val = self._split(y01, rng)

        mean, scale, d = self._standardizer(source, train)
        gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        params = self._init_params(d, gen)
        if self.init == "pooled":
            w0, b0 = self._pooled_start(source, train, y01[train], weights[train], mean, scale)
            self._warm_start(params, torch.from_numpy(w0).float(), float(b0), gen)
        for t in params.values():
            t.requires_grad_(True)
        opt = torch.optim.Adam(list(params.values()), lr=float(self.learning_rate))
        yt = torch.from_numpy(y01.astype(np.float32))
        wt = torch.from_numpy(weights.astype(np.float32))

        def batches(idx):
            for s in range(0, len(idx), self.batch_size):
                b = idx[s : s + self.batch_size]
                x, m = _collate(source.take(b), mean, scale, torch.float32)
                yield b, x, m

        def penalty():
            return sum((params[k] ** 2).sum() for k in self._weight_names)

        # In-memory sources: collate the held-out fold once. Lazy ones (the per-token
        # store): read it again each epoch, so memory stays one minibatch whatever n is.
        in_memory = isinstance(source, ArrayTokenSource)
        val_cached = list(batches(val)) if len(val) and in_memory else None
        has_val = len(val) > 0

        def val_batches():
            return val_cached if val_cached is not None else batches(val)

        def held_out_loss():
            with torch.no_grad():
                total = sum(
                    float(
                        torch.nn.functional.binary_cross_entropy_with_logits(
                            self._forward(params, x, m), yt[b], weight=wt[b], reduction="sum"
                        )
                    )
                    for b, x, m in val_batches()
                )
            return total / float(weights[val].sum())

        # The starting point competes too: with a pooled warm start it may already be best.
        best = held_out_loss() if has_val else math.inf
        bad, history, best_epoch = 0, [], -1
        best_state = {k: v.detach().clone() for k, v in params.items()}
        wsum = float(weights[train].sum())
        for epoch in range(self.max_epochs):
            perm = train[rng.permutation(len(train))]
            total = 0.0
            for b, x, m in batches(perm):
                logits = self._forward(params, x, m)
                bce = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, yt[b], weight=wt[b], reduction="sum"
                )
                # Scale the data term per batch so every prompt weighs the same per epoch.
                loss = bce * (len(train) / len(b)) / wsum + self.l2 * penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(bce.detach())
            vl = held_out_loss() if has_val else total / wsum
            history.append(vl)
            if vl < best - 1e-6:
                best, bad = vl, 0
                best_state = {k: v.detach().clone() for k, v in params.items()}
                best_epoch = epoch
            else:
                bad += 1
                if bad >= self.patience:
                    break
        self.classes_ = classes
        self.n_features_in_ = int(d)
        self.mean_ = mean
        self.scale_ = scale
        self.params_ = {k: v.numpy().astype(np.float64) for k, v in best_state.items()}
        self.n_epochs_ = len(history)
        self.best_epoch_ = int(best_epoch)
        self.validation_loss_ = float(best)
        self.loss_curve_ = [float(v) for v in history]
        return self

    def _split(self, y01, rng):
        idx = np.arange(len(y01))
        frac = self.validation_fraction
        counts = np.bincount(y01, minlength=2)
        if frac == 0 or counts.min() < 2:
            return idx, np.zeros(0, dtype=int)
        val = []
        for c in (0, 1):
            members = idx[y01 == c]
            k = min(len(members) - 1, max(1, int(round(frac * len(members)))))
            val.extend(rng.permutation(members)[:k])
        val = np.sort(np.asarray(val, dtype=int))
        train = np.setdiff1d(idx, val)
        return train, val

    def _standardizer(self, source, train):
        s1 = s2 = None
        count = 0
        d = source.n_features
        for s in range(0, len(train), self.batch_size):
            for a, mk in source.take(train[s : s + self.batch_size]):
                a = np.asarray(a, dtype=np.float64)[np.asarray(mk, dtype=bool)]
                if s1 is None:
                    d = a.shape[1]
                    s1, s2 = np.zeros(d), np.zeros(d)
                if a.shape[1] != d:
                    raise ValueError(f"prompts have different hidden sizes {d} and {a.shape[1]}")
                s1 += a.sum(0)
                s2 += (a * a).sum(0)
                count += len(a)
        if count == 0:
            raise ValueError("no scored token in the training prompts (every mask is False)")
        mean = s1 / count
        if not self.standardize:
            return np.zeros(d), np.ones(d), d
        var = np.maximum(s2 / count - mean**2, 0.0)
        scale = np.sqrt(var)
        scale[scale < 1e-8] = 1.0
        return mean, scale, d

    # -- inference ------------------------------------------------------------
    def _torch_params(self):
        import torch

        return {k: torch.from_numpy(v) for k, v in self.params_.items()}

    def _run(self, X, mask, want_tokens: bool):
        import torch

        check_is_fitted(self, "params_")
        source = as_token_source(X, mask)
        p = self._torch_params()
        logits, rows = [], []
        with torch.no_grad():
            for s in range(0, len(source), self.batch_size):
                pairs = source.take(range(s, min(len(source), s + self.batch_size)))
                x, m = _collate(pairs, self.mean_, self.scale_, torch.float64)
                if want_tokens:
                    z, c = self._contributions(p, x, m)
                    c = c.numpy()
                    rows.extend(c[r, : len(a)].copy() for r, (a, _) in enumerate(pairs))
                else:
                    z = self._forward(p, x, m)
                logits.append(z.numpy())
        z = np.concatenate(logits) if logits else np.zeros(0)
        return z, rows

    def decision_function(self, X, mask=None) -> np.ndarray:
        """Prompt logits, shape (n,): positive for ``classes_[1]``."""
        return self._run(X, mask, False)[0]

    def predict_proba(self, X, mask=None) -> np.ndarray:
        """Shape (n, 2): ``[1 - p, p]`` with ``p = sigmoid(decision_function)``."""
        z = self.decision_function(X, mask)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X, mask=None) -> np.ndarray:
        """Labels, shape (n,)."""
        z = self.decision_function(X, mask)
        return self.classes_[(z > 0).astype(int)]

    def token_scores(self, X, mask=None) -> list[np.ndarray]:
        """Per-token contributions to the prompt logit, NaN at unscored tokens.

        Returns
        -------
        list of ndarray of shape (seq_i,)
            :meth:`score_from_token_scores` of these equals :meth:`decision_function`.
        """
        return self._run(X, mask, True)[1]

    def score_from_token_scores(self, rows) -> np.ndarray:
        """Prompt logits, shape (n,), from :meth:`token_scores` rows."""
        check_is_fitted(self, "params_")
        b = float(self.params_["b"].reshape(-1)[0])
        return np.asarray([np.nansum(r) + b if np.any(~np.isnan(r)) else b for r in rows])

    # -- state ----------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Learned arrays and JSON-able metadata (params, classes) for safe saving."""
        check_is_fitted(self, "params_")
        arrays = {"mean": self.mean_, "scale": self.scale_}
        arrays.update({f"param.{k}": v for k, v in self.params_.items()})
        meta = {
            "kind": self.kind,
            "params": {k: _jsonable(v) for k, v in self.get_params().items()},
            "classes": [_jsonable(c) for c in self.classes_.tolist()],
            "n_features_in": self.n_features_in_,
            "n_epochs": self.n_epochs_,
            "best_epoch": self.best_epoch_,
            "validation_loss": self.validation_loss_,
            "loss_curve": list(self.loss_curve_),
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict, meta: dict):
        """Rebuild a fitted probe from :meth:`get_state` output (no code is run)."""
        if meta.get("kind") != cls.kind:
            raise ValueError(f"state is of a {meta.get('kind')!r} probe, not {cls.kind!r}")
        est = cls(**meta["params"])
        est.classes_ = np.asarray(meta["classes"])
        est.n_features_in_ = int(meta["n_features_in"])
        est.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        est.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        est.params_ = {
            k[len("param.") :]: np.asarray(v, dtype=np.float64)
            for k, v in arrays.items()
            if k.startswith("param.")
        }
        est.n_epochs_ = int(meta["n_epochs"])
        est.best_epoch_ = int(meta["best_epoch"])
        est.validation_loss_ = float(meta["validation_loss"])
        est.loss_curve_ = list(meta["loss_curve"])
        return est

    # -- streaming (prefix) scores --------------------------------------------
    def prefix_scorer(self) -> PrefixScorer:
        """A streaming scorer: the prompt logit of a growing prefix, token by token.

        ``scorer.push(x, mask)`` appends tokens and returns the logit of the prefix after
        each of them, exactly :meth:`decision_function` of that prefix (float64), at a
        constant cost per token (see :class:`PrefixScorer`). Drives the live monitor.
        """
        check_is_fitted(self, "params_")
        return self._new_prefix_scorer()

    def _new_prefix_scorer(self) -> PrefixScorer:
        """This kind's :class:`PrefixScorer` of the fitted probe (per kind)."""
        raise NotImplementedError  # pragma: no cover

    def prefix_decision_function(self, x, mask=None) -> np.ndarray:
        """The prompt logit of every prefix of one prompt: the score after each token.

        ``out[t] == decision_function([x[: t + 1]], mask=[mask[: t + 1]])[0]``. A prefix
        with no scored token yet gets what :meth:`decision_function` gives a prompt with
        none (0 for MIL, the intercept for attention and multimax).

        Parameters
        ----------
        x : array-like of shape (seq, hidden)
        mask : bool array-like of shape (seq,), optional
            True at the tokens the probe may use (default all).

        Returns
        -------
        ndarray of shape (seq,), float64
        """
        return self.prefix_scorer().push(x, mask)


# ---------------------------------------------------------------- streaming scores
class PrefixScorer:
    """The prompt logit of a growing prefix of one prompt, updated token by token.

    Built by :meth:`SequenceProbe.prefix_scorer`. :meth:`push` appends tokens (the
    prompt at once, then one generated token per call) and returns the logit of the
    prefix after each of them, equal to the estimator's ``decision_function`` on that
    prefix. State per probe kind (the subclasses in :mod:`.sequence_probes`), so each
    token costs O(hidden * heads) for its projections plus:

    - MIL: the last ``window`` scored token logits (a ring), their running mean and the
      best full-window mean so far: O(window);
    - attention: per head a running max, sum of ``exp(a - max)`` and of
      ``exp(a - max) * v`` (a log-sum-exp kept in pieces): O(1) per head; with
      ``window=K`` also the last K tokens' logits and values, whose window softmax is
      recomputed for each new full window: O(K) per head;
    - multimax: a running max per head: O(1) per head.

    Unscored tokens (mask False) leave the state unchanged: the prefix's logit repeats.

    Attributes
    ----------
    n_tokens : int
        Tokens pushed so far.
    n_scored : int
        Scored tokens among them.
    """

    def __init__(self, est) -> None:
        self.mean = np.asarray(est.mean_, dtype=np.float64)
        self.scale = np.asarray(est.scale_, dtype=np.float64)
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in est.params_.items()}
        self.intercept = float(self.params["b"].reshape(-1)[0])
        self.n_tokens = 0
        self.n_scored = 0
        self._reset()

    def _reset(self) -> None:  # pragma: no cover - per kind
        raise NotImplementedError

    def _project(self, xs: np.ndarray) -> np.ndarray:
        """Per-token projections of standardized (k, d) tokens: (k, ...)."""
        raise NotImplementedError  # pragma: no cover

    def _add(self, proj) -> None:
        raise NotImplementedError  # pragma: no cover

    def _logit(self) -> float:
        raise NotImplementedError  # pragma: no cover

    @property
    def logit(self) -> float:
        """The logit of the prefix pushed so far."""
        return self._logit()

    def push(self, x, mask=None) -> np.ndarray:
        """Append tokens; the prefix logit after each.

        Parameters
        ----------
        x : array-like of shape (k, hidden) or (hidden,)
            The next token(s)' activations (the probe's layers side by side).
        mask : bool array-like of shape (k,), optional
            True at tokens the probe may use (default all).

        Returns
        -------
        ndarray of shape (k,), float64
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        d = len(self.mean)
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(
                f"token activations of shape {np.shape(x)} do not have hidden size {d}; "
                "give (k, hidden) rows of the probe's layers side by side"
            )
        m = np.ones(len(x), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if m.shape != (len(x),):
            raise ValueError(f"mask of shape {m.shape} does not match {len(x)} tokens")
        out = np.empty(len(x))
        rows = np.flatnonzero(m)
        proj = self._project((x[rows] - self.mean) / self.scale) if len(rows) else None
        j = 0
        for t in range(len(x)):
            if m[t]:
                self._add(proj[j])
                j += 1
                self.n_scored += 1
            out[t] = self._logit()
        self.n_tokens += len(x)
        return out
