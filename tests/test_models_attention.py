"""Attention mask builder and grouped-query attention against float64 numpy references."""
import jax.numpy as jnp
import numpy as np
import pytest

from rdpo_jax.models import attend, make_attention_mask


def _np_mask(qp, kp, pad=None, seg=None, window=None):
    b, tq = qp.shape
    tk = kp.shape[1]
    out = np.zeros((b, 1, tq, tk), bool)
    for bi in range(b):
        for i in range(tq):
            for j in range(tk):
                ok = kp[bi, j] <= qp[bi, i]
                if pad is not None:
                    ok &= pad[bi, j] == 1
                if seg is not None:
                    ok &= seg[bi, i] == seg[bi, j]
                if window is not None:
                    ok &= qp[bi, i] - window < kp[bi, j]
                out[bi, 0, i, j] = ok
    return out


def test_mask_matches_brute_force_with_padding_segments_and_window():
    pos = np.array([[0, 0, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 0, 1, 2, 3]])
    pad = np.array([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 0]])
    seg = np.array([[0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 2, 2, 2, 2]])
    for window in (None, 1, 3):
        got = make_attention_mask(jnp.asarray(pos), jnp.asarray(pos), padding_mask=jnp.asarray(pad),
                                  segment_ids=jnp.asarray(seg), sliding_window=window)
        np.testing.assert_array_equal(np.asarray(got), _np_mask(pos, pos, pad, seg, window))


def test_sliding_window_sees_w_keys_including_itself():
    pos = jnp.arange(10)[None]
    m = np.asarray(make_attention_mask(pos, pos, sliding_window=4))[0, 0]
    assert m.sum(axis=1).tolist() == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    assert m[9, 6] and not m[9, 5]


def test_explicit_mask_replaces_causal_but_keeps_padding_and_window():
    pos = jnp.arange(6)[None]
    full = jnp.ones((1, 6, 6), bool)
    pad = jnp.asarray([[1, 1, 1, 1, 1, 0]])
    m = np.asarray(make_attention_mask(pos, pos, padding_mask=pad, sliding_window=2, explicit_mask=full))[0, 0]
    i, j = np.arange(6)[:, None], np.arange(6)[None]
    want = (j > i - 2) & np.array([1, 1, 1, 1, 1, 0], bool)[None]  # future keys allowed: no causal part
    np.testing.assert_array_equal(m, want)


@pytest.mark.parametrize("heads,kv", [(4, 4), (4, 1), (6, 2)])
def test_attend_matches_numpy_gqa(heads, kv):
    rng = np.random.RandomState(0)
    b, t, d = 2, 7, 8
    q, k, v = rng.randn(b, t, heads, d), rng.randn(b, t, kv, d), rng.randn(b, t, kv, d)
    pos = np.tile(np.arange(t), (b, 1))
    pad = np.ones((b, t), int)
    pad[1, :2] = 0
    mask = make_attention_mask(jnp.asarray(pos), jnp.asarray(pos), padding_mask=jnp.asarray(pad))
    out = np.asarray(attend(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32),
                            jnp.asarray(v, jnp.float32), mask))
    m = np.asarray(mask)[:, 0]
    g = heads // kv
    want = np.zeros_like(q)
    for h in range(heads):
        s = np.einsum("bid,bjd->bij", q[:, :, h], k[:, :, h // g]) / np.sqrt(d)
        s = np.where(m, s, -1e30)
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(-1, keepdims=True)
        want[:, :, h] = np.einsum("bij,bjd->bid", p, v[:, :, h // g])
    real = pad.astype(bool)
    np.testing.assert_allclose(out[real], want[real], atol=1e-5)
    assert np.isfinite(out).all()  # fully masked (pad) query rows stay finite


def test_unknown_backend_is_an_error():
    x = jnp.zeros((1, 2, 1, 4))
    with pytest.raises(ValueError, match="backend"):
        attend(x, x, x, jnp.ones((1, 1, 2, 2), bool), backend="splash")
