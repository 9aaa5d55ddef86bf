r"""Bootstrap intervals for means of per-example values (every E1-E3 estimate is such a mean).

Each estimator in this package is $\hat\theta=\frac1n\sum_i v_i$ over held-out examples (per-example PVI,
per-example swap information, or a paired per-example difference). A bootstrap replicate resamples the
examples with replacement, with counts $c_i$ ($\sum_i c_i=n$), and gives
$\hat\theta^*=\sum_i c_i v_i/\sum_i c_i$.

* **Paired.** Several rows of values (shape (k, n)) are resampled with the *same* indices, so differences
  of two estimates on the same examples are paired (Efron & Tibshirani 1993, ch. 6).
* **Hierarchical** (two-stage) over runs when `groups` labels each example with its training seed: draw
  $G$ seeds with replacement, then for each drawn seed resample its $n_g$ examples with replacement
  (Davison & Hinkley 1997, sec. 3.8). The statistic is the pooled mean of all drawn rows. This captures
  the seed-to-seed variance that an example bootstrap misses.
* **Refitted** rows: an estimate whose per-example values come from a fitted parameter (a cross-fitted
  temperature) passes a function that recomputes it on a resample, refitting the parameter with the
  resample's counts as weights (the folds stay those of the original examples, so a duplicated example never
  trains the fit that scores it). Its replicates then carry the fit's own variability, including how often
  the fit lands on its boundary: without it, an estimate pinned at 0 in the full data gets a zero-width
  interval and a contrast against it looks significant when neither carries information.
* **Percentile** interval: the $\alpha/2$ and $1-\alpha/2$ quantiles of $\hat\theta^*$.
* **BCa** (Efron 1987; Efron & Tibshirani eq. 14.14-14.15): with
  $z_0=\Phi^{-1}(\#\{\hat\theta^*<\hat\theta\}/B)$ (ties count one half) and the jackknife acceleration
  $a=\sum_j U_j^3 / \big(6(\sum_j U_j^2)^{3/2}\big)$, $U_j=(m-1)(\bar\theta_{(\cdot)}-\hat\theta_{(j)})$,
  the bounds are the quantiles of $\hat\theta^*$ at $\Phi\big(z_0+\frac{z_0+z_\beta}{1-a(z_0+z_\beta)}\big)$
  for $\beta=\alpha/2,\ 1-\alpha/2$. Leave-one-out is over examples, or over seeds in the hierarchical case.

kNN-type estimators must never be bootstrapped with replacement (duplicated points give zero distances and
a large upward bias, docs/spec.md section 5); this package implements no kNN estimator, so every interval
here is for a mean, where resampling with replacement is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["MeanInterval", "Refit", "bootstrap_mean"]

#: counts (b, n) of b resamples -> (b,) estimates recomputed on them (see `bootstrap_mean`'s ``refits``).
Refit = Callable[[np.ndarray], np.ndarray]

_CHUNK_ELEMS = 4_000_000  # resample-count entries per chunk (bounds memory at ~32 MB of int64)


class MeanInterval(NamedTuple):
    """Result of `bootstrap_mean`: arrays of shape (k,) (k rows of values), replicates of shape (k, B)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    replicates: np.ndarray


def _group_counts(rng: np.random.Generator, groups: np.ndarray, b: int) -> np.ndarray:
    """Two-stage counts: seeds with replacement, then examples with replacement within each drawn seed."""
    n_groups = int(groups.max()) + 1
    n = groups.shape[0]
    seed_draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=b)  # (b, G)
    counts = np.zeros((b, n), dtype=np.int64)
    for g in range(n_groups):
        members = np.flatnonzero(groups == g)
        n_g = members.size
        # c_g independent within-seed resamples of size n_g = one multinomial with c_g * n_g trials.
        counts[:, members] = rng.multinomial(seed_draws[:, g] * n_g, np.full(n_g, 1.0 / n_g))
    return counts


