"""Log-prob extraction for the analysis (rdpo_jax.analysis.lm, leakage): checked against the model's full
logits with a float64 numpy log-softmax, and order/condition consistency of the swap construction."""
import dataclasses

import numpy as np
import pytest

from rdpo_jax.analysis.leakage import mask_rationale, mask_words_for
from rdpo_jax.analysis.lm import policy_margins, rationale_logps, response_logps, score_sequences
from rdpo_jax.data import SyntheticTask, synthetic_tokenizer


@pytest.fixture(scope="module")
def model():
    from flax import nnx

    from rdpo_jax.models import DecoderLM, ModelConfig

    tok = synthetic_tokenizer()
    cfg = ModelConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, tie_word_embeddings=True, max_position_embeddings=256)
    return DecoderLM(cfg, rngs=nnx.Rngs(0))


def _numpy_sum(model, context, completion, scored=None):
    ids = np.array([list(context) + list(completion)])
    logits = np.asarray(model(ids, np.ones_like(ids), positions=np.arange(ids.shape[1])[None]), np.float64)[0]
    lsm = logits - logits.max(-1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(-1, keepdims=True))
    scored = [True] * len(completion) if scored is None else scored
    return sum(lsm[t - 1, ids[0, t]] for t, keep in zip(range(len(context), ids.shape[1]), scored, strict=True)
               if keep)


