r"""A local judge model (a `rdpo_jax.models` DecoderLM and its tokenizer): the rendered template is the user
turn, the chat template adds the generation prompt (context c), and the verdict compares the answers'
log-likelihoods :math:`d = \log\pi(a_1\mid c) - \log\pi(a_2\mid c)` (summed over each answer's tokens,
`rdpo_jax.analysis.lm.score_sequences`, batched): FIRST if d > margin, SECOND if d < -margin, else TIE.
Answers default to ``"1"`` and ``"2"``; two answers the tokenizer cannot tell apart (the same ids, or
none) are an error, since every verdict would be a tie. It never returns UNPARSED."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rdpo_jax.eval.judges.base import JudgeError, JudgeRequest, Verdict
from rdpo_jax.eval.judges.templates import PAPER, Template

__all__ = ["LocalJudge"]


class LocalJudge:
    def __init__(self, model, tokenizer, *, template: Template = PAPER, margin: float = 0.0,
                 answers: tuple[str, str] = ("1", "2"), batch_size: int = 32, name: str = "local"):
        self.model, self.tokenizer, self.template, self.margin = model, tokenizer, template, float(margin)
        self.answers, self.batch_size = answers, batch_size
        self.name = f"local:{name}:{template.id}"
        self.last_differences: np.ndarray | None = None
        one, two = self.answer_ids()
        if not one or not two or one == two:
            raise JudgeError(f"local judge: the tokenizer encodes the answers {answers[0]!r} and {answers[1]!r} "
                             f"as {one} and {two}, which it cannot tell apart (every verdict would be a tie); "
                             "pass answers it encodes differently (--answers FIRST SECOND)")

    def answer_ids(self) -> tuple[list[int], list[int]]:
        return tuple(self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in self.answers)

    def differences(self, requests: Sequence[JudgeRequest]) -> np.ndarray:
        """d per request (module docstring)."""
        from rdpo_jax.analysis.lm import score_sequences
        from rdpo_jax.data import encode_chat, pad_id_for

        one, two = self.answer_ids()
        seqs = []
        for r in requests:
            ctx = encode_chat(self.tokenizer, [{"role": "user", "content": self.template.render(r)}],
                              add_generation_prompt=True)
            seqs += [(ctx, one), (ctx, two)]
        sums, _ = score_sequences(self.model, seqs, pad_id=pad_id_for(self.tokenizer), batch_size=self.batch_size)
        return sums[0::2] - sums[1::2]

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        d = self.differences(requests) if requests else np.zeros(0)
        self.last_differences = d
        return [Verdict.FIRST if x > self.margin else Verdict.SECOND if x < -self.margin else Verdict.TIE
                for x in d]