def _jackknife_acceleration(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """BCa acceleration from leave-one-out means (over examples, or over seeds), shape (k,)."""
    k, n = values.shape
    total = values.sum(axis=1, keepdims=True)
    if groups is None:
        if n < 2:
            return np.zeros(k)
        loo = (total - values) / (n - 1)  # (k, n)
    else:
        n_groups = int(groups.max()) + 1
        if n_groups < 2:
            return np.zeros(k)
        sums = np.stack([values[:, groups == g].sum(axis=1) for g in range(n_groups)], axis=1)
        sizes = np.bincount(groups, minlength=n_groups)
        loo = (total - sums) / (n - sizes)[None, :]
    u = loo.mean(axis=1, keepdims=True) - loo
    num = (u**3).sum(axis=1)
    den = (u**2).sum(axis=1) ** 1.5
    return np.divide(num, 6.0 * den, out=np.zeros(k), where=den > 0)


def _row_quantiles(sorted_reps: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row quantile at level q[row] of already-sorted replicates (linear interpolation, like numpy)."""
    b = sorted_reps.shape[1]
    pos = np.clip(q, 0.0, 1.0) * (b - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, b - 1)
    frac = pos - lo
    rows = np.arange(sorted_reps.shape[0])
    return sorted_reps[rows, lo] * (1 - frac) + sorted_reps[rows, hi] * frac


def bootstrap_mean(
    values,
    *,
    groups: np.ndarray | None = None,
    ci_level: float = 0.95,
    n_boot: int = 2000,
    method: str = "bca",
    seed: int = 0,
    refits: Sequence[Refit | None] | None = None,
) -> MeanInterval:
    """Paired (optionally seed-hierarchical) percentile or BCa bootstrap interval for means of rows.

    Args:
      values: (n,) or (k, n) float array; rows share the same resamples (paired).
      groups: optional (n,) integer codes 0..G-1 of the run (seed) each example comes from; with G >= 2 the
        resampling is two-stage (seeds, then examples within seed).
      ci_level: nominal coverage, e.g. 0.95.
      n_boot: number of bootstrap replicates B.
      method: "bca" or "percentile".
      seed: seed of the resampling generator (results are reproducible).
      refits: optional, one entry per row: None (the replicate is the resample's mean of the row), or a
        function ``counts (b, n) -> (b,)`` giving the row's estimate recomputed (refitted) on each of b
        resamples, ``counts[j, i]`` the number of times resample j drew example i (see the module docstring).
        The BCa acceleration still comes from the jackknife of the row's values.

    Returns:
      `MeanInterval` with arrays of shape (k,) (or (1,) for 1-D input) and replicates (k, B).
    """
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    k, n = v.shape
    refits = list(refits) if refits is not None else [None] * k
    if len(refits) != k:
        raise ValueError(f"`refits` has {len(refits)} entries for {k} rows of values")
    if groups is not None and int(np.max(groups)) < 1:
        groups = None  # a single run: the two-stage scheme reduces to the example bootstrap
    rng = np.random.default_rng(seed)

    estimate = v.mean(axis=1)  # pooled mean over all examples (of all runs)
    reps = np.empty((k, n_boot))
    chunk = max(1, _CHUNK_ELEMS // max(n, 1))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = None
        if groups is None:  # ordinary bootstrap: gather resampled examples (faster than counts for large n)
            idx = rng.integers(0, n, size=(b, n), dtype=np.int32 if n < 2**31 else np.int64)
            for row in range(k):
                if refits[row] is None:
                    reps[row, start : start + b] = np.take(v[row], idx).mean(axis=1)
            if any(f is not None for f in refits):
                flat = (np.arange(b, dtype=np.int64)[:, None] * n + idx).ravel()
                counts = np.bincount(flat, minlength=b * n).reshape(b, n)
        else:
            counts = _group_counts(rng, groups, b)
            plain = [r for r in range(k) if refits[r] is None]
            reps[plain, start : start + b] = (v[plain] @ counts.T.astype(np.float64)) / counts.sum(axis=1)[None, :]
        if counts is not None:
            counts = counts.astype(np.float64)  # one array per chunk: refits of several rows may share work
        for row, refit in enumerate(refits):
            if refit is not None:
                reps[row, start : start + b] = refit(counts)

    alpha = 1.0 - ci_level
    sorted_reps = np.sort(reps, axis=1)
    if method == "percentile":
        q_lo = np.full(k, alpha / 2)
        q_hi = np.full(k, 1 - alpha / 2)
    else:
        below = (reps < estimate[:, None]).sum(axis=1) + 0.5 * (reps == estimate[:, None]).sum(axis=1)
        frac = np.clip(below / n_boot, 0.5 / n_boot, 1 - 0.5 / n_boot)
        z0 = ndtri(frac)
        acc = _jackknife_acceleration(v, groups)
        q = []
        for beta in (alpha / 2, 1 - alpha / 2):
            zb = z0 + ndtri(beta)
            q.append(ndtr(z0 + zb / (1 - acc * zb)))
        q_lo, q_hi = q
    low = _row_quantiles(sorted_reps, q_lo)
    high = _row_quantiles(sorted_reps, q_hi)
    flat = sorted_reps[:, -1] - sorted_reps[:, 0] <= 1e-15 * np.maximum(1.0, np.abs(estimate))
    low = np.where(flat, estimate, low)
    high = np.where(flat, estimate, high)
    return MeanInterval(estimate=estimate, low=low, high=high, replicates=reps)
