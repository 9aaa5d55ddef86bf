r"""Temperature (and stacking) fits for order-symmetric preference logits, with K-fold cross-fitting.

Every E2/E3 predictor scores the *true* orientation of a pair with a logit $z_i$, so the target is always
"true order" and the log-loss is $\mathrm{sp}(-z_i)$, $\mathrm{sp}(t)=\log(1+e^t)$. Swapping the two responses
flips the sign of every score, so the family has no intercept (an intercept would be a position prior,
and with an all-"true" target it diverges). The families fitted here are linear in the scores,

$$z_i = o_i + x_i^\top w,\qquad \hat w=\arg\min_w \tfrac1{\sum_i\omega_i}\sum_i\omega_i\,\mathrm{sp}(-z_i)
   +\tfrac{\lambda}{2}\lVert w\rVert^2,$$

with an optional fixed offset $o_i$ (a calibrated baseline logit) and a tiny ridge $\lambda$ (on standardised
features) that keeps separable data finite. A temperature is the 1-D case $w=1/T\ge 0$ ($T=\infty$ means the
scores are ignored, which yields 0 information). The objective is convex; it is minimised by damped Newton,
vectorised over many weightings $\omega$ (one per cross-fitting fold).

**Cross-fitting** (docs/spec.md section 5): examples are split into K folds at random (within each run when
several runs are given); the parameters used on fold k are fitted on the other K-1 folds, so every reported
per-example value is out-of-fold. Fitting on all data is done only to report a single temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

__all__ = ["fit_temperature", "Folds", "make_folds", "fit_rows", "out_of_fold"]

_RIDGE = 1e-8


def _loss(z: np.ndarray, w_rows: np.ndarray, weights: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    return -(weights * log_expit(z)).sum(axis=1) / wsum + 0.5 * _RIDGE * (w_rows**2).sum(axis=1)


def fit_rows(
    features: np.ndarray,
    weights: np.ndarray,
    offset: np.ndarray | None = None,
    *,
    nonneg: bool = False,
    max_iter: int = 100,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Minimise the weighted no-intercept log-loss for each row of `weights`.

    Args:
      features: (n, p) scores, x_i.
      weights: (R, n) non-negative example weights (e.g. 0/1 training-fold masks, or those times bootstrap
        counts), one fit per row.
      offset: None, (n,) or (R, n) fixed logit added to x_i^T w.
      nonneg: constrain w >= 0 (only for p == 1: the temperature case).
      init: optional (R, p) starting coefficients in the units of `features` (a warm start, e.g. the fit on
        the full data when refitting on bootstrap resamples); default 0.

    Returns:
      (R, p) fitted coefficients, in the units of `features`.
    """
    x = np.asarray(features, dtype=np.float64)
    n, p = x.shape
    weights = np.asarray(weights, dtype=np.float64)
    r = weights.shape[0]
    scale = np.sqrt((x**2).mean(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    xs = x / scale
    off = np.zeros((r, n)) if offset is None else np.broadcast_to(np.asarray(offset, np.float64), (r, n))
    wsum = np.maximum(weights.sum(axis=1), 1e-300)
    w = np.zeros((r, p)) if init is None else np.broadcast_to(np.asarray(init, np.float64), (r, p)) * scale[None, :]
    z = off + w @ xs.T
    loss = _loss(z, w, weights, wsum)
    eye = np.eye(p)
    for _ in range(max_iter):
        s = expit(-z)  # (R, n) = 1 - sigma(z)
        grad = -((weights * s) @ xs) / wsum[:, None] + _RIDGE * w
        curv = weights * s * (1.0 - s)
        hess = np.einsum("rn,np,nq->rpq", curv, xs, xs) / wsum[:, None, None] + _RIDGE * eye
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        t = np.ones(r)
        active = np.ones(r, dtype=bool)
        new_w = w.copy()
        for _ in range(40):  # backtracking: accept the first halving that does not increase the loss
            cand = w - t[:, None] * step
            if nonneg:
                cand = np.maximum(cand, 0.0)
            cz = off + cand @ xs.T
            closs = _loss(cz, cand, weights, wsum)
            ok = active & (closs <= loss + 1e-15)
            new_w[ok] = cand[ok]
            active &= ~ok
            if not active.any():
                break
            t = np.where(active, t * 0.5, t)
        moved = np.abs(new_w - w).max(axis=1)
        w = new_w
        z = off + w @ xs.T
        loss = _loss(z, w, weights, wsum)
        if (moved <= 1e-10 * (1.0 + np.abs(w).max(axis=1))).all():
            break
    return w / scale[None, :]


@dataclass(frozen=True)
class Folds:
    """K-fold (within-run) cross-fitting layout.

    weights: (R, n) training masks; rows 0..G*K-1 are (run g, held-out fold k), rows G*K.. are full-run fits.
    eval_row: (n,) the row whose fit is evaluated on example i (the one that did not train on i).
    full_row: (n,) the full-data fit of example i's run (for reporting a temperature).
    n_fold_rows: G*K, the number of cross-fitting rows (the remaining G rows are full-run fits).
    """

    weights: np.ndarray
    eval_row: np.ndarray
    full_row: np.ndarray
    n_fold_rows: int


def make_folds(n: int, n_folds: int, seed: int, groups: np.ndarray | None = None) -> Folds:
    """Random K-fold split of n examples, stratified by run label `groups` (codes 0..G-1) when given."""
    if int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"`n_folds` must be an integer >= 2 for cross-fitting; got {n_folds!r}")
    codes = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    for g in range(n_groups):
        members = np.flatnonzero(codes == g)
        if members.size < 2 * n_folds:
            raise ValueError(
                f"temperature='fit' needs at least {2 * n_folds} examples per run for {n_folds}-fold "
                f"cross-fitting; run {g} has {members.size}"
            )
        fold[members[rng.permutation(members.size)]] = np.arange(members.size) % n_folds
    in_group = codes[None, :] == np.arange(n_groups)[:, None]  # (G, n)
    held = fold[None, :] == np.arange(n_folds)[:, None]  # (K, n)
    train = in_group[:, None, :] & ~held[None, :, :]  # (G, K, n)
    weights = np.concatenate([train.reshape(n_groups * n_folds, n), in_group], axis=0).astype(np.float64)
    return Folds(
        weights=weights,
        eval_row=codes * n_folds + fold,
        full_row=n_groups * n_folds + codes,
        n_fold_rows=n_groups * n_folds,
    )


def out_of_fold(features: np.ndarray, coefs: np.ndarray, rows: np.ndarray, offset=None) -> np.ndarray:
    """Logit of example i from the fit in row rows[i]: offset[rows[i], i] + features[i] @ coefs[rows[i]]."""
    z = np.einsum("np,np->n", np.asarray(features, np.float64), coefs[rows])
    if offset is not None:
        off = np.asarray(offset, np.float64)
        z = z + (off[rows, np.arange(off.shape[1])] if off.ndim == 2 else off)
    return z


def fit_temperature(logits, *, offset=None) -> float:
    r"""Temperature $T=1/\hat a$, $\hat a=\arg\min_{a\ge0}\frac1n\sum_i\mathrm{sp}(-(o_i+a\,s_i))$, on
    all data.

    `logits` are scores s_i of the true orientation (shape (n,)); `offset` an optional fixed logit o_i.
    Returns inf when the scores carry no usable signal (a = 0). This is the in-sample fit, for reporting or
    for calibrating on a separate calibration fold; the estimators cross-fit instead.
    """
    s = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    a = fit_rows(s, np.ones((1, s.shape[0])), offset, nonneg=True)[0, 0]
    return float(np.inf) if a <= 0 else float(1.0 / a)
