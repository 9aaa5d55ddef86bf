"""KV-cache generation: greedy decoding token-identical to transformers' greedy ``generate`` (left-padded batch,
Llama and Mistral with a sliding window shorter than prompt + new tokens), EOS handling, and sampling."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from rdpo_jax.models import DecoderLM, ModelConfig, generate, load_hf
from rdpo_jax.models.decoding import filter_logits, sample_logits
from rdpo_jax.models.kv_cache import decode_step, prefill

N_NEW = 20
BASE = dict(vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
            attn_implementation="eager", pad_token_id=0, eos_token_id=None)
CASES = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=2, rope_theta=500000.0)),
    "mistral_window": (MistralConfig, MistralForCausalLM, dict(num_key_value_heads=1, sliding_window=6)),
}


def _prompts():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 160, (3, 9))
    mask = np.ones((3, 9), np.int64)
    mask[1, :3] = 0
    mask[2, :6] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    cfg_cls, model_cls, overrides = CASES[request.param]
    torch.manual_seed(0)
    tm = model_cls(cfg_cls(**{**BASE, **overrides})).eval()
    path = tmp_path_factory.mktemp(request.param)
    tm.save_pretrained(path)
    return tm, load_hf(path)


def _hf_greedy(tm, ids, mask, eos):
    with torch.no_grad():
        out = tm.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=N_NEW,
                          do_sample=False, pad_token_id=0, eos_token_id=eos).numpy()[:, ids.shape[1]:]
    return np.pad(out, ((0, 0), (0, N_NEW - out.shape[1])), constant_values=0)  # HF stops once all rows end


def test_greedy_matches_transformers_with_and_without_eos(pair):
    tm, model = pair
    ids, mask = _prompts()
    ref = _hf_greedy(tm, ids, mask, None)
    out = np.asarray(generate(model, ids, mask, N_NEW, eos_token_ids=(), pad_token_id=0))
    assert out.shape == (3, N_NEW) and out.dtype == np.int32
    np.testing.assert_array_equal(out, ref)

    # EOS ids that greedy decoding hits: rows 0 and 1 stop early, row 2 maybe; pad (0) after a row's EOS
    eos = [int(ref[0, 4]), int(ref[1, 9])]
    ref_eos = _hf_greedy(tm, ids, mask, eos)
    out_eos = np.asarray(generate(model, ids, mask, N_NEW, eos_token_ids=eos, pad_token_id=0))
    np.testing.assert_array_equal(out_eos, ref_eos)
    for r in range(2):
        first = int(np.argmax(np.isin(out_eos[r], eos)))
        assert first <= (4 if r == 0 else 9)
        np.testing.assert_array_equal(out_eos[r, :first + 1], ref[r, :first + 1])
        assert (out_eos[r, first + 1:] == 0).all()


def _tiny(**cfg):
    base = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, eos_token_id=None)
    return DecoderLM(ModelConfig(**{**base, **cfg}), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kw", [dict(), dict(scan_layers=False), dict(remat="full", sliding_window=None)])
def test_prefill_and_decode_logits_equal_the_full_forward(kw):
    """Prefill's last-token logits and each decode step's equal the full forward's at the same token
    (left-padded rows, GQA, a sliding window 6 shorter than prompt + fed tokens; unrolled layers; remat)."""
    window = kw.pop("sliding_window", 6)
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, sliding_window=window, eos_token_id=None)
    model = DecoderLM(cfg, rngs=nnx.Rngs(0), **kw)
    ids, mask = _prompts()
    ids = ids % 64
    fed = np.random.RandomState(1).randint(3, 64, (3, 5))
    full_ids = np.concatenate([ids, fed], axis=1)
    full = np.asarray(model(jnp.asarray(full_ids), jnp.asarray(np.concatenate([mask, np.ones_like(fed)], 1))))
    t = ids.shape[1]
    logits, cache = prefill(model, jnp.asarray(ids), jnp.asarray(mask), t + fed.shape[1])
    np.testing.assert_allclose(np.asarray(logits), full[:, t - 1], atol=1e-5)
    first_pos = mask.sum(axis=1)
    for i in range(fed.shape[1]):
        logits, cache = decode_step(model, jnp.asarray(fed[:, i]), jnp.asarray(first_pos + i), t + i, cache)
        np.testing.assert_allclose(np.asarray(logits), full[:, t + i], atol=1e-5)


def test_sampling_seeds_top_k_and_top_p_route_through_generate():
    model = _tiny()
    ids, mask = _prompts()
    ids = ids % 64
    greedy = np.asarray(generate(model, ids, mask, 8))
    np.testing.assert_array_equal(np.asarray(generate(model, ids, mask, 8, temperature=1.0, top_k=1)), greedy)
    # a nucleus smaller than the top token's probability keeps the argmax only
    np.testing.assert_array_equal(np.asarray(generate(model, ids, mask, 8, temperature=1.0, top_p=1e-6)), greedy)
    a = np.asarray(generate(model, ids, mask, 8, temperature=1.0, seed=7))
    np.testing.assert_array_equal(np.asarray(generate(model, ids, mask, 8, temperature=1.0, seed=7)), a)
    assert (np.asarray(generate(model, ids, mask, 8, temperature=1.0, seed=8)) != a).any()
    assert (a != greedy).any()


def test_filter_and_sample_on_known_logits():
    p = np.array([0.5, 0.3, 0.12, 0.05, 0.03])
    logits = jnp.log(jnp.asarray(np.tile(p, (2, 1)), jnp.float32))
    keep = lambda **kw: np.isfinite(np.asarray(filter_logits(logits, **kw)))[0].tolist()  # noqa: E731
    assert keep(top_p=0.7) == [True, True, False, False, False]  # mass before token 1 is 0.5 < 0.7
    assert keep(top_p=0.5) == [True, False, False, False, False]
    assert keep(top_p=0.81) == [True, True, True, False, False]
    assert keep(top_p=1.0) == [True] * 5
    assert keep(top_k=2) == [True, True, False, False, False]
    assert keep(top_k=3, top_p=0.7) == [True, True, False, False, False]
    keys = jax.random.split(jax.random.key(0), 2000)
    draws = np.asarray(jax.vmap(lambda k: sample_logits(logits, k, temperature=1.0, top_p=0.81))(keys))
    assert set(np.unique(draws)) == {0, 1, 2}  # never outside the nucleus, every member drawn
    freq = np.bincount(draws.ravel(), minlength=5)[:3] / draws.size
    np.testing.assert_allclose(freq, p[:3] / p[:3].sum(), atol=0.03)  # renormalised within the nucleus
    np.testing.assert_array_equal(np.asarray(sample_logits(logits, keys[0], greedy=True)), [0, 0])


def test_eos_ids_from_generation_config_and_pad_default(tmp_path):
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=4,
                      num_kv_heads=2, head_dim=8, eos_token_id=5, pad_token_id=None)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_config()))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 9]}))
    loaded = ModelConfig.from_pretrained_dir(tmp_path)
    assert loaded.eos_token_ids == (5, 9) and loaded.generation_pad_id == 5
    assert cfg.eos_token_ids == (5,) and ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg

    # a row stops at either id; everything after it is the pad (first EOS id here)
    model = _tiny()
    ids, mask = _prompts()
    ids = ids % 64
    free = np.asarray(generate(model, ids, mask, 10))
    stop = (int(free[0, 2]), int(free[1, 3]))
    model.config = ModelConfig(**{**model.config.__dict__, "eos_token_id": stop[0],
                                  "generation_eos_token_id": (stop[1],)})
    out = np.asarray(generate(model, ids, mask, 10))
    for r in range(3):
        hits = np.flatnonzero(np.isin(free[r], stop))
        end = hits[0] + 1 if hits.size else 10
        np.testing.assert_array_equal(out[r, :end], free[r, :end])
        assert (out[r, end:] == stop[0]).all()


def test_generate_rejects_right_padding_and_bad_arguments():
    model = _tiny()
    ids = np.ones((2, 4), np.int32)
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, ids, np.array([[1, 1, 1, 0], [1, 1, 1, 1]]), 3)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, ids, np.ones((2, 4)), 3, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, ids, np.ones((2, 4)), 0)
