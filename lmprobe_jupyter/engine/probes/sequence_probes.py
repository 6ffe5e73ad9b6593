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

Inputs, training, inference, state and the streaming driver are shared by the three
kinds and live in :mod:`.sequence_base` (:class:`~.sequence_base.SequenceProbe`,
:class:`~.sequence_base.TokenSource`, :class:`~.sequence_base.PrefixScorer`); this module
holds what differs per kind: the forward pass, the contributions and the streaming state.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .sequence_base import PrefixScorer, SequenceProbe

SEQUENCE_CLASSIFIERS = ("mil", "attention", "multimax")


# ---------------------------------------------------------------- torch helpers
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


class MILProbe(SequenceProbe):
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
        from ..extraction.windows import aggregate_rows

        return aggregate_rows(list(rows), self.aggregation)

    def _new_prefix_scorer(self):
        return MILPrefixScorer(self)


class AttentionProbe(SequenceProbe):
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
    window : int or None, default 16
        Softmax within each window of ``window`` scored tokens, prompt = best window
        (a prompt shorter than the window is one window); None: one softmax over all
        the scored tokens, which a long text dilutes.

    The defaults (``window=16``, ``l2=0.1``; other sequence probes: ``l2=1e-3``) are what
    ``bench/token_defaults.py`` measured best inside long text, together with training
    in background text (``Probe(background="auto")``)."""
        + _COMMON_DOC
    )

    kind = "attention"
    _weight_names = ("q", "u")

    def __init__(
        self,
        n_heads: int = 4,
        window: int | None = 16,
        l2: float = 0.1,
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

    def _new_prefix_scorer(self):
        return AttentionPrefixScorer(self)


class MultiMaxProbe(SequenceProbe):
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

    def _new_prefix_scorer(self):
        return MultiMaxPrefixScorer(self)


_KINDS = {"mil": MILProbe, "attention": AttentionProbe, "multimax": MultiMaxProbe}


def make_sequence_probe(kind: str, **kwargs) -> SequenceProbe:
    """A sequence probe by name: ``"mil"``, ``"attention"`` or ``"multimax"``."""
    if kind not in _KINDS:
        raise ValueError(
            f"sequence classifier {kind!r} is not one of {', '.join(map(repr, _KINDS))}"
        )
    try:
        return _KINDS[kind](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad classifier_kwargs for {kind!r}: {e}") from None


def sequence_probe_from_state(arrays: dict, meta: dict) -> SequenceProbe:
    """Rebuild a fitted sequence probe from :meth:`get_state` output."""
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"state names probe kind {kind!r}, not one of {list(_KINDS)}")
    return _KINDS[kind].from_state(arrays, meta)


def is_sequence_probe(obj) -> bool:
    return isinstance(obj, SequenceProbe)


# ---------------------------------------------------------------- streaming scores, per kind
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
