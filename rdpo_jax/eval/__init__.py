"""Evaluation: batched generation from chat prompts and pairwise win rates with a judge."""
from rdpo_jax.eval.generation import generate_responses
from rdpo_jax.eval.winrate import WinRate, pairwise_win_rate

__all__ = ["WinRate", "generate_responses", "pairwise_win_rate"]
