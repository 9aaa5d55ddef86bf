"""Both-orders aggregation, the paper protocol, intervals, and the local log-likelihood judge on the tiny
model in tests/data/rationale_model against the same comparison computed directly with the model."""
from pathlib import Path

import numpy as np
import pytest

from rdpo_jax.eval.judges import JudgeRequest, Verdict, judge_pairs, parse_answer
from rdpo_jax.eval.judges.aggregate import bootstrap_interval, wilson_interval

MODEL = Path(__file__).resolve().parent / "data" / "rationale_model"


class FirstBiased:
    name = "always-first"

    def judge(self, requests):
        return [Verdict.FIRST] * len(requests)


class Scripted:
    name = "scripted"

    def __init__(self, table):
        self.table = table  # (first, second) -> verdict

    def judge(self, requests):
        return [self.table[(r.first, r.second)] for r in requests]


def test_position_biased_judge_gives_all_ties_under_both_orders_and_about_half_under_one_random_order():
    n = 400
    ours, theirs = [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]
    both = judge_pairs(FirstBiased(), ["q"] * n, ours, theirs)
    assert (both.wins, both.ties, both.losses, both.unparsed) == (0, n, 0, 0) and both.consistency == 0.0
    paper = judge_pairs(FirstBiased(), ["q"] * n, ours, theirs, protocol="paper", seed=3)
    assert abs(paper.rate - 0.5) < 0.08 and paper.wins + paper.losses == n and paper.consistency is None


def test_both_orders_rule():
    F, S, T, U = Verdict.FIRST, Verdict.SECOND, Verdict.TIE, Verdict.UNPARSED
    # (A first, B first) verdicts -> outcome for A
    cases = {(F, S): "win", (S, F): "loss", (F, T): "tie", (F, F): "tie", (T, T): "tie", (U, S): "tie"}
    table, ours, theirs = {}, [], []
    for i, (v1, v2) in enumerate(cases):
        table[(f"a{i}", f"b{i}")], table[(f"b{i}", f"a{i}")] = v1, v2
        ours.append(f"a{i}")
        theirs.append(f"b{i}")
    out = judge_pairs(Scripted(table), ["q"] * len(cases), ours, theirs)
    assert [p.outcome for p in out.pairs] == list(cases.values())
    assert out.unparsed == 1 and out.n == 6 and out.rate == 1 / 6
    assert out.consistency == pytest.approx(3 / 5)  # (F,S), (S,F), (T,T) agree; the unparsed pair is left out
    s = out.summary(n_boot=500)
    assert s["wilson_ci95"] == list(wilson_interval(1, 6)) and s["unparsed"] == 1


def test_intervals():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    x = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    blo, bhi = bootstrap_interval(x, n_boot=4000, seed=1)
    assert blo < 0.3 < bhi and bhi - blo == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 100), abs=0.03)
    assert bootstrap_interval(x, seed=1) == bootstrap_interval(x, seed=1)


def test_parse_answer():
    assert parse_answer("Response 1 is clearer.\n**2**") == Verdict.SECOND
    assert parse_answer("Answer: 1.") == Verdict.FIRST and parse_answer("Tie") == Verdict.TIE
    assert parse_answer("Both are fine") == Verdict.UNPARSED and parse_answer("") == Verdict.UNPARSED


def test_local_judge_equals_the_direct_log_likelihood_comparison():
    import jax.numpy as jnp

    from rdpo_jax.data import encode_chat, synthetic_tokenizer
    from rdpo_jax.eval.judges.local import LocalJudge
    from rdpo_jax.models import load_hf

    model, tok = load_hf(MODEL), synthetic_tokenizer()
    reqs = [JudgeRequest("what colour is the fox", "the fox is red", "the fox is blue"),
            JudgeRequest("what colour is the owl", "the owl is green", "the owl is green and it is tall")]
    judge = LocalJudge(model, tok, answers=("above", "below"), batch_size=4)
    verdicts = judge.judge(reqs)
    want = []
    for r in reqs:  # independent: a plain forward pass and log-softmax of the next token
        ids = encode_chat(tok, [{"role": "user", "content": judge.template.render(r)}], add_generation_prompt=True)
        logits = model(jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32))
        lp = np.asarray(logits[0, -1], np.float64)
        lp = lp - np.log(np.exp(lp - lp.max()).sum()) - lp.max()
        (a,), (b,) = (tok(w, add_special_tokens=False)["input_ids"] for w in ("above", "below"))
        want.append(lp[a] - lp[b])
    np.testing.assert_allclose(judge.last_differences, want, atol=2e-4)
    assert verdicts == [Verdict.FIRST if d > 0 else Verdict.SECOND for d in want]
    wide = LocalJudge(model, tok, answers=("above", "below"), margin=float(np.abs(want).max()) + 1)
    assert wide.judge(reqs) == [Verdict.TIE, Verdict.TIE]
