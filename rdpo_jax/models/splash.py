"""TPU splash attention (``jax.experimental.pallas.ops.tpu.splash_attention``) behind :func:`attend`.

Splash takes a *static* mask (here causal, or causal with a local window of W keys, on array indices) plus
*segment ids*; nothing else. So this backend handles causal rows, left/right padding (padding tokens get
their own segment id) and segment-packed rows whose positions are ``arange`` per segment (checked by
:func:`rdpo_jax.models.attention.check_splash_positions`), not explicit tree masks.

Under a mesh in context (the sharded training step, :func:`rdpo_jax.sharding.under_mesh`) the kernels run
inside ``jax.shard_map`` over the batch axes (rows) and the tensor axis (heads): each device calls them on
its own rows and heads, which is what a Pallas kernel needs (it cannot be partitioned by XLA).

Layout: the kernel works per example on q [G, T, D] against a single k/v head [T, D] (its MQA form); we
``vmap`` it over the KV heads (grouped-query attention) and the batch. T is padded to a multiple of the
block size with a padding segment. The kernel does not scale q, so q is multiplied by ``scale`` first.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rdpo_jax.models.masks import AttentionMask
from rdpo_jax.models.partitioning import activation_spec, context_mesh

PAD_SEGMENT = jnp.iinfo(jnp.int32).min  # segment id of padding tokens and of the block-size tail


def _block(t: int) -> int:
    for b in (512, 256, 128):
        if t % b == 0:
            return b
    return 128


def _padded_length(t: int) -> int:
    """T rounded up to a multiple of 128 (the kernels' smallest block)."""
    return -(-t // 128) * 128


@functools.lru_cache(maxsize=32)
def _kernel(t_pad: int, group: int, window: int | None, interpret: bool):
    """The splash kernel for sequence length ``t_pad``, ``group`` query heads per kv head and window W."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    if window is None:
        one = sa.CausalMask((t_pad, t_pad))
    else:  # keys j with i - (W - 1) <= j <= i: causal plus the window, W keys including the query's own
        one = sa.LocalMask((t_pad, t_pad), window_size=(window - 1, 0), offset=0)
    mask = sa.MultiHeadMask([one] * group)
    blk = _block(t_pad)
    sizes = sa.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk, block_kv_dkv=blk,
                          block_kv_dkv_compute=blk, block_q_dq=blk, block_kv_dq=blk)
    with jax.ensure_compile_time_eval():  # concrete mask-info arrays, safe to cache across traces
        return sa.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)


def splash_attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, scale: float,
                  interpret: bool = False) -> jax.Array:
    """Causal (+ window) + segment attention with the splash kernels, per device under a mesh in context.

    q [B, T, H, D], k/v [B, T, KV, D]; ``mask`` an :class:`AttentionMask` without an explicit mask whose
    positions are arange per segment (not re-checked here). Returns [B, T, H, D] in q's dtype. Under a mesh,
    rows split over the batch axes and heads over the tensor axis (kept whole when the query or the kv heads
    do not divide over it).
    """
    # built here, outside shard_map: a kernel first built inside it would be cached with manual shardings
    kernel = _kernel(_padded_length(q.shape[1]), q.shape[2] // k.shape[2], mask.sliding_window, interpret)
    local = functools.partial(_splash_local, kernel=kernel, scale=scale)
    mesh = context_mesh()
    if mesh is None:
        return local(q, k, v, mask)
    q_spec = activation_spec(("batch", None, "heads", None), q.shape, mesh)
    kv_spec = activation_spec(("batch", None, "heads", None), k.shape, mesh)
    if q_spec[2] != kv_spec[2]:  # grouped heads must stay together: shard both or neither
        q_spec = kv_spec = activation_spec(("batch", None, None, None), q.shape, mesh)
    mask_specs = jax.tree.map(lambda x: activation_spec(("batch",) + (None,) * (x.ndim - 1), x.shape, mesh), mask)
    return jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, mask_specs), out_specs=q_spec,
                         check_vma=False)(q, k, v, mask)


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, kernel, scale: float
                  ) -> jax.Array:
    """:func:`splash_attend` on the rows and heads at hand (one device's, under a mesh)."""
    b, t, h, d = q.shape
    kvh = k.shape[2]
    g = h // kvh
    t_pad = _padded_length(t)
    seg = jnp.zeros((b, t), jnp.int32) if mask.q_segment_ids is None else mask.q_segment_ids.astype(jnp.int32)
    if mask.padding_mask is not None:
        seg = jnp.where(mask.padding_mask != 0, seg, PAD_SEGMENT)
    pad = t_pad - t
    if pad:
        seg = jnp.pad(seg, ((0, 0), (0, pad)), constant_values=PAD_SEGMENT)
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
    qs = (q * jnp.asarray(scale, q.dtype)).reshape(b, t_pad, kvh, g, d).transpose(0, 2, 3, 1, 4)  # [B,KV,G,T,D]
    ks, vs = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, T, D]

    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    def one_head(qh, kh, vh, s):
        return kernel(qh, kh, vh, segment_ids=SegmentIds(s, s))

    per_heads = jax.vmap(one_head, in_axes=(0, 0, 0, None))
    out = jax.vmap(per_heads)(qs, ks, vs, seg)  # [B, KV, G, T, D]
    out = out.transpose(0, 3, 1, 2, 4).reshape(b, t_pad, h, d)
    return out[:, :t].astype(q.dtype)
