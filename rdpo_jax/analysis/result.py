"""The result object every estimator returns: nats internally, bits in reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["InformationEstimate", "LN2"]

LN2 = math.log(2.0)


@dataclass(frozen=True, repr=False)
class InformationEstimate:
    """A mean-of-pointwise information estimate with its bootstrap interval.

    Attributes:
      name: which estimator (e.g. "swap_information").
      nats: point estimate (mean of `per_example`), in nats.
      per_example: (n,) pointwise values in nats (out-of-fold when the temperature was fitted).
      ci: (low, high) bootstrap interval in nats at level `ci_level`.
      ci_level, method, n_boot: how the interval was computed ("bca" or "percentile").
      n_runs: number of runs (seeds) resampled hierarchically (1 = example bootstrap only).
      temperature: the temperature used (a number), or for temperature="fit" the one fitted on all data
        (inf = scores ignored); None where no temperature applies.
      fold_temperatures: for temperature="fit", the (n_runs * K,) cross-fitted temperatures.
      controls: estimates of the same quantity on control inputs (vacuous / shuffled / sign-flipped).
      contrasts: paired differences, e.g. "rationale - vacuous", with their own paired intervals.
      info: extra diagnostics (e.g. stacked coefficients).
      replicates: (B,) bootstrap replicates of the estimate (nats). Calls with the same `seed`, the same
        number of examples and the same `seeds` labels draw the same resamples, so replicates of different
        calls on the same held-out pairs are paired (used for curve ratios). With a fitted temperature each
        replicate refits it on its resample, so the interval includes the fit's variability.
      boundary: None, or why the estimate sits at a boundary and its interval says little: every fit put
        the temperature at its limit (T = inf, the estimate is 0 by construction), or the interval has zero
        width (every replicate equal: identical inputs, or every refit at its limit).
    """

    name: str
    nats: float
    per_example: np.ndarray
    ci: tuple[float, float]
    ci_level: float = 0.95
    method: str = "bca"
    n_boot: int = 2000
    n_runs: int = 1
    temperature: float | None = None
    fold_temperatures: np.ndarray | None = None
    controls: dict[str, InformationEstimate] = field(default_factory=dict)
    contrasts: dict[str, InformationEstimate] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    replicates: np.ndarray | None = None
    boundary: str | None = None

    @property
    def bits(self) -> float:
        return self.nats / LN2

    @property
    def ci_bits(self) -> tuple[float, float]:
        return (self.ci[0] / LN2, self.ci[1] / LN2)

    @property
    def n(self) -> int:
        return int(self.per_example.shape[0])

    @property
    def se(self) -> float:
        """CLT standard error sd / sqrt(n) of the mean, in nats (ignores run-to-run variance)."""
        if self.n < 2:
            return float("nan")
        return float(np.std(self.per_example, ddof=1) / math.sqrt(self.n))

    @property
    def median(self) -> float:
        return float(np.median(self.per_example))

    @property
    def frac_negative(self) -> float:
        """Fraction of examples with negative pointwise information (confidently wrong / mislabelled)."""
        return float(np.mean(self.per_example < 0))

    def contains(self, value: float) -> bool:
        """Whether `value` (nats) lies inside the interval."""
        return bool(self.ci[0] <= value <= self.ci[1])

    def _line(self) -> str:
        lo, hi = self.ci
        s = (
            f"{self.nats:.4f} nats = {self.bits:.4f} bits, {self.ci_level:.0%} {self.method} CI "
            f"[{lo:.4f}, {hi:.4f}] nats, n={self.n}"
        )
        if self.n_runs > 1:
            s += f", runs={self.n_runs}"
        if self.temperature is not None:
            s += f", T={self.temperature:.4g}" + (" (fit)" if self.fold_temperatures is not None else "")
        if self.boundary:
            s += f" [boundary: {self.boundary}]"
        return s

    def __repr__(self) -> str:
        lines = [f"{self.name}: {self._line()}"]
        for label, group in (("control", self.controls), ("contrast", self.contrasts)):
            for key, est in group.items():
                lines.append(f"  {label} {key}: {est._line()}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain-Python summary (no per-example array), for JSON reports."""
        out = {
            "name": self.name,
            "nats": self.nats,
            "bits": self.bits,
            "ci_nats": list(self.ci),
            "ci_bits": list(self.ci_bits),
            "ci_level": self.ci_level,
            "method": self.method,
            "n": self.n,
            "n_runs": self.n_runs,
            "se_nats": self.se,
            "median_nats": self.median,
            "frac_negative": self.frac_negative,
            "temperature": self.temperature,
            "boundary": self.boundary,
        }
        out["controls"] = {k: v.to_dict() for k, v in self.controls.items()}
        out["contrasts"] = {k: v.to_dict() for k, v in self.contrasts.items()}
        return out
