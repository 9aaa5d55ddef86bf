"""Packed-row layouts (segment ids, docs/spec.md section 3's tree mask, sliding window on positions) against separate
forwards of each sequence, and the attention backends: splash (Pallas interpret mode on CPU), cudnn's error
off GPU, "auto"."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rdpo_jax.models import AttentionMask, DecoderLM, ModelConfig, attend
from rdpo_jax.models.attention import positions_contiguous, resolve_backend

RTOL = 1e-6


def _splash_interpret_available() -> bool:
    try:
        import inspect

        from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
        return "interpret" in inspect.signature(sk._make_splash_attention).parameters
    except Exception:  # noqa: BLE001
        return False


needs_splash = pytest.mark.skipif(
    not _splash_interpret_available(),
    reason="this JAX's splash kernels take no interpret=True option: splash is checked only on TPU")


def _model(window, backend="xla"):
    cfg = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, sliding_window=window, model_type="mistral")
    return DecoderLM(cfg, rngs=nnx.Rngs(0), attention_backend=backend)


def _token_logps(logits, ids):
    """log p(ids[t+1] | prefix) at each predictor index t: float64 [T-1] from logits [T, V]."""
    lp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return np.asarray(jnp.take_along_axis(lp[:-1], jnp.asarray(ids)[1:, None], axis=-1)[:, 0], np.float64)


def _separate_sum(model, seq, n_scored):
    """Summed log-prob of the last ``n_scored`` tokens of ``seq`` run alone."""
    logits = np.asarray(model(jnp.asarray([seq])))[0]
    return _token_logps(logits, seq)[-n_scored:].sum()


@pytest.mark.parametrize("window", [None, 4])
def test_tree_packed_row_equals_separate_sequences(window):
    """Spec section 3: x | y_w | x_last', y_l with y_l not seeing y_w (explicit tree mask); summed log-probs
    of y_w and y_l equal the unpacked [x, y_w] and [x, y_l] within a relative 1e-6 (window 4 < rows)."""
    model = _model(window)
    rng = np.random.RandomState(1)
    x, yw, yl = (list(rng.randint(0, 96, n)) for n in (5, 4, 3))
    nx = len(x)
    ids = x + yw + [x[-1]] + yl
    positions = list(range(nx + len(yw))) + [nx - 1] + list(range(nx, nx + len(yl)))
    parent = list(range(-1, nx - 1)) + list(range(nx - 1, nx + len(yw) - 1)) + [nx - 2]
    xl = len(parent) - 1  # index of x_last'
    parent += [xl] + list(range(xl + 1, xl + len(yl)))
    t = len(ids)
    tree = np.zeros((t, t), bool)
    for i in range(t):
        j = i
        while j >= 0:
            tree[i, j] = True
            j = parent[j]
    logits = np.asarray(model(jnp.asarray([ids]), positions=jnp.asarray([positions]),
                              attn_mask=jnp.asarray(tree[None])))[0]
    lp = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
    def packed(predictors, targets):
        return float(np.sum([np.float64(lp[p, ids[q]]) for p, q in zip(predictors, targets, strict=True)]))

    yw_pred = [nx - 1] + list(range(nx, nx + len(yw) - 1))
    got_w = packed(yw_pred, range(nx, nx + len(yw)))
    got_l = packed([xl] + list(range(xl + 1, xl + len(yl))), range(xl + 1, xl + 1 + len(yl)))
    np.testing.assert_allclose(got_w, _separate_sum(model, x + yw, len(yw)), rtol=RTOL)
    np.testing.assert_allclose(got_l, _separate_sum(model, x + yl, len(yl)), rtol=RTOL)


def _segment_batch():
    """Row 0: three sequences packed with segment ids; row 1: two sequences then right padding."""
    rng = np.random.RandomState(2)
    seqs = [[list(rng.randint(0, 96, n)) for n in (6, 7, 5)], [list(rng.randint(0, 96, n)) for n in (8, 6)]]
    t = 18
    ids, pos, seg, pad = (np.zeros((2, t), np.int32) for _ in range(4))
    for r, row in enumerate(seqs):
        i = 0
        for s, seq in enumerate(row):
            ids[r, i:i + len(seq)] = seq
            pos[r, i:i + len(seq)] = np.arange(len(seq))
            seg[r, i:i + len(seq)] = s + 1
            pad[r, i:i + len(seq)] = 1
            i += len(seq)
    return seqs, ids, pos, seg, pad


@pytest.mark.parametrize("backend", ["xla", pytest.param("splash-interpret", marks=needs_splash)])
@pytest.mark.parametrize("window", [None, 4])
def test_segment_packed_rows_equal_separate_sequences(window, backend):
    """Summed log-probs of every packed sequence (all tokens after the first) equal the sequence run alone;
    "splash-interpret" runs the TPU splash kernels in Pallas interpret mode on CPU."""
    ref_model, model = _model(window), _model(window, backend)
    seqs, ids, pos, seg, pad = _segment_batch()
    logits = np.asarray(model(jnp.asarray(ids), jnp.asarray(pad), positions=jnp.asarray(pos),
                              segment_ids=jnp.asarray(seg)))
    for r, row in enumerate(seqs):
        i = 0
        for seq in row:
            got = _token_logps(logits[r, i:i + len(seq)], seq).sum()
            np.testing.assert_allclose(got, _separate_sum(ref_model, seq, len(seq) - 1), rtol=RTOL)
            i += len(seq)


@needs_splash
def test_splash_left_padding_and_grads_match_xla():
    """Left padding (plain forward) and gradients through the splash kernels' custom VJP equal xla's."""
    ids = jnp.asarray(np.random.RandomState(3).randint(0, 96, (2, 12)))
    pad = jnp.asarray([[1] * 12, [0] * 5 + [1] * 7])

    def loss_and_grad(backend):
        graphdef, state = nnx.split(_model(4, backend))
        def loss(state):
            return jnp.sum(jnp.tanh(nnx.merge(graphdef, state)(ids, pad)) * pad[..., None])
        return jax.jit(jax.value_and_grad(loss))(state)

    (l_ref, g_ref), (l_sp, g_sp) = loss_and_grad("xla"), loss_and_grad("splash-interpret")
    np.testing.assert_allclose(l_sp, l_ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max()), g_sp, g_ref)


@needs_splash
def test_splash_refuses_tree_masks_and_non_arange_positions():
    model = _model(4, "splash-interpret")
    ids = jnp.zeros((1, 6), jnp.int32)
    with pytest.raises(ValueError, match="tree-packed rows need attention_backend='xla'"):
        model(ids, attn_mask=jnp.tril(jnp.ones((1, 6, 6), bool)))
    bad = jnp.asarray([[0, 1, 2, 3, 9, 10]])
    with pytest.raises(ValueError, match="arange per segment"):
        model(ids, positions=bad)  # concrete: refused at once
    with pytest.raises(Exception, match="arange per segment"):  # traced: refused when the jitted call runs
        nnx.jit(lambda m, i, p: m(i, positions=p))(model, ids, bad).block_until_ready()
    with pytest.raises(ValueError, match="needs a TPU.*'xla'"):
        _model(4, "splash")(ids)


def test_positions_contiguous():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 2]])
    assert bool(positions_contiguous(jnp.asarray([[0, 1, 2, 0, 1, 2]]), seg))
    assert bool(positions_contiguous(jnp.asarray([[0, 1, 2, 7, 8, 9]]), seg))
    assert not bool(positions_contiguous(jnp.asarray([[0, 1, 3, 0, 1, 2]]), seg))
    # a padding slot inside a segment: positions must still advance with the array index
    pad = jnp.asarray([[1, 1, 0, 1, 1, 1]])
    assert not bool(positions_contiguous(jnp.asarray([[0, 1, 0, 2, 3, 4]]), None, pad))
    assert bool(positions_contiguous(jnp.asarray([[0, 1, 0, 3, 4, 5]]), None, pad))


def test_cudnn_off_gpu_is_a_clear_error_and_auto_picks_xla_on_cpu():
    x = jnp.zeros((1, 4, 2, 8))
    mask = jnp.ones((1, 1, 4, 4), bool)
    with pytest.raises(ValueError, match="cudnn.*needs an NVIDIA GPU.*'xla'"):
        attend(x, x, x, mask, backend="cudnn")
    with pytest.raises(ValueError, match="cudnn.*needs an NVIDIA GPU"):
        _model(None, "cudnn")(jnp.zeros((1, 4), jnp.int32))
    assert resolve_backend("auto", mask) == "xla"
    with pytest.raises(ValueError, match="accepted"):
        resolve_backend("flash", mask)
    m_auto, m_xla = _model(4, "auto"), _model(4)
    ids = jnp.asarray([[3, 4, 5, 6, 7, 8]])
    np.testing.assert_array_equal(np.asarray(m_auto(ids)), np.asarray(m_xla(ids)))


@needs_splash
def test_attend_takes_a_structured_mask():
    rng = np.random.RandomState(4)
    q, k, v = (jnp.asarray(rng.randn(2, 6, n, 8), jnp.float32) for n in (4, 2, 2))
    pos = jnp.tile(jnp.arange(6), (2, 1))
    spec = AttentionMask(q_positions=pos, k_positions=pos, q_segment_ids=jnp.asarray([[0] * 3 + [1] * 3] * 2),
                         k_segment_ids=jnp.asarray([[0] * 3 + [1] * 3] * 2), sliding_window=2)
    np.testing.assert_allclose(np.asarray(attend(q, k, v, spec)), np.asarray(attend(q, k, v, spec.to_dense())))
    np.testing.assert_allclose(np.asarray(attend(q, k, v, spec, backend="splash-interpret")),
                               np.asarray(attend(q, k, v, spec)), atol=1e-5)
