r"""E4 (partial): InfoNCE and SMILE bounds from a critic score matrix (docs/spec.md section 5).

Given batches of K paired samples and critic scores $f_{ij}=f(x_i,y_j)$ (shape (K, K) or (m, K, K); the
diagonal holds the true pairs):

* InfoNCE (van den Oord et al. 2018): $\hat I=\frac1K\sum_i\big[f_{ii}-\log\frac1K\sum_j e^{f_{ij}}\big]
  \le\log K$; flagged as saturated when within 10% of $\log K$ (the true I may be much larger).
* SMILE (Song & Ermon 2020): $\hat I=\frac1K\sum_i f_{ii}-\log\frac1{K(K-1)}\sum_{i\ne j}
  \mathrm{clip}(e^{f_{ij}},e^{-\tau},e^{\tau})$ (DV bound with a clipped partition term).

The critic itself (training a JAX MLP / separable critic on a train split) is not implemented here; any
critic, including an LM log-likelihood $\ell(r_i\mid\text{pair}_j)$, can supply the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

__all__ = ["ContrastiveEstimate", "infonce", "smile"]


@dataclass(frozen=True)
class ContrastiveEstimate:
    """Mean over batches (nats) with the per-batch values; `saturated` flags InfoNCE near its log K cap."""

    name: str
    nats: float
    per_batch: np.ndarray
    cap: float
    saturated: bool

    @property
    def bits(self) -> float:
        return self.nats / math.log(2.0)

    def __repr__(self) -> str:
        flag = " SATURATED (within 10% of log K; true I may be larger)" if self.saturated else ""
        return f"{self.name}: {self.nats:.4f} nats = {self.bits:.4f} bits, cap={self.cap:.4f}{flag}"


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3 or s.shape[1] != s.shape[2] or s.shape[1] < 2:
        raise ValueError(f"`scores` must have shape (K, K) or (m, K, K) with K >= 2; got {np.shape(scores)}")
    if not np.isfinite(s).all():
        raise ValueError(f"`scores` (shape {np.shape(scores)}) has non-finite values")
    return s


def infonce(scores) -> ContrastiveEstimate:
    """InfoNCE lower bound (nats) from critic scores; always <= log K."""
    s = _scores(scores)
    k = s.shape[1]
    diag = np.diagonal(s, axis1=1, axis2=2)
    per_batch = (diag - (logsumexp(s, axis=2) - math.log(k))).mean(axis=1)
    val = float(per_batch.mean())
    return ContrastiveEstimate("infonce", val, per_batch, math.log(k), val >= 0.9 * math.log(k))


def smile(scores, tau: float = 5.0) -> ContrastiveEstimate:
    """SMILE estimate (nats) with clipping threshold tau on the off-diagonal (negative) pairs."""
    s = _scores(scores)
    k = s.shape[1]
    diag = np.diagonal(s, axis1=1, axis2=2)
    off = ~np.eye(k, dtype=bool)
    neg = np.clip(s[:, off], -tau, tau)  # clip(e^f, e^-tau, e^tau) = e^{clip(f, -tau, tau)}
    per_batch = diag.mean(axis=1) - (logsumexp(neg, axis=1) - math.log(neg.shape[1]))
    return ContrastiveEstimate(f"smile(tau={tau:g})", float(per_batch.mean()), per_batch, math.inf, False)
