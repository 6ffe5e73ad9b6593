"""Sequence probes: classifiers that read every token of a prompt, not one pooled vector.

A probe fitted on one pooled vector per prompt and then applied to each token is off its
training distribution, and a last-token or mean-pooled probe loses a short harmful
request inside a long ordinary text (DESIGN.md, "Token-level scoring"). The estimators
here are trained on the token sequence itself, with the prompt's label supervising an
aggregate over its tokens:

:class:`MILProbe`
    Multiple-instance learning through the aggregation: a linear per-token logit
    ``z_t = w . x_t + b``, aggregated as ``rolling_max:K`` (the mean over each window of
    ``K`` scored tokens, then the max; :mod:`.windows`). The label supervises the top
    window only, not every token. The max is exact (its subgradient flows to the top
    window), so training and inference aggregate the same way.
:class:`AttentionProbe`
    ``n_heads`` learned queries; per head a softmax over the scored tokens and a linear
    read-out of each token's value; heads summed. With ``window=K`` the softmax runs over
    each window of ``K`` scored tokens and the prompt takes the best window (max of
    rolling attention, Kramár et al. 2026).
:class:`MultiMaxProbe`
    ``n_heads`` linear heads, a hard max per head over the tokens, combined linearly.

Per-token contributions (:meth:`token_scores`) reproduce the prompt's logit exactly
(:meth:`score_from_token_scores`; ``decision_function`` is that logit and
``predict_proba[:, 1]`` its sigmoid):

- MIL: the token logits ``z_t``; the prompt logit is ``rolling_max:K`` of them.
- attention (no window): ``c_t = sum_h alpha_{t,h} v_{t,h}``; the prompt logit is
  ``sum_t c_t + intercept_``.
- attention with ``window=K``: ``c_t`` as above with the softmax of the top window, on
  the top window's tokens, and 0 on the other scored tokens; the same sum.
- multimax: a token gets ``beta_h * max_t s_{t,h}`` for each head ``h`` whose max it is
  (0 if none); the prompt logit is their sum plus ``intercept_``.

Unscored tokens (mask False: the attention sink, special tokens, padding) take no part
in any aggregation or softmax and get ``NaN`` contributions.

Inputs are per-prompt token activations: a list of ``(seq_i, hidden)`` arrays (float16
is fine), an ``(n, seq, hidden)`` array with an ``(n, seq)`` mask, or any
:class:`TokenSource`, which hands out prompts by index, so training reads minibatches
(``batch_size`` prompts at a time; never all ``(n, seq, hidden)`` at once) and a source
can read them lazily from the activation cache (:class:`CallableTokenSource`).

Training is full-precision torch on the CPU: Adam, class weights, an L2 penalty on the
weights, early stopping on a stratified held-out fold (best epoch restored), features
standardized per dimension over the scored training tokens, deterministic for a given
``random_state``. Learned state is plain arrays plus JSON-able metadata
(:meth:`get_state` / :func:`sequence_probe_from_state`), no pickle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

SEQUENCE_CLASSIFIERS = ("mil", "attention", "multimax")


# ---------------------------------------------------------------- token sources
class TokenSource:
    """Per-prompt token activations, handed out by index.

    Subclasses implement ``__len__`` and :meth:`take`. ``n_features`` may be ``None``
    until the first :meth:`take`.
    """

    n_features: int | None = None

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def take(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Activations and masks of the prompts at ``indices``.

        Returns
        -------
        list of (ndarray of shape (seq_i, hidden), bool ndarray of shape (seq_i,))
            The mask is True at the tokens the probe may score.
        """
        raise NotImplementedError  # pragma: no cover - interface


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


def _compact(m):
    """Stable order putting scored positions first, and the count per row."""
    import torch

    order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)
    return order, m.sum(1)


