"""Token and sequence log-probs: the only bridge between models and losses (docs/spec.md section 1).

Targets convention: `targets[b, t]` is the token predicted from position t (already shifted) and
`loss_mask[b, t]` says whether it is scored. Per-token log-probs are float32 whatever the compute dtype.

`token_logps_from_hidden` computes log pi(targets | hidden) from the final hidden states and the LM head
blocked over the vocabulary, with an online logsumexp and a custom VJP, so that neither the forward nor
the backward pass ever holds [B, T, V] float32 logits (the plain path needs about 16 GiB of temporaries
at B=16, T=1024, V=128,256; see benchmarks/bench_logprob_head.py).

`row_token_logps` runs a model on a row batch (`rdpo_jax.batch`) and `pair_sums` gathers its scored tokens
into per-pair, per-role sums: training, the reference cache and the analysis all score through these two.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rdpo_jax.batch import NUM_ROLES, Role

Array = jax.Array
HEAD_LAYOUTS = ("dv", "vd")
DEFAULT_BLOCK_SIZE = 2048


def token_logps(logits: Array, targets: Array) -> Array:
    """log softmax(logits)[targets] in float32.

    logits [B, T, V] (any float dtype), targets int [B, T] -> [B, T] float32. Targets outside [0, V)
    (such as -100 at unscored positions) are clipped; their values are meaningless and must be masked.
    """
    if logits.ndim != targets.ndim + 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(f"token_logps: logits {logits.shape} must be targets {targets.shape} + [V]")
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    safe = jnp.clip(targets, 0, vocab - 1)
    target_logit = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    return target_logit - jax.nn.logsumexp(logits, axis=-1)


def _resolve_layout(hidden: Array, lm_head: Array, layout: str | None) -> str:
    d = hidden.shape[-1]
    if lm_head.ndim != 2:
        raise ValueError(f"lm_head must be 2-D ([d, V] or tied [V, d]); got shape {lm_head.shape}")
    if layout is not None:
        if layout not in HEAD_LAYOUTS:
            raise ValueError(f"layout={layout!r}; accepted: 'dv' ([d, V] head) or 'vd' (tied [V, d] embedding)")
        if lm_head.shape[0 if layout == "dv" else 1] != d:
            raise ValueError(f"lm_head {lm_head.shape} with layout {layout!r} does not match hidden width d={d}")
        return layout
    if lm_head.shape[0] == d and lm_head.shape[1] != d:
        return "dv"
    if lm_head.shape[1] == d and lm_head.shape[0] != d:
        return "vd"
    if lm_head.shape == (d, d):
        raise ValueError(f"lm_head {lm_head.shape} is square: pass layout='dv' or layout='vd'")
    raise ValueError(f"lm_head {lm_head.shape} matches neither [d, V] nor [V, d] for hidden width d={d}")


def _block(lm_head: Array, start: Array, size: int, layout: str) -> Array:
    """The head's columns [start, start+size) as a [d, size] (dv) or [size, d] (vd) slice."""
    if layout == "dv":
        return jax.lax.dynamic_slice_in_dim(lm_head, start, size, axis=1)
    return jax.lax.dynamic_slice_in_dim(lm_head, start, size, axis=0)


def _block_logits(hidden: Array, w: Array, layout: str) -> Array:
    """hidden [B,T,d] x block -> [B,T,size] float32 (accumulated in float32)."""
    spec = "btd,dv->btv" if layout == "dv" else "btd,vd->btv"
    return jnp.einsum(spec, hidden, w, preferred_element_type=jnp.float32)


