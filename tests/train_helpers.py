"""Test helpers: a tiny random model and hand-built three-row batches of random tokens (independent of
the library's tokenisation code), in the row contract of rdpo_jax.batch."""
import numpy as np
from flax import nnx

from rdpo_jax.models import DecoderLM, ModelConfig

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=8)


def tiny_model(seed=0, **overrides):
    cfg = ModelConfig(**{**TINY, **overrides})
    return DecoderLM(cfg, rngs=nnx.Rngs(seed))


def random_pairs(rng, n_pairs, vocab, max_len=16):
    """Token-id pieces per pair: prompt, chosen, rejected, rationale context, rationale."""
    out = []
    for _ in range(n_pairs):
        lens = rng.integers(1, 5, 5)
        x, yw, yl, ctx, r = (list(rng.integers(1, vocab, n)) for n in lens)
        out.append(dict(prompt=x, chosen=yw, rejected=yl, rationale_ctx=x + yw + yl + ctx, rationale=r))
    return out


def _row(prefix, completion, t):
    """ids = prefix + completion (padded to t); targets shifted; completion tokens scored."""
    ids = prefix + completion
    assert len(ids) <= t, (len(ids), t)
    row = dict(input_ids=np.zeros(t, np.int32), positions=np.arange(t, dtype=np.int32),
               attention_mask=np.zeros(t, np.int32), targets=np.zeros(t, np.int32), loss_mask=np.zeros(t, bool))
    row["input_ids"][: len(ids)] = ids
    row["attention_mask"][: len(ids)] = 1
    row["targets"][: len(ids) - 1] = ids[1:]
    row["loss_mask"][len(prefix) - 1: len(ids) - 1] = True
    return row


def three_row_batch(pairs, micro_batches=1, t=16, with_rationale=True, pad_pairs=0):
    """Rows ordered pair-major (pair p: rows 3p, 3p+1, 3p+2 = chosen, rejected, rationale), split into
    micro-batches of whole pairs: arrays [M, N/M, ...] and pair arrays [M, P/M]."""
    roles = 3 if with_rationale else 2
    rows, slot_pair, slot_role, pair_mask = [], [], [], []
    all_pairs = list(pairs) + [None] * pad_pairs
    per_micro = len(all_pairs) // micro_batches
    for i, p in enumerate(all_pairs):
        local = i % per_micro
        pair_mask.append(p is not None)
        p = p or dict(prompt=[1], chosen=[1], rejected=[1], rationale_ctx=[1], rationale=[1])
        pieces = [(p["prompt"], p["chosen"]), (p["prompt"], p["rejected"]), (p["rationale_ctx"], p["rationale"])]
        for role in range(roles):
            rows.append(_row(*pieces[role], t))
            slot_pair.append([local])
            slot_role.append([role])
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["score_slot"] = np.zeros_like(batch["input_ids"])
    batch["slot_pair"] = np.asarray(slot_pair, np.int32)
    batch["slot_role"] = np.asarray(slot_role, np.int32)
    out = {k: v.reshape(micro_batches, -1, *v.shape[1:]) for k, v in batch.items()}
    out["pair_mask"] = np.asarray(pair_mask).reshape(micro_batches, -1)
    return out
