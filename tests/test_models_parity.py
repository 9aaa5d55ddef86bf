"""Logit parity of rdpo_jax's Llama/Mistral port against transformers' PyTorch models (random weights, fp32)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from rdpo_jax.models import DecoderLM, ModelConfig, load_hf

TOL = 1e-4
BASE = dict(vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
            attn_implementation="eager")

CASES = {
    # Llama 2: MHA (GQA ratio 1), default rope, untied head.
    "llama2": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=4, rope_theta=10000.0)),
    # Llama 3.1: llama3 rope scaling (original context 16 puts all three frequency bands in play), GQA 4.
    "llama31": (LlamaConfig, LlamaForCausalLM, dict(
        num_key_value_heads=1, num_hidden_layers=3, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16})),
    # Llama 3.2 style: tied embeddings; explicit head_dim 32 != hidden/heads = 16.
    "llama32_tied_headdim": (LlamaConfig, LlamaForCausalLM, dict(
        num_key_value_heads=2, head_dim=32, tie_word_embeddings=True, rope_theta=500000.0)),
    # linear rope scaling.
    "llama_linear": (LlamaConfig, LlamaForCausalLM, dict(
        num_key_value_heads=2, rope_scaling={"type": "linear", "factor": 2.5})),
    # Mistral v0.1: sliding window (5) shorter than the sequence (14), GQA 4.
    "mistral_v01_window": (MistralConfig, MistralForCausalLM, dict(num_key_value_heads=1, sliding_window=5)),
    # Mistral v0.2+: no window, head_dim 8 != 16.
    "mistral_v02": (MistralConfig, MistralForCausalLM, dict(
        num_key_value_heads=2, head_dim=8, sliding_window=None, rope_theta=1e6)),
}


def _batch(vocab, b=3, t=14, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab, (b, t))
    mask = np.ones((b, t), np.int64)
    mask[1, :4] = 0  # left padded
    mask[2, :9] = 0
    return ids, mask


def _torch_model(cfg_cls, model_cls, overrides, seed=0):
    torch.manual_seed(seed)
    cfg = cfg_cls(**{**BASE, **overrides})
    return model_cls(cfg).eval()


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.float().numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logit_parity_against_transformers(case, tmp_path):
    cfg_cls, model_cls, overrides = CASES[case]
    tm = _torch_model(cfg_cls, model_cls, overrides)
    tm.save_pretrained(tmp_path, safe_serialization=True)
    ids, mask = _batch(tm.config.vocab_size)
    ref = _torch_logits(tm, ids, mask)

    model = load_hf(tmp_path)
    out = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    assert out.shape == ref.shape and out.dtype == np.float32
    real = mask.astype(bool)
    assert np.abs(out - ref)[real].max() <= TOL

    # hidden states path + head agree with the logits path
    h = model(jnp.asarray(ids), jnp.asarray(mask), return_hidden=True)
    w, layout = model.lm_head_weight()
    assert layout == ("vd" if tm.config.tie_word_embeddings else "dv")
    logits = h @ (w.T if layout == "vd" else w)
    np.testing.assert_allclose(np.asarray(logits)[real], out[real], atol=1e-5)


def test_sliding_window_changes_logits_beyond_window(tmp_path):
    """The window matters: without it, positions >= W differ; positions < W are identical."""
    cfg_cls, model_cls, overrides = CASES["mistral_v01_window"]
    tm = _torch_model(cfg_cls, model_cls, overrides)
    tm.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    ids, _ = _batch(tm.config.vocab_size)
    with_w = np.asarray(model(jnp.asarray(ids)))
    model.config = ModelConfig(**{**model.config.__dict__, "sliding_window": None})
    without = np.asarray(model(jnp.asarray(ids)))
    np.testing.assert_allclose(with_w[:, :5], without[:, :5], atol=1e-6)
    assert np.abs(with_w[:, 5:] - without[:, 5:]).max() > 1e-3


def test_left_padding_matches_unpadded_rows(tmp_path):
    """Default positions max(cumsum(mask)-1, 0): a left-padded row equals the same tokens run unpadded."""
    tm = _torch_model(LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=2))
    tm.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    ids, mask = _batch(tm.config.vocab_size)
    padded = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    alone = np.asarray(model(jnp.asarray(ids[2:, 9:])))
    np.testing.assert_allclose(padded[2, 9:], alone[0], atol=1e-5)


def _tiny_model(**kw):
    cfg = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                      num_kv_heads=2, head_dim=8, sliding_window=6, model_type="mistral")
    return DecoderLM(cfg, rngs=nnx.Rngs(0), **kw)


def test_remat_policies_and_scan_give_identical_outputs_and_grads():
    ids = jnp.asarray(_batch(96, t=10)[0])
    mask = jnp.asarray(_batch(96, t=10)[1])

    def loss_and_grad(model):
        graphdef, state = nnx.split(model)

        @jax.jit
        def f(state):
            def loss(state):
                m = nnx.merge(graphdef, state)
                return jnp.sum(jnp.tanh(m(ids, mask)) * mask[..., None])
            return jax.value_and_grad(loss)(state)

        return f(state)

    ref_loss, ref_grad = loss_and_grad(_tiny_model(scan_layers=False))
    for kw in (dict(), dict(remat="full"), dict(remat="save_dots"), dict(remat="save_all_dots"),
               dict(remat="save_dots", scan_layers=False)):
        loss, grad = loss_and_grad(_tiny_model(**kw))
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        # gradients: tolerance scaled by the largest entry (scan vs unrolled reorders float sums)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max()),
                     grad, ref_grad)
    with pytest.raises(ValueError, match="remat policy"):
        _tiny_model(remat="bogus")


def test_bf16_compute_is_close_and_returns_float32_logits():
    m32 = _tiny_model()
    m16 = _tiny_model(dtype=jnp.bfloat16)
    ids = jnp.asarray(_batch(96, t=10)[0])
    a, b = m32(ids), m16(ids)
    assert b.dtype == jnp.float32
    assert m16(ids, return_hidden=True).dtype == jnp.bfloat16
    assert np.abs(np.asarray(a) - np.asarray(b)).max() < 5e-2 * np.abs(np.asarray(a)).max() + 1e-2


def test_segment_ids_and_explicit_mask():
    """Two packed segments with restarting positions equal two separate rows; an explicit causal mask
    equals the built one."""
    model = _tiny_model()
    ids = jnp.asarray(_batch(96, t=12)[0][:1])
    seg = jnp.asarray([[0] * 7 + [1] * 5])
    pos = jnp.asarray([list(range(7)) + list(range(5))])
    packed = np.asarray(model(ids, positions=pos, segment_ids=seg))
    first, second = np.asarray(model(ids[:, :7])), np.asarray(model(ids[:, 7:]))
    np.testing.assert_allclose(packed[:, :7], first, atol=1e-5)
    np.testing.assert_allclose(packed[:, 7:], second, atol=1e-5)
    causal = jnp.tril(jnp.ones((1, 12, 12), bool))
    np.testing.assert_allclose(np.asarray(model(ids, attn_mask=causal)), np.asarray(model(ids)), atol=1e-6)
