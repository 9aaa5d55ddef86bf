"""Truncation and the packed layout against the unpacked sequences (token ids, positions, visible context,
and log-probs of a tiny random model)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rdpo_jax.data import PreferenceExample, synthetic_tokenizer
from rdpo_jax.data.batching import Buckets, packed_batch, three_row_batch
from rdpo_jax.data.rows import TruncationConfig, tokenize_examples
from rdpo_jax.data.schema import DataValidationError

EXAMPLES = [
    PreferenceExample("please name a red animal", "the fox is red", "the cat is blue .",
                      "the fox is red and it matches the request"),
    PreferenceExample([{"role": "system", "content": "tell me about a fox"},
                       {"role": "user", "content": "please name a big animal"},
                       {"role": "assistant", "content": "the bear"},
                       {"role": "user", "content": "please name a small animal"}],
                      "the owl is small", "the bear is big", "response above matches the request"),
    PreferenceExample("please name a fast animal ?", "the fox", "the frog is slow", "the fox is fast"),
    PreferenceExample("please name a fish", "the fish", "a dog", "the fish is a fish"),
]


@pytest.fixture(scope="module")
def tok():
    return synthetic_tokenizer()


def _eot(tok):
    return tok.convert_tokens_to_ids("<|eot|>")


def test_one_end_of_turn_token_per_completion(tok):
    res = tokenize_examples(EXAMPLES, tok, rationale_template="conversational")
    for r in res.rows:
        for s in (r.chosen, r.rejected, r.rationale):
            assert s.completion[-1] == _eot(tok) and s.completion.count(_eot(tok)) == 1
            # the template writes "<|eot|>\n": the newline after the closer is not scored
            assert tok.decode(s.completion[:-1]).strip() != ""
    x = res.rows[0]
    assert tok.decode(x.chosen.completion, skip_special_tokens=True).split() == "the fox is red".split()


def test_truncation_keeps_prompt_end_and_completion_start(tok):
    long_prompt = " ".join(["please name a red animal"] * 6)
    ex = PreferenceExample(long_prompt, "the fox is red and it matches the request", "the cat", "the fox wins")
    full = tokenize_examples([ex], tok).rows[0]
    cfg = TruncationConfig(max_length=16, max_prompt_length=10)
    res = tokenize_examples([ex], tok, truncation=cfg)
    r = res.rows[0]
    assert r.chosen.context == [tok.bos_token_id] + full.chosen.context[-9:]  # end kept, BOS kept
    assert r.rejected.context == r.chosen.context  # one prompt per pair
    assert r.chosen.completion == full.chosen.completion[:6]  # start kept
    assert _eot(tok) not in r.chosen.completion  # a cut turn does not end: no closer scored
    assert r.rejected.completion == full.rejected.completion  # fits: untouched, one closer
    assert len(r.chosen) <= 16
    assert res.stats.prompt_truncated == 1 and res.stats.chosen_truncated == 1
    assert res.stats.rejected_truncated == 0
    assert res.report.flags["chosen_truncated"] == [0]
    assert r.pack_reason == "truncated" and not r.dpo_packable


def test_zero_scored_tokens_are_bad_rows(tok):
    cfg = TruncationConfig(max_length=64, max_prompt_length=32, max_rationale_length=0)
    with pytest.raises(DataValidationError, match="no_scored_tokens"):
        tokenize_examples(EXAMPLES[:2], tok, truncation=cfg, rationale_template="official", dataset="toy")
    # skipping every row leaves nothing to train on: an error that still lists every bad row
    with pytest.raises(DataValidationError, match="all 2 rows skipped") as e:
        tokenize_examples(EXAMPLES[:2], tok, truncation=cfg, rationale_template="official", dataset="toy",
                          on_bad_row="skip")
    assert {(b.dataset, b.row, b.field) for b in e.value.bad_rows} == {("toy", 0, "rationale"),
                                                                       ("toy", 1, "rationale")}
    # with a rationale-less example in the mix, the bad rows are skipped and counted
    mixed = [EXAMPLES[0], dataclasses.replace(EXAMPLES[1], rationale=None)]
    res = tokenize_examples(mixed, tok, truncation=cfg, rationale_template="official", dataset="toy",
                            on_bad_row="skip")
    assert [r.index for r in res.rows] == [1] and res.report.n_skipped == 1
    assert {(b.dataset, b.row, b.field) for b in res.report.bad_rows} == {("toy", 0, "rationale")}


def _unpacked(ex, role):
    return [ex.chosen, ex.rejected, ex.rationale][role]


def check_packed_against_unpacked(batch, rows, with_rationale):
    """Reconstruct each token's visible context from the mask: it must be a prefix of an unpacked sequence of
    its pair (same ids, positions 0..p) and every scored target must be the unpacked next token."""
    seen = {}
    for n in range(batch["input_ids"].shape[0]):
        for t in np.nonzero(batch["attention_mask"][n])[0]:
            vis = np.nonzero(batch["attn_mask"][n, t] & (batch["attention_mask"][n] == 1))[0]
            order = vis[np.argsort(batch["positions"][n, vis])]
            ids = batch["input_ids"][n, order].tolist()
            assert batch["positions"][n, order].tolist() == list(range(len(order)))
            assert order[-1] == t
            slot = batch["score_slot"][n, t]
            pairs = [p for p in batch["slot_pair"][n] if p >= 0]
            candidates = [_unpacked(rows[p], j).ids for p in set(pairs) for j in range(3 if with_rationale else 2)]
            assert any(c[: len(ids)] == ids for c in candidates)
            if batch["loss_mask"][n, t]:
                p, role = batch["slot_pair"][n, slot], batch["slot_role"][n, slot]
                seq = _unpacked(rows[p], role).ids
                assert seq[: len(ids)] == ids and batch["targets"][n, t] == seq[len(ids)]
                seen[(p, role)] = seen.get((p, role), 0) + 1
    for p, ex in enumerate(rows):
        for role in range(3 if with_rationale else 2):
            assert seen[(p, role)] == len(_unpacked(ex, role).completion)


@pytest.mark.parametrize("with_rationale,pairs_per_row", [(True, 1), (True, 3), (False, 2)])
def test_packed_rows_reconstruct_unpacked_sequences(tok, with_rationale, pairs_per_row):
    rows = tokenize_examples(EXAMPLES, tok, rationale_template="conversational").rows
    assert all(r.rdpo_packable for r in rows)
    batch = packed_batch(rows, buckets=Buckets((32, 64, 128)), global_batch_size=6, pad_id=0,
                         with_rationale=with_rationale, pairs_per_row=pairs_per_row)
    assert int(batch["n_packed_rows"]) == -(-len(rows) // pairs_per_row)
    check_packed_against_unpacked(batch, rows, with_rationale)


def test_packing_falls_back_when_prefix_check_fails():
    pytest.importorskip("mistral_common")
    from rdpo_jax.data.tokenizers import load_tokenizer

    exs = [PreferenceExample([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
                             "Hello.", "Go away.", "The first is polite."),
           PreferenceExample("Name a colour.", "Red.", "Seven.", "Seven is a number.")]
    v3 = tokenize_examples(exs, load_tokenizer("mistral-v3"), rationale_template="conversational")
    assert v3.rows[0].pack_reason == "prefix_mismatch" and v3.rows[1].rdpo_packable
    assert v3.rows[0].dpo_packable  # plain DPO still packs
    v1 = tokenize_examples(exs, load_tokenizer("mistral-v1"), rationale_template="conversational")
    assert all(r.rdpo_packable for r in v1.rows)  # v1 keeps the system prompt on the first user turn
    batch = packed_batch(v3.rows, buckets=Buckets((64, 128)), global_batch_size=2, pad_id=0,
                         with_rationale=True)
    assert int(batch["n_packed_rows"]) == 1
    assert batch["input_ids"].shape[0] == 4  # 1 packed row + 3 fallback rows
    check_packed_against_unpacked(batch, v3.rows, True)


def test_packed_logps_equal_unpacked_on_a_tiny_model(tok):
    models = pytest.importorskip("rdpo_jax.models")
    if not hasattr(models, "DecoderLM"):
        pytest.skip("rdpo_jax.models has no DecoderLM yet")
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from rdpo_jax.logprobs import segment_logps, token_logps
    jax.config.update("jax_default_matmul_precision", "highest")
    cfg = models.ModelConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=8)
    model = models.DecoderLM(cfg, rngs=nnx.Rngs(0))
    rows = tokenize_examples(EXAMPLES, tok, rationale_template="conversational").rows

    def sums(batch):
        b = {k: jnp.asarray(v) for k, v in batch.items()}
        logits = model(b["input_ids"], b["attention_mask"], positions=b["positions"], attn_mask=b.get("attn_mask"))
        lp = token_logps(logits, b["targets"])
        s, c = segment_logps(lp, b["loss_mask"], b["score_slot"], b["slot_pair"].shape[1])
        out = np.zeros((len(rows), 3))
        cnt = np.zeros((len(rows), 3), int)
        for n, k in zip(*np.nonzero(batch["slot_pair"] >= 0), strict=True):
            out[batch["slot_pair"][n, k], batch["slot_role"][n, k]] += float(s[n, k])
            cnt[batch["slot_pair"][n, k], batch["slot_role"][n, k]] += int(c[n, k])
        return out, cnt

    unpacked, n_un = sums(three_row_batch(rows, buckets=Buckets((64,)), global_batch_size=4, pad_id=0,
                                          with_rationale=True))
    for ppr in (1, 2):
        packed, n_pk = sums(packed_batch(rows, buckets=Buckets((64, 128)), global_batch_size=4, pad_id=0,
                                         with_rationale=True, pairs_per_row=ppr))
        np.testing.assert_array_equal(n_pk, n_un)
        np.testing.assert_allclose(packed, unpacked, rtol=1e-6)
    # y_l's first token: its log-prob alone, packed (predicted from x_last') against unpacked
    ex = rows[0]
    x, yl = ex.rejected.context, ex.rejected.completion
    alone = token_logps(model(jnp.asarray([x + yl])), jnp.asarray([x[1:] + yl + [0]]))[0, len(x) - 1]
    batch = packed_batch(rows[:1], buckets=Buckets((128,)), global_batch_size=1, pad_id=0, with_rationale=True)
    b = {k: jnp.asarray(v) for k, v in batch.items()}
    lp = token_logps(model(b["input_ids"], b["attention_mask"], positions=b["positions"], attn_mask=b["attn_mask"]),
                     b["targets"])[0]
    t_first = len(ex.chosen) + 0  # x_last' sits right after y_w
    assert batch["input_ids"][0, t_first] == x[-1] and batch["targets"][0, t_first] == yl[0]
    np.testing.assert_allclose(float(lp[t_first]), float(alone), rtol=1e-6)