def test_score_sequences_matches_numpy(model):
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(8, 60, size=rng.integers(1, 20)).tolist(), rng.integers(8, 60, size=rng.integers(1, 9))
             .tolist()) for _ in range(11)]
    sums, counts = score_sequences(model, seqs, batch_size=4)
    for (c, y), s, n in zip(seqs, sums, counts, strict=True):
        assert n == len(y)
        np.testing.assert_allclose(s, _numpy_sum(model, c, y), rtol=1e-5)
    # unscored completion tokens stay inputs but leave the sum
    flags = [[bool(k % 2) for k in range(len(y))] for _, y in seqs]
    part, n_part = score_sequences(model, [(c, y, f) for (c, y), f in zip(seqs, flags, strict=True)], batch_size=4)
    for (c, y), f, s, n in zip(seqs, flags, part, n_part, strict=True):
        assert n == sum(f)
        np.testing.assert_allclose(s, _numpy_sum(model, c, y, f), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sequence 0: 1 scored flags for"):
        score_sequences(model, [(seqs[0][0], [5, 6], [True])])


def test_mask_words():
    words = mask_words_for("official")
    assert mask_rationale("response above wins", words) == "- - -"
    assert mask_rationale("The Response BELOW is better.", words) == "The - - is -."
    assert mask_rationale("the red fox matches the request", words) == "the red fox matches the request"
    assert "another" in mask_words_for("conversational")
    with pytest.raises(ValueError, match="template"):
        mask_words_for("nope")


@pytest.mark.parametrize("template", ["official", "conversational"])
def test_swap_orders_and_conditions(model, template):
    tok = synthetic_tokenizer()
    ex = SyntheticTask(task="colour", u=0.3, eps=0.2, wording="leaky").examples(6, seed=3)
    lp = rationale_logps(model, tok, ex, template=template, batch_size=8)
    swapped = [dataclasses.replace(e, chosen=e.rejected, rejected=e.chosen) for e in ex]
    sw = rationale_logps(model, tok, swapped, template=template, batch_size=8,
                         conditions=("rationale", "vacuous", "rationale_masked"))
    # chosen-second of the originals is chosen-first of the swapped pairs: same rationale tokens, same context
    for c in ("rationale", "vacuous", "rationale_masked"):
        np.testing.assert_allclose(sw.forward[c], lp.backward[c], rtol=1e-6)
        np.testing.assert_allclose(sw.delta(c), -lp.delta(c), rtol=1e-5, atol=1e-5)
    # leaky rationales "response above/below wins" mask to "- - -": the placeholders are not scored, only
    # the end of turn is; "both responses look fine" loses one scored token
    leaky = np.array([e.rationale.startswith("response") for e in ex])
    assert leaky.any() and (lp.counts["rationale_masked"][leaky] == 1).all()
    np.testing.assert_array_equal(lp.counts["vacuous_masked"], lp.counts["vacuous"] - 1)
    i = int(np.flatnonzero(leaky)[0])
    ctx, comp = _seq(tok, ex[i], "- - -", template)
    assert len(comp) == 4
    np.testing.assert_allclose(lp.forward["rationale_masked"][i],
                               _numpy_sum(model, ctx, comp, [False, False, False, True]), rtol=1e-5)
    np.testing.assert_allclose(lp.forward["vacuous"][0], _numpy_sum(
        model, *_seq(tok, ex[0], "both responses look fine", template)), rtol=1e-5)
    assert lp.pmi.shape == (6,) and np.isfinite(lp.pmi).all()


def _seq(tok, ex, text, template):
    from rdpo_jax.data import rationale_messages
    from rdpo_jax.data.chat import encode_chat
    from rdpo_jax.data.rows import split_completion

    msgs = rationale_messages(ex, template)
    ctx = encode_chat(tok, msgs, add_generation_prompt=True)
    full = encode_chat(tok, msgs + [{"role": "assistant", "content": text}])
    return split_completion(tok, ctx, full)


def test_rationale_required_and_mask_token(model):
    tok = synthetic_tokenizer()
    ex = SyntheticTask().examples(2)
    with pytest.raises(ValueError, match="example 1 has no rationale"):
        rationale_logps(model, tok, [ex[0], dataclasses.replace(ex[1], rationale=None)])
    with pytest.raises(ValueError, match="mask_token"):
        rationale_logps(model, tok, ex, mask_token="<unk>")
    with pytest.raises(ValueError, match="not one token"):
        rationale_logps(model, tok, ex, mask_token="above wins")
    with pytest.raises(ValueError, match="vacuous rationale is empty"):
        rationale_logps(model, tok, ex, vacuous=" ")


@pytest.mark.parametrize("name", ["llama3", "mistral-v1", "mistral-v3"])
def test_placeholders_found_in_real_tokenizers(name):
    """Every token carrying a placeholder is unscored, even when BPE merges it with punctuation (Llama 3's
    " -,"), and no other token is."""
    if name == "llama3":
        pytest.importorskip("llama_models")
    else:
        pytest.importorskip("mistral_common")
    from rdpo_jax.analysis.lm import _placeholder_test
    from rdpo_jax.data import load_tokenizer

    tok = load_tokenizer(name)
    text = mask_rationale("The response above is better, because it cites the source.", mask_words_for("official"))
    assert text == "The - - is -, because it cites the source."
    ids = tok.encode(text, add_special_tokens=False)
    flagged = [_placeholder_test(tok, "-")(i) for i in ids]
    pieces = [tok.decode([i]) for i in ids]
    assert sum(p.count("-") for p, f in zip(pieces, flagged, strict=True) if f) == 3
    assert not any("-" in p for p, f in zip(pieces, flagged, strict=True) if not f)
    assert sum(flagged) == 3  # one token per placeholder, merged or not


def test_policy_margins(model):
    tok = synthetic_tokenizer()
    ex = SyntheticTask().examples(5, seed=2)
    sw, sl = response_logps(model, tok, ex)
    out = policy_margins(model, tok, ex, beta=0.5)
    np.testing.assert_allclose(out["margins"], 0.5 * (sw - sl), rtol=1e-6)
    same = policy_margins(model, tok, ex, reference=model, beta=0.5)
    np.testing.assert_allclose(same["margins"], 0.0, atol=1e-5)
    from rdpo_jax.data import tokenize_examples

    row = tokenize_examples(ex[:1], tok).rows[0]
    np.testing.assert_allclose(sw[0], _numpy_sum(model, row.chosen.context, row.chosen.completion), rtol=1e-5)
