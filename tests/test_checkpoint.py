"""Checkpoints: bit-exact round trip (params, AdamW state, step, iterator state, RNG), every-N / keep-K,
async saves, fallback past truncated / incomplete / altered checkpoints, NaN refusal, restore onto another
mesh."""
import json
import os
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rdpo_jax.data.iteration import BatchIterator
from rdpo_jax.sharding import MeshConfig, make_mesh
from rdpo_jax.train.checkpoint import (
    MANIFEST,
    Checkpointer,
    CheckpointError,
    abstract_state,
    key_from_json,
    key_to_json,
)
from rdpo_jax.train.step import TrainState, init_train_state, split_model, state_shardings
from tests.train_helpers import tiny_model


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_bit_exact(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8))  # bitwise


@pytest.fixture(scope="module")
def setup():
    """A tiny model's TrainState on a (data=2, fsdp=2, tensor=2) mesh after 2 and 4 AdamW updates."""
    _, params = split_model(tiny_model(seed=0))
    tx = optax.adamw(1e-2, weight_decay=0.1)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    shardings = state_shardings(params, tx, mesh)

    def update(state):
        grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)

    update = jax.jit(update, in_shardings=(shardings,), out_shardings=shardings)
    states = {0: init_train_state(params, tx, shardings)}
    for s in range(1, 5):
        states[s] = update(states[s - 1])
    it = BatchIterator(list(range(40)), 4, seed=3, process_index=0, process_count=1)
    for _ in range(7):
        next(it)
    extras = {"data": it.get_state(), "rng": key_to_json(jax.random.fold_in(jax.random.key(7), 3)),
              "metrics": {"loss": 0.25}}
    return dict(params=params, tx=tx, mesh=mesh, shardings=shardings, states=states, extras=extras)


@pytest.fixture(scope="module")
def pristine(setup, tmp_path_factory):
    """A directory with good checkpoints of steps 2 and 4 (copied per test, then damaged)."""
    d = tmp_path_factory.mktemp("pristine")
    with Checkpointer(d, every=2, keep=3) as ck:
        for s in (2, 4):
            assert ck.save(s, setup["states"][s], {**setup["extras"], "saved_at": s})
    return d


@pytest.fixture
def run_dir(pristine, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(pristine, d)
    return d


def _largest_file(step_dir: Path) -> Path:
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_is_bit_exact(setup, tmp_path, async_save):
    state, extras = setup["states"][2], setup["extras"]
    ck = Checkpointer(tmp_path, every=1, keep=2, async_save=async_save)
    assert ck.save(2, state, extras)
    ck.wait()
    assert (tmp_path / "2" / MANIFEST).is_file()
    ck.close()
    # a fresh Checkpointer, as after a restart; the concrete state serves as the template
    with Checkpointer(tmp_path, every=1, keep=2) as ck2:
        step, restored, got_extras = ck2.restore(setup["states"][0])
    assert step == 2 and int(restored.step) == 2
    _assert_bit_exact(restored, state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert a.sharding == b.sharding
    assert got_extras == json.loads(json.dumps(extras))
    # the RNG key and the data iterator resume exactly
    key = key_from_json(got_extras["rng"])
    want = jax.random.fold_in(jax.random.key(7), 3)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(want))
    np.testing.assert_array_equal(jax.random.normal(key, (3,)), jax.random.normal(key_from_json(extras["rng"]), (3,)))
    ref = BatchIterator(list(range(40)), 4, seed=3, process_index=0, process_count=1)
    for _ in range(7):
        next(ref)
    resumed = BatchIterator(list(range(40)), 4, seed=3, process_index=0, process_count=1)
    resumed.set_state(got_extras["data"])
    np.testing.assert_array_equal(next(resumed).indices, next(ref).indices)


def test_async_save_restores_without_explicit_wait(setup, tmp_path):
    """The manifest follows the commit without any call (a background watcher); restore() also waits."""
    ck = Checkpointer(tmp_path, every=1, keep=2, async_save=True)
    ck.save(3, setup["states"][3], setup["extras"])
    deadline = time.monotonic() + 30
    while not (tmp_path / "3" / MANIFEST).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / "3" / MANIFEST).exists()
    ck.save(4, setup["states"][4], setup["extras"])
    step, restored, _ = ck.restore(abstract_state(setup["states"][0], setup["shardings"]))
    assert step == 4
    _assert_bit_exact(restored, setup["states"][4])
    ck.close()


def test_raw_uint32_key_round_trip():
    key = jax.random.PRNGKey(11)
    back = key_from_json(json.loads(json.dumps(key_to_json(key))))
    assert back.dtype == key.dtype
    np.testing.assert_array_equal(back, key)


def test_every_n_and_keep_k(setup, tmp_path):
    state = setup["states"][1]
    with Checkpointer(tmp_path, every=2, keep=2) as ck:
        saved = [s for s in range(1, 8) if ck.save(s, state, {})]
        assert saved == [2, 4, 6]
        assert ck.all_steps() == [4, 6]
        assert ck.save(7, state, {}, force=True)
        assert ck.all_steps() == [6, 7]
        assert not ck.save(6, state, {}, force=True)  # an existing good step is not overwritten
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["6", "7"]


