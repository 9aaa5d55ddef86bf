"""KV cache for batched decoding with a :class:`~rdpo_jax.models.decoder.DecoderLM`: prefill and one step.

The cache holds, per layer, the rotated keys and the values of every slot written so far:
``k``, ``v`` [L, B, S_max, KV, D] (compute dtype), with ``positions`` int [B, S_max] (the position id of
each slot) and ``valid`` bool [B, S_max] (slot holds a real token). Prompts are left padded: slots
``0..T-1`` hold the prompt (padding slots invalid), generated token i goes to slot ``T + i``, and
positions continue from each row's last real prompt position (``positions = cumsum(mask) - 1``). The
decode mask is :func:`~rdpo_jax.models.masks.make_attention_mask` on those positions (causal on
position ids, invalid slots masked, Mistral's sliding window applied on positions, as in the forward).

Prefill and decode run the forward's own code: the embedding (:meth:`DecoderLM.embed`), the one layer body
(:func:`~rdpo_jax.models.layers.decoder_layer`; only its ``kv``, where keys and values come from, and the
mask differ) and the head (:meth:`DecoderLM.final_norm`, :meth:`DecoderLM.head_logits`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rdpo_jax.models.decoder import default_positions
from rdpo_jax.models.layers import decoder_layer
from rdpo_jax.models.masks import make_attention_mask


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """k, v [L, B, S_max, KV, D]; positions int32 [B, S_max]; valid bool [B, S_max]."""

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    valid: jax.Array


def keep_keys_values(k: jax.Array, v: jax.Array) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Prefill's ``kv`` for :func:`~rdpo_jax.models.layers.decoder_layer`: attend over the prompt's own
    k, v [B, T, KV, D] and keep them (stacked over layers by the scan: [L, B, T, KV, D])."""
    return (k, v), (k, v)


def prefill(model, input_ids: jax.Array, attention_mask: jax.Array, max_len: int) -> tuple[jax.Array, KVCache]:
    """Run the left-padded prompt in one forward (:meth:`DecoderLM.run_layers`) and fill the cache.

    input_ids int [B, T], attention_mask 0/1 [B, T] (left padded: every row's last token real); ``max_len``
    S_max >= T slots. The prompt runs exactly as the model's forward (same layers, backend, positions
    ``max(cumsum(mask) - 1, 0)``). Returns the float32 logits [B, V] of the last prompt token (the model's
    final norm and head) and the cache with slots ``0..T-1`` written.
    """
    b, t = input_ids.shape
    mask = attention_mask.astype(jnp.int32)
    positions = default_positions(mask, b, t)
    x, (ks, vs) = model.run_layers(input_ids, mask, positions=positions, kv=keep_keys_values)
    grow = ((0, 0), (0, 0), (0, max_len - t), (0, 0), (0, 0))
    cache = KVCache(k=jnp.pad(ks, grow), v=jnp.pad(vs, grow),
                    positions=jnp.pad(positions, ((0, 0), (0, max_len - t))),
                    valid=jnp.pad(mask != 0, ((0, 0), (0, max_len - t))))
    return model.head_logits(model.final_norm(x[:, -1])), cache


def decode_step(model, tokens: jax.Array, positions: jax.Array, slot: jax.Array,
                cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Feed one token per row: write its k/v at ``slot`` of every layer, attend over the valid slots.

    Each layer is :func:`~rdpo_jax.models.layers.decoder_layer` (the forward's body) whose ``kv`` writes
    the new k, v [B, 1, KV, D] into the layer's cache slot and returns all S_max slots; the mask is
    :func:`~rdpo_jax.models.masks.make_attention_mask` of the new positions against the slots' (causal on
    positions, invalid slots masked, the sliding window). tokens int [B], positions int [B] (their position
    ids), slot int [] (same for all rows). Attention over the cache is the "xla" backend (one query per
    row). Returns float32 logits [B, V] and the new cache.
    """
    cfg = model.config
    slot = jnp.asarray(slot, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    kv_pos = jax.lax.dynamic_update_slice(cache.positions, positions[:, None].astype(jnp.int32), (zero, slot))
    valid = jax.lax.dynamic_update_slice(cache.valid, jnp.ones((tokens.shape[0], 1), bool), (zero, slot))
    mask = make_attention_mask(positions[:, None], kv_pos, padding_mask=valid, sliding_window=cfg.sliding_window)
    cos, sin = model.rope(positions[:, None])
    x = model.embed(tokens[:, None])

    def layer(carry, xs):
        x, ck, cv = carry
        p, i = xs

        def write(k, v):  # the layer's new k, v into slot ``slot`` of layer i; attend over all slots
            ck2 = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), (i, zero, slot, zero, zero))
            cv2 = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), (i, zero, slot, zero, zero))
            return (ck2[i], cv2[i]), (ck2, cv2)

        x, (ck, cv) = decoder_layer(p, x, cos=cos, sin=sin, mask=mask, eps=cfg.rms_norm_eps, backend="xla",
                                    kv=write)
        return (x, ck, cv), None

    layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
    (x, ck, cv), _ = jax.lax.scan(layer, (x, cache.k, cache.v), (model.layers.stacked(), layers))
    return model.head_logits(model.final_norm(x[:, 0])), KVCache(k=ck, v=cv, positions=kv_pos, valid=valid)
