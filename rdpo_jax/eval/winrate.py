"""Pairwise win rates: a judge compares two responses per prompt; ties count for neither side.

``rate = wins / n`` (the paper's convention: ties and unparseable verdicts are no win), with a Wilson score
interval (z = 1.96 for 95%): ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``. The order shown to
the judge is randomised per item (seeded), as in the official comparison script.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Judge = Callable[[Any, str, str], int]  # (prompt, first, second) -> +1 first better, -1 second, 0 tie


@dataclasses.dataclass(frozen=True)
class WinRate:
    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float:
        return self.wins / self.n if self.n else float("nan")

    def ci(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson score interval of the win probability."""
        n = self.n
        if n == 0:
            return (float("nan"), float("nan"))
        p = self.wins / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (max(0.0, centre - half), min(1.0, centre + half))

    def __str__(self) -> str:
        lo, hi = self.ci()
        return f"{100 * self.rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({self.wins}W/{self.ties}T/{self.losses}L)"


def pairwise_win_rate(prompts: Sequence[Any], ours: Sequence[str], theirs: Sequence[str], judge: Judge, *,
                      seed: int = 0) -> WinRate:
    """How often ``ours`` beats ``theirs`` under ``judge``, with the presentation order randomised per item."""
    if not (len(prompts) == len(ours) == len(theirs)):
        raise ValueError(f"prompts ({len(prompts)}), ours ({len(ours)}) and theirs ({len(theirs)}) must have "
                         "the same length")
    flips = np.random.default_rng(seed).random(len(prompts)) < 0.5
    wins = losses = ties = 0
    for prompt, a, b, flip in zip(prompts, ours, theirs, flips, strict=True):
        verdict = -judge(prompt, b, a) if flip else judge(prompt, a, b)
        wins += verdict > 0
        losses += verdict < 0
        ties += verdict == 0
    return WinRate(int(wins), int(losses), int(ties))
