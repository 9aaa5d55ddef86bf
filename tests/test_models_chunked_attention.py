"""Blocked (memory-efficient) attention equals the dense reference, values and gradients, for every mask the
models use: causal, sliding window, left padding, segment packing, tree-packed rows (an explicit mask), a
KV cache (Tq != Tk); float32 and bfloat16; sequence lengths that are and are not multiples of the block.
The forward is also checked against a float64 numpy formula; the compiled blocked backward holds no
[T, T] array."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdpo_jax.data.packing import tree_attention_mask
from rdpo_jax.models import attend
from rdpo_jax.models.chunked_attention import chunked_attend
from rdpo_jax.models.masks import AttentionMask


def _forest(t, rng):
    """A random tree-packed row of length t: parents (each token's parent an earlier token or -1), the
    positions (depths) and real 0/1 (the last few tokens are padding)."""
    n = t - 3
    parent = [-1] + [int(rng.integers(-1, i)) if rng.random() < 0.3 else i - 1 for i in range(1, n)]
    depth = []
    for p in parent:
        depth.append(0 if p < 0 else depth[p] + 1)
    return tree_attention_mask(parent, t), np.array(depth + [0] * 3), np.array([1] * n + [0] * 3)


def make_mask(kind, b, t, rng, tq=None):
    pos = np.tile(np.arange(t), (b, 1))
    if kind == "causal":
        return AttentionMask(q_positions=jnp.asarray(pos), k_positions=jnp.asarray(pos))
    if kind == "window":
        return AttentionMask(q_positions=jnp.asarray(pos), k_positions=jnp.asarray(pos), sliding_window=5)
    if kind == "left_padded":
        pad = np.ones((b, t), np.int32)
        pad[0, : t // 3] = 0
        pad[-1, :2] = 0
        pos = np.maximum(np.cumsum(pad, 1) - 1, 0)
        return AttentionMask(q_positions=jnp.asarray(pos), k_positions=jnp.asarray(pos), padding_mask=jnp.asarray(pad),
                             sliding_window=7)
    if kind == "segments":
        seg = np.repeat(np.arange(b * t).reshape(b, t) // 9 + 1, 1, 0)[:, :t]
        pos = np.concatenate([np.arange(9)] * (t // 9 + 1))[:t][None].repeat(b, 0)
        seg = jnp.asarray(seg)
        return AttentionMask(q_positions=jnp.asarray(pos), k_positions=jnp.asarray(pos), q_segment_ids=seg,
                             k_segment_ids=seg)
    if kind == "tree":
        rows = [_forest(t, rng) for _ in range(b)]
        tree, depth, real = (np.stack(x) for x in zip(*rows, strict=True))
        return AttentionMask(q_positions=jnp.asarray(depth), k_positions=jnp.asarray(depth),
                             padding_mask=jnp.asarray(real), explicit_mask=jnp.asarray(tree))
    if kind == "kv_cache":  # the last tq queries of a left-padded row against all t cache slots
        pad = np.ones((b, t), np.int32)
        pad[0, :4] = 0
        kpos = np.maximum(np.cumsum(pad, 1) - 1, 0)
        return AttentionMask(q_positions=jnp.asarray(kpos[:, -tq:]), k_positions=jnp.asarray(kpos),
                             padding_mask=jnp.asarray(pad))
    raise ValueError(kind)


def _inputs(b, tq, tk, heads, kv, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, tq, heads, d))
    k = rng.normal(size=(b, tk, kv, d))
    v = rng.normal(size=(b, tk, kv, d))
    w = rng.normal(size=(b, tq, heads, d))  # a random cotangent for the gradient check
    return (jnp.asarray(x, dtype) for x in (q, k, v)), jnp.asarray(w, jnp.float32)


def _np_attention(q, k, v, dense):
    """float64 softmax(q k^T / sqrt(D)) v per head (head h reads kv head h // G); a query with no visible key
    gets uniform weights, as the reference."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    g = q.shape[2] // k.shape[2]
    kk, vv = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    s = np.einsum("bihd,bjhd->bhij", q, kk) / np.sqrt(q.shape[-1])
    s = np.where(np.asarray(dense), s, -np.inf)
    s = np.where(np.isinf(s).all(-1, keepdims=True), 0.0, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhij,bjhd->bihd", p, vv)


CASES = [  # (mask kind, B, Tq, Tk, heads, kv heads, block)
    ("causal", 2, 40, 40, 4, 2, 16),
    ("window", 1, 33, 33, 2, 1, 8),
    ("left_padded", 3, 37, 37, 4, 4, 16),
    ("segments", 2, 36, 36, 6, 2, 12),
    ("tree", 2, 45, 45, 4, 2, 16),
    ("kv_cache", 2, 3, 29, 4, 2, 8),
]


BF16 = ("causal", "tree", "kv_cache")  # bfloat16 on three masks (suite time); float32 on all


@pytest.mark.parametrize("kind,b,tq,tk,heads,kv,block,dtype,tol",
                         [(*c, jnp.float32, 2e-5) for c in CASES] + [(*c, jnp.bfloat16, 4e-2) for c in CASES
                                                                      if c[0] in BF16])
def test_blocked_attention_equals_dense_reference_values_and_gradients(kind, b, tq, tk, heads, kv, block, dtype, tol):
    rng = np.random.default_rng(1)
    mask = make_mask(kind, b, tk, rng, tq=tq)
    (q, k, v), w = _inputs(b, tq, tk, heads, kv, 8, dtype)
    dense_mask = mask.to_dense()

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w)

    def blocked(q, k, v):
        return chunked_attend(q, k, v, mask, scale=8 ** -0.5, q_block=block, k_block=block)

    def dense(q, k, v):
        return attend(q, k, v, mask, backend="xla-dense")

    out, ref = blocked(q, k, v), dense(q, k, v)
    assert out.dtype == dtype and out.shape == ref.shape
    scale_of = float(jnp.abs(ref.astype(jnp.float32)).max())
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=tol * scale_of)
    want = _np_attention(q, k, v, dense_mask[:, 0][:, None].repeat(heads, 1))
    np_tol = tol * scale_of if dtype == jnp.bfloat16 else 1e-4
    np.testing.assert_allclose(np.asarray(out, np.float64), want, atol=np_tol)
    grads = jax.grad(loss(blocked), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(loss(dense), argnums=(0, 1, 2))(q, k, v)
    for name, g, r in zip("qkv", grads, ref_grads, strict=True):
        assert g.dtype == dtype, name
        big = float(jnp.abs(r.astype(jnp.float32)).max())
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), atol=tol * big, err_msg=name)