def test_empty_directory_restores_none(setup, tmp_path):
    with Checkpointer(tmp_path / "none") as ck:
        assert ck.restore(setup["states"][0]) is None
        assert ck.latest_good_step() is None


def test_refuses_to_save_nan(setup, tmp_path):
    state = setup["states"][2]
    bad = state._replace(params=jax.tree_util.tree_map_with_path(
        lambda p, x: x.at[0].set(jnp.nan) if jax.tree_util.keystr(p).startswith("['norm']") else x, state.params))
    with Checkpointer(tmp_path, every=2) as ck:
        with pytest.raises(ValueError, match=r"step 6.*params/norm"):
            ck.save(6, bad, {})
        inf_opt = state._replace(opt_state=jax.tree.map(lambda x: x * jnp.inf if x.ndim else x, state.opt_state))
        with pytest.raises(ValueError, match="step 8"):
            ck.save(8, inf_opt, {})
        assert ck.all_steps() == []
    assert not any(p.name in ("6", "8") for p in tmp_path.iterdir())


def _restore_with_warning(setup, d, match):
    with Checkpointer(d, every=2, keep=3) as ck, pytest.warns(UserWarning, match=match):
        out = ck.restore(abstract_state(setup["states"][0], setup["shardings"]))
    return out


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest_mismatch", "no_manifest"])
def test_bad_latest_falls_back_to_previous(setup, run_dir, damage):
    step_dir = run_dir / "4"
    victim = _largest_file(step_dir)
    if damage == "truncate":
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size // 2)
        match = r"step 4.*truncated"
    elif damage == "delete":
        os.remove(victim)
        match = r"step 4.*missing"
    elif damage == "manifest_mismatch":  # same size, one byte flipped: only the sha256 can tell
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        victim.write_bytes(bytes(raw))
        match = r"step 4.*sha256"
    else:  # a crash between orbax's commit and the manifest
        os.remove(step_dir / MANIFEST)
        match = r"step 4.*no rdpo_manifest.json"
    step, restored, extras = _restore_with_warning(setup, run_dir, match)
    assert step == 2 and extras["saved_at"] == 2
    _assert_bit_exact(restored, setup["states"][2])
    with Checkpointer(run_dir, every=2, keep=3) as ck:
        assert ck.latest_good_step() == 2


def test_orbax_error_behind_a_valid_manifest_falls_back(setup, run_dir):
    """Damage that the manifest cannot see (it is rewritten after truncation) still falls back."""
    from rdpo_jax.train.checkpoint import write_manifest
    step_dir = run_dir / "4"
    for p in (step_dir / "state").rglob("*"):
        if p.is_file() and p.stat().st_size > 1000:
            p.write_bytes(p.read_bytes()[:100])
    write_manifest(step_dir)
    step, restored, _ = _restore_with_warning(setup, run_dir, r"step 4.*restore failed")
    assert step == 2
    _assert_bit_exact(restored, setup["states"][2])


def test_all_bad_raises_and_a_bad_step_is_replaced_on_save(setup, run_dir):
    for s in ("2", "4"):
        os.remove(_largest_file(run_dir / s))
    ck = Checkpointer(run_dir, every=2, keep=3)
    with pytest.warns(UserWarning) as record, pytest.raises(CheckpointError, match=r"step 4.*\n.*step 2"):
        ck.restore(setup["states"][0])
    messages = [str(w.message) for w in record]
    assert any("step 4" in m and "missing" in m for m in messages)
    assert any("step 2" in m and "missing" in m for m in messages)
    # training restarts from scratch; reaching step 4 again overwrites the bad checkpoint
    with pytest.warns(UserWarning, match="replacing"):
        assert ck.save(4, setup["states"][4], {"saved_at": 4})
    step, restored, extras = ck.restore(setup["states"][0])
    assert step == 4 and extras == {"saved_at": 4}
    _assert_bit_exact(restored, setup["states"][4])
    ck.close()


@pytest.mark.parametrize("target_mesh", ["fsdp8", "single_device"])
def test_restore_onto_a_different_mesh(setup, pristine, target_mesh):
    if target_mesh == "fsdp8":
        mesh = make_mesh(MeshConfig(data=1, fsdp=8, tensor=1))
    else:
        mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    shardings = state_shardings(setup["params"], setup["tx"], mesh)
    target = abstract_state(jax.eval_shape(lambda s: s, setup["states"][0]), shardings)
    with Checkpointer(pristine, every=2, keep=3) as ck:
        step, restored, _ = ck.restore(target, step=2)
    assert step == 2
    _assert_bit_exact(restored, setup["states"][2])
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
        assert got.sharding == want.sharding
        assert got.sharding.mesh.shape == mesh.shape
