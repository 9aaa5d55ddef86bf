"""Memory-efficient attention in plain XLA: query and key blocks, an online softmax, and a backward pass that
recomputes each block's probabilities instead of keeping them (the flash-attention algorithm, written with
``jax.lax.scan`` so it runs on every platform).

For queries i in one block and keys j in one block, with ``s_ij = scale * q_i . k_j`` (float32) and the
mask ``M`` (:func:`~rdpo_jax.models.masks.make_attention_mask` applied to the block's slices, so every
backend shares one rule), the forward keeps per query row a running maximum ``m``, a running sum ``l`` and
an accumulator ``acc``:

    s_ij <- s_ij where M_ij else BIG_NEG             (masked, as the dense reference)
    m'   =  max(m, max_j s_ij)
    l    <- l * exp(m - m') + sum_j exp(s_ij - m')
    acc  <- acc * exp(m - m') + sum_j exp(s_ij - m') v_j
    out  =  acc / l

so ``out`` equals ``softmax(s) v`` of the dense path, including its uniform weights over all keys for a query
that sees no key. The backward, with ``p_ij = exp(s_ij - m_i) / l_i`` recomputed block by block,
``D_i = sum_d dout_id out_id`` and ``ds_ij = p_ij (dout_i . v_j - D_i)`` where ``M_ij`` (0 elsewhere):

    dq_i = scale * sum_j ds_ij k_j,   dk_j = scale * sum_i ds_ij q_i,   dv_j = sum_i p_ij dout_i.

Nothing of size [Tq, Tk] is ever held: per (query block, key block) pair the scores are [B, KV, G, bq, bk];
the residuals kept for the backward are q, k, v, out and m, l [B, KV, G, Tq]. Sequence lengths that are not
multiples of the block are padded; the padded keys get score -inf (weight exactly 0, even for a query that
sees no real key) and the padded queries are cut off.

Shapes: q [B, Tq, H, D], k and v [B, Tk, KV, D] (grouped-query: head h reads kv head ``h // (H / KV)``),
as :func:`rdpo_jax.models.attention.attend`.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rdpo_jax.models.masks import AttentionMask, make_attention_mask

BIG_NEG = float(jnp.finfo(jnp.float32).min)  # the fill of masked scores (as the dense reference)
DEFAULT_BLOCK = 512  # query and key block length; a sequence up to this long is one block


def _pad_to(x: jax.Array | None, axis: int, length: int, value=0) -> jax.Array | None:
    if x is None or x.shape[axis] == length:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _blocks(x: jax.Array | None, axis: int, block: int) -> jax.Array | None:
    """Split ``axis`` (a multiple of ``block``) into [n, block] and move n to the front."""
    if x is None:
        return None
    n = x.shape[axis] // block
    x = x.reshape(*x.shape[:axis], n, block, *x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)


def _mask_parts(mask: AttentionMask | jax.Array, b: int, tq: int, tk: int, tq_pad: int, tk_pad: int, bq: int,
                bk: int):
    """The mask's arrays cut into blocks: (query parts [nq, ...], key parts [nk, ...], pair parts [nq, nk, ...]).

    A dense boolean mask (broadcastable to [B, 1, Tq, Tk]) is treated as an explicit mask with no causal rule."""
    if not isinstance(mask, AttentionMask):
        dense = jnp.broadcast_to(mask, (b, 1, tq, tk))[:, 0].astype(bool)
        pos_q = jnp.zeros((b, tq_pad), jnp.int32)
        pos_k = jnp.zeros((b, tk_pad), jnp.int32)
        mask = AttentionMask(q_positions=pos_q, k_positions=pos_k, explicit_mask=dense)
    explicit = mask.explicit_mask
    if explicit is not None:
        explicit = explicit if explicit.ndim == 3 else explicit[:, 0]
        explicit = _pad_to(_pad_to(explicit.astype(bool), 1, tq_pad, False), 2, tk_pad, False)
        explicit = _blocks(_blocks(explicit, 1, bq), 3, bk)  # [nk, nq, B, bq, bk]
        explicit = jnp.swapaxes(explicit, 0, 1)  # [nq, nk, B, bq, bk]
    query = {"pos": _blocks(_pad_to(mask.q_positions, 1, tq_pad), 1, bq),
             "seg": _blocks(_pad_to(mask.q_segment_ids, 1, tq_pad), 1, bq)}
    key = {"pos": _blocks(_pad_to(mask.k_positions, 1, tk_pad), 1, bk),
           "seg": _blocks(_pad_to(mask.k_segment_ids, 1, tk_pad), 1, bk),
           "pad": _blocks(_pad_to(mask.padding_mask, 1, tk_pad), 1, bk),
           "real": _blocks(jnp.broadcast_to(jnp.arange(tk_pad) < tk, (1, tk_pad)), 1, bk)}
    return query, key, explicit, mask.sliding_window


def _block_visible(qp, kp, explicit, window):
    """Mask [B, 1, 1, bq, bk] of one block (the shared rule) and the in-range keys [1, 1, 1, 1, bk]."""
    seg = None if qp["seg"] is None else (qp["seg"], kp["seg"])
    visible = make_attention_mask(qp["pos"], kp["pos"], padding_mask=kp["pad"], segment_ids=seg,
                                  sliding_window=window, explicit_mask=explicit)
    return visible[:, :, None], kp["real"][:, None, None, None, :]


def _scores(qb, kb, scale, visible, real):
    """Masked float32 scores [B, KV, G, bq, bk] of q block [B, bq, KV, G, D] against k block [B, bk, KV, D]."""
    s = jnp.einsum("bikgd,bjkd->bkgij", qb, kb, preferred_element_type=jnp.float32) * scale
    s = jnp.where(visible, s, BIG_NEG)
    return jnp.where(real, s, -jnp.inf)


def _forward(q, k, v, query, key, explicit, window, scale):
    """Blocked forward: q [nq, B, bq, KV, G, D], k/v [nk, B, bk, KV, D] -> out like q (q's dtype), m, l
    [nq, B, KV, G, bq] float32."""
    nq, b, bq, kvh, g, d = q.shape

    def per_query_block(_, xs):
        qb, qp, expl_row = xs

        def per_key_block(carry, ys):
            m, l, acc = carry
            kb, vb, kp, expl = ys
            visible, real = _block_visible(qp, kp, expl, window)
            s = _scores(qb, kb, scale, visible, real)
            m_new = jnp.maximum(m, s.max(-1))
            corr = jnp.exp(m - m_new)
            p = jnp.exp(s - m_new[..., None])
            l = l * corr + p.sum(-1)
            pv = jnp.einsum("bkgij,bjkd->bkgid", p.astype(v.dtype), vb, preferred_element_type=jnp.float32)
            return (m_new, l, acc * corr[..., None] + pv), None

        init = (jnp.full((b, kvh, g, bq), -jnp.inf, jnp.float32), jnp.zeros((b, kvh, g, bq), jnp.float32),
                jnp.zeros((b, kvh, g, bq, d), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(per_key_block, init, (k, v, key, expl_row))
        out = jnp.moveaxis(acc / l[..., None], 3, 1)  # [B, bq, KV, G, D]
        return None, (out.astype(q.dtype), m, l)

    _, (out, m, l) = jax.lax.scan(per_query_block, None, (q, query, explicit))
    return out, m, l


def _backward(q, k, v, out, m, l, dout, query, key, explicit, window, scale):
    """Blocked backward (shapes as :func:`_forward`); returns dq, dk, dv in q's, k's and v's dtypes."""
    delta = jnp.einsum("nbikgd,nbikgd->nbkgi", dout.astype(jnp.float32), out.astype(jnp.float32))
    expl_by_key = None if explicit is None else jnp.moveaxis(explicit, 1, 0)  # [nk, nq, ...]

    def per_key_block(dq, xs):
        kb, vb, kp, expl_col = xs

        def per_query_block(carry, ys):
            dk, dv = carry
            qb, qp, mb, lb, dob, db, expl = ys
            visible, real = _block_visible(qp, kp, expl, window)
            s = _scores(qb, kb, scale, visible, real)
            p = jnp.exp(s - mb[..., None]) / lb[..., None]
            dv = dv + jnp.einsum("bkgij,bikgd->bjkd", p.astype(dob.dtype), dob, preferred_element_type=jnp.float32)
            dp = jnp.einsum("bikgd,bjkd->bkgij", dob, vb, preferred_element_type=jnp.float32)
            ds = jnp.where(visible & real, p * (dp - db[..., None]), 0.0) * scale
            dk = dk + jnp.einsum("bkgij,bikgd->bjkd", ds.astype(qb.dtype), qb, preferred_element_type=jnp.float32)
            dq_block = jnp.einsum("bkgij,bjkd->bikgd", ds.astype(kb.dtype), kb, preferred_element_type=jnp.float32)
            return (dk, dv), dq_block

        zeros = jnp.zeros(kb.shape, jnp.float32)
        (dk, dv), dq_blocks = jax.lax.scan(per_query_block, (zeros, zeros),
                                           (q, query, m, l, dout, delta, expl_col))
        return dq + dq_blocks, (dk.astype(k.dtype), dv.astype(v.dtype))

    dq, (dk, dv) = jax.lax.scan(per_key_block, jnp.zeros(q.shape, jnp.float32), (k, v, key, expl_by_key))
    return dq.astype(q.dtype), dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _attend_blocks(q, k, v, query, key, explicit, window, scale):
    return _forward(q, k, v, query, key, explicit, window, scale)[0]


def _attend_blocks_fwd(q, k, v, query, key, explicit, window, scale):
    out, m, l = _forward(q, k, v, query, key, explicit, window, scale)
    return out, (q, k, v, out, m, l, query, key, explicit)


def _attend_blocks_bwd(window, scale, residuals, dout):
    q, k, v, out, m, l, query, key, explicit = residuals
    dq, dk, dv = _backward(q, k, v, out, m, l, dout, query, key, explicit, window, scale)
    return dq, dk, dv, None, None, None


_attend_blocks.defvjp(_attend_blocks_fwd, _attend_blocks_bwd)


def block_length(t: int, block: int) -> int:
    """The block used for a sequence of ``t``: ``t`` itself up to ``block``, else ``block``."""
    return t if t <= block else block


def chunked_attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask | jax.Array, *, scale: float,
                   q_block: int = DEFAULT_BLOCK, k_block: int = DEFAULT_BLOCK) -> jax.Array:
    """Grouped-query attention equal to the dense reference, in blocks (see the module docstring).

    q [B, Tq, H, D], k/v [B, Tk, KV, D], ``mask`` an :class:`AttentionMask` or a boolean [B, 1, Tq, Tk]
    array; returns [B, Tq, H, D] in q's dtype. Differentiable in q, k, v (memory-lean custom VJP).
    """
    b, tq, h, d = q.shape
    tk, kvh = k.shape[1], k.shape[2]
    g = h // kvh
    bq, bk = block_length(tq, q_block), block_length(tk, k_block)
    tq_pad, tk_pad = bq * math.ceil(tq / bq), bk * math.ceil(tk / bk)
    query, key, explicit, window = _mask_parts(mask, b, tq, tk, tq_pad, tk_pad, bq, bk)
    qb = _blocks(_pad_to(q, 1, tq_pad).reshape(b, tq_pad, kvh, g, d), 1, bq)
    kb = _blocks(_pad_to(k, 1, tk_pad), 1, bk)
    vb = _blocks(_pad_to(v, 1, tk_pad), 1, bk)
    out = _attend_blocks(qb, kb, vb, query, key, explicit, window, scale)  # [nq, B, bq, KV, G, D]
    out = jnp.moveaxis(out, 0, 1).reshape(b, tq_pad, h, d)
    return out[:, :tq]
