"""Group lasso over layer blocks: which layers a sparse linear probe keeps (``layers="auto"``).

Solved with accelerated proximal gradient (FISTA with adaptive restart) in numpy. skglm's
group solvers reach the same optimum but JIT-compile with numba on first use (14-40 s per
process on a 2-core machine, measured), far more than solving these problems takes (well
under a second), so they are not used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GroupLasso"]


class GroupLasso:
    """Group-lasso linear model with one coefficient group per layer block.

    Minimizes ``loss(Z w + b) + alpha * sum_g sqrt(p_g) * ||w_g||_2`` over standardized
    features ``Z`` (each feature centred and scaled to unit variance on the training set),
    where ``loss`` is the mean logistic loss (two classes), the mean multinomial loss
    (more classes, ``w_g`` spanning all classes) or half the mean squared error on the
    standardized target (regression). ``p_g`` is the group's width. The intercept ``b`` is
    not penalized. Solved with FISTA and adaptive restart.

    Parameters
    ----------
    alpha : float
        Penalty strength. At ``alpha >= alpha_max_`` every group is zero.
    n_groups : int
        The features are ``n_groups`` contiguous blocks of equal width.
    task : {"classification", "regression"}
    max_iter : int
    tol : float
        Stop when the relative change of the coefficients drops below ``tol``.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        n_groups: int = 1,
        task: str = "classification",
        max_iter: int = 5000,
        tol: float = 1e-7,
    ) -> None:
        self.alpha = alpha
        self.n_groups = n_groups
        self.task = task
        self.max_iter = max_iter
        self.tol = tol

    # -- loss and gradient w.r.t. the linear scores
    def _loss_grad(self, S: np.ndarray, T: np.ndarray) -> tuple[float, np.ndarray]:
        n = S.shape[0]
        if self._kind == "binary":
            loss = float(np.mean(np.logaddexp(0.0, S) - T * S))
            return loss, (1.0 / (1.0 + np.exp(-np.clip(S, -500, 500))) - T) / n
        if self._kind == "multinomial":
            M = S - S.max(axis=1, keepdims=True)
            lse = np.log(np.exp(M).sum(axis=1, keepdims=True))
            loss = float(np.mean(lse[:, 0] - (T * M).sum(axis=1)))
            return loss, (np.exp(M - lse) - T) / n
        R = S - T
        return float(0.5 * np.mean(R**2)), R / n

    def _prox(self, W: np.ndarray, thresh: float) -> np.ndarray:
        G = W.reshape(self.n_groups, -1)
        norms = np.sqrt((G**2).sum(axis=1, keepdims=True))
        shrink = np.maximum(0.0, 1.0 - thresh / np.maximum(norms, 1e-300))
        return (G * shrink).reshape(W.shape)

    def _prepare(self, X, y) -> tuple[np.ndarray, np.ndarray, float]:
        """Standardized features, encoded targets and the loss curvature bound."""
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        y = np.asarray(y)
        if self._kind == "squared":
            T = ((y.astype(np.float64) - self.y_mean_) / self.y_scale_)[:, None]
            return Z, T, 1.0
        idx = np.searchsorted(self.classes_, y)
        if self._kind == "binary":
            return Z, idx[:, None].astype(np.float64), 0.25
        return Z, np.eye(len(self.classes_))[idx], 0.5

    def fit(self, X, y) -> GroupLasso:
        """Fit on X of shape (n_samples, n_groups * width) and labels/targets y."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        n, d = X.shape
        if d % self.n_groups:
            raise ValueError(f"{d} features cannot split into {self.n_groups} equal groups")
        width = d // self.n_groups
        self.mean_ = X.mean(0)
        std = X.std(0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        if self.task == "regression":
            self._kind = "squared"
            self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        else:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError("group lasso needs at least two classes")
            self._kind = "binary" if len(self.classes_) == 2 else "multinomial"
        Z, T, curvature = self._prepare(X, y)
        k = T.shape[1]
        # Lipschitz constant of the gradient in (W, b): curvature * ||[Z, 1]||^2 / n.
        gram_max = float(np.linalg.eigvalsh(Z @ Z.T).max()) if n <= d else None
        if gram_max is None:
            gram_max = float(np.linalg.eigvalsh(Z.T @ Z).max())
        step = n / (curvature * (gram_max + n))
        thresh = self.alpha * np.sqrt(width)

        W = np.zeros((d, k))
        b = self._initial_intercept(T)
        _, g0 = self._loss_grad(np.broadcast_to(b, (n, k)), T)
        entry = np.sqrt(((Z.T @ g0).reshape(self.n_groups, -1) ** 2).sum(axis=1))
        self.entry_scores_ = entry
        self.alpha_max_ = float(entry.max() / np.sqrt(width))

        Wy, by, t = W.copy(), b.copy(), 1.0
        self.n_iter_ = 0
        for it in range(1, self.max_iter + 1):
            self.n_iter_ = it
            _, gS = self._loss_grad(Z @ Wy + by, T)
            W_new = self._prox(Wy - step * (Z.T @ gS), step * thresh)
            b_new = by - step * gS.sum(axis=0)
            dW, db = W_new - W, b_new - b
            # Adaptive restart (O'Donoghue & Candes): drop momentum when it points uphill.
            if np.vdot(Wy - W_new, dW) + np.vdot(by - b_new, db) > 0:
                t = 1.0
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            mom = (t - 1.0) / t_new
            Wy, by = W_new + mom * dW, b_new + mom * db
            W, b, t = W_new, b_new, t_new
            change = np.sqrt(np.vdot(dW, dW) + np.vdot(db, db))
            size = np.sqrt(np.vdot(W, W) + np.vdot(b, b))
            if change <= self.tol * max(size, 1.0):
                break
        self.coef_, self.intercept_ = W, b
        self.group_norms_ = np.sqrt((W.reshape(self.n_groups, -1) ** 2).sum(axis=1))
        return self

    def _initial_intercept(self, T: np.ndarray) -> np.ndarray:
        if self._kind == "binary":
            p = np.clip(T.mean(), 1e-6, 1 - 1e-6)
            return np.array([np.log(p / (1 - p))])
        if self._kind == "multinomial":
            return np.log(np.clip(T.mean(axis=0), 1e-6, None))
        return T.mean(axis=0)

    def kkt_violation(self, X, y) -> float:
        """Largest violation of the optimality conditions, relative to ``alpha * sqrt(p_g)``.

        Zero groups need ``||grad_g|| <= alpha sqrt(p_g)``; non-zero groups need
        ``grad_g = -alpha sqrt(p_g) w_g / ||w_g||``; the intercept's gradient must vanish.
        """
        Z, T, _ = self._prepare(X, y)
        _, gS = self._loss_grad(Z @ self.coef_ + self.intercept_, T)
        grad = (Z.T @ gS).reshape(self.n_groups, -1)
        W = self.coef_.reshape(self.n_groups, -1)
        lam = self.alpha * np.sqrt(self.coef_.shape[0] // self.n_groups)
        worst = float(np.abs(gS.sum(axis=0)).max()) / lam
        for g in range(self.n_groups):
            nrm = np.linalg.norm(W[g])
            if nrm > 0:
                v = np.linalg.norm(grad[g] + lam * W[g] / nrm) / lam
            else:
                v = max(0.0, np.linalg.norm(grad[g]) / lam - 1.0)
            worst = max(worst, float(v))
        return worst

    def predict(self, X) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        S = Z @ self.coef_ + self.intercept_
        if self._kind == "squared":
            return S[:, 0] * self.y_scale_ + self.y_mean_
        if self._kind == "binary":
            return self.classes_[(S[:, 0] > 0).astype(int)]
        return self.classes_[S.argmax(axis=1)]
