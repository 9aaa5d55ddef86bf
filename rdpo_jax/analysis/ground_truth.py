r"""Synthetic tasks with known information (docs/spec.md section 5), for validating the estimators.

* **Erasure-flip channel.** $W\sim\mathrm{Bern}(\frac12)$; $R=\,?$ with probability $u$, else $R=W$ with
  probability $1-\varepsilon$ and $R=1-W$ otherwise. $I(W;R)=(1-u)(\log2-h(\varepsilon))$ nats. The exact
  swap-order log-likelihood ratio of $R$ (true order vs swapped, i.e. $W$ vs $1-W$) is
  $\Delta=\pm\log\frac{1-\varepsilon}{\varepsilon}$ when $R$ agrees / disagrees with $W$, and $0$ when erased.
* **Bradley-Terry.** $\delta\sim\mathcal N(0,s^2)$, $W\sim\mathrm{Bern}(\sigma(\delta))$, orientation
  randomised. The oracle margin of the chosen over the rejected response is $m=\delta$ if $W=1$ else
  $-\delta$, and $I(W;\delta)=\log2-\mathbb E_\delta[h(\sigma(\delta))]$ (1-D quadrature). A predictor that
  uses $c\,m$ has population usable information
  $\log2-\mathbb E_\delta[\sigma(\delta)\mathrm{sp}(-c\delta)+\sigma(-\delta)\mathrm{sp}(c\delta)]$, which
  equals the Shannon value at $c=1$ and is smaller otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate
from scipy.special import expit, log_expit

__all__ = [
    "binary_entropy",
    "erasure_flip_information",
    "sample_erasure_flip",
    "bradley_terry_information",
    "sample_bradley_terry",
]


def binary_entropy(p) -> np.ndarray:
    """h(p) = -p log p - (1-p) log(1-p) in nats (0 at p in {0, 1})."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
    return out


def erasure_flip_information(u: float, eps: float) -> float:
    """Shannon I(W; R) = (1 - u)(log 2 - h(eps)) nats of the erasure-flip channel."""
    return float((1.0 - u) * (math.log(2.0) - binary_entropy(eps)))


def sample_erasure_flip(n, u: float, eps: float, rng: np.random.Generator) -> np.ndarray:
    """Exact swap-order log-likelihood ratios Delta, shape `n` (int or tuple), for 0 < eps < 1.

    Delta = log(1-eps)/eps when R = W, -log(1-eps)/eps when R = 1 - W, 0 when R is erased.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1) for finite log-likelihood ratios; got {eps}")
    llr = math.log((1.0 - eps) / eps)
    erased = rng.random(n) < u
    flipped = rng.random(n) < eps
    return np.where(erased, 0.0, np.where(flipped, -llr, llr))


def bradley_terry_information(scale: float, margin_scale: float = 1.0) -> float:
    r"""Population $\log2-\mathbb
    E_\delta[\sigma(\delta)\mathrm{sp}(-c\delta)+\sigma(-\delta)\mathrm{sp}(c\delta)]$.

    `scale` is the s.d. s of the true BT logit; `margin_scale` is c (c = 1: the oracle, i.e. the Shannon
    information $\log2-\mathbb E[h(\sigma(\delta))]$). Computed by adaptive quadrature over the standard
    normal.
    """
    c = float(margin_scale)

    def integrand(z):
        d = scale * z
        ce = -(expit(d) * log_expit(c * d) + expit(-d) * log_expit(-c * d))
        return ce * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    val, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)
    return float(math.log(2.0) - val)


def sample_bradley_terry(n, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Oracle margins of the chosen over the rejected response (shape `n`): m = delta if W = 1 else -delta."""
    delta = rng.normal(0.0, scale, size=n)
    w = rng.random(n) < expit(delta)
    return np.where(w, delta, -delta)
