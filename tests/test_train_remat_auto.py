"""model.remat=auto: the first of none, save_dots, full whose compiled step fits the memory limit is kept
(each policy's peak compiled independently here), the ahead-compiled executable gives the jitted step's
numbers, a limit nothing fits stops with the numbers, and the trainer logs its choice."""
import jax
import numpy as np
import pytest

from rdpo_jax.config_loader import ConfigError, load_config
from rdpo_jax.train.objectives import PreferenceObjective
from rdpo_jax.train.optim import OptimConfig, make_optimizer
from rdpo_jax.train.remat_choice import RematDoesNotFit, choose_remat, compiled_peak_bytes
from rdpo_jax.train.step import init_train_state, make_train_step, split_model
from rdpo_jax.train.trainer import train
from tests.train_helpers import random_pairs, three_row_batch, tiny_model


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(seed=0, num_layers=2, hidden_size=64, intermediate_size=256)
    _, params = split_model(model)
    batch = three_row_batch(random_pairs(np.random.default_rng(0), 8, 64), t=64)
    tx = make_optimizer(OptimConfig(name="sgd", lr=0.1, schedule="constant", clip_norm=None))
    objective = PreferenceObjective("rdpo", (("gamma", 0.1),))

    def make(policy):
        model.remat = policy
        graphdef, _ = split_model(model)
        return jax.jit(make_train_step(graphdef, objective, tx))

    state = init_train_state(params, tx)
    peaks = {p: compiled_peak_bytes(make(p).lower(state, batch, params).compile().memory_analysis())
             for p in ("none", "save_dots", "full")}
    return dict(make=make, state=state, batch=batch, params=params, peaks=peaks, tx=tx)


def test_first_policy_that_fits_is_chosen_and_its_executable_gives_the_jitted_numbers(setup):
    peaks = setup["peaks"]
    assert peaks["none"] > peaks["save_dots"] > peaks["full"]
    args = (setup["make"], setup["state"], setup["batch"], setup["params"])
    between = int((peaks["none"] + peaks["save_dots"]) / 2 / 0.9)
    policy, step, lines = choose_remat(*args, limit_bytes=between)
    assert policy == "save_dots" and "tried: none" in lines[0] and "save_dots" in lines[0]
    with pytest.raises(RematDoesNotFit, match=r"no policy fits 90% of the 0\.00 GiB.*train\.micro_batches"):
        choose_remat(*args, limit_bytes=1000, candidates=("full",))

    params, tx, batch = setup["params"], setup["tx"], setup["batch"]
    new, metrics = step(init_train_state(params, tx), batch, params)
    ref, ref_metrics = setup["make"]("save_dots")(init_train_state(params, tx), batch, params)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6), new.params,
                 ref.params)


ARGS = ["data.synthetic.n_train=16", "data.synthetic.n_eval=8", "train.global_batch_size=8", "data.max_length=64",
        "data.max_prompt_length=32", "logging.progress=false", "checkpoint.async_save=false", "train.max_steps=1",
        "train.eval_every=0", "model.remat=auto", "train.loss_kwargs={beta: 0.5, gamma: 0.1}"]


def test_the_trainer_logs_its_choice_and_stops_before_a_step_when_nothing_fits(tmp_path, capsys):
    train(load_config(None, ARGS + [f"output_dir={tmp_path / 'fits'}"]))
    assert "model.remat=auto: none (compiled step" in capsys.readouterr().out  # CPU: no known limit
    with pytest.raises(RematDoesNotFit, match="no policy fits"):
        train(load_config(None, ARGS + [f"output_dir={tmp_path / 'tight'}", "model.remat_memory_gib=0.0001"]))
    assert not (tmp_path / "tight" / "checkpoints").exists() or not list((tmp_path / "tight" / "checkpoints").iterdir())


def test_a_memory_limit_without_remat_auto_is_refused():
    with pytest.raises(ConfigError, match=r"model.remat_memory_gib=40.0 would be ignored: it applies to "
                                          r"model.remat=auto, not 'full'"):
        load_config(None, ["model.remat=full", "model.remat_memory_gib=40"])
    assert load_config(None, ["model.remat=auto", "model.remat_memory_gib=40"]).model.remat_memory_gib == 40
