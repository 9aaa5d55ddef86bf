"""Judges for pairwise win rates: the interface (`Judge`, `JudgeRequest`, `Verdict`), the aggregation over
both orders or one random order (`judge_pairs`), and the backends: an OpenAI-compatible endpoint
(`EndpointJudge`), a local model (`LocalJudge`) and the synthetic oracle (`OracleJudge`)."""
from rdpo_jax.eval.judges.aggregate import PROTOCOLS, JudgeOutcome, PairResult, judge_pairs
from rdpo_jax.eval.judges.base import Judge, JudgeError, JudgeRequest, Verdict, parse_answer
from rdpo_jax.eval.judges.cache import VerdictCache, cache_key
from rdpo_jax.eval.judges.templates import PAPER, STRICT, Template, load_template

__all__ = ["PAPER", "PROTOCOLS", "STRICT", "Judge", "JudgeError", "JudgeOutcome", "JudgeRequest", "PairResult",
           "Template", "Verdict", "VerdictCache", "cache_key", "judge_pairs", "load_template", "parse_answer"]
