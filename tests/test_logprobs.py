"""Token/sequence log-probs against float64 numpy, and the blocked head against the plain path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdpo_jax.batch import add_score_index, score_width
from rdpo_jax.logprobs import segment_logps, sequence_logps, token_logps, token_logps_from_hidden


def np_log_softmax_at(logits, targets):
    logits = np.asarray(logits, np.float64)
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    return np.take_along_axis(logits, targets[..., None], -1)[..., 0] - lse


def ragged_mask(rng, b, t):
    """Per row a random scored span [start, end) (some rows short, one row with a single token)."""
    mask = np.zeros((b, t), bool)
    for i in range(b):
        start = rng.integers(0, t - 1)
        end = rng.integers(start + 1, t + 1) if i else start + 1
        mask[i, start:end] = True
    return mask


def test_token_logps_matches_float64():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (3, 7, 50)).astype(np.float32)
    targets = rng.integers(0, 50, (3, 7))
    got = token_logps(jnp.asarray(logits), jnp.asarray(targets))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np_log_softmax_at(logits, targets), rtol=1e-6, atol=1e-5)
    got_bf16 = token_logps(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets))
    assert got_bf16.dtype == jnp.float32
    rounded = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(got_bf16, np_log_softmax_at(rounded, targets), rtol=1e-6, atol=1e-5)


def test_sequence_and_segment_sums_match_numpy():
    rng = np.random.default_rng(1)
    lp = rng.normal(-3, 1, (4, 12)).astype(np.float32)
    lp[0, 0] = np.nan  # unscored positions may hold anything
    mask = ragged_mask(rng, 4, 12)
    mask[0, 0] = False
    sums, counts = sequence_logps(jnp.asarray(lp), jnp.asarray(mask))
    np.testing.assert_allclose(sums, np.where(mask, lp, 0).sum(-1), rtol=1e-6)
    np.testing.assert_array_equal(counts, mask.sum(-1))
    seg = rng.integers(0, 3, (4, 12))
    s_sums, s_counts = segment_logps(jnp.asarray(lp), jnp.asarray(mask), jnp.asarray(seg), 3)
    for b in range(4):
        for s in range(3):
            sel = mask[b] & (seg[b] == s)
            np.testing.assert_allclose(s_sums[b, s], lp[b][sel].astype(np.float64).sum(), rtol=1e-6, atol=1e-6)
            assert s_counts[b, s] == sel.sum()


def _loss(head_fn, mask, weights):
    def f(hidden, head, targets):
        sums, _ = sequence_logps(head_fn(hidden, head, targets), mask)
        return (sums * weights).sum()
    return f


@pytest.mark.parametrize("layout", ["dv", "vd"])
@pytest.mark.parametrize("vocab,block", [(96, 32), (96, 96), (101, 32), (101, 7), (50, 128)])
def test_blocked_head_equals_plain_in_value_and_gradient(layout, vocab, block):
    rng = np.random.default_rng(vocab * block)
    b, t, d = 3, 9, 16
    hidden = jnp.asarray(rng.normal(0, 1, (b, t, d)), jnp.float32)
    w_dv = jnp.asarray(rng.normal(0, 0.5, (d, vocab)), jnp.float32)
    head = w_dv if layout == "dv" else w_dv.T
    targets = jnp.asarray(rng.integers(0, vocab, (b, t)))
    mask = jnp.asarray(ragged_mask(rng, b, t))
    weights = jnp.asarray(rng.normal(0, 1, b), jnp.float32)

    def plain_fn(h, w, tg):
        logits = h @ (w if layout == "dv" else w.T)
        return token_logps(logits, tg)

    def blocked_fn(h, w, tg):
        return token_logps_from_hidden(h, w, tg, block_size=block, layout=layout)

    plain = jax.jit(jax.value_and_grad(_loss(plain_fn, mask, weights), argnums=(0, 1)))
    blocked = jax.jit(jax.value_and_grad(_loss(blocked_fn, mask, weights), argnums=(0, 1)))
    (v_p, (gh_p, gw_p)), (v_b, (gh_b, gw_b)) = plain(hidden, head, targets), blocked(hidden, head, targets)
    # per-sequence sums: relative 1e-6
    s_p = sequence_logps(plain_fn(hidden, head, targets), mask)[0]
    s_b = sequence_logps(blocked_fn(hidden, head, targets), mask)[0]
    np.testing.assert_allclose(s_b, s_p, rtol=1e-6)
    # and both against a float64 numpy computation
    logits64 = np.asarray(hidden, np.float64) @ np.asarray(w_dv, np.float64)
    s_64 = np.where(np.asarray(mask), np_log_softmax_at(logits64, np.asarray(targets)), 0).sum(-1)
    np.testing.assert_allclose(s_b, s_64, rtol=1e-6)
    np.testing.assert_allclose(v_b, v_p, rtol=1e-6)
    for g_b, g_p in ((gh_b, gh_p), (gw_b, gw_p)):
        scale = float(jnp.abs(g_p).max())
        np.testing.assert_allclose(g_b, g_p, atol=1e-5 * scale, rtol=0)


def test_blocked_head_bf16_inputs_and_layout_inference():
    rng = np.random.default_rng(3)
    b, t, d, v = 2, 5, 8, 40
    hidden = jnp.asarray(rng.normal(0, 1, (b, t, d)), jnp.bfloat16)
    head = jnp.asarray(rng.normal(0, 1, (v, d)), jnp.bfloat16)  # tied [V, d], inferred
    targets = jnp.asarray(rng.integers(0, v, (b, t)))
    out = token_logps_from_hidden(hidden, head, targets, block_size=16)
    assert out.dtype == jnp.float32
    ref = np_log_softmax_at(np.asarray(hidden.astype(jnp.float32), np.float64)
                            @ np.asarray(head.astype(jnp.float32), np.float64).T, np.asarray(targets))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    grads = jax.grad(lambda h, w: token_logps_from_hidden(h, w, targets, block_size=16).sum(), (0, 1))(hidden, head)
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
    assert all(bool(jnp.isfinite(g.astype(jnp.float32)).all()) for g in grads)


def test_unscored_out_of_range_targets_do_not_leak():
    rng = np.random.default_rng(4)
    hidden = jnp.asarray(rng.normal(0, 1, (2, 6, 8)), jnp.float32)
    head = jnp.asarray(rng.normal(0, 1, (8, 30)), jnp.float32)
    targets = np.asarray(rng.integers(0, 30, (2, 6)))
    mask = np.ones((2, 6), bool)
    targets[:, :2] = -100
    mask[:, :2] = False
    f = _loss(lambda h, w, tg: token_logps_from_hidden(h, w, tg, block_size=8), jnp.asarray(mask), jnp.ones(2))
    val, grads = jax.value_and_grad(f, (0, 1))(hidden, head, jnp.asarray(targets))
    assert np.isfinite(float(val)) and all(bool(jnp.isfinite(g).all()) for g in grads)
    np.testing.assert_array_equal(np.asarray(grads[0])[:, :2], 0.0)  # masked positions get no gradient


def test_shape_errors_are_clear():
    h = jnp.zeros((2, 3, 8))
    with pytest.raises(ValueError, match="square: pass layout"):
        token_logps_from_hidden(h, jnp.zeros((8, 8)), jnp.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"matches neither \[d, V\] nor \[V, d\]"):
        token_logps_from_hidden(h, jnp.zeros((7, 30)), jnp.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"must be \[B, T, d\] with targets"):
        token_logps_from_hidden(h, jnp.zeros((8, 30)), jnp.zeros((2, 4), int))
    with pytest.raises(ValueError, match="layout='xy'"):
        token_logps_from_hidden(h, jnp.zeros((8, 30)), jnp.zeros((2, 3), int), layout="xy")
    with pytest.raises(ValueError, match="loss_mask"):
        sequence_logps(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_score_index_lists_each_rows_scored_positions_in_a_quarter_half_or_whole_width():
    mask = np.zeros((2, 3, 16), bool)
    mask[0, 0, [3, 4, 9]] = True
    mask[1, 2, 5:9] = True
    out = add_score_index({"loss_mask": mask})["score_index"]
    assert out.shape == (2, 3, 4) and out.dtype == np.int32  # 4 scored at most: T/4
    np.testing.assert_array_equal(out[0, 0], [3, 4, 9, -1])
    np.testing.assert_array_equal(out[1, 2], [5, 6, 7, 8])
    assert (out[0, 1] == -1).all()
    assert score_width(mask, 5) == 8 and score_width(mask, 9) == 16 and score_width(np.zeros((1, 16), bool)) == 4
    with pytest.raises(ValueError, match="smaller than a row's 4 scored targets"):
        add_score_index({"loss_mask": mask}, width=3)


def test_head_at_the_scored_positions_only_equals_the_full_head_in_value_and_gradient():
    """row_token_logps with score_index gives the full head's log-probs at every scored target (0 elsewhere)
    and the same parameter gradients of the masked sum."""
    from flax import nnx

    from rdpo_jax.logprobs import row_token_logps
    from tests.train_helpers import random_pairs, three_row_batch, tiny_model

    batch = three_row_batch(random_pairs(np.random.default_rng(3), 4, 64), t=32)
    rows = {k: jnp.asarray(v[0]) for k, v in batch.items()}
    indexed = {**rows, "score_index": jnp.asarray(add_score_index({"loss_mask": batch["loss_mask"][0]})["score_index"])}
    assert indexed["score_index"].shape[-1] < 32
    graphdef, params = nnx.split(tiny_model(seed=2))
    mask = np.asarray(batch["loss_mask"][0])

    def total(p, r):
        lp = row_token_logps(nnx.merge(graphdef, p), r, block_size=24)
        return jnp.sum(jnp.where(r["loss_mask"], lp * (1 + jnp.arange(32) / 32), 0.0)), lp

    (full_sum, full), full_grads = jax.value_and_grad(total, has_aux=True)(params, rows)
    (part_sum, part), part_grads = jax.value_and_grad(total, has_aux=True)(params, indexed)
    np.testing.assert_allclose(np.asarray(part)[mask], np.asarray(full)[mask], rtol=1e-6, atol=1e-6)
    assert (np.asarray(part)[~mask] == 0).all()
    np.testing.assert_allclose(float(part_sum), float(full_sum), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=2e-6),
                 part_grads, full_grads)