def rolling_max_torch(z, m, k: int):
    """``rolling_max:k`` of (b, L) scores over the scored positions of (b, L) mask ``m``.

    Matches :func:`.windows.aggregate_rows` (NaN-skipping): windows of ``k`` consecutive
    scored tokens, a row with fewer than ``k`` scored tokens takes its mean. Differentiable
    (the max passes its subgradient to the top window). Rows with no scored token give 0.
    """
    import torch

    order, counts = _compact(m)
    zc = torch.gather(z, 1, order)
    mc = torch.gather(m, 1, order)
    zc = zc.masked_fill(~mc, 0.0)
    b, width = z.shape
    c = torch.cat([zc.new_zeros(b, 1), zc.cumsum(1)], dim=1)
    short = c.gather(1, counts.unsqueeze(1)).squeeze(1) / counts.clamp(min=1)
    if width < k:
        return short
    means = (c[:, k:] - c[:, : width - k + 1]) / k  # window ending at k-1 .. width-1
    ends = torch.arange(k - 1, width, device=z.device).unsqueeze(0)
    means = means.masked_fill(ends >= counts.unsqueeze(1), float("-inf"))
    full = means.max(1).values
    return torch.where(counts >= k, full, short)


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
class _SequenceProbe(ClassifierMixin, BaseEstimator):
    """Shared training loop, inference, contributions and state for sequence probes."""

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
        return _PREFIX_SCORERS[self.kind](self)

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


_COMMON_DOC = """
    l2 : float, default 1e-3
        Penalty ``l2 * sum(w ** 2)`` on the weight matrices (not biases).
    learning_rate : float, default 1e-2
        Adam step size.
    max_epochs : int, default 100
    batch_size : int, default 32
        Prompts per minibatch; peak memory is one padded (batch_size, seq, hidden) batch.
    validation_fraction : float, default 0.2
        Stratified held-out share for early stopping (0: no held-out fold; the training
        loss decides).
    patience : int, default 10
        Epochs without a better held-out loss before stopping; the best epoch is kept.
    class_weight : {"balanced", None} or dict, default "balanced"
    standardize : bool, default True
        Standardize each hidden dimension over the scored training tokens.
    init : {"pooled", "random"}, default "pooled"
        "pooled" starts from the logistic regression on mean-pooled tokens (same L2):
        with a few hundred prompts, gradient descent from a random start overfits within
        a few epochs, while the pooled solution is already a good probe to refine.
    random_state : int, default 0
"""


class MILProbe(_SequenceProbe):
    __doc__ = (
        """Linear per-token probe trained through ``rolling_max:window`` (multiple-instance).

    The prompt logit is ``rolling_max:window`` of the token logits ``z_t = w . x_t + b``:
    the label supervises the top window of each prompt.

    Parameters
    ----------
    window : int, default 16
        K of ``rolling_max:K`` (1: a max over tokens)."""
        + _COMMON_DOC
    )

    kind = "mil"
    _weight_names = ("w",)

    def __init__(
        self,
        window: int = 16,
        l2: float = 1e-3,
        learning_rate: float = 1e-2,
        max_epochs: int = 100,
        batch_size: int = 32,
        validation_fraction: float = 0.2,
        patience: int = 10,
        class_weight="balanced",
        standardize: bool = True,
        init: str = "pooled",
        random_state: int = 0,
    ) -> None:
        self.window = window
        self.l2 = l2
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.standardize = standardize
        self.init = init
        self.random_state = random_state

    @property
    def aggregation(self) -> str:
        """The aggregation that turns :meth:`token_scores` into the prompt logit."""
        return f"rolling_max:{self.window}"

    def _check_kind_params(self):
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ValueError(f"window={self.window!r} must be an int >= 1 (K of rolling_max:K)")

    def _init_params(self, d, gen):
        import torch

        return {
            "w": torch.randn(d, generator=gen) * (0.01 / math.sqrt(d)),
            "b": torch.zeros(1),
        }

    def _warm_start(self, p, w, b, gen):
        p["w"].data.copy_(w)
        p["b"].data.fill_(b)

    def _token_logits(self, p, x):
        return x @ p["w"] + p["b"]

    def _forward(self, p, x, m):
        return rolling_max_torch(self._token_logits(p, x), m, self.window)

    def _contributions(self, p, x, m):
        z = self._token_logits(p, x)
        return rolling_max_torch(z, m, self.window), z.masked_fill(~m, float("nan"))

    def score_from_token_scores(self, rows):
        check_is_fitted(self, "params_")
        from .windows import aggregate_rows

        return aggregate_rows(list(rows), self.aggregation)


