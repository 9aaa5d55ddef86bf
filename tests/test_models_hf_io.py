"""HF import/export: round trip through transformers, streaming reads, sharded checkpoints, mesh placement,
config validation."""
import gc
import json
import os
import weakref

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from jax.sharding import AxisType, NamedSharding
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig

from rdpo_jax.models import ConfigError, ModelConfig, load_hf, logical_axes, safetensors_io, save_hf, spec_for

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, attn_implementation="eager")


@pytest.fixture(scope="module")
def torch_llama():
    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def sharded_dir(torch_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("sharded")
    torch_llama.save_pretrained(d, safe_serialization=True, max_shard_size="40KB")
    for name, text in (("tokenizer_config.json", '{"model_max_length": 64}'), ("chat_template.jinja", "{{x}}"),
                       ("special_tokens_map.json", "{}")):
        (d / name).write_text(text)
    return d


def _inputs():
    rng = np.random.RandomState(3)
    ids = rng.randint(0, 128, (2, 11))
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    return ids, mask


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.float().numpy()


def test_sharded_checkpoint_has_an_index(sharded_dir):
    index = json.loads((sharded_dir / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1


def test_round_trip_through_transformers(torch_llama, sharded_dir, tmp_path):
    ids, mask = _inputs()
    ref = _torch_logits(torch_llama, ids, mask)
    model = load_hf(sharded_dir)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    real = mask.astype(bool)
    assert np.abs(ours - ref)[real].max() <= 1e-4

    for out, shard in ((tmp_path / "single", 5 * 2**30), (tmp_path / "multi", 30_000)):
        save_hf(model, out, max_shard_size=shard)
        files = os.listdir(out)
        assert ("model.safetensors.index.json" in files) == (shard < 2**20)
        for name in ("tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
            assert (out / name).read_text() == (sharded_dir / name).read_text()
        back = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
        assert type(back) is LlamaForCausalLM
        np.testing.assert_array_equal(_torch_logits(back, ids, mask), ref)
        # and our own loader reads our export
        np.testing.assert_array_equal(np.asarray(load_hf(out)(jnp.asarray(ids), jnp.asarray(mask))), ours)


def test_bf16_checkpoint_import_and_export(torch_llama, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    torch_llama.to(torch.bfloat16).save_pretrained(src)
    torch_llama.to(torch.float32)
    model = load_hf(src, dtype=jnp.bfloat16)
    emb = model.embed_tokens[...]
    assert emb.dtype == jnp.bfloat16
    want = torch_llama.model.embed_tokens.weight.detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(np.asarray(emb).astype(np.float32), want)
    q = torch_llama.model.layers[1].self_attn.q_proj.weight.detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(np.asarray(model.layers.q_proj[...][1]).astype(np.float32).reshape(64, -1).T, q)
    save_hf(model, dst)
    assert json.loads((dst / "config.json").read_text())["dtype"] == "bfloat16"
    back = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.bfloat16)
    sd = dict(back.state_dict())
    assert sd["model.embed_tokens.weight"].dtype == torch.bfloat16
    np.testing.assert_array_equal(sd["model.layers.1.self_attn.q_proj.weight"].float().numpy(), q)


def test_streaming_reads_one_tensor_at_a_time(sharded_dir, monkeypatch):
    live: list[weakref.ref] = []
    peak = [0]
    real_read = safetensors_io.read_tensor

    def counting_read(file, name):
        gc.collect()
        alive = sum(r() is not None for r in live)
        peak[0] = max(peak[0], alive + 1)
        arr = real_read(file, name)
        live.append(weakref.ref(arr))
        return arr

    monkeypatch.setattr(safetensors_io, "read_tensor", counting_read)
    load_hf(sharded_dir)
    n_tensors = len(json.loads((sharded_dir / "model.safetensors.index.json").read_text())["weight_map"])
    assert len(live) == n_tensors  # every tensor read exactly once
    assert peak[0] == 1


def test_mesh_placement_follows_logical_axes(sharded_dir):
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    model = load_hf(sharded_dir, mesh=mesh)
    axes = logical_axes(model)
    from flax import nnx

    params = nnx.state(model, nnx.Param)
    flat_axes = dict(nnx.to_flat_state(axes))
    sharded = 0
    for path, var in nnx.to_flat_state(params):
        arr = var[...]
        spec = spec_for(flat_axes[path], arr.shape, mesh)
        assert arr.sharding == NamedSharding(mesh, spec), path
        sharded += any(s is not None for s in spec)
    assert sharded >= 8  # embed, q/k/v/o, mlp, lm_head are split
    assert model.layers.gate_proj[...].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")

    ids, mask = _inputs()
    ref = np.asarray(load_hf(sharded_dir)(jnp.asarray(ids), jnp.asarray(mask)))
    out = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_custom_rules_replicate(sharded_dir):
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
    model = load_hf(sharded_dir, mesh=mesh, rules={})
    assert model.embed_tokens[...].sharding.is_fully_replicated


def test_logical_axes_cover_every_parameter(sharded_dir):
    model = load_hf(sharded_dir)
    from flax import nnx

    axes = dict(nnx.to_flat_state(logical_axes(model)))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        assert len(axes[path]) == var[...].ndim
    assert axes[("layers", "q_proj")] == ("layers", "embed", "heads", "head_dim")
    assert axes[("layers", "k_proj")] == ("layers", "embed", "kv_heads", "head_dim")
    assert axes[("embed_tokens",)] == ("vocab", "embed")
    assert axes[("lm_head",)] == ("embed", "vocab")


def _hf_dict(**kw):
    d = LlamaConfig(**{k: v for k, v in TINY.items() if k != "attn_implementation"}).to_dict()
    d.update(kw)
    return d


@pytest.mark.parametrize("field,value", [
    ("hidden_act", "gelu"), ("attention_bias", True), ("mlp_bias", True), ("model_type", "qwen2"),
    ("attention_dropout", 0.1), ("sliding_window", 16), ("quantization_config", {"quant_method": "gptq"}),
])
def test_unsupported_config_values_fail_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_hf_config(_hf_dict(**{field: value}))


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4},
                                  {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4},
                                  {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4, "extra": 1}])
def test_unsupported_rope_fails(rope):
    with pytest.raises(ConfigError, match="rope_parameters"):
        ModelConfig.from_hf_config(_hf_dict(rope_parameters=rope))


def test_legacy_rope_scaling_format_parses_like_rope_parameters():
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    legacy = _hf_dict(rope_theta=500000.0, rope_scaling=scaling)
    legacy.pop("rope_parameters")
    new = _hf_dict(rope_parameters={**scaling, "rope_theta": 500000.0})
    assert ModelConfig.from_hf_config(legacy) == ModelConfig.from_hf_config(new)
    with pytest.raises(ConfigError, match="rope_scaling"):
        ModelConfig.from_hf_config({**legacy, "rope_scaling": {"type": "yarn", "factor": 2.0}})


def test_config_round_trips_and_mistral_defaults():
    hf = MistralConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, sliding_window=4096).to_dict()
    cfg = ModelConfig.from_hf_config(hf)
    assert cfg.sliding_window == 4096 and cfg.model_type == "mistral" and cfg.num_kv_heads == 2
    assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg


def test_load_hf_rejects_bad_config_file(sharded_dir, tmp_path):
    for f in os.listdir(sharded_dir):
        (tmp_path / f).write_bytes((sharded_dir / f).read_bytes())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["hidden_act"] = "gelu_new"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="hidden_act"):
        load_hf(tmp_path)


def test_safetensors_reader_handles_bf16(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
    path = tmp_path / "x.safetensors"
    safetensors_io.write_safetensors(path, [("a", (3, 4), arr.dtype)], lambda _: arr)
    f = safetensors_io.SafetensorsFile(path)
    np.testing.assert_array_equal(safetensors_io.read_tensor(f, "a"), arr)
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["a"], torch.arange(12.0).reshape(3, 4).to(torch.bfloat16))
