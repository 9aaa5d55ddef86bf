"""Pure building blocks of the decoder: RMSNorm, rotary embeddings, SwiGLU MLP and one decoder layer.

The layer is a pure function of a dict of per-layer weights, so the decoder can ``jax.lax.scan`` it
over the stacked (leading ``layers`` axis) parameters and wrap it in ``jax.checkpoint``. Its two halves,
:func:`qkv_with_rope` and :func:`output_and_mlp`, and :func:`decoder_layer` around them are what the full
forward and the KV cache (:mod:`rdpo_jax.models.kv_cache`) both run; they differ only in the keys and
values attended over and the mask.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rdpo_jax.models.attention import attend
from rdpo_jax.models.masks import AttentionMask

# Remat policy names -> jax.checkpoint policy (None = save nothing, recompute the whole layer).
REMAT_POLICIES: dict[str, Callable | None] = {
    "full": None,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_all_dots": jax.checkpoint_policies.dots_saveable,
}


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """``w * (x / sqrt(mean(x^2, -1) + eps))``; the statistic is float32, the product in x's dtype.

    x [..., d], weight [d]; as transformers: the normalised value is cast back to x's dtype before
    multiplying by the weight.
    """
    xf = x.astype(jnp.float32)
    var = jnp.mean(xf * xf, axis=-1, keepdims=True)
    normed = (xf * jax.lax.rsqrt(var + eps)).astype(x.dtype)
    return weight.astype(x.dtype) * normed


def rope_cos_sin(positions: jax.Array, inv_freq: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """Rotary tables: ``angle[b,t,i] = positions[b,t] * inv_freq[i]`` in float32, duplicated to D.

    positions int [B, T], inv_freq [D/2]; returns cos, sin [B, T, D] cast to ``dtype``.
    """
    ang = positions.astype(jnp.float32)[..., None] * inv_freq.astype(jnp.float32)
    emb = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """``x * cos + rotate_half(x) * sin`` with ``rotate_half([a, b]) = [-b, a]`` (halves of the head dim).

    x [B, T, H, D], cos/sin [B, T, D]; returns [B, T, H, D].
    """
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rot * sin[:, :, None, :]


def swiglu_mlp(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array) -> jax.Array:
    """``(silu(x W_gate) * (x W_up)) W_down``; x [B,T,d], gate/up [d,F], down [F,d]; returns [B,T,d]."""
    g = jnp.einsum("btd,df->btf", x, gate.astype(x.dtype))
    u = jnp.einsum("btd,df->btf", x, up.astype(x.dtype))
    return jnp.einsum("btf,fd->btd", jax.nn.silu(g) * u, down.astype(x.dtype))


def qkv_with_rope(p: dict[str, jax.Array], x: jax.Array, cos: jax.Array, sin: jax.Array, eps: float
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The attention inputs of one layer: ``h = RMS(x)``, ``q = rope(h W_q)``, ``k = rope(h W_k)``, ``v = h W_v``.

    x [B, T, d] (compute dtype), cos/sin [B, T, D] of the tokens' positions; returns q [B, T, H, D] and
    k, v [B, T, KV, D] (grouped-query heads stay grouped: :func:`~rdpo_jax.models.attention.attend` maps
    query head h to kv head ``h // (H / KV)``).
    """
    dt = x.dtype
    h = rms_norm(x, p["input_norm"], eps)
    q = jnp.einsum("btd,dhk->bthk", h, p["q_proj"].astype(dt))
    k = jnp.einsum("btd,dhk->bthk", h, p["k_proj"].astype(dt))
    v = jnp.einsum("btd,dhk->bthk", h, p["v_proj"].astype(dt))
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def output_and_mlp(p: dict[str, jax.Array], x: jax.Array, a: jax.Array, eps: float) -> jax.Array:
    """The rest of one layer after attention: ``h = x + a W_o``, ``out = h + MLP(RMS(h))``.

    x [B, T, d] the layer input (the residual), a [B, T, H, D] the attention output; returns [B, T, d].
    """
    x = x + jnp.einsum("bthk,hkd->btd", a, p["o_proj"].astype(x.dtype))
    h = rms_norm(x, p["post_attn_norm"], eps)
    return x + swiglu_mlp(h, p["gate_proj"], p["up_proj"], p["down_proj"])


def own_keys_values(k: jax.Array, v: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
    """The default ``kv`` of :func:`decoder_layer`: attend over the layer's own tokens, nothing kept."""
    return (k, v), None


def decoder_layer(
    p: dict[str, jax.Array],
    x: jax.Array,
    *,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array | AttentionMask,
    eps: float,
    backend: str = "xla",
    kv: Callable = own_keys_values,
) -> tuple[jax.Array, Any]:
    """One pre-norm Llama/Mistral layer: ``h = x + Attn(RMS(x))``, ``out = h + MLP(RMS(h))``.

    The one layer body of the full forward, the KV-cache prefill and the decode step: q, k, v from
    :func:`qkv_with_rope`, then ``kv(k, v) -> ((keys, values), aux)`` says what the queries attend over
    (:func:`own_keys_values`: the layer's own tokens; a KV cache writes k, v into its slots and returns all
    of them), then :func:`~rdpo_jax.models.attention.attend` under ``mask`` and :func:`output_and_mlp`.

    ``p`` holds one layer's weights: input_norm [d], q_proj [d,H,D], k_proj/v_proj [d,KV,D],
    o_proj [H,D,d], post_attn_norm [d], gate_proj/up_proj [d,F], down_proj [F,d]. x [B,T,d] in the
    compute dtype; cos/sin [B,T,D]; keys/values [B,S,KV,D]; mask boolean [B,1,T,S] or an AttentionMask.
    Returns ``(out [B,T,d], aux)`` with ``aux`` what ``kv`` returned beside the keys and values.
    """
    q, k, v = qkv_with_rope(p, x, cos, sin, eps)
    (keys, values), aux = kv(k, v)
    a = attend(q, keys, values, mask, backend=backend)
    return output_and_mlp(p, x, a, eps), aux


def remat_layer(fn: Callable, policy: str) -> Callable:
    """Wrap a layer function in ``jax.checkpoint`` per policy: "none", "full", "save_dots", "save_all_dots".

    "save_dots" keeps matmul outputs without batch dimensions (the projections) and recomputes the
    rest (attention scores, norms, activations) in the backward pass.
    """
    if policy == "none":
        return fn
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat policy {policy!r} is not supported; accepted: {('none', *REMAT_POLICIES)}")
    return jax.checkpoint(fn, policy=REMAT_POLICIES[policy])
