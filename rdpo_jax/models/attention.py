"""Attention: one boolean-mask builder and one attention entry point with pluggable backends.

The mask is built once per forward from position ids (causal on positions, so left padding, packed
segments and a later KV cache all use the same rule) and passed to every layer. ``attend`` takes the
boolean mask; later backends (cuDNN, TPU splash) plug in behind the ``backend`` argument.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

BACKENDS = ("xla",)


def make_attention_mask(
    q_positions: jax.Array,
    k_positions: jax.Array,
    *,
    padding_mask: jax.Array | None = None,
    segment_ids: jax.Array | tuple[jax.Array, jax.Array] | None = None,
    sliding_window: int | None = None,
    explicit_mask: jax.Array | None = None,
) -> jax.Array:
    """Boolean attention mask ``M[b, 0, i, j]`` (True = query i may attend to key j), shape [B, 1, Tq, Tk].

    ``M = causal & same_segment & key_is_real & in_window`` with, for ``p = q_positions[b, i]`` and
    ``s = k_positions[b, j]``:

    - causal: ``s <= p`` (on position ids, not on array indices);
    - same_segment: ``seg_q[b, i] == seg_k[b, j]`` (``segment_ids`` is [B, T] for self-attention or a pair
      ``(seg_q [B,Tq], seg_k [B,Tk])``);
    - key_is_real: ``padding_mask[b, j] != 0`` (``padding_mask`` [B, Tk], 1 = real token);
    - in_window: ``p - W < s`` for ``sliding_window`` W (W keys visible, the query's own included), as
      transformers' Mistral.

    ``explicit_mask`` ([B, Tq, Tk] or [B, 1, Tq, Tk], boolean) replaces ``causal & same_segment`` (for
    tree-shaped packed rows); padding and the sliding window are still applied on top of it.
    """
    qp = q_positions[:, :, None]
    kp = k_positions[:, None, :]
    if explicit_mask is not None:
        mask = explicit_mask if explicit_mask.ndim == 3 else explicit_mask[:, 0]
        mask = mask.astype(bool)
    else:
        mask = kp <= qp
        if segment_ids is not None:
            sq, sk = segment_ids if isinstance(segment_ids, tuple) else (segment_ids, segment_ids)
            mask = mask & (sq[:, :, None] == sk[:, None, :])
    if padding_mask is not None:
        mask = mask & (padding_mask[:, None, :] != 0)
    if sliding_window is not None:
        mask = mask & (kp > qp - sliding_window)
    return mask[:, None, :, :]


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    backend: str = "xla",
    scale: float | None = None,
) -> jax.Array:
    """Grouped-query scaled dot-product attention.

    ``out[b,i,h] = sum_j softmax_j(scale * q[b,i,h] . k[b,j,h//G] masked by mask[b,0,i,j]) v[b,j,h//G]``
    with ``G = H / KV`` query heads per key/value head (query head h uses kv head ``h // G``, as
    transformers' ``repeat_kv``) and ``scale = 1/sqrt(D)`` by default. Scores and softmax are float32;
    probabilities are cast to ``v.dtype`` before the value product. A query row with no visible key gets
    finite (uniform) weights, never NaN.

    Shapes: q [B, Tq, H, D], k and v [B, Tk, KV, D], mask boolean [B, 1, Tq, Tk] (or broadcastable);
    returns [B, Tq, H, D] in q's dtype.
    """
    if backend != "xla":
        raise ValueError(f"attention backend {backend!r} is not supported; accepted: {BACKENDS}")
    b, tq, h, d = q.shape
    kvh = k.shape[2]
    if h % kvh:
        raise ValueError(f"query heads {h} must be a multiple of key/value heads {kvh}")
    g = h // kvh
    scale = d ** -0.5 if scale is None else scale
    qg = q.reshape(b, tq, kvh, g, d)
    scores = jnp.einsum("bikgd,bjkd->bkgij", qg, k, preferred_element_type=jnp.float32)
    scores = scores.astype(jnp.float32) * scale
    big_neg = jnp.finfo(jnp.float32).min
    scores = jnp.where(mask[:, :, None, :, :], scores, big_neg)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgij,bjkd->bikgd", probs, v)
    return out.reshape(b, tq, h, d).astype(q.dtype)