def _block_geometry(vocab: int, block_size: int) -> tuple[int, int]:
    size = min(block_size, vocab)
    return size, -(-vocab // size)


def _block_start(k: Array, size: int, vocab: int) -> tuple[Array, Array]:
    """Block k covers ids [k*size, (k+1)*size); the last block is shifted left to stay in bounds,
    and ids below `first_new` (already counted by the previous block) are masked."""
    first_new = k * size
    return jnp.minimum(first_new, vocab - size), first_new


def _masked_block(hidden, lm_head, targets, k, size, vocab, layout):
    start, first_new = _block_start(k, size, vocab)
    logits = _block_logits(hidden, _block(lm_head, start, size, layout), layout)
    ids = start + jnp.arange(size)
    fresh = ids >= first_new
    logits = jnp.where(fresh, logits, -jnp.inf)
    local = targets - start
    in_block = (targets >= first_new) & (local < size)
    return logits, local, in_block, start


HEAD_STATS = ("entropy", "mean_logit", "is_top1", "log_sum_sq_probs")


def _forward(hidden, lm_head, targets, block_size, layout, with_stats=False):
    """(log p[target] [B, T], lse [B, T], stats): one pass over the vocabulary blocks with an online
    logsumexp; ``with_stats`` also accumulates, per position, sum_v z_v, sum_v e^{z_v - m} z_v and
    sum_v e^{2 (z_v - m)} (rescaled as m grows) for `HEAD_STATS` (no [B, T, V] array)."""
    vocab = lm_head.shape[1 if layout == "dv" else 0]
    size, n_blocks = _block_geometry(vocab, block_size)
    shape = targets.shape
    zeros = jnp.zeros(shape, jnp.float32)
    init = (jnp.full(shape, -jnp.inf, jnp.float32), zeros, zeros, *((zeros,) * 3 if with_stats else ()))

    def body(carry, k):
        run_max, run_sum, tgt, *acc = carry
        logits, local, in_block, _ = _masked_block(hidden, lm_head, targets, k, size, vocab, layout)
        new_max = jnp.maximum(run_max, logits.max(-1))
        rescale = jnp.exp(run_max - new_max)
        e = jnp.exp(logits - new_max[..., None])
        run_sum = run_sum * rescale + e.sum(-1)
        picked = jnp.take_along_axis(logits, jnp.clip(local, 0, size - 1)[..., None], axis=-1)[..., 0]
        tgt = jnp.where(in_block, picked, tgt)
        if with_stats:
            z = jnp.where(jnp.isfinite(logits), logits, 0.0)  # ids of the shifted last block already counted: 0
            sum_z, sum_ez, sum_e2 = acc
            acc = [sum_z + z.sum(-1), sum_ez * rescale + (e * z).sum(-1), sum_e2 * rescale ** 2 + (e * e).sum(-1)]
        return (new_max, run_sum, tgt, *acc), None

    (run_max, run_sum, tgt, *acc), _ = jax.lax.scan(body, init, jnp.arange(n_blocks))
    lse = run_max + jnp.log(run_sum)
    stats = ()
    if with_stats:
        sum_z, sum_ez, sum_e2 = acc
        stats = (lse - sum_ez / run_sum, sum_z / vocab, (tgt >= run_max).astype(jnp.float32),
                 jnp.log(sum_e2) - 2.0 * jnp.log(run_sum))
    return tgt - lse, lse, stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _blocked_logps(hidden, lm_head, targets, block_size, layout, with_stats):
    out, _, stats = _forward(hidden, lm_head, targets, block_size, layout, with_stats)
    return out, stats


def _blocked_fwd(hidden, lm_head, targets, block_size, layout, with_stats):
    out, lse, stats = _forward(hidden, lm_head, targets, block_size, layout, with_stats)
    return (out, stats), (hidden, lm_head, targets, lse)


def _blocked_bwd(block_size, layout, with_stats, residuals, cotangents):
    """d logp[b,t] / d logits[b,t,v] = 1[v = target] - softmax(logits)[v]; recomputed block by block. The
    statistics are constants (no gradient flows through them: TRL detaches them too).

    d hidden = sum_blocks dlogits_k W_k^T, d W_k = hidden^T dlogits_k (columns of the head's gradient,
    added in place, so the overlapping last block only adds zeros to already-written columns).
    """
    hidden, lm_head, targets, lse = residuals
    g = cotangents[0]
    vocab = lm_head.shape[1 if layout == "dv" else 0]
    size, n_blocks = _block_geometry(vocab, block_size)
    g = g.astype(jnp.float32)
    axis = 1 if layout == "dv" else 0

    def body(carry, k):
        d_hidden, d_head = carry
        logits, local, in_block, start = _masked_block(hidden, lm_head, targets, k, size, vocab, layout)
        probs = jnp.exp(logits - lse[..., None])
        onehot = (jnp.arange(size) == local[..., None]) & in_block[..., None]
        d_logits = g[..., None] * (onehot.astype(jnp.float32) - probs)
        w = _block(lm_head, start, size, layout)
        d_logits_c = d_logits.astype(hidden.dtype)
        if layout == "dv":
            d_hidden = d_hidden + jnp.einsum("btv,dv->btd", d_logits_c, w, preferred_element_type=jnp.float32)
            d_w = jnp.einsum("btd,btv->dv", hidden, d_logits_c, preferred_element_type=jnp.float32)
        else:
            d_hidden = d_hidden + jnp.einsum("btv,vd->btd", d_logits_c, w, preferred_element_type=jnp.float32)
            d_w = jnp.einsum("btv,btd->vd", d_logits_c, hidden, preferred_element_type=jnp.float32)
        current = jax.lax.dynamic_slice_in_dim(d_head, start, size, axis=axis)
        d_head = jax.lax.dynamic_update_slice_in_dim(d_head, current + d_w.astype(d_head.dtype), start, axis=axis)
        return (d_hidden, d_head), None

    # Every head column is written by exactly one block (the shifted last block adds exact zeros to
    # columns it does not own), so the head's gradient can live in the head's own dtype.
    init = (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(lm_head.shape, lm_head.dtype))
    (d_hidden, d_head), _ = jax.lax.scan(body, init, jnp.arange(n_blocks))
    return d_hidden.astype(hidden.dtype), d_head, None


_blocked_logps.defvjp(_blocked_fwd, _blocked_bwd)


def token_logps_from_hidden(hidden: Array, lm_head: Array, targets: Array, *,
                            block_size: int = DEFAULT_BLOCK_SIZE, layout: str | None = None,
                            with_stats: bool = False) -> Array | tuple[Array, dict[str, Array]]:
    """log softmax(hidden @ W)[targets] in float32, blocked over the vocabulary.

    hidden [B, T, d] (final-norm hidden states, any float dtype); lm_head [d, V] (layout "dv") or the
    tied embedding [V, d] (layout "vd", used without a transpose); targets int [B, T] -> [B, T] float32.
    The layout is inferred from the shapes unless d == V. For each block of `block_size` vocabulary ids
    the logits z = hidden @ W_k (accumulated in float32) update an online logsumexp
    m' = max(m, max z), s' = s e^{m - m'} + sum e^{z - m'}; the result is z[target] - (m + log s).
    The custom VJP recomputes each block's logits, so temporaries are O(B T block_size), never
    O(B T V). Targets outside [0, V) give meaningless values that must be masked.

    ``with_stats``: returns ``(logps, stats)``, stats a dict of [B, T] float32 arrays without gradient, from
    the same pass (p = softmax(z)): ``entropy`` -sum_v p_v log p_v; ``mean_logit`` sum_v z_v / V (TRL's
    logits/* metrics); ``is_top1`` 1 where the target's logit is the largest (ties count);
    ``log_sum_sq_probs`` log sum_v p_v^2 (WPO's per-token normaliser).
    """
    if hidden.ndim != 3 or targets.shape != hidden.shape[:2]:
        raise ValueError(f"token_logps_from_hidden: hidden {hidden.shape} must be [B, T, d] with targets "
                         f"{targets.shape} = [B, T]")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int; got {block_size!r}")
    layout = _resolve_layout(hidden, lm_head, layout)
    out, stats = _blocked_logps(hidden, lm_head, targets.astype(jnp.int32), block_size, layout, with_stats)
    if not with_stats:
        return out
    return out, {name: jax.lax.stop_gradient(v) for name, v in zip(HEAD_STATS, stats, strict=True)}


def sequence_logps(token_logps: Array, loss_mask: Array) -> tuple[Array, Array]:
    """Per-sequence sums S_b = sum_t m[b,t] lp[b,t] and counts n_b = sum_t m[b,t].

    token_logps [B, T] float, loss_mask [B, T] bool/0-1 -> (sums [B] float32, counts [B] int32).
    Unscored positions are selected away with `where`, so non-finite values there cannot leak.
    """
    if token_logps.shape != loss_mask.shape:
        raise ValueError(f"sequence_logps: token_logps {token_logps.shape} and loss_mask {loss_mask.shape} differ")
    mask = loss_mask.astype(bool)
    sums = jnp.where(mask, token_logps.astype(jnp.float32), 0.0).sum(-1)
    return sums, mask.sum(-1).astype(jnp.int32)


def segment_logps(token_logps: Array, loss_mask: Array, segment_ids: Array,
                  num_segments: int) -> tuple[Array, Array]:
    """Per-segment sums and counts for packed rows (one row holds chosen, rejected and rationale).

    token_logps [B, T], loss_mask [B, T], segment_ids int [B, T] (the scored sequence each target
    belongs to, in [0, num_segments)) -> (sums [B, num_segments] float32, counts [B, num_segments] int32),
    sums[b, s] = sum_t m[b,t] 1[seg[b,t] = s] lp[b,t]. Scored targets with a segment id outside the
    range are an error in the data; here they are dropped from every segment.
    """
    if not (token_logps.shape == loss_mask.shape == segment_ids.shape):
        raise ValueError(f"segment_logps: token_logps {token_logps.shape}, loss_mask {loss_mask.shape} and "
                         f"segment_ids {segment_ids.shape} must share one [B, T] shape")
    mask = loss_mask.astype(bool)
    onehot = (segment_ids[..., None] == jnp.arange(num_segments)) & mask[..., None]
    values = jnp.where(mask, token_logps.astype(jnp.float32), 0.0)
    sums = jnp.einsum("bts,bt->bs", onehot.astype(jnp.float32), values,
                      precision=jax.lax.Precision.HIGHEST)
    return sums, onehot.sum(1).astype(jnp.int32)


def row_token_logps(model, rows: dict[str, Array], block_size: int = DEFAULT_BLOCK_SIZE, *,
                    with_stats: bool = False) -> Array | tuple[Array, dict[str, Array]]:
    """log pi(targets | row prefix) [N, T] float32 of a row batch: the model's final hidden states (with the
    rows' positions, padding and optional tree mask) -> the blocked LM head (`token_logps_from_hidden`).

    With ``score_index`` [N, W] in ``rows`` (`rdpo_jax.batch.add_score_index`) the head runs at those W
    positions of each row only (``h[n, w] = hidden[n, score_index[n, w]]``) and the log-probs are scattered
    back: positions not listed (unscored: the prompt, padding) are 0. Without it, every position is scored.
    ``with_stats``: ``(logps, stats)`` with the head's per-token statistics [N, T] (`HEAD_STATS`), scattered
    the same way.
    """
    hidden = model(rows["input_ids"], rows.get("attention_mask"), positions=rows["positions"],
                   attn_mask=rows.get("attn_mask"), return_hidden=True)
    head, layout = model.lm_head_weight()
    index = rows.get("score_index")
    if index is None:
        return token_logps_from_hidden(hidden, head, rows["targets"], block_size=block_size, layout=layout,
                                       with_stats=with_stats)
    listed = index >= 0
    safe = jnp.maximum(index, 0)
    picked = jnp.take_along_axis(hidden, safe[..., None], axis=1)  # [N, W, d]
    targets = jnp.take_along_axis(rows["targets"], safe, axis=1)
    out = token_logps_from_hidden(picked, head, targets, block_size=block_size, layout=layout,
                                  with_stats=with_stats)
    rows_idx = jnp.arange(index.shape[0])[:, None]

    def scatter(values: Array) -> Array:
        return jnp.zeros(rows["targets"].shape, jnp.float32).at[rows_idx, safe].add(jnp.where(listed, values, 0.0))

    if not with_stats:
        return scatter(out)
    return scatter(out[0]), {k: scatter(v) for k, v in out[1].items()}


def pair_sums(token_lp: Array, rows: dict[str, Array], num_pairs: int) -> tuple[Array, Array]:
    """Per-pair, per-role sums and counts [P, 3] of scored token log-probs [N, T]:
    ``sums[p, role] = sum over rows n, slots s with slot_pair[n, s] = p and slot_role[n, s] = role of
    sum_t loss_mask[n, t] [score_slot[n, t] = s] token_lp[n, t]`` (unused slots, -1, add to nothing)."""
    n_slots = rows["slot_pair"].shape[-1]
    sums, counts = segment_logps(token_lp, rows["loss_mask"], rows["score_slot"], n_slots)
    valid = (rows["slot_pair"] >= 0) & (rows["slot_role"] >= 0)
    index = jnp.where(valid, rows["slot_pair"] * NUM_ROLES + rows["slot_role"], num_pairs * NUM_ROLES).reshape(-1)
    out_sums = jax.ops.segment_sum(sums.reshape(-1), index, num_segments=num_pairs * NUM_ROLES)
    out_counts = jax.ops.segment_sum(counts.reshape(-1), index, num_segments=num_pairs * NUM_ROLES)
    return out_sums.reshape(num_pairs, NUM_ROLES), out_counts.reshape(num_pairs, NUM_ROLES)


def shared_prefix_mask(rows: dict[str, Array], counts: Array) -> Array:
    """[N, T] bool: the scored targets among the first min(n_w, n_l) scored tokens of their completion
    (LD-DPO's shared part). ``counts`` [P, 3] are `pair_sums`' counts; a target's rank is its 1-based order
    among its slot's scored targets in the row."""
    mask = rows["loss_mask"].astype(bool)
    slot = rows["score_slot"]
    n_slots = rows["slot_pair"].shape[-1]
    onehot = (slot[..., None] == jnp.arange(n_slots)) & mask[..., None]  # [N, T, S]
    rank = (jnp.cumsum(onehot, axis=1) * onehot).sum(-1)  # [N, T]
    shared_len = jnp.minimum(counts[:, Role.CHOSEN], counts[:, Role.REJECTED])  # [P]: min(n_w, n_l)
    pair = rows["slot_pair"]
    slot_limit = jnp.where(pair >= 0, shared_len[jnp.maximum(pair, 0)], 0)  # [N, S]
    limit = jnp.take_along_axis(slot_limit, jnp.clip(slot, 0, n_slots - 1), axis=1)
    return mask & (rank >= 1) & (rank <= limit)
