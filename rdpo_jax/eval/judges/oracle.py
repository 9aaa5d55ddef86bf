"""The synthetic task's oracle as a `Judge`: ``Oracle.judge(prompt, first, second)`` (+1, -1, 0) becomes
FIRST, SECOND, TIE. It scores each response alone, so it has no position bias: both orders always agree."""
from __future__ import annotations

from collections.abc import Sequence

from rdpo_jax.data.synthetic import Oracle
from rdpo_jax.eval.judges.base import JudgeRequest, Verdict

__all__ = ["OracleJudge"]


class OracleJudge:
    name = "synthetic-oracle"

    def __init__(self, oracle: Oracle | None = None):
        self.oracle = oracle or Oracle()

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        sign = {1: Verdict.FIRST, -1: Verdict.SECOND, 0: Verdict.TIE}
        return [sign[self.oracle.judge(r.prompt, r.first, r.second)] for r in requests]
