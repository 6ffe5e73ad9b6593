"""Every-token logistic probes trained from the per-token store, one chunk at a time.

``Probe(train_pooling="all")`` gives each scored token its prompt's label and fits a
linear probe on all of them. Fitting sklearn's ``LogisticRegression`` on that set needs
the ``(n_tokens, hidden * n_layers)`` matrix in memory, plus the float64 copies the
scalers make: 300 prompts of 600 tokens on four 576-wide layers are 1.6 GB in float32
and about 5 GB at the peak of an in-memory fit, and a bigger model multiplies that.

Here the same model is fitted without that matrix. The tokens come from a
:class:`~.sequence_base.TokenSource` (the per-token store of :mod:`.token_store`),
read in chunks of :data:`FIT_CHUNK_BYTES`:

1. one pass computes each feature's mean and variance (merged chunk by chunk in
   float64), which fix the pipeline's scalers (:class:`~.features.LayerNormalizer`,
   ``StandardScaler``) exactly as fitting them on the whole matrix would;
2. L-BFGS minimizes sklearn's own objective for ``LogisticRegression(penalty="l2")`` --
   the sample-weighted mean log-loss plus ``||w||^2 / (2 C sum(weights))``, intercept
   unpenalized, ``class_weight`` folded into the weights -- with sklearn's settings for
   the lbfgs solver (``gtol=tol``, ``maxls=50``), so it stops where sklearn stops. Each
   evaluation of the loss and its gradient is one pass over the chunks.

The fitted steps are ordinary sklearn objects with their fitted attributes set, so
``predict_proba``, token scores, save/load and the probe card see no difference.

Between passes the chunks are kept in RAM as float16 while they fit
:data:`RESIDENT_BYTES` (the store's own precision, so nothing changes but speed);
beyond that every pass reads them from the store again. Peak memory is therefore
``min(all tokens as float16, RESIDENT_BYTES)`` plus one chunk in float64, whatever the
number of tokens (``bench/token_memory.py``; extraction writes to the store in chunks of
:data:`~.token_store.CHUNK_BYTES` first, as for sequence probes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RESIDENT_BYTES",
    "StreamedFit",
    "TokenBatches",
    "fit_token_logistic",
    "set_fitted_logistic",
    "streamable_kwargs",
]

#: Float16 bytes of training tokens kept in memory between passes (more are re-read
#: from the per-token store on every pass).
RESIDENT_BYTES = 512 * 2**20
#: Float32 bytes of tokens per chunk of a pass (the float64 working copy is twice that).
FIT_CHUNK_BYTES = 16 * 2**20
_FLOAT16_MAX = 65504.0
#: LogisticRegression parameters the streamed fit implements (any other -> in-memory fit).
STREAMABLE_KWARGS = frozenset({"C", "class_weight", "max_iter", "tol", "fit_intercept"})


def streamable_kwargs(kwargs: dict | None) -> bool:
    """Whether a ``LogisticRegression`` with ``classifier_kwargs`` can be fitted streamed
    (L2 penalty, lbfgs): only C, class_weight, max_iter, tol, fit_intercept are set."""
    return set(kwargs or {}) <= STREAMABLE_KWARGS


class TokenBatches:
    """The scored tokens of a token source, in chunks, with the prompt each came from.

    Parameters
    ----------
    source : TokenSource
    masks : sequence of bool ndarray of shape (seq_i,)
        Each prompt's scored tokens (what is trained on); their lengths plan the chunks.
    owners : sequence of int ndarray of shape (seq_i,), optional
        Per token, the index of the labelled sample it belongs to (-1: not trained on);
        default: every token belongs to its prompt (index ``i``). ``n_owners`` is the
        number of samples (``labels`` of :func:`fit_token_logistic` index by it).
    chunk_bytes, resident_bytes : int, optional
        Float32 bytes per chunk (default :data:`FIT_CHUNK_BYTES`) and float16 bytes kept
        between passes (default :data:`RESIDENT_BYTES`).
    """

    def __init__(
        self,
        source,
        masks: Sequence,
        *,
        owners: Sequence | None = None,
        n_owners: int | None = None,
        chunk_bytes: int | None = None,
        resident_bytes: int | None = None,
    ) -> None:
        from ..cache.token_store import chunk_plan

        self.source = source
        masks = [np.asarray(m, dtype=bool) for m in masks]
        if owners is None:  # every scored token belongs to its prompt
            owners = [np.full(len(m), i, dtype=np.int64) for i, m in enumerate(masks)]
            n_owners = len(masks)
        self.owners = [np.asarray(o, dtype=np.int64) for o in owners]
        self.select = [m & (o >= 0) for m, o in zip(masks, self.owners)]
        picked = [o[s] for o, s in zip(self.owners, self.select)]
        flat = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        self.n_scored = np.bincount(flat, minlength=n_owners or 0).astype(np.int64)
        width = source.n_features or (int(source.take([0])[0][0].shape[1]) if len(masks) else 1)
        lengths = [len(m) for m in masks]
        self.chunks = chunk_plan(lengths, width, chunk_bytes or FIT_CHUNK_BYTES)
        self.resident_bytes = RESIDENT_BYTES if resident_bytes is None else resident_bytes
        self._held: list | None = None
        self.passes = 0  # passes over the tokens so far

    @property
    def resident(self) -> bool:
        """Whether later passes read the float16 copy in memory (not the store)."""
        return self._held is not None

    def __iter__(self):
        """Yield ``(X float32 (m, d), owner int (m,))`` per chunk: the scored tokens and
        the sample (by default the prompt) each belongs to."""
        self.passes += 1
        if self._held is not None:
            for X16, owner in self._held:
                yield X16.astype(np.float32), owner
            return
        keep, used = [], 0
        for chunk in self.chunks:
            pairs = self.source.take(chunk)
            sel = [self.select[i] for i in chunk]
            X = np.concatenate([a[s] for (a, _), s in zip(pairs, sel)]).astype(
                np.float32, copy=False
            )
            owner = np.concatenate([self.owners[i][s] for i, s in zip(chunk, sel)])
            used += X.size * 2
            if keep is not None:
                # float16 is the store's own precision; a value beyond its range (the
                # store then keeps float32) or too many tokens: read the store each pass
                if used <= self.resident_bytes and bool(np.all(np.abs(X) <= _FLOAT16_MAX)):
                    keep.append((X.astype(np.float16), owner))
                else:
                    keep = None
            yield X, owner
        if keep is not None:
            self._held = keep


@dataclass
class StreamedFit:
    """What :func:`fit_token_logistic` found (the pipeline's fitted numbers)."""

    mean: np.ndarray  # per-feature mean over the training tokens
    var: np.ndarray  # per-feature (population) variance
    coef: np.ndarray  # (d,) in the scaled feature space the classifier sees
    intercept: float
    n_iter: int
    n_tokens: int
    passes: int
    converged: bool


def feature_moments(batches: TokenBatches) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and population variance of every feature over all tokens (one pass; chunk
    moments merged in float64 with Chan et al.'s parallel update)."""
    n, mean, m2 = 0, None, None
    for X, _ in batches:
        if not len(X):
            continue
        Xd = X.astype(np.float64)
        k = len(Xd)
        mu = Xd.mean(0)
        Xd -= mu  # in place: one float64 copy of the chunk at a time
        Xd **= 2
        q = Xd.sum(0)
        del Xd
        if mean is None:
            n, mean, m2 = k, mu, q
            continue
        delta = mu - mean
        tot = n + k
        mean = mean + delta * (k / tot)
        m2 = m2 + q + delta**2 * (n * k / tot)
        n = tot
    if mean is None:
        raise ValueError("no scored tokens to train on: every prompt's tokens are masked out")
    return mean, m2 / n, n


def token_class_weights(labels, n_scored, class_weight, sample_weight) -> dict:
    """sklearn's per-class weights, counted over tokens (one sample per token, carrying
    its prompt's sample weight): ``"balanced"`` is ``total / (n_classes * class_total)``
    of the sample-weighted token counts (as ``compute_class_weight`` does)."""
    classes = np.unique(labels)
    counts = {c: float((n_scored * sample_weight)[labels == c].sum()) for c in classes}
    if class_weight is None:
        return {c: 1.0 for c in classes}
    if isinstance(class_weight, str) and class_weight == "balanced":
        n = sum(counts.values())
        return {c: n / (len(classes) * counts[c]) if counts[c] else 0.0 for c in classes}
    if isinstance(class_weight, dict):
        return {c: float(class_weight.get(c, 1.0)) for c in classes}
    raise ValueError(f"class_weight={class_weight!r}: use None, 'balanced' or a dict")


def fit_token_logistic(
    batches: TokenBatches,
    labels,
    steps,
    *,
    sample_weight=None,
    C: float = 1.0,
    class_weight=None,
    max_iter: int = 100,
    tol: float = 1e-4,
    fit_intercept: bool = True,
) -> StreamedFit:
    """L2 logistic regression over every scored token of ``batches``, a chunk at a time.

    Parameters
    ----------
    batches : TokenBatches
    labels : ndarray of shape (n_samples,)
        Two classes; every token of sample ``i`` (``batches``' owner ``i``: by default
        prompt ``i``) has label ``labels[i]``. The positive class is the larger label
        (sklearn's ``classes_[1]``).
    steps : list of (name, estimator)
        The pipeline's scaling steps before the classifier (``normalize``, ``standard``;
        may be empty). They are fitted here, from the tokens' moments.
    sample_weight : ndarray of shape (n_samples,), optional
        Each sample's weight, carried by every one of its tokens.
    C, class_weight, max_iter, tol, fit_intercept
        As for sklearn's ``LogisticRegression``.
    """
    from scipy.optimize import minimize

    if not C > 0:
        raise ValueError(f"C={C!r}: the inverse regularization strength must be positive")
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) != 2:
        raise ValueError(f"the streamed token fit is binary; got classes {list(classes)}")
    if len(batches.n_scored) != len(labels):
        raise ValueError(
            f"{len(labels)} labels for {len(batches.n_scored)} samples of token owners"
        )
    if not batches.n_scored.sum():
        raise ValueError("no scored tokens to train on: every prompt's tokens are masked out")
    sw = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, float)
    cw = token_class_weights(labels, batches.n_scored, class_weight, sw)
    # per prompt: the weight each of its tokens carries (class weight x sample weight)
    eff = sw * np.asarray([cw[c] for c in labels])
    target = (labels == classes[1]).astype(np.float64)
    sw_sum = float((eff * batches.n_scored).sum())
    if not sw_sum > 0:
        raise ValueError("the training tokens' weights sum to zero")
    mean, var, n = feature_moments(batches)
    shift, scale = scaler_chain(steps, mean, var, n)
    d = len(mean)
    l2 = 1.0 / (C * sw_sum)  # sklearn's scaling: mean loss + ||w||^2 / (2 C sum(weights))

    def loss_grad(theta):
        w = theta[:d]
        b = theta[d] if fit_intercept else 0.0
        total, g, gb = 0.0, np.zeros(d), 0.0
        for X, owner in batches:
            if not len(X):
                continue
            Z = X.astype(np.float64)  # scaled in place: one float64 copy of the chunk
            Z -= shift
            Z *= scale
            t, s = target[owner], eff[owner]
            z = Z @ w + b
            total += float((s * (np.logaddexp(0.0, z) - t * z)).sum())
            r = s * (_sigmoid(z) - t)
            g += Z.T @ r
            gb += float(r.sum())
        f = total / sw_sum + 0.5 * l2 * float(w @ w)
        grad = g / sw_sum + l2 * w
        return (f, np.append(grad, gb / sw_sum)) if fit_intercept else (f, grad)

    res = minimize(
        loss_grad,
        np.zeros(d + 1 if fit_intercept else d),
        method="L-BFGS-B",
        jac=True,
        # sklearn's lbfgs settings, so the fit stops where LogisticRegression stops
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    return StreamedFit(
        mean=mean,
        var=var,
        coef=res.x[:d],
        intercept=float(res.x[d]) if fit_intercept else 0.0,
        n_iter=int(res.nit),
        n_tokens=int(n),
        passes=batches.passes,
        converged=int(res.nit) < max_iter,  # sklearn warns exactly when nit hits max_iter
    )


def set_fitted_logistic(classifier, fit: StreamedFit, classes) -> None:
    """Give an unfitted ``LogisticRegression`` the fitted attributes of ``fit``."""
    d = len(fit.mean)
    classifier.coef_ = np.asarray(fit.coef, dtype=np.float64).reshape(1, d)
    classifier.intercept_ = np.asarray([fit.intercept], dtype=np.float64)
    classifier.classes_ = np.asarray(classes)
    classifier.n_features_in_ = d
    classifier.n_iter_ = np.asarray([fit.n_iter], dtype=np.int32)


def scaler_chain(steps, mean, var, n_samples: int, fitted: bool = True):
    """The affine map ``(x - shift) * scale`` of the scaling ``steps`` (``normalize``:
    :class:`~.features.LayerNormalizer`, ``standard``: ``StandardScaler``), from the
    features' mean and variance. ``fitted``: also set each step's fitted attributes, as
    fitting it on the data would have."""
    d = len(mean)
    mu = np.asarray(mean, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    shift, scale = np.zeros(d), np.ones(d)  # x -> (x - shift) * scale so far
    cur_mean, cur_var = mu.copy(), v.copy()  # moments of the features so far
    for name, step in steps:
        if name == "normalize":
            m, s = _layer_normalizer_params(step, cur_mean, cur_var)
        elif name == "standard":
            m, s = _standard_scaler_params(step, cur_mean, cur_var, n_samples, fitted)
        else:
            raise ValueError(f"the streamed token fit cannot fit a {name!r} step")
        if fitted and name == "normalize":
            step.mean_, step.scale_ = m, s
        # compose: ((x - shift) * scale - m) / s
        shift = shift + m / scale
        scale = scale / s
        cur_mean, cur_var = (cur_mean - m) / s, cur_var / s**2
    return shift, scale


def _layer_normalizer_params(step, mean, var):
    """LayerNormalizer.fit's mean_ and scale_ from the moments (see its fit)."""
    d = len(mean)
    if step.mode is False:
        return np.zeros(d), np.ones(d)
    if step.mode == "per_layer":
        width = d // step.n_layers
        scale = np.empty(d)
        for i in range(step.n_layers):
            block = slice(i * width, (i + 1) * width)
            scale[block] = np.sqrt(var[block].mean()) or 1.0
        return mean.copy(), scale
    if step.mode in (True, "per_neuron"):
        std = np.sqrt(var)
        return mean.copy(), np.where(std > 1e-12, std, 1.0)
    raise ValueError(f"normalize_layers={step.mode!r} is not one of True, 'per_layer', False")


def _standard_scaler_params(step, mean, var, n_samples, fitted):
    """StandardScaler's mean_ and scale_ (a near-constant feature keeps scale 1, by the
    bound sklearn uses), setting its fitted attributes when ``fitted``."""
    if not (step.with_mean and step.with_std):
        raise ValueError("the streamed token fit takes StandardScaler() with its defaults")
    eps = np.finfo(np.float64).eps
    constant = var <= n_samples * eps * var + (n_samples * mean * eps) ** 2
    scale = np.where(constant | (np.sqrt(var) == 0), 1.0, np.sqrt(var))
    if fitted:
        step.mean_ = mean.copy()
        step.var_ = var.copy()
        step.scale_ = scale
        step.n_samples_seen_ = int(n_samples)
        step.n_features_in_ = len(mean)
    return mean.copy(), scale


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out
