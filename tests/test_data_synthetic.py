"""Synthetic tasks: statistics match the parameters, information matches the closed form, the oracle judges
any text, and the word-level tokenizer round-trips every synthetic string."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdpo_jax.data import (
    Oracle,
    SyntheticTask,
    conditional_rationale_information,
    empirical_information,
    rationale_information,
    shuffle_rationales,
    synthetic_tokenizer,
)

N = 20_000


def binom_tol(p: float, n: int, z: float = 4.5) -> float:
    return z * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


@pytest.fixture(scope="module")
def tokenizer():
    return synthetic_tokenizer()


def test_closed_form_matches_reference_table():
    # docs/spec.md section 5: (u, eps) -> I in nats
    for u, eps, want in [(0, 0, 0.6931), (0.3, 0.1, 0.2576), (0.8, 0.2, 0.0385), (1.0, 0.1, 0.0)]:
        assert rationale_information(u, eps) == pytest.approx(want, abs=1e-4)
    assert conditional_rationale_information(0.3, 0.1, 0.0) == pytest.approx(0.0, abs=1e-15)
    assert conditional_rationale_information(0.0, 0.0, 0.2) == pytest.approx(-0.2 * math.log(0.2)
                                                                             - 0.8 * math.log(0.8))
    # Following the truth: two flips in a row (eta then eps) give flip 0.3*0.9 + 0.7*0.1 = 0.34 against W;
    # given the responses (hence T) the verdict says nothing more about W.
    h = -0.34 * math.log(0.34) - 0.66 * math.log(0.66)
    assert rationale_information(0.5, 0.1, 0.3, "truth") == pytest.approx(0.5 * (math.log(2) - h))
    assert rationale_information(0.5, 0.1, 0.3, "label") == pytest.approx(rationale_information(0.5, 0.1))
    assert conditional_rationale_information(0.5, 0.1, 0.3, "truth") == 0.0
    with pytest.raises(ValueError, match="rationale_follows='oracle'; accepted"):
        rationale_information(0.0, 0.0, 0.0, "oracle")


@pytest.mark.parametrize("task,wording,u,eps,eta,follows", [
    ("colour", "content", 0.3, 0.1, 0.0, "label"),
    ("colour", "leaky", 0.8, 0.2, 0.1, "label"),
    ("parity", "content", 0.0, 0.25, 0.2, "label"),
    ("parity", "leaky", 0.5, 0.0, 0.0, "label"),
    ("colour", "content", 0.2, 0.1, 0.3, "truth"),
    ("parity", "leaky", 0.0, 0.0, 0.25, "truth"),
])
def test_statistics_and_information(task, wording, u, eps, eta, follows):
    spec = SyntheticTask(task=task, u=u, eps=eps, eta=eta, wording=wording, rationale_follows=follows)
    pairs = spec.sample(N, seed=7)
    kinds = np.array([p.kind for p in pairs])
    vac = (kinds == "vacuous").mean()
    assert abs(vac - u) <= binom_tol(u, N)
    n_nv = int((kinds != "vacuous").sum())
    # against the label, a verdict flips with eps (follows the label) or eta*eps (follows the truth)
    flip = eps if follows == "label" else eta * (1 - eps) + (1 - eta) * eps
    mis = (kinds == "misleading").sum() / n_nv
    assert abs(mis - flip) <= binom_tol(flip, n_nv)
    if follows == "truth":  # the verdict is the truth's slot, up to eps
        nv = [p for p in pairs if p.verdict is not None]
        off = np.mean([p.verdict != p.truth for p in nv])
        assert abs(off - eps) <= binom_tol(eps, len(nv))
    flips = np.mean([p.label != p.truth for p in pairs])
    assert abs(flips - eta) <= binom_tol(eta, N)
    assert abs(np.mean([p.label for p in pairs]) - 0.5) <= binom_tol(0.5, N)

    # The verdict decoded from the text agrees with the generator's bookkeeping.
    oracle = spec.oracle
    for p in pairs[:2000]:
        ex = p.example
        v = oracle.rationale_verdict(ex.prompt, ex.chosen, ex.rejected, ex.rationale)
        assert v == {None: 0, p.label: 1, 1 - p.label: -1}[p.verdict]

    # Plug-in I(W; V) within Monte-Carlo error of (1-u)(log 2 - h(flip)).
    truth = spec.information()
    assert truth == pytest.approx(rationale_information(u, flip))
    pmi = np.array([0.0, math.log(2 * (1 - flip)) if flip < 1 else 0.0, math.log(2 * flip) if flip > 0 else 0.0])
    probs = np.array([u, (1 - u) * (1 - flip), (1 - u) * flip])
    sd = math.sqrt(max(float(probs @ pmi**2) - truth**2, 0.0) / N)
    bias = 2 / (2 * N)  # (|W|-1)(|V|-1) / 2n
    assert empirical_information(pairs, oracle) == pytest.approx(truth, abs=5 * sd + 2 * bias + 1e-9)

    # Plug-in I(W; V | T), T the oracle's slot (W depends on the responses only through T).
    w = np.array([p.label for p in pairs])
    t = np.array([p.truth for p in pairs])
    v = np.array([2 if p.verdict is None else p.verdict for p in pairs])
    joint = np.zeros((2, 2, 3))
    np.add.at(joint, (t, w, v), 1.0)
    joint /= N
    pt, ptw, ptv = joint.sum((1, 2)), joint.sum(2), joint.sum(1)
    nz = joint > 0
    ratio = joint * pt[:, None, None] / (ptw[:, :, None] * ptv[:, None, :] + 1e-300)
    cmi = float((joint[nz] * np.log(ratio[nz])).sum())
    assert cmi == pytest.approx(spec.conditional_information(), abs=0.02)
    if eta == 0 or follows == "truth":
        assert spec.conditional_information() == 0.0
    if eta == 0:
        assert cmi == pytest.approx(0.0, abs=1e-12)

    # Oracle agrees with the labels wherever no label noise was applied.
    agree = [oracle.judge(p.example.prompt, p.example.chosen, p.example.rejected) == 1 for p in pairs]
    noisy = [p.label != p.truth for p in pairs]
    assert all(a != n for a, n in zip(agree, noisy, strict=True))


def test_lengths_and_determinism(tokenizer):
    for task in ("colour", "parity"):
        spec = SyntheticTask(task=task, parity_bits=8)
        exs = spec.examples(500, seed=1)
        assert exs == spec.examples(500, seed=1) and exs != spec.examples(500, seed=2)
        for ex in exs:
            assert all(len(s.split()) <= 16 for s in (ex.prompt, ex.chosen, ex.rejected, ex.rationale))
            msgs = [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.chosen}]
            assert len(tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)) <= 64


def test_oracle_handles_malformed_generations():
    o = Oracle()
    p_col, p_par = "please name a red animal", "tell me about the fox with odd zaps"
    assert o.score(p_col, "the cat is red") == 2
    assert o.score(p_col, "the cat is red and it is big <|eot|>") == 2
    assert o.score(p_col, "the cat is blue") == 1
    for junk in ["", "red red red", "the cat is red and", "the the the", None, 5, "the cat is purple", "<unk>"]:
        assert o.score(p_col, junk) == 0
        assert o.judge(p_col, "the cat is blue", junk) == 1
        assert o.judge(p_col, junk, junk) == 0
    assert o.score(p_par, "the fox is red zap zip zip zip") == 2
    assert o.score(p_par, "the fox is red zap zap zip zip") == 1
    assert o.score(p_par, "the fox is red zap zip") == 0  # wrong number of bits
    assert o.judge("not a task prompt", "the cat is red", "x") == 0
    assert o.judge(None, None, None) == 0


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60), st.text(max_size=60))
def test_oracle_never_raises(prompt, a, b):
    o = Oracle()
    assert o.judge(prompt, a, b) in (-1, 0, 1)
    assert o.score(prompt, a) in (0, 1, 2)
    assert o.rationale_verdict(prompt, a, b, prompt) in (-1, 0, 1)


def test_shuffled_control_carries_no_verdict_information():
    spec = SyntheticTask(task="colour", u=0.0, eps=0.0)
    pairs = spec.sample(4000, seed=3)
    shuffled = shuffle_rationales([p.example for p in pairs], seed=0)
    assert sorted(e.rationale for e in shuffled) == sorted(p.example.rationale for p in pairs)
    o = spec.oracle
    verdicts = [o.rationale_verdict(e.prompt, e.chosen, e.rejected, e.rationale) for e in shuffled]
    assert np.mean(np.array(verdicts) != 0) < 0.05  # another pair's content rarely matches this pair


def test_tokenizer_round_trips_all_synthetic_text(tokenizer, tmp_path):
    unk = tokenizer.unk_token_id
    for task in ("colour", "parity"):
        for wording in ("content", "leaky"):
            spec = SyntheticTask(task=task, u=0.2, eps=0.2, wording=wording, parity_bits=6)
            for ex in spec.examples(300, seed=5):
                for s in (ex.prompt, ex.chosen, ex.rejected, ex.rationale):
                    ids = tokenizer.encode(s, add_special_tokens=False)
                    assert unk not in ids and len(ids) == len(s.split())
                    assert tokenizer.decode(ids) == s
    msgs = [{"role": "system", "content": "both responses look fine"},
            {"role": "user", "content": "please name a red animal"},
            {"role": "assistant", "content": "the fox is red"}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text == ("<s><|system|> both responses look fine <|eot|>\n<|user|> please name a red animal <|eot|>\n"
                    "<|assistant|> the fox is red <|eot|>\n")
    ids = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == "<|eot|>" and unk not in ids
    gen = tokenizer.apply_chat_template(msgs[1:2], tokenize=False, add_generation_prompt=True)
    assert gen.endswith("<|assistant|> ")
    with pytest.raises(Exception, match="role must be"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
    official = ('Given the prompt: please name a red animal Which of the following assistant\'s response is more '
                'preferable and strictly follows with the prompt question? Response above: "the fox is red" '
                'or Response below: "the cat is blue"?')
    assert unk not in tokenizer.encode(official, add_special_tokens=False)

    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.encode("the fox is red zip zap") == tokenizer.encode("the fox is red zip zap")
    assert again.apply_chat_template(msgs, tokenize=False) == text