class AttentionProbe(_SequenceProbe):
    __doc__ = (
        """Attention probe: learned queries, softmax over the scored tokens, linear read-out.

    Per head ``h``: attention logits ``a_{t,h} = q_h . x_t``, weights
    ``alpha_{.,h} = softmax(a_{.,h})`` over the scored tokens (of the best window when
    ``window`` is set), values ``v_{t,h} = u_h . x_t``; the prompt logit is
    ``sum_h sum_t alpha_{t,h} v_{t,h} + b`` (with a window: the max over windows of that
    sum, plus ``b``). Queries start at 0 (uniform attention: a mean-pooled probe).

    Parameters
    ----------
    n_heads : int, default 4
    window : int or None, default None
        Softmax within each window of ``window`` scored tokens, prompt = best window
        (a prompt shorter than the window is one window)."""
        + _COMMON_DOC
    )

    kind = "attention"
    _weight_names = ("q", "u")

    def __init__(
        self,
        n_heads: int = 4,
        window: int | None = None,
        l2: float = 1e-3,
        learning_rate: float = 1e-2,
        max_epochs: int = 100,
        batch_size: int = 32,
        validation_fraction: float = 0.2,
        patience: int = 10,
        class_weight="balanced",
        standardize: bool = True,
        init: str = "pooled",
        random_state: int = 0,
    ) -> None:
        self.n_heads = n_heads
        self.window = window
        self.l2 = l2
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.standardize = standardize
        self.init = init
        self.random_state = random_state

    def _check_kind_params(self):
        h = self.n_heads
        if not isinstance(h, int) or isinstance(h, bool) or h < 1:
            raise ValueError(f"n_heads={h!r} must be an int >= 1")
        w = self.window
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise ValueError(f"window={w!r} must be None or an int >= 1")

    def _init_params(self, d, gen):
        import torch

        h = self.n_heads
        return {
            "q": torch.zeros(d, h),
            "u": torch.randn(d, h, generator=gen) * (0.01 / math.sqrt(d)),
            "b": torch.zeros(1),
        }

    def _warm_start(self, p, w, b, gen):
        # Zero queries: uniform attention, i.e. exactly the mean-pooled probe.
        p["u"].data.copy_(w.unsqueeze(1).expand_as(p["u"]) / self.n_heads)
        p["b"].data.fill_(b)

    def _global(self, p, x, m):
        """Whole-prompt attention: (logit without b (b,), per-token contributions (b, L))."""
        import torch

        a = (x @ p["q"]).masked_fill(~m.unsqueeze(-1), float("-inf"))  # (b, L, H)
        alpha = torch.softmax(a, dim=1)
        alpha = torch.nan_to_num(alpha, nan=0.0)  # rows with no scored token
        c = (alpha * (x @ p["u"])).sum(-1)  # (b, L)
        return c.sum(1), c

    def _windows(self, p, x, m):
        """Best-window attention: logit without b (b,), window start (b,), compact order."""
        import torch

        k = self.window
        order, counts = _compact(m)
        xc = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
        a = xc @ p["q"]  # (b, L, H)
        v = xc @ p["u"]
        width = x.shape[1]
        if width < k:
            return None, order, counts
        aw = a.unfold(1, k, 1)  # (b, nW, H, k)
        vw = v.unfold(1, k, 1)
        per_window = (torch.softmax(aw, dim=-1) * vw).sum(-1).sum(-1)  # (b, nW)
        ends = torch.arange(k - 1, width, device=x.device).unsqueeze(0)
        per_window = per_window.masked_fill(ends >= counts.unsqueeze(1), float("-inf"))
        best, start = per_window.max(1)
        return (best, start), order, counts

    def _forward(self, p, x, m):
        import torch

        g, _ = self._global(p, x, m)
        if self.window is None:
            return g + p["b"]
        res, _, counts = self._windows(p, x, m)
        if res is None:
            return g + p["b"]
        return torch.where(counts >= self.window, res[0], g) + p["b"]

    def _contributions(self, p, x, m):
        import torch

        g, c = self._global(p, x, m)
        logit = g
        if self.window is not None:
            res, order, counts = self._windows(p, x, m)
            if res is not None:
                best, start = res
                k = self.window
                use_window = counts >= k
                logit = torch.where(use_window, best, g)
                xc = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
                cw = torch.zeros_like(c)
                for r in torch.nonzero(use_window).flatten().tolist():
                    s = int(start[r])
                    xs = xc[r, s : s + k]
                    alpha = torch.softmax(xs @ p["q"], dim=0)
                    contrib = (alpha * (xs @ p["u"])).sum(-1)
                    cw[r, order[r, s : s + k]] = contrib
                cw = torch.where(m, cw, torch.zeros_like(cw))
                c = torch.where(use_window.unsqueeze(1), cw, c)
        return logit + p["b"], c.masked_fill(~m, float("nan"))


