"""KV cache for batched decoding with a :class:`~rdpo_jax.models.decoder.DecoderLM`: prefill and one step.

The cache holds, per layer, the rotated keys and the values of every slot written so far:
``k``, ``v`` [L, B, S_max, KV, D] (compute dtype), with ``positions`` int [B, S_max] (the position id of
each slot) and ``valid`` bool [B, S_max] (slot holds a real token). Prompts are left padded: slots
``0..T-1`` hold the prompt (padding slots invalid), generated token i goes to slot ``T + i``, and
positions continue from each row's last real prompt position (``positions = cumsum(mask) - 1``). The
decode mask is :func:`~rdpo_jax.models.attention.make_attention_mask` on those positions (causal on
position ids, invalid slots masked, Mistral's sliding window applied on positions, as in the forward).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rdpo_jax.models.attention import attend, resolve_backend
from rdpo_jax.models.decoder import prepare_mask
from rdpo_jax.models.layers import apply_rope, rms_norm, rope_cos_sin, swiglu_mlp
from rdpo_jax.models.masks import make_attention_mask


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """k, v [L, B, S_max, KV, D]; positions int32 [B, S_max]; valid bool [B, S_max]."""

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    valid: jax.Array


def _qkv(p: dict[str, jax.Array], x: jax.Array, cos: jax.Array, sin: jax.Array, eps: float):
    """The attention half of :func:`rdpo_jax.models.layers.decoder_layer` up to the rotated q, k and v.

    x [B, T, d]; returns q [B, T, H, D], k and v [B, T, KV, D]."""
    dt = x.dtype
    h = rms_norm(x, p["input_norm"], eps)
    q = jnp.einsum("btd,dhk->bthk", h, p["q_proj"].astype(dt))
    k = jnp.einsum("btd,dhk->bthk", h, p["k_proj"].astype(dt))
    v = jnp.einsum("btd,dhk->bthk", h, p["v_proj"].astype(dt))
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def _finish(p: dict[str, jax.Array], x: jax.Array, a: jax.Array, eps: float) -> jax.Array:
    """The rest of the layer: ``h = x + a W_o``, ``out = h + MLP(RMS(h))``; x [B,T,d], a [B,T,H,D]."""
    x = x + jnp.einsum("bthk,hkd->btd", a, p["o_proj"].astype(x.dtype))
    h = rms_norm(x, p["post_attn_norm"], eps)
    return x + swiglu_mlp(h, p["gate_proj"], p["up_proj"], p["down_proj"])


def last_logits(model, h: jax.Array) -> jax.Array:
    """float32 logits [B, V] of final hidden states h [B, d] (before the final norm)."""
    h = rms_norm(h, model.norm[...], model.config.rms_norm_eps)
    w, layout = model.lm_head_weight()
    eq = "bd,dv->bv" if layout == "dv" else "bd,vd->bv"
    return jnp.einsum(eq, h, w.astype(h.dtype), preferred_element_type=jnp.float32).astype(jnp.float32)


def prefill(model, input_ids: jax.Array, attention_mask: jax.Array, max_len: int) -> tuple[jax.Array, KVCache]:
    """Run the left-padded prompt in one forward and fill the cache.

    input_ids int [B, T], attention_mask 0/1 [B, T] (left padded: every row's last token real); ``max_len``
    S_max >= T slots. Prompt attention uses the model's backend (as its forward). Returns the logits
    [B, V] of the last prompt token and the cache with slots ``0..T-1`` written.
    """
    cfg = model.config
    b, t = input_ids.shape
    mask = attention_mask.astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
    spec = model.make_mask(positions, mask)
    backend = resolve_backend(model.attention_backend, spec, dtype=model.dtype, head_dim=cfg.head_dim)
    spec = prepare_mask(spec, backend)
    cos, sin = rope_cos_sin(positions, jnp.asarray(cfg.rope_inv_freq()), model.dtype)
    x = jnp.take(model.embed_tokens[...], input_ids, axis=0).astype(model.dtype)

    def layer(x, p):
        q, k, v = _qkv(p, x, cos, sin, cfg.rms_norm_eps)
        a = attend(q, k, v, spec, backend=backend)
        return _finish(p, x, a, cfg.rms_norm_eps), (k, v)

    x, (ks, vs) = jax.lax.scan(layer, x, model.layers.stacked())
    grow = ((0, 0), (0, 0), (0, max_len - t), (0, 0), (0, 0))
    cache = KVCache(k=jnp.pad(ks, grow), v=jnp.pad(vs, grow),
                    positions=jnp.pad(positions, ((0, 0), (0, max_len - t))),
                    valid=jnp.pad(mask != 0, ((0, 0), (0, max_len - t))))
    return last_logits(model, x[:, -1]), cache


def decode_step(model, tokens: jax.Array, positions: jax.Array, slot: jax.Array,
                cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Feed one token per row: write its k/v at ``slot`` of every layer, attend over the valid slots.

    tokens int [B], positions int [B] (their position ids), slot int [] (same for all rows). Attention
    over the cache is the "xla" backend (one query per row). Returns logits [B, V] and the new cache.
    """
    cfg = model.config
    slot = jnp.asarray(slot, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    kv_pos = jax.lax.dynamic_update_slice(cache.positions, positions[:, None].astype(jnp.int32), (zero, slot))
    valid = jax.lax.dynamic_update_slice(cache.valid, jnp.ones((tokens.shape[0], 1), bool), (zero, slot))
    mask = make_attention_mask(positions[:, None], kv_pos, padding_mask=valid, sliding_window=cfg.sliding_window)
    cos, sin = rope_cos_sin(positions[:, None], jnp.asarray(cfg.rope_inv_freq()), model.dtype)
    x = jnp.take(model.embed_tokens[...], tokens[:, None], axis=0).astype(model.dtype)

    def layer(carry, xs):
        x, ck, cv = carry
        p, i = xs
        q, k, v = _qkv(p, x, cos, sin, cfg.rms_norm_eps)
        ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), (i, zero, slot, zero, zero))
        cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), (i, zero, slot, zero, zero))
        a = attend(q, ck[i], cv[i], mask, backend="xla")
        return (_finish(p, x, a, cfg.rms_norm_eps), ck, cv), None

    layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
    (x, ck, cv), _ = jax.lax.scan(layer, (x, cache.k, cache.v), (model.layers.stacked(), layers))
    return last_logits(model, x[:, 0]), KVCache(k=ck, v=cv, positions=kv_pos, valid=valid)
