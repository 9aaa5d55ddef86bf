"""The Llama/Mistral decoder as a Flax NNX module, with all layers stacked and run under ``jax.lax.scan``.

Parameter tree (logical axis names in brackets; L layers, d width, H/KV heads of D, F mlp, V vocab):

- ``embed_tokens`` [V, d] ("vocab", "embed")
- ``layers.input_norm``, ``layers.post_attn_norm`` [L, d] ("layers", "embed")
- ``layers.q_proj`` [L, d, H, D] ("layers", "embed", "heads", "head_dim"); ``k_proj``/``v_proj``
  [L, d, KV, D] ("layers", "embed", "kv_heads", "head_dim"); ``o_proj`` [L, H, D, d]
  ("layers", "heads", "head_dim", "embed")
- ``layers.gate_proj``/``up_proj`` [L, d, F] ("layers", "embed", "mlp"); ``down_proj`` [L, F, d]
  ("layers", "mlp", "embed")
- ``norm`` [d] ("embed",); ``lm_head`` [d, V] ("embed", "vocab"), absent when embeddings are tied.

The forward is ``logits = head_logits(final_norm(run_layers(embed(ids))))``: :meth:`DecoderLM.embed`,
:meth:`DecoderLM.run_layers` (the one layer body, :func:`~rdpo_jax.models.layers.decoder_layer`, scanned),
:meth:`DecoderLM.final_norm` and :meth:`DecoderLM.head_logits`; the KV cache (:mod:`rdpo_jax.models.kv_cache`)
calls the same methods and layer body.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rdpo_jax.models.attention import check_splash_positions, resolve_backend
from rdpo_jax.models.config import ModelConfig
from rdpo_jax.models.layers import decoder_layer, own_keys_values, remat_layer, rms_norm, rope_cos_sin
from rdpo_jax.models.masks import AttentionMask
from rdpo_jax.models.partitioning import constrain_activation, make_param

ROW_ACTIVATION = ("batch", None, None)  # logical names of a layer's input/output [B, T, d]
LAYER_PARAMS = ("input_norm", "q_proj", "k_proj", "v_proj", "o_proj", "post_attn_norm", "gate_proj",
                "up_proj", "down_proj")


def layer_param_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """Per-layer shape (without the leading L) and logical names of each stacked layer parameter."""
    d, h, kv, hd, f = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    return {
        "input_norm": ((d,), ("embed",)),
        "q_proj": ((d, h, hd), ("embed", "heads", "head_dim")),
        "k_proj": ((d, kv, hd), ("embed", "kv_heads", "head_dim")),
        "v_proj": ((d, kv, hd), ("embed", "kv_heads", "head_dim")),
        "o_proj": ((h, hd, d), ("heads", "head_dim", "embed")),
        "post_attn_norm": ((d,), ("embed",)),
        "gate_proj": ((d, f), ("embed", "mlp")),
        "up_proj": ((d, f), ("embed", "mlp")),
        "down_proj": ((f, d), ("mlp", "embed")),
    }


def default_positions(attention_mask: jax.Array | None, batch: int, length: int) -> jax.Array:
    """Position ids int32 [B, T]: ``max(cumsum(attention_mask) - 1, 0)`` (left padding starts real tokens at
    0), or ``arange(T)`` per row without a mask."""
    if attention_mask is not None:
        return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))


def prepare_mask(mask: AttentionMask, backend: str) -> AttentionMask:
    """Per-forward work before the layer scan: "xla-dense" builds the dense mask once (shared by all layers);
    "cudnn" builds it unless the row is plain causal (cuDNN's own causal/window mask); splash checks that
    positions are arange per segment; "xla" (blocked) builds each block's mask where it is used."""
    if backend == "xla-dense" or (backend == "cudnn" and not mask.plain_causal):
        return mask.with_dense()
    if backend in ("splash", "splash-interpret"):
        check_splash_positions(mask)
    return mask


class DecoderLayers(nnx.Module):
    """All L decoder layers as stacked parameters with a leading "layers" axis."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        std = cfg.initializer_range
        for name, (shape, names) in layer_param_shapes(cfg).items():
            full = (cfg.num_layers, *shape)
            if name.endswith("norm"):
                value = jnp.ones(full, param_dtype)
            else:
                value = (std * jax.random.normal(rngs.params(), full, jnp.float32)).astype(param_dtype)
            setattr(self, name, make_param(value, ("layers", *names)))

    def stacked(self) -> dict[str, jax.Array]:
        """The stacked weights as a dict of arrays [L, ...] (what ``jax.lax.scan`` iterates over)."""
        return {name: getattr(self, name)[...] for name in LAYER_PARAMS}


class DecoderLM(nnx.Module):
    """Llama / Mistral causal LM (exact port of transformers' LlamaForCausalLM / MistralForCausalLM).

    Args:
      config: architecture.
      rngs: random init (std ``config.initializer_range``, norms at 1).
      dtype: compute dtype (activations, matmul inputs); softmax, RMSNorm statistics and logits are float32.
      param_dtype: storage dtype of the parameters.
      remat: "none", "full", "save_dots" (``dots_with_no_batch_dims_saveable``) or "save_all_dots".
      scan_layers: run the stacked layers with ``jax.lax.scan`` (compile time independent of depth); False
        unrolls a Python loop over the same stacked weights (same numbers, for checks).
      attention_backend: "auto", "xla", "cudnn", "splash" (or "splash-interpret", for tests); see
        :mod:`rdpo_jax.models.attention`. A backend that cannot run here or cannot take the forward's mask
        (e.g. splash with a tree mask) raises ``ValueError`` naming the alternative.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        remat: str = "none",
        scan_layers: bool = True,
        attention_backend: str = "xla",
    ):
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.param_dtype = jnp.dtype(param_dtype)
        self.remat = remat
        self.scan_layers = scan_layers
        self.attention_backend = attention_backend
        self.source_dir: str | None = None
        remat_layer(lambda: None, remat)  # validates the policy name early
        std = config.initializer_range
        v, d = config.vocab_size, config.hidden_size
        self.embed_tokens = make_param(
            (std * jax.random.normal(rngs.params(), (v, d), jnp.float32)).astype(param_dtype), ("vocab", "embed"))
        self.layers = DecoderLayers(config, rngs=rngs, param_dtype=param_dtype)
        self.norm = make_param(jnp.ones((d,), param_dtype), ("embed",))
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = make_param(
                (std * jax.random.normal(rngs.params(), (d, v), jnp.float32)).astype(param_dtype),
                ("embed", "vocab"))

    def lm_head_weight(self) -> tuple[jax.Array, str]:
        """The output head and its layout: ``(kernel [d, V], "dv")`` untied, ``(embedding [V, d], "vd")`` tied.

        ``logits = h @ kernel`` ("dv") or ``h @ embedding.T`` ("vd"); no transpose is materialised here.
        """
        if self.lm_head is None:
            return self.embed_tokens[...], "vd"
        return self.lm_head[...], "dv"

    def make_mask(self, positions: jax.Array, attention_mask: jax.Array | None = None,
                  segment_ids: jax.Array | None = None, attn_mask: jax.Array | None = None, *,
                  plain_causal: bool = False) -> AttentionMask:
        """The structured self-attention mask of one forward (positions [B, T]; see :meth:`__call__`)."""
        return AttentionMask(q_positions=positions, k_positions=positions, padding_mask=attention_mask,
                             q_segment_ids=segment_ids, k_segment_ids=segment_ids, explicit_mask=attn_mask,
                             sliding_window=self.config.sliding_window, plain_causal=plain_causal)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """Token embeddings ``x = E[input_ids]`` in the compute dtype: int [...] -> [..., d] (E [V, d])."""
        return jnp.take(self.embed_tokens[...], input_ids, axis=0).astype(self.dtype)

    def rope(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Rotary tables cos, sin [B, T, D] (compute dtype) of position ids int [B, T]."""
        return rope_cos_sin(positions, jnp.asarray(self.config.rope_inv_freq()), self.dtype)

    def final_norm(self, x: jax.Array) -> jax.Array:
        """``h = RMS(x) * w_norm`` of the last layer's output x [..., d] (compute dtype)."""
        return rms_norm(x, self.norm[...], self.config.rms_norm_eps)

    def head_logits(self, h: jax.Array) -> jax.Array:
        """float32 logits [..., V] ``= h @ W_head`` of final-norm hidden states h [..., d] (the one LM head).

        ``W_head`` is :meth:`lm_head_weight` (the tied embedding used transposed); the product accumulates in
        float32 from inputs in h's dtype.
        """
        w, layout = self.lm_head_weight()
        eq = "...d,dv->...v" if layout == "dv" else "...d,vd->...v"
        return jnp.einsum(eq, h, w.astype(h.dtype), preferred_element_type=jnp.float32).astype(jnp.float32)

    def run_layers(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                   positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
                   attn_mask: jax.Array | None = None, kv: Callable = own_keys_values) -> tuple[jax.Array, Any]:
        """Embed and run the L layers (scanned or unrolled, remat per policy) over the tokens themselves.

        Arguments as :meth:`__call__`; ``kv`` is :func:`~rdpo_jax.models.layers.decoder_layer`'s (the
        KV-cache prefill keeps each layer's k, v with it). Returns the last layer's output x [B, T, d]
        (before the final norm) and each layer's ``kv`` aux stacked on a leading L axis (None by default).
        """
        cfg = self.config
        b, t = input_ids.shape
        plain_causal = positions is None and attention_mask is None and segment_ids is None and attn_mask is None
        if positions is None:
            positions = default_positions(attention_mask, b, t)
        mask = self.make_mask(positions, attention_mask, segment_ids, attn_mask, plain_causal=plain_causal)
        backend = resolve_backend(self.attention_backend, mask, dtype=self.dtype, head_dim=cfg.head_dim)
        mask = prepare_mask(mask, backend)
        cos, sin = self.rope(positions)
        layer = functools.partial(decoder_layer, cos=cos, sin=sin, mask=mask, eps=cfg.rms_norm_eps,
                                  backend=backend, kv=kv)
        layer = remat_layer(layer, self.remat)
        x = constrain_activation(self.embed(input_ids), ROW_ACTIVATION)
        stacked = self.layers.stacked()

        def body(p, carry):
            out, aux = layer(p, carry)
            return constrain_activation(out, ROW_ACTIVATION), aux

        if self.scan_layers:
            return jax.lax.scan(lambda carry, p: body(p, carry), x, stacked)
        auxes = []
        for i in range(cfg.num_layers):
            x, aux = body({k: w[i] for k, w in stacked.items()}, x)
            auxes.append(aux)
        return x, jax.tree.map(lambda *a: jnp.stack(a), *auxes)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        attn_mask: jax.Array | None = None,
        return_hidden: bool = False,
    ) -> jax.Array:
        """Forward pass: ``logits = RMS(h_L) @ W_head`` with ``h_L`` from :meth:`run_layers`.

        Args:
          input_ids: int [B, T].
          attention_mask: 0/1 [B, T] padding mask (1 = real token), or None (all real).
          positions: int [B, T] position ids; default :func:`default_positions` (``max(cumsum(mask) - 1, 0)``,
            so left-padded rows start at 0 at their first real token; RoPE is relative, so this matches HF
            on real tokens), or ``arange(T)`` without a mask.
          segment_ids: int [B, T]; tokens attend only within their segment (packed rows).
          attn_mask: explicit boolean [B, T, T] mask replacing causal & segment (tree-packed rows); padding
            and the sliding window are still applied.
          return_hidden: return the final-norm hidden states [B, T, d] (compute dtype) instead of logits.

        Returns:
          float32 logits [B, T, V] (:meth:`head_logits`), or hidden states [B, T, d] (:meth:`final_norm`).
        """
        x, _ = self.run_layers(input_ids, attention_mask, positions=positions, segment_ids=segment_ids,
                               attn_mask=attn_mask)
        h = self.final_norm(x)
        return h if return_hidden else self.head_logits(h)
