r"""Usable-information curves against the number of training pairs, and the data-efficiency ratio.

For checkpoints trained on $N_1<\dots<N_m$ pairs, $\hat I(N_j)$ is `policy_information` of each checkpoint on
the same held-out pairs. The data needed to reach a target level $I^*$ is the first crossing, interpolated
linearly in $\log N$ (or in $N$) between the last point below the target and the first at or above it:

$$N(I^*)=\exp\Big(\log N_{j-1}+\frac{I^*-\hat I_{j-1}}{\hat I_j-\hat I_{j-1}}(\log N_j-\log N_{j-1})\Big).$$

A curve already at the target at $N_1$ gives $N_1$ (an upper bound); one that never reaches it gives
$+\infty$. The data-efficiency ratio of policy a over policy b is $N_b(I^*)/N_a(I^*)$; with a = RDPO and
b = DPO this is $N_{\text{DPO}}/N_{\text{RDPO}}$ (> 1: RDPO needs fewer labelled pairs). Its interval is a
percentile interval over the paired bootstrap replicates of both curves (same held-out pairs, same seed:
same resamples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_vector
from .estimators import policy_information
from .result import LN2, InformationEstimate

__all__ = ["InformationCurve", "information_curve", "n_at_target", "EfficiencyRatio", "data_efficiency_ratio"]


@dataclass(frozen=True)
class InformationCurve:
    """Estimates of one policy family at increasing training-set sizes (nats; replicates (m, B))."""

    n_train: np.ndarray
    estimates: tuple[InformationEstimate, ...]

    @property
    def nats(self) -> np.ndarray:
        return np.array([e.nats for e in self.estimates])

    @property
    def bits(self) -> np.ndarray:
        return self.nats / LN2

    @property
    def ci(self) -> np.ndarray:
        """(m, 2) intervals in nats."""
        return np.array([e.ci for e in self.estimates])

    @property
    def replicates(self) -> np.ndarray:
        return np.stack([e.replicates for e in self.estimates])

    def __repr__(self) -> str:
        rows = [f"  N={int(n):>7d}: {e._line()}" for n, e in zip(self.n_train, self.estimates, strict=True)]
        return "InformationCurve(\n" + "\n".join(rows) + "\n)"


def _check_n(n_train) -> np.ndarray:
    n = as_vector("n_train", n_train)
    if (n <= 0).any() or (np.diff(n) <= 0).any():
        raise ValueError(f"`n_train` must be positive and strictly increasing; got {n.tolist()}")
    return n


def information_curve(n_train, margins, temperature="fit", **kwargs) -> InformationCurve:
    """`policy_information` of each checkpoint; `margins` is a sequence of (n,) arrays, one per N in n_train.

    Keyword arguments are passed to `policy_information` (use the same `seed` for all curves to be compared so
    their bootstrap replicates are paired).
    """
    n = _check_n(n_train)
    margins = list(margins)
    if len(margins) != n.size:
        raise ValueError(f"`margins` has {len(margins)} arrays but `n_train` has {n.size} sizes")
    kwargs.setdefault("null", False)
    ests = tuple(policy_information(m, temperature, **kwargs) for m in margins)
    return InformationCurve(n_train=n, estimates=ests)


def n_at_target(n_train, info, target: float, *, log_n: bool = True) -> np.ndarray:
    """Interpolated first N at which `info` reaches `target` (nats), for info of shape (m,) or (B, m).

    Returns an array of shape () or (B,); inf where the curve never reaches the target.
    """
    n = _check_n(n_train)
    y = np.atleast_2d(np.asarray(info, dtype=np.float64))
    reached = y >= target
    any_reached = reached.any(axis=1)
    j = np.argmax(reached, axis=1)  # first index at/above target
    jm = np.maximum(j - 1, 0)
    rows = np.arange(y.shape[0])
    y0, y1 = y[rows, jm], y[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(j > 0, (target - y0) / (y1 - y0), 0.0)
    t = np.clip(t, 0.0, 1.0)
    out = n[jm] * (n[j] / n[jm]) ** t if log_n else n[jm] + t * (n[j] - n[jm])
    out = np.where(any_reached, out, np.inf)
    return out[0] if np.ndim(info) == 1 else out


@dataclass(frozen=True)
class EfficiencyRatio:
    """N_b(target) / N_a(target) with a percentile interval over paired bootstrap replicates.

    `frac_undefined` is the fraction of replicates in which neither curve reaches the target (left out of the
    interval); a replicate where only one curve reaches it gives a ratio of 0 or inf and is kept.
    """

    target_nats: float
    n_a: float
    n_b: float
    ratio: float
    ci: tuple[float, float]
    ci_level: float
    frac_undefined: float = 0.0

    def __repr__(self) -> str:
        return (
            f"EfficiencyRatio(target={self.target_nats:.4f} nats: N_a={self.n_a:.1f}, N_b={self.n_b:.1f}, "
            f"N_b/N_a={self.ratio:.3f}, {self.ci_level:.0%} CI [{self.ci[0]:.3f}, {self.ci[1]:.3f}])"
        )


def data_efficiency_ratio(
    curve_a: InformationCurve,
    curve_b: InformationCurve,
    target: float,
    *,
    log_n: bool = True,
    ci_level: float = 0.95,
) -> EfficiencyRatio:
    r"""Data-efficiency ratio $N_b(I^*)/N_a(I^*)$ at target $I^*$ nats (a = RDPO, b = DPO gives N_DPO/N_RDPO).

    The interval takes the ratio in each bootstrap replicate (the replicates must be paired: same held-out
    pairs and seed), and its percentiles (a curve that never reaches the target in a replicate counts as
    N = inf).
    """
    if curve_a.replicates.shape[1] != curve_b.replicates.shape[1]:
        raise ValueError("the two curves have different numbers of bootstrap replicates; use the same n_boot")
    na = float(n_at_target(curve_a.n_train, curve_a.nats, target, log_n=log_n))
    nb = float(n_at_target(curve_b.n_train, curve_b.nats, target, log_n=log_n))
    ra = n_at_target(curve_a.n_train, curve_a.replicates.T, target, log_n=log_n)
    rb = n_at_target(curve_b.n_train, curve_b.replicates.T, target, log_n=log_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = nb / na
        reps = rb / ra
    defined = ~np.isnan(reps)  # both curves never reach the target: the ratio is undefined
    alpha = 1.0 - ci_level
    if defined.any():
        lo, hi = np.quantile(reps[defined], [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    else:
        lo = hi = float("nan")
    return EfficiencyRatio(
        float(target), na, nb, float(ratio), (float(lo), float(hi)), ci_level, float(1 - defined.mean())
    )