class MultiMaxProbe(_SequenceProbe):
    __doc__ = (
        """MultiMax probe: several linear heads, a hard max per head, combined linearly.

    Head scores ``s_{t,h} = w_h . x_t + c_h``; the prompt logit is
    ``sum_h beta_h max_t s_{t,h} + b`` over the scored tokens. Unlike a softmax, a hard max
    does not dilute a short span in a long text.

    Parameters
    ----------
    n_heads : int, default 4"""
        + _COMMON_DOC
    )

    kind = "multimax"
    _weight_names = ("w",)

    def __init__(
        self,
        n_heads: int = 4,
        l2: float = 1e-3,
        learning_rate: float = 1e-2,
        max_epochs: int = 100,
        batch_size: int = 32,
        validation_fraction: float = 0.2,
        patience: int = 10,
        class_weight="balanced",
        standardize: bool = True,
        init: str = "pooled",
        random_state: int = 0,
    ) -> None:
        self.n_heads = n_heads
        self.l2 = l2
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.standardize = standardize
        self.init = init
        self.random_state = random_state

    def _check_kind_params(self):
        h = self.n_heads
        if not isinstance(h, int) or isinstance(h, bool) or h < 1:
            raise ValueError(f"n_heads={h!r} must be an int >= 1")

    def _init_params(self, d, gen):
        import torch

        h = self.n_heads
        return {
            "w": torch.randn(d, h, generator=gen) * (1.0 / math.sqrt(d)),
            "c": torch.zeros(h),
            "beta": torch.full((h,), 1.0 / h),
            "b": torch.zeros(1),
        }

    def _warm_start(self, p, w, b, gen):
        import torch

        h = self.n_heads
        rms = float(w.pow(2).mean().sqrt())
        noise = torch.randn(len(w), h, generator=gen) * (0.5 * rms)
        p["w"].data.copy_(w.unsqueeze(1) + noise)
        p["beta"].data.fill_(1.0 / h)
        p["b"].data.fill_(b)

    def _heads(self, p, x, m):
        s = (x @ p["w"] + p["c"]).masked_fill(~m.unsqueeze(-1), float("-inf"))
        mx, idx = s.max(1)  # (b, H)
        empty = ~m.any(1)
        mx = mx.masked_fill(empty.unsqueeze(1), 0.0)
        return mx, idx, empty

    def _forward(self, p, x, m):
        mx, _, _ = self._heads(p, x, m)
        return mx @ p["beta"] + p["b"]

    def _contributions(self, p, x, m):
        import torch

        mx, idx, empty = self._heads(p, x, m)
        per_head = mx * p["beta"]  # (b, H)
        c = torch.zeros(x.shape[:2], dtype=x.dtype)
        per_head = per_head.masked_fill(empty.unsqueeze(1), 0.0)
        c.scatter_add_(1, idx, per_head)
        return per_head.sum(1) + p["b"], c.masked_fill(~m, float("nan"))


_KINDS = {"mil": MILProbe, "attention": AttentionProbe, "multimax": MultiMaxProbe}