def test_dense_boolean_mask_and_the_default_backend():
    """attend(..., backend="xla") is the blocked path; it also takes a dense boolean mask (broadcast rows)."""
    rng = np.random.default_rng(2)
    mask = make_mask("tree", 1, 20, rng)
    (q, k, v), _ = _inputs(3, 20, 20, 4, 2, 8, jnp.float32)
    dense = mask.to_dense()  # [1, 1, T, T], broadcast over the 3 rows
    got = attend(q, k, v, dense, backend="xla")
    ref = attend(q, k, v, dense, backend="xla-dense")
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-5)


def test_blocked_backward_holds_no_full_score_matrix():
    """Compiled temporaries of value-and-grad at T=2048 stay well below one [B, H, T, T] float32 score array,
    which the dense path needs several of."""
    b, t, heads, kv, d = 1, 2048, 8, 2, 64
    mask = make_mask("causal", b, t, None)
    shapes = [jax.ShapeDtypeStruct((b, t, n, d), jnp.float32) for n in (heads, kv, kv)]

    def temp_bytes(backend):
        f = jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v, mask, backend=backend)), argnums=(0, 1, 2))
        return jax.jit(f).lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    scores = b * heads * t * t * 4
    assert temp_bytes("xla-dense") >= scores
    assert temp_bytes("xla") < scores / 3  # a few [B, H, 512, 512] blocks
