"""Attention: one entry point, :func:`attend`, with pluggable backends, and the choice among them.

What each query may see comes as an :class:`~rdpo_jax.models.masks.AttentionMask` (position ids, segment
ids, padding, an optional explicit tree mask, the sliding window; :mod:`rdpo_jax.models.masks`) or as a
dense boolean matrix; a backend that takes structured masks can use the structure:

- ``"xla"``: memory-efficient attention in plain XLA (:mod:`rdpo_jax.models.chunked_attention`: query and
  key blocks of 512, an online softmax, a backward that recomputes each block), any mask; never holds a
  [Tq, Tk] matrix. Equal to ``"xla-dense"`` up to float summation order; a sequence up to 512 tokens is
  one block.
- ``"xla-dense"``: the reference; any mask. Builds the dense [B, 1, Tq, Tk] mask with
  :func:`~rdpo_jax.models.masks.make_attention_mask` (causal on position ids, so left padding, packed
  segments and a KV cache all use the same rule) and float32 scores [B, H, Tq, Tk].
- ``"cudnn"``: ``jax.nn.dot_product_attention(..., implementation="cudnn")`` (NVIDIA GPU only). Plain causal
  rows (no padding, segments or explicit mask) use cuDNN's causal + sliding-window mask; anything else
  passes the dense boolean mask. cuDNN takes bf16/fp16 only: float32 q/k/v are computed in bfloat16 and
  the output cast back.
- ``"splash"``: TPU Pallas splash attention (:mod:`rdpo_jax.models.splash`): static causal (or local
  window) mask on array positions plus segment ids; no explicit tree masks. ``"splash-interpret"`` runs the
  same kernels in Pallas interpret mode on any platform (slow; for tests).
- ``"auto"``: cudnn on GPU (bf16/fp16 compute), splash on TPU when the mask allows, otherwise xla.

Every backend reads the mask through :func:`~rdpo_jax.models.masks.make_attention_mask` (whole or per block),
so they agree on what a query sees.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rdpo_jax.models.chunked_attention import chunked_attend
from rdpo_jax.models.masks import AttentionMask
from rdpo_jax.models.splash import splash_attend

BACKENDS = ("auto", "xla", "xla-dense", "cudnn", "splash", "splash-interpret")


def _platform() -> str:
    return jax.default_backend()


def _is_half(dtype) -> bool:
    return jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def resolve_backend(backend: str, mask: AttentionMask | jax.Array | None = None, *, dtype=None,
                    head_dim: int | None = None) -> str:
    """The concrete backend for ``backend`` ("auto" chooses by platform, mask and dtype); validates it.

    "auto": GPU -> "cudnn" when the compute dtype is bf16/fp16 and ``head_dim`` is a multiple of 8 up to
    128 (else "xla"); TPU -> "splash" for self-attention without an explicit mask (else "xla"); other
    platforms -> "xla". An explicit choice that cannot run here, or cannot take ``mask``, raises
    ``ValueError`` naming the alternative.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not supported; accepted: {BACKENDS}")
    platform = _platform()
    structured = isinstance(mask, AttentionMask)
    if backend == "auto":
        if platform == "gpu" and (dtype is None or _is_half(dtype)) and (
                head_dim is None or (head_dim % 8 == 0 and head_dim <= 128)):
            return "cudnn"
        if platform == "tpu" and structured and splash_mask_problem(mask) is None:
            return "splash"
        return "xla"
    if backend == "cudnn" and platform != "gpu":
        raise ValueError(f"attention_backend='cudnn' needs an NVIDIA GPU (cuDNN) but this process runs on "
                         f"{platform!r}; use attention_backend='xla' (or 'auto', which picks by platform)")
    if backend == "splash":
        if platform != "tpu":
            raise ValueError(f"attention_backend='splash' needs a TPU but this process runs on {platform!r}; "
                             "use attention_backend='xla' (or 'cudnn' on GPU, 'auto' to pick by platform; "
                             "'splash-interpret' runs the kernels in Pallas interpret mode for tests)")
    if backend in ("splash", "splash-interpret") and mask is not None:
        problem = splash_mask_problem(mask)
        if problem is not None:
            raise ValueError(problem)
    return backend


