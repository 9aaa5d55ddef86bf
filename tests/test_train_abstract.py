"""The paper-scale step (Mistral-7B / Llama-3-8B shapes, global batch 32 pairs x 2048 tokens) lowers and
compiles on an 8-device CPU mesh without allocating any weight, in one micro-batch, with at most 40 GiB of
temporaries per device at fsdp=8 (activations split over the batch axes, blocked attention); bad layouts fail
before compiling."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from rdpo_jax.models import DecoderLM, ModelConfig
from rdpo_jax.sharding import MeshConfig, ShardingError, make_mesh, resolve_mesh_shape, validate_layout
from rdpo_jax.train.objectives import PreferenceObjective
from rdpo_jax.train.optim import OptimConfig, make_optimizer
from rdpo_jax.train.step import TrainState, jit_train_step, make_train_step, split_model, state_shardings

GIB = 2.0**30
PAPER_MODELS = {
    "mistral-7b": ModelConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_layers=32,
                              num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=1e6),
    "llama-3-8b": ModelConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                              num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=5e5),
}


def abstract_batch(micro_batches, pairs, seq):
    rows = 3 * pairs // micro_batches
    shape = (micro_batches, rows, seq)
    batch = {k: jax.ShapeDtypeStruct(shape, dt) for k, dt in [
        ("input_ids", jnp.int32), ("positions", jnp.int32), ("attention_mask", jnp.int32),
        ("targets", jnp.int32), ("loss_mask", jnp.bool_), ("score_slot", jnp.int32)]}
    batch["slot_pair"] = jax.ShapeDtypeStruct((micro_batches, rows, 1), jnp.int32)
    batch["slot_role"] = jax.ShapeDtypeStruct((micro_batches, rows, 1), jnp.int32)
    batch["pair_mask"] = jax.ShapeDtypeStruct((micro_batches, pairs // micro_batches), jnp.bool_)
    return batch


def _placed(tree, shardings):
    return jax.tree.map(lambda s, v: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), v),
                        shardings, tree)


def compile_abstract_step(cfg, mesh_cfg, *, micro_batches, pairs=32, seq=2048, remat="full", attention="xla"):
    model = nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32,
                                             remat=remat, attention_backend=attention))
    graphdef, params = split_model(model)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))  # nothing allocated
    tx = make_optimizer(OptimConfig())
    mesh = make_mesh(mesh_cfg)
    sh = state_shardings(params, tx, mesh)
    state = _placed(TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, jax.eval_shape(tx.init, params)), sh)
    batch = abstract_batch(micro_batches, pairs, seq)
    step = jit_train_step(make_train_step(graphdef, PreferenceObjective("rdpo", (("gamma", 0.001),)), tx), sh, mesh,
                          batch, ref_shardings=sh.params, model_config=cfg, activation_sharding=True)
    return step.lower(state, batch, _placed(params, sh.params)).compile().memory_analysis()


TEMP_BOUND_GIB = 40.0


@pytest.mark.parametrize("name", list(PAPER_MODELS))
def test_paper_scale_step_compiles_in_one_micro_batch_within_40gib_of_temporaries_at_fsdp8(name):
    ma = compile_abstract_step(PAPER_MODELS[name], MeshConfig(fsdp=8), micro_batches=1)
    temp = ma.temp_size_in_bytes / GIB
    peak = (ma.argument_size_in_bytes + ma.temp_size_in_bytes + ma.output_size_in_bytes
            - ma.alias_size_in_bytes) / GIB
    print(f"\n{name}: RDPO step, 32 pairs x 2048 tokens (3 rows per pair), 1 micro-batch, fsdp=8, fp32 master "
          f"params + AdamW, bf16 compute, frozen reference, remat full; per device: arguments "
          f"{ma.argument_size_in_bytes / GIB:.1f} GiB, temporaries {temp:.1f} GiB, peak estimate {peak:.1f} GiB")
    assert temp <= TEMP_BOUND_GIB
    assert peak < 80.0


def test_bad_layouts_fail_before_compiling():
    cfg = PAPER_MODELS["mistral-7b"]
    with pytest.raises(ShardingError, match="micro-batch of 12 rows is not divisible by data x fsdp = 1 x 8"):
        compile_abstract_step(cfg, MeshConfig(fsdp=8), micro_batches=8, pairs=32)
    with pytest.raises(ShardingError, match="num_key_value_heads=8 is not divisible by mesh.tensor=16"):
        validate_layout({"data": 1, "fsdp": 1, "tensor": 16}, num_heads=32, num_kv_heads=8)
    with pytest.raises(ShardingError, match="needs 16 devices but only 8 are available"):
        make_mesh(MeshConfig(data=2, fsdp=8, tensor=1))
    with pytest.raises(ShardingError, match="mesh axes data, fsdp are all -1"):
        resolve_mesh_shape(MeshConfig(data=-1, fsdp=-1), 8)
    with pytest.raises(ShardingError, match="num_attention_heads=4 is not divisible by mesh.tensor=8"):
        small = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4,
                            num_kv_heads=4, head_dim=8)
        compile_abstract_step(small, MeshConfig(data=1, fsdp=1, tensor=8), micro_batches=1, pairs=8, seq=16)
