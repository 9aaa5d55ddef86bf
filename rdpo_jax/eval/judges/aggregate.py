r"""Pairwise win rates of "ours" (A) against "theirs" (B) from a `Judge`, and their intervals.

Protocols:

* ``both`` (default): each pair is judged in both orders, (A, B) and (B, A). After un-swapping the second,
  the pair is a **win** only if both orders say A is better, a **loss** only if both say B is, and a **tie**
  otherwise (win+tie, win+loss, tie+tie). A pair with an `UNPARSED` reply in either order is a tie *and* is
  counted in ``unparsed``; such pairs stay in ``n``.
* ``paper``: one order per pair, A first with probability 1/2 (seeded), as the official comparison script;
  an unparsed reply is a tie counted in ``unparsed``.

``rate = wins / n``. Wilson score interval (z for the level): :math:`(p + z^2/2n \mp z\sqrt{p(1-p)/n +
z^2/4n^2}) / (1 + z^2/n)`. Bootstrap: resample the n prompts with replacement ``n_boot`` times (seeded) and
take the percentile interval of the resampled rates. Position consistency (``both`` only): the fraction of
pairs, among those with both replies parsed, whose two orders give the same un-swapped verdict.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rdpo_jax.eval.judges.base import Judge, JudgeError, JudgeRequest, Verdict

__all__ = ["PROTOCOLS", "JudgeOutcome", "PairResult", "bootstrap_interval", "judge_pairs", "wilson_interval"]

PROTOCOLS = ("both", "paper")
_AS_OURS = {Verdict.FIRST: "win", Verdict.SECOND: "loss", Verdict.TIE: "tie"}
_SWAPPED = {Verdict.FIRST: "loss", Verdict.SECOND: "win", Verdict.TIE: "tie"}


@dataclasses.dataclass(frozen=True)
class PairResult:
    """One prompt's outcome for A: ``outcome`` in win/tie/loss; ``orders`` the (A shown first?, verdict)
    pairs judged; ``unparsed`` whether a reply could not be read; ``consistent`` (both orders only, None if
    unparsed) whether the two orders agreed after un-swapping."""

    outcome: str
    orders: tuple[tuple[bool, Verdict], ...]
    unparsed: bool
    consistent: bool | None


def wilson_interval(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (module docstring); (nan, nan) when n = 0."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(wins: Sequence[bool], *, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the win rate, resampling prompts (module docstring)."""
    x = np.asarray(wins, np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    rates = x[idx].mean(axis=1)
    a = (1 - level) / 2
    return (float(np.quantile(rates, a)), float(np.quantile(rates, 1 - a)))


@dataclasses.dataclass(frozen=True)
class JudgeOutcome:
    """All pairs' results plus the summary numbers (`summary`)."""

    pairs: tuple[PairResult, ...]
    protocol: str
    judge: str

    @property
    def n(self) -> int:
        return len(self.pairs)

    def count(self, outcome: str) -> int:
        return sum(p.outcome == outcome for p in self.pairs)

    @property
    def wins(self) -> int:
        return self.count("win")

    @property
    def ties(self) -> int:
        return self.count("tie")

    @property
    def losses(self) -> int:
        return self.count("loss")

    @property
    def unparsed(self) -> int:
        return sum(p.unparsed for p in self.pairs)

    @property
    def rate(self) -> float:
        return self.wins / self.n if self.n else float("nan")

    def wilson(self, z: float = 1.96) -> tuple[float, float]:
        return wilson_interval(self.wins, self.n, z)

    @property
    def consistency(self) -> float | None:
        """Position-consistency rate (None under ``paper`` or when no pair has both replies parsed)."""
        flags = [p.consistent for p in self.pairs if p.consistent is not None]
        return sum(flags) / len(flags) if flags else None

    def __str__(self) -> str:
        """``rate% [Wilson 95%] (W/T/L)``, then the unparsed count and the position consistency when known."""
        lo, hi = self.wilson()
        text = f"{100 * self.rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({self.wins}W/{self.ties}T/{self.losses}L)"
        if self.unparsed:
            text += f", {self.unparsed} unparsed"
        if self.consistency is not None:
            text += f", consistency {100 * self.consistency:.1f}%"
        return text

    def summary(self, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        return {"judge": self.judge, "protocol": self.protocol, "n": self.n, "wins": self.wins,
                "ties": self.ties, "losses": self.losses, "unparsed": self.unparsed, "win_rate": self.rate,
                "wilson_ci95": list(self.wilson()),
                "bootstrap_ci95": list(bootstrap_interval([p.outcome == "win" for p in self.pairs],
                                                          n_boot=n_boot, seed=seed)),
                "position_consistency": self.consistency}


def _combine(a_first: Verdict, b_first: Verdict) -> PairResult:
    orders = ((True, a_first), (False, b_first))
    if Verdict.UNPARSED in (a_first, b_first):
        return PairResult("tie", orders, True, None)
    one, two = _AS_OURS[a_first], _SWAPPED[b_first]
    outcome = one if one == two and one != "tie" else "tie"
    return PairResult(outcome, orders, False, one == two)


def judge_pairs(judge: Judge, prompts: Sequence[Any], ours: Sequence[str], theirs: Sequence[str], *,
                protocol: str = "both", seed: int = 0) -> JudgeOutcome:
    """Judges every (prompt, ours, theirs) with ``judge`` under ``protocol`` (module docstring); one batched
    ``judge.judge`` call holds every request."""
    if not (len(prompts) == len(ours) == len(theirs)):
        raise JudgeError(f"prompts ({len(prompts)}), ours ({len(ours)}) and theirs ({len(theirs)}) must have "
                         "the same length")
    if protocol not in PROTOCOLS:
        raise JudgeError(f"protocol {protocol!r}; accepted: {', '.join(PROTOCOLS)}")
    if protocol == "both":
        reqs = [r for p, a, b in zip(prompts, ours, theirs, strict=True)
                for r in (JudgeRequest(p, a, b), JudgeRequest(p, b, a))]
        v = _checked(judge, reqs)
        pairs = tuple(_combine(v[2 * i], v[2 * i + 1]) for i in range(len(prompts)))
    else:
        a_first = np.random.default_rng(seed).random(len(prompts)) >= 0.5
        reqs = [JudgeRequest(p, a, b) if f else JudgeRequest(p, b, a)
                for p, a, b, f in zip(prompts, ours, theirs, a_first, strict=True)]
        pairs = tuple(PairResult("tie" if x == Verdict.UNPARSED else (_AS_OURS if f else _SWAPPED)[x],
                                 ((bool(f), x),), x == Verdict.UNPARSED, None)
                      for x, f in zip(_checked(judge, reqs), a_first, strict=True))
    return JudgeOutcome(pairs, protocol, judge.name)


def _checked(judge: Judge, reqs: list[JudgeRequest]) -> list[Verdict]:
    out = [Verdict(v) for v in judge.judge(reqs)]
    if len(out) != len(reqs):
        raise JudgeError(f"judge {judge.name!r} returned {len(out)} verdicts for {len(reqs)} requests")
    return out