def splash_mask_problem(mask: AttentionMask | jax.Array) -> str | None:
    """Why splash attention cannot take ``mask`` (a message naming the alternative), or None if it can."""
    alt = "attention_backend='xla' (or 'cudnn' on GPU)"
    if not isinstance(mask, AttentionMask):
        return ("splash attention takes causal+segment masks only (an AttentionMask), not a dense boolean "
                f"mask; use {alt}")
    if mask.explicit_mask is not None:
        return f"splash attention takes causal+segment masks only; tree-packed rows need {alt}"
    if mask.q_positions.shape[-1] != mask.k_positions.shape[-1]:
        return f"splash attention here is self-attention only (Tq == Tk); KV-cache decoding uses {alt}"
    return None


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | AttentionMask,
    *,
    backend: str = "xla",
    scale: float | None = None,
) -> jax.Array:
    """Grouped-query scaled dot-product attention.

    ``out[b,i,h] = sum_j softmax_j(scale * q[b,i,h] . k[b,j,h//G] masked by M[b,0,i,j]) v[b,j,h//G]``
    with ``G = H / KV`` query heads per key/value head (query head h uses kv head ``h // G``, as
    transformers' ``repeat_kv``) and ``scale = 1/sqrt(D)`` by default.

    Shapes: q [B, Tq, H, D], k and v [B, Tk, KV, D], ``mask`` a boolean [B, 1, Tq, Tk] array (or
    broadcastable; "xla" and "cudnn") or an :class:`AttentionMask` (any backend). Returns [B, Tq, H, D] in
    q's dtype. ``backend`` is one of :data:`BACKENDS` (see the module docstring).
    """
    b, tq, h, d = q.shape
    kvh = k.shape[2]
    if h % kvh:
        raise ValueError(f"query heads {h} must be a multiple of key/value heads {kvh}")
    backend = resolve_backend(backend, mask, dtype=q.dtype, head_dim=d)
    scale = d ** -0.5 if scale is None else scale
    if backend == "cudnn":
        return _attend_cudnn(q, k, v, mask, scale)
    if backend in ("splash", "splash-interpret"):
        return splash_attend(q, k, v, mask, scale=scale, interpret=backend == "splash-interpret")
    if backend == "xla":
        return chunked_attend(q, k, v, mask, scale=scale)
    dense = mask.to_dense() if isinstance(mask, AttentionMask) else mask
    return _attend_dense(q, k, v, dense, scale)


def _attend_dense(q, k, v, mask, scale):
    """Reference attention: float32 scores and softmax; probabilities cast to ``v.dtype`` for the value
    product; a query row with no visible key gets finite (uniform) weights, never NaN."""
    b, tq, h, d = q.shape
    kvh = k.shape[2]
    g = h // kvh
    qg = q.reshape(b, tq, kvh, g, d)
    scores = jnp.einsum("bikgd,bjkd->bkgij", qg, k, preferred_element_type=jnp.float32)
    scores = scores.astype(jnp.float32) * scale
    big_neg = jnp.finfo(jnp.float32).min
    scores = jnp.where(mask[:, :, None, :, :], scores, big_neg)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgij,bjkd->bikgd", probs, v)
    return out.reshape(b, tq, h, d).astype(q.dtype)


def _attend_cudnn(q, k, v, mask, scale):
    """cuDNN fused attention ([B, T, N, H] layout, GQA native); bf16 for float32 inputs."""
    out_dtype = q.dtype
    if not _is_half(q.dtype):
        q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    if isinstance(mask, AttentionMask) and mask.plain_causal:
        window = None if mask.sliding_window is None else (mask.sliding_window - 1, 0)
        out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True, local_window_size=window,
                                           implementation="cudnn")
    else:
        dense = mask.to_dense() if isinstance(mask, AttentionMask) else mask
        dense = jnp.broadcast_to(dense, (q.shape[0], 1, q.shape[1], k.shape[1]))
        out = jax.nn.dot_product_attention(q, k, v, mask=dense, scale=scale, implementation="cudnn")
    return out.astype(out_dtype)


def positions_contiguous(positions: jax.Array, segment_ids: jax.Array | None = None,
                         padding_mask: jax.Array | None = None) -> jax.Array:
    """Whether positions are ``arange`` per segment on the real tokens: bool [] (all rows).

    For each real token i and the previous real token j < i (padding skipped) of the same segment:
    ``positions[i] - i == positions[j] - j``. Then causality and a sliding window on array indices equal
    those on position ids (what splash's static masks need). positions, segment_ids, padding_mask [B, T].
    """
    b, t = positions.shape
    idx = jnp.arange(t, dtype=jnp.int32)
    real = jnp.ones((b, t), bool) if padding_mask is None else padding_mask != 0
    seg = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids
    off = positions.astype(jnp.int32) - idx
    last_real = jax.lax.cummax(jnp.where(real, idx, -1), axis=1)
    prev = jnp.concatenate([jnp.full((b, 1), -1, jnp.int32), last_real[:, :-1]], axis=1)
    prev_c = jnp.maximum(prev, 0)
    same = (prev >= 0) & (jnp.take_along_axis(seg, prev_c, axis=1) == seg)
    bad = real & same & (jnp.take_along_axis(off, prev_c, axis=1) != off)
    return ~jnp.any(bad)


def _raise_unless_contiguous(ok) -> None:
    if not bool(np.asarray(ok)):
        raise ValueError("splash attention applies causality and the sliding window on array positions, so "
                         "position ids must be arange per segment (padding in its own segment); these are "
                         "not: use attention_backend='xla' (or 'cudnn' on GPU)")


def check_splash_positions(mask: AttentionMask) -> None:
    """Refuse (``ValueError``) positions that are not arange per segment: at once when the arrays are
    concrete, else at run time through a host callback (a runtime error from the jitted call)."""
    if mask.plain_causal:
        return
    ok = positions_contiguous(mask.q_positions, mask.q_segment_ids, mask.padding_mask)
    host = concrete_or_none(ok)
    if host is None:
        jax.debug.callback(_raise_unless_contiguous, ok)
    else:
        _raise_unless_contiguous(host)


def concrete_or_none(x) -> np.ndarray | None:
    """``x`` as a numpy array when it is concrete, None when it is a tracer (inside jit)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
