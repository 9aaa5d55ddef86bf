"""Pure building blocks of the decoder: RMSNorm, rotary embeddings, SwiGLU MLP and one decoder layer.

The layer is a pure function of a dict of per-layer weights, so the decoder can ``jax.lax.scan`` it
over the stacked (leading ``layers`` axis) parameters and wrap it in ``jax.checkpoint``.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from rdpo_jax.models.attention import attend

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


def decoder_layer(
    p: dict[str, jax.Array],
    x: jax.Array,
    *,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    eps: float,
    backend: str = "xla",
) -> jax.Array:
    """One pre-norm Llama/Mistral layer: ``h = x + Attn(RMS(x))``, ``out = h + MLP(RMS(h))``.

    ``p`` holds one layer's weights: input_norm [d], q_proj [d,H,D], k_proj/v_proj [d,KV,D],
    o_proj [H,D,d], post_attn_norm [d], gate_proj/up_proj [d,F], down_proj [F,d]. x [B,T,d] in the
    compute dtype; cos/sin [B,T,D]; mask boolean [B,1,T,T]. Returns [B,T,d].
    """
    dt = x.dtype
    h = rms_norm(x, p["input_norm"], eps)
    q = jnp.einsum("btd,dhk->bthk", h, p["q_proj"].astype(dt))
    k = jnp.einsum("btd,dhk->bthk", h, p["k_proj"].astype(dt))
    v = jnp.einsum("btd,dhk->bthk", h, p["v_proj"].astype(dt))
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    a = attend(q, k, v, mask, backend=backend)
    x = x + jnp.einsum("bthk,hkd->btd", a, p["o_proj"].astype(dt))
    h = rms_norm(x, p["post_attn_norm"], eps)
    return x + swiglu_mlp(h, p["gate_proj"], p["up_proj"], p["down_proj"])


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