def make_sequence_probe(kind: str, **kwargs) -> _SequenceProbe:
    """A sequence probe by name: ``"mil"``, ``"attention"`` or ``"multimax"``."""
    if kind not in _KINDS:
        raise ValueError(
            f"sequence classifier {kind!r} is not one of {', '.join(map(repr, _KINDS))}"
        )
    try:
        return _KINDS[kind](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad classifier_kwargs for {kind!r}: {e}") from None


def sequence_probe_from_state(arrays: dict, meta: dict) -> _SequenceProbe:
    """Rebuild a fitted sequence probe from :meth:`get_state` output."""
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"state names probe kind {kind!r}, not one of {list(_KINDS)}")
    return _KINDS[kind].from_state(arrays, meta)


def is_sequence_probe(obj) -> bool:
    return isinstance(obj, _SequenceProbe)


# ---------------------------------------------------------------- streaming scores
class PrefixScorer:
    """The prompt logit of a growing prefix of one prompt, updated token by token.

    Built by :meth:`_SequenceProbe.prefix_scorer`. :meth:`push` appends tokens (the
    prompt at once, then one generated token per call) and returns the logit of the
    prefix after each of them, equal to the estimator's ``decision_function`` on that
    prefix. State per probe kind, so each token costs O(hidden * heads) for its
    projections plus:

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


class MILPrefixScorer(PrefixScorer):
    """Streaming ``rolling_max:window`` of a :class:`MILProbe`'s token logits."""

    def __init__(self, est) -> None:
        self.window = int(est.window)
        super().__init__(est)

    def _reset(self):
        from collections import deque

        self.recent = deque(maxlen=self.window)
        self.total = 0.0
        self.best = -math.inf

    def _project(self, xs):
        return xs @ self.params["w"] + self.intercept

    def _add(self, z):
        z = float(z)
        self.recent.append(z)
        self.total += z
        if len(self.recent) == self.window:
            self.best = max(self.best, math.fsum(self.recent) / self.window)

    def _logit(self):
        n = self.n_scored
        if n == 0:
            return 0.0
        if n < self.window:
            return self.total / n
        return self.best


class AttentionPrefixScorer(PrefixScorer):
    """Streaming attention read-out of an :class:`AttentionProbe` (softmax per head)."""

    def __init__(self, est) -> None:
        self.window = est.window
        super().__init__(est)

    def _reset(self):
        from collections import deque

        h = self.params["q"].shape[1]
        self.top = np.full(h, -np.inf)  # running max of the attention logits, per head
        self.denom = np.zeros(h)  # sum of exp(a - top)
        self.numer = np.zeros(h)  # sum of exp(a - top) * v
        self.recent = deque(maxlen=self.window) if self.window is not None else None
        self.best = -math.inf

    def _project(self, xs):
        return np.stack([xs @ self.params["q"], xs @ self.params["u"]], axis=1)  # (k, 2, H)

    def _add(self, av):
        a, v = av
        top = np.maximum(self.top, a)
        shrink = np.exp(self.top - top)
        e = np.exp(a - top)
        self.denom = self.denom * shrink + e
        self.numer = self.numer * shrink + e * v
        self.top = top
        if self.recent is not None:
            self.recent.append(av)
            if len(self.recent) == self.window:
                w = np.stack(self.recent)  # (K, 2, H)
                aw, vw = w[:, 0], w[:, 1]
                ew = np.exp(aw - aw.max(0))
                score = float(((ew / ew.sum(0)) * vw).sum())
                self.best = max(self.best, score)

    def _logit(self):
        if self.n_scored == 0:
            return self.intercept
        if self.window is not None and self.n_scored >= self.window:
            return self.best + self.intercept
        return float((self.numer / self.denom).sum()) + self.intercept


class MultiMaxPrefixScorer(PrefixScorer):
    """Streaming per-head maxima of a :class:`MultiMaxProbe`."""

    def _reset(self):
        self.top = np.full(len(self.params["beta"]), -np.inf)

    def _project(self, xs):
        return xs @ self.params["w"] + self.params["c"]

    def _add(self, s):
        self.top = np.maximum(self.top, s)

    def _logit(self):
        if self.n_scored == 0:
            return self.intercept
        return float(self.top @ self.params["beta"]) + self.intercept


_PREFIX_SCORERS = {
    "mil": MILPrefixScorer,
    "attention": AttentionPrefixScorer,
    "multimax": MultiMaxPrefixScorer,
}
