"""The structured attention mask of one forward and the one dense-mask builder every backend agrees with.

A forward describes what each query may see with an :class:`AttentionMask` (position ids, segment ids,
padding, an optional explicit tree mask, the sliding window) rather than only a dense boolean matrix, so a
backend that takes structured masks (splash) can use them; :func:`make_attention_mask` is the rule
(causal on position ids, so left padding, packed segments and a KV cache all use the same one).
"""
from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Structure of an attention mask (a pytree; ``sliding_window`` and ``plain_causal`` are static).

    Fields: ``q_positions`` int [B, Tq], ``k_positions`` int [B, Tk]; ``padding_mask`` 0/1 [B, Tk] or None;
    ``q_segment_ids`` [B, Tq] / ``k_segment_ids`` [B, Tk] or None; ``explicit_mask`` bool [B, Tq, Tk] or
    None (replaces causal & same-segment); ``dense`` the precomputed bool [B, 1, Tq, Tk] mask or None;
    ``sliding_window`` W or None; ``plain_causal`` True when the positions are known to be ``arange(T)``
    with no padding, segments or explicit mask (so causal on array indices is exact).
    """

    q_positions: jax.Array
    k_positions: jax.Array
    padding_mask: jax.Array | None = None
    q_segment_ids: jax.Array | None = None
    k_segment_ids: jax.Array | None = None
    explicit_mask: jax.Array | None = None
    dense: jax.Array | None = None
    sliding_window: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    plain_causal: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def to_dense(self) -> jax.Array:
        """The boolean mask [B, 1, Tq, Tk] of :func:`make_attention_mask` (cached in ``dense`` if set)."""
        if self.dense is not None:
            return self.dense
        seg = None if self.q_segment_ids is None else (self.q_segment_ids, self.k_segment_ids)
        return make_attention_mask(self.q_positions, self.k_positions, padding_mask=self.padding_mask,
                                   segment_ids=seg, sliding_window=self.sliding_window,
                                   explicit_mask=self.explicit_mask)

    def with_dense(self) -> AttentionMask:
        """A copy carrying the dense mask (built once per forward, shared by all layers)."""
        return dataclasses.replace(self, dense=self.to_dense())


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
