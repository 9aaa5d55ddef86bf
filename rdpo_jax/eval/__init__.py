"""Evaluation: responses from a model (`generate_responses`; `rdpo-jax generate` for files of prompts) and
pairwise win rates with a judge (`judge_pairs` with an endpoint, local-model or oracle judge; `rdpo-jax
judge`)."""
from rdpo_jax.eval.generation import generate_responses
from rdpo_jax.eval.judges import JudgeOutcome, judge_pairs
from rdpo_jax.eval.judges.oracle import OracleJudge

__all__ = ["JudgeOutcome", "OracleJudge", "generate_responses", "judge_pairs"]
