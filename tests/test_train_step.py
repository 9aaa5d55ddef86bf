"""The jitted, sharded preference step: independent loss check, sharding invariance, accumulation,
reference cache, SFT, optimiser parity with torch, NaN policy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rdpo_jax.models import DecoderLM
from rdpo_jax.sharding import MeshConfig, make_mesh
from rdpo_jax.train.objectives import PreferenceObjective, SFTObjective
from rdpo_jax.train.optim import OptimConfig, make_optimizer, make_schedule
from rdpo_jax.train.reference_cache import (
    ReferenceCache,
    ReferenceCacheMismatch,
    compute_reference_cache,
    data_fingerprint,
    model_fingerprint,
    settings_fingerprint,
)
from rdpo_jax.train.step import (
    init_train_state,
    jit_train_step,
    make_loss_and_grads,
    make_train_step,
    split_model,
    state_shardings,
)
from tests import reference_losses as ref
from tests.test_models_backends import needs_splash
from tests.train_helpers import random_pairs, three_row_batch, tiny_model


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    policy, reference = tiny_model(seed=0), tiny_model(seed=1)
    graphdef, params = split_model(policy)
    _, ref_params = split_model(reference)
    pairs = random_pairs(rng, 8, 64)
    return dict(policy=policy, reference=reference, graphdef=graphdef, params=params, ref_params=ref_params,
                pairs=pairs, batch=three_row_batch(pairs))


def _np_row_sums(model, batch):
    """float64 numpy: full logits from the model, log-softmax, masked sums per row."""
    b = {k: v[0] for k, v in batch.items()}
    logits = np.asarray(model(jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"]),
                              positions=jnp.asarray(b["positions"])), np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    lp = np.take_along_axis(logits, b["targets"][..., None], -1)[..., 0] - lse
    return np.where(b["loss_mask"], lp, 0).sum(-1), b["loss_mask"].sum(-1)


@pytest.mark.parametrize("loss,hp", [("rdpo", {"gamma": 0.1}), ("dpo", {"loss_type": "ipo"}),
                                     ("rorpo", {}), ("rsimpo", {"gamma": 0.5})])
def test_objective_matches_independent_computation(setup, loss, hp):
    obj = PreferenceObjective(loss, tuple(hp.items()))
    lg = jax.jit(make_loss_and_grads(setup["graphdef"], obj))
    got, _, _ = lg(setup["params"], setup["batch"], setup["ref_params"] if obj.needs_reference else None)
    s, n = _np_row_sums(setup["policy"], setup["batch"])
    r, _ = _np_row_sums(setup["reference"], setup["batch"])
    x = {"chosen": s[0::3], "rejected": s[1::3], "chosen_tokens": n[0::3], "rejected_tokens": n[1::3],
         "ref_chosen": r[0::3], "ref_rejected": r[1::3], "rationale": s[2::3], "rationale_tokens": n[2::3]}
    np.testing.assert_allclose(float(got), ref.reference_loss(loss, x, **hp).mean(), rtol=1e-5)


def _max_rel(a, b):
    return max(float(jnp.abs(x - y).max() / (jnp.abs(y).max() + 1e-30))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("mesh_cfg", [MeshConfig(data=1, fsdp=8, tensor=1), MeshConfig(data=2, fsdp=2, tensor=2),
                                      MeshConfig(data=8, fsdp=1, tensor=1)], ids=["fsdp8", "d2f2t2", "data8"])
def test_sharded_step_equals_single_device(setup, mesh_cfg):
    obj = PreferenceObjective("rdpo", (("gamma", 0.1),))
    cfg = OptimConfig(name="sgd", lr=0.5, schedule="constant", clip_norm=None)
    tx = make_optimizer(cfg)
    g, params, refp, batch = setup["graphdef"], setup["params"], setup["ref_params"], setup["batch"]
    loss1, grads1, _ = jax.jit(make_loss_and_grads(g, obj))(params, batch, refp)
    single = jax.jit(make_train_step(g, obj, tx))(init_train_state(params, tx), batch, refp)[0]

    mesh = make_mesh(mesh_cfg)
    sh = state_shardings(params, tx, mesh)
    step = jit_train_step(make_train_step(g, obj, tx, schedule=make_schedule(cfg)), sh, mesh, batch,
                          ref_shardings=sh.params)
    sharded_grads = jax.jit(make_loss_and_grads(g, obj), in_shardings=(sh.params, None, sh.params))(
        jax.device_put(params, sh.params), batch, jax.device_put(refp, sh.params))
    new_state, metrics = step(init_train_state(params, tx, sh), batch, jax.device_put(refp, sh.params))
    np.testing.assert_allclose(float(metrics["loss"]), float(loss1), rtol=1e-5)
    np.testing.assert_allclose(float(sharded_grads[0]), float(loss1), rtol=1e-5)
    assert _max_rel(sharded_grads[1], grads1) < 1e-5
    assert _max_rel(new_state.params, single.params) < 1e-5
    some = jax.tree.leaves(new_state.params)[0]
    assert isinstance(some.sharding, jax.sharding.NamedSharding) and some.sharding.mesh.shape == mesh.shape


def test_gradient_accumulation_equals_one_batch(setup):
    obj = PreferenceObjective("rdpo", (("gamma", 0.1),))
    lg = jax.jit(make_loss_and_grads(setup["graphdef"], obj))
    pairs = setup["pairs"]
    loss1, grads1, m1 = lg(setup["params"], three_row_batch(pairs, pad_pairs=4), setup["ref_params"])
    loss4, grads4, m4 = lg(setup["params"], three_row_batch(pairs, micro_batches=4, pad_pairs=4),
                           setup["ref_params"])
    np.testing.assert_allclose(float(loss4), float(loss1), rtol=1e-6)
    assert _max_rel(grads4, grads1) < 1e-5
    for k in m1:
        if k != "pair_finite":  # per-pair flags [M, P]: their shape follows the micro-batching
            np.testing.assert_allclose(float(m4[k]), float(m1[k]), rtol=1e-5, atol=1e-7)
    assert float(m1["count"]) == 8.0  # padded pairs excluded
    assert m1["pair_finite"].shape == (1, 12) and m4["pair_finite"].shape == (4, 3)
    assert bool(np.all(m1["pair_finite"])) and bool(np.all(m4["pair_finite"]))


def test_cached_reference_equals_live_reference(setup, tmp_path):
    obj = PreferenceObjective("rdpo", (("gamma", 0.1),))
    g, params, refp = setup["graphdef"], setup["params"], setup["ref_params"]
    batch = three_row_batch(setup["pairs"], micro_batches=2)
    indices = np.arange(8).reshape(2, 4)
    settings = {"tokenizer": "random-ids", "max_length": 16}
    cache = compute_reference_cache(g, refp, [(indices, batch)], 8, config="tiny", settings=settings)
    path = str(tmp_path / "ref.npz")
    cache.save(path)
    expected = {"model": model_fingerprint("tiny", refp), "data": data_fingerprint([(indices, batch)]),
                "settings": settings_fingerprint(settings)}
    loaded = ReferenceCache.load(path, expected)
    cached_batch = {**batch, **loaded.lookup(indices, batch["pair_mask"])}
    lg = jax.jit(make_loss_and_grads(g, obj))
    live = lg(params, batch, refp)
    cached = lg(params, cached_batch, None)
    np.testing.assert_allclose(float(cached[0]), float(live[0]), rtol=1e-6)
    assert _max_rel(cached[1], live[1]) < 1e-5
    with pytest.raises(ReferenceCacheMismatch, match="different model"):
        ReferenceCache.load(path, {**expected, "model": model_fingerprint("tiny", params)})
    other = three_row_batch(setup["pairs"][::-1], micro_batches=2)
    with pytest.raises(ReferenceCacheMismatch, match="different data"):
        ReferenceCache.load(path, {**expected, "data": data_fingerprint([(indices, other)])})
    (tmp_path / "broken.npz").write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(ReferenceCacheMismatch, match="cannot be read"):
        ReferenceCache.load(str(tmp_path / "broken.npz"))


def test_reference_free_losses_need_no_reference(setup):
    for loss in ("orpo", "simpo"):
        obj = PreferenceObjective(loss)
        loss_val, _, _ = jax.jit(make_loss_and_grads(setup["graphdef"], obj))(setup["params"], setup["batch"], None)
        assert np.isfinite(float(loss_val))
    with pytest.raises(ValueError, match="needs a reference"):
        make_loss_and_grads(setup["graphdef"], PreferenceObjective("dpo"))(setup["params"], setup["batch"], None)


def test_sft_objective_is_token_mean_nll(setup):
    batch = three_row_batch(setup["pairs"], micro_batches=2)
    loss, _, metrics = jax.jit(make_loss_and_grads(setup["graphdef"], SFTObjective()))(setup["params"], batch)
    s, n = _np_row_sums(setup["policy"], three_row_batch(setup["pairs"]))
    np.testing.assert_allclose(float(loss), -s.sum() / n.sum(), rtol=1e-5)
    assert float(metrics["count"]) == n.sum()


def test_unknown_objective_keyword_fails_before_tracing():
    with pytest.raises(TypeError, match="here it is `lam`"):
        PreferenceObjective("orpo", (("beta", 0.1),))
    with pytest.raises(KeyError, match="accepted: cpo, dpo"):
        PreferenceObjective("kto")


def test_adamw_matches_torch_and_paper_schedule():
    torch = pytest.importorskip("torch")
    cfg = OptimConfig(lr=1e-2, warmup_steps=3, clip_norm=1.0)
    tx, sched = make_optimizer(cfg), make_schedule(cfg)
    np.testing.assert_allclose([float(sched(t)) for t in (0, 1, 3, 10)],
                               [1e-2 / 4, 2e-2 / 4, 1e-2, 1e-2], rtol=1e-6)
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) * 3 for _ in range(6)]
    p = {"w": jnp.asarray(w0)}
    state = tx.init(p)
    for g in grads:
        upd, state = tx.update({"w": jnp.asarray(g)}, state, p)
        p = jax.tree.map(jnp.add, p, upd)
    tw = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.AdamW([tw], lr=1e-2)  # torch defaults: wd 0.01, betas 0.9/0.999, eps 1e-8
    lam = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    for g in grads:
        tw.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_([tw], 1.0)
        opt.step()
        lam.step()
    np.testing.assert_allclose(np.asarray(p["w"]), tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_nan_policy_skip_keeps_state(setup):
    obj = PreferenceObjective("simpo")
    tx = make_optimizer(OptimConfig(name="sgd", lr=0.1, schedule="constant", clip_norm=None))
    bad = dict(setup["batch"])
    bad["pair_mask"] = bad["pair_mask"].copy()
    params = jax.tree.map(lambda x: x, setup["params"])
    leaves, treedef = jax.tree.flatten(params)
    leaves[0] = leaves[0].at[0, 0].set(jnp.nan)
    poisoned = jax.tree.unflatten(treedef, leaves)
    state = init_train_state(poisoned, tx)
    for policy, changed in (("skip", False), ("error", True)):
        new, metrics = jax.jit(make_train_step(setup["graphdef"], obj, tx, nan_policy=policy))(state, bad, None)
        assert float(metrics["finite"]) == 0.0
        assert int(new.step) == (1 if changed else 0)
    with pytest.raises(ValueError, match="nan_policy='ignore'"):
        make_train_step(setup["graphdef"], obj, tx, nan_policy="ignore")


def test_bf16_compute_with_fp32_master_params(setup):
    policy = tiny_model(seed=0)
    policy_bf16 = type(policy)(policy.config, rngs=__import__("flax").nnx.Rngs(0), dtype=jnp.bfloat16)
    g16, p16 = split_model(policy_bf16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p16))
    obj = PreferenceObjective("simpo")
    l32 = jax.jit(make_loss_and_grads(setup["graphdef"], obj))(setup["params"], setup["batch"])[0]
    l16, grads16, _ = jax.jit(make_loss_and_grads(g16, obj))(p16, setup["batch"])
    np.testing.assert_allclose(float(l16), float(l32), rtol=2e-2)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(grads16))


def test_skip_also_covers_an_update_that_overflows(setup):
    """Loss and gradient finite, updated params not (SGD at lr 1e308 = inf in float32): skip keeps the state."""
    obj = PreferenceObjective("simpo")
    tx = make_optimizer(OptimConfig(name="sgd", lr=1e308, schedule="constant", warmup_steps=0, clip_norm=None))
    before = jax.tree.map(np.asarray, setup["params"])
    for policy in ("skip", "error"):
        new, metrics = jax.jit(make_train_step(setup["graphdef"], obj, tx, nan_policy=policy))(
            init_train_state(setup["params"], tx), setup["batch"], None)
        assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
        assert float(metrics["finite"]) == 0.0
        finite = all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(new.params))
        if policy == "skip":
            assert finite and int(new.step) == 0
            for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(new.params), strict=True):
                np.testing.assert_array_equal(a, np.asarray(b))
        else:
            assert not finite and int(new.step) == 1  # the trainer stops on it and never checkpoints it


@needs_splash
def test_splash_attention_runs_inside_the_sharded_step(setup):
    """The splash kernels (Pallas interpret mode on CPU) run per device under shard_map in the sharded step
    (rows over data x fsdp, heads over tensor) and give the single-device xla step's loss and parameters."""
    obj = PreferenceObjective("rdpo", (("gamma", 0.1),))
    tx = make_optimizer(OptimConfig(name="sgd", lr=0.5, schedule="constant", clip_norm=None))
    params, refp, batch = setup["params"], setup["ref_params"], setup["batch"]
    single, single_metrics = jax.jit(make_train_step(setup["graphdef"], obj, tx))(init_train_state(params, tx),
                                                                                  batch, refp)
    splash = DecoderLM(setup["policy"].config, rngs=nnx.Rngs(0), attention_backend="splash-interpret")
    graphdef, _ = split_model(splash)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sh = state_shardings(params, tx, mesh)
    step = jit_train_step(make_train_step(graphdef, obj, tx), sh, mesh, batch, ref_shardings=sh.params)
    hlo = step.lower(init_train_state(params, tx, sh), batch, jax.device_put(refp, sh.params)).as_text()
    assert "shard_map" in hlo or "manual" in hlo.lower()
    new_state, metrics = step(init_train_state(params, tx, sh), batch, jax.device_put(refp, sh.params))
    np.testing.assert_allclose(float(metrics["loss"]), float(single_metrics["loss"]), rtol=1e-5)
    assert _max_rel(new_state.params, single.params) < 1e-5
