"""Run configs: every shipped YAML validates, overrides, the documented errors, dump/load, `extends`."""
from __future__ import annotations

import glob
import os
import textwrap

import pytest

from rdpo_jax.config import RunConfig
from rdpo_jax.config_loader import ConfigError, config_to_dict, dump_config, load_config, parse_override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def _error(path=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    return str(e.value)


# ---------------------------------------------------------------------------------------------- shipped files


def test_configs_exist():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs")) for p in CONFIGS}
    for loss in ("sft", "dpo", "rdpo", "orpo", "rorpo", "simpo", "rsimpo"):
        assert f"tiny_{loss}.yaml" in names
    for model in ("mistral7b_instruct_v02", "zephyr7b_beta", "llama3_8b_instruct"):
        for data in ("orcaratgen", "orcaratspec"):
            assert f"paper/{model}_{data}_rdpo.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_config_validates_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    again = tmp_path / "dumped.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(str(again)) == cfg


def test_tiny_presets():
    sft = load_config(os.path.join(ROOT, "configs/tiny_sft.yaml"))
    assert sft.train.objective == "sft" and sft.model.source == "tiny" and sft.output_dir == "runs/tiny_sft"
    assert (sft.data.tokenizer, sft.data.max_length, sft.data.max_prompt_length) == ("synthetic", 128, 64)
    assert (sft.model.tiny_num_layers, sft.model.tiny_hidden_size) == (2, 64)
    for loss in ("dpo", "rdpo", "simpo", "rsimpo"):
        cfg = load_config(os.path.join(ROOT, f"configs/tiny_{loss}.yaml"))
        assert cfg.train.loss == loss and cfg.model.init_from == "runs/tiny_sft/final/hf"
    assert load_config(os.path.join(ROOT, "configs/tiny_orpo.yaml")).train.loss_kwargs == {"lam": 0.1}


def test_paper_settings():
    cfg = load_config(os.path.join(ROOT, "configs/paper/mistral7b_instruct_v02_orcaratspec_rdpo.yaml"))
    assert cfg.model.source == "/checkpoints/Mistral-7B-Instruct-v0.2" and cfg.data.tokenizer is None
    assert cfg.data.source == "redsgnaoh/orcaratspec"
    assert cfg.train.loss == "rdpo" and cfg.train.loss_kwargs["beta"] == 0.1
    assert cfg.train.loss_kwargs["gamma"] == 0.001 and cfg.train.loss_kwargs["rationale_form"] == "sigmoid"
    o = cfg.optim
    assert (o.name, o.lr, o.schedule, o.warmup_steps, o.weight_decay) == ("adamw", 5e-7, "paper", 150, 0.01)
    assert (o.b1, o.b2, o.eps, o.clip_norm) == (0.9, 0.999, 1e-8, 10.0)
    assert (cfg.train.global_batch_size, cfg.train.epochs) == (32, 1)
    assert (cfg.data.max_length, cfg.data.max_prompt_length) == (2048, 1024)
    assert (cfg.model.dtype, cfg.model.param_dtype, cfg.model.remat) == ("bfloat16", "bfloat16", "full")
    assert cfg.mesh.fsdp == -1
    dpo = load_config(os.path.join(ROOT, "configs/paper/llama3_8b_instruct_orcaratgen_dpo.yaml"))
    assert dpo.train.loss == "dpo" and dpo.train.loss_kwargs == {"beta": 0.1}  # mapping replaced, not merged
    assert dpo.data.source == "redsgnaoh/orcaratgen" and dpo.model.source.endswith("Meta-Llama-3-8B-Instruct")


# ---------------------------------------------------------------------------------------------- overrides


def test_defaults_and_overrides():
    assert load_config(None) == RunConfig()
    cfg = load_config(None, ["train.loss=dpo", "optim.lr=5e-7", "data.synthetic.u=0.3", "mesh.fsdp=-1",
                             "train.loss_kwargs.beta=0.2", "model.init_from=null", "train.max_steps=7",
                             "distributed.local_device_ids=[0, 1]", "logging.plot=false", "name=007",
                             "--data.fields.prompt=question", "checkpoint.every=1e3"])
    assert cfg.train.loss == "dpo" and cfg.train.loss_kwargs == {"beta": 0.2}
    assert cfg.optim.lr == 5e-7 and isinstance(cfg.optim.lr, float)
    assert cfg.data.synthetic.u == 0.3 and cfg.mesh.fsdp == -1 and cfg.model.init_from is None
    assert cfg.train.max_steps == 7 and cfg.distributed.local_device_ids == [0, 1] and cfg.logging.plot is False
    assert cfg.name == "007"  # a string field keeps the override's text
    assert cfg.data.fields == {"prompt": "question"} and cfg.checkpoint.every == 1000


def test_override_onto_file_and_whole_section(tmp_path):
    path = _write(tmp_path, "a.yaml", """
        train: {loss: rdpo, loss_kwargs: {beta: 0.1, gamma: 0.001}}
        optim: {lr: 1e-4}
    """)
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string; the float field parses it
    cfg = load_config(path, ["train.loss_kwargs.gamma=0.1", "model={source: tiny, tiny_num_layers: 3}"])
    assert cfg.train.loss_kwargs == {"beta": 0.1, "gamma": 0.1} and cfg.model.tiny_num_layers == 3
    assert load_config(path, ["train.loss=dpo", "train.loss_kwargs={}"]).train.loss_kwargs == {}
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])


def test_loss_kwargs_types_coerced(tmp_path):
    path = _write(tmp_path, "a.yaml", "train: {loss: rdpo, loss_kwargs: {beta: 1, gamma: 1e-3}}\n")
    kw = load_config(path).train.loss_kwargs
    assert kw == {"beta": 1.0, "gamma": 0.001} and all(isinstance(v, float) for v in kw.values())


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_keys_name_the_key_and_suggest():
    msg = _error(None, ["train.lossx=dpo"])
    assert "'train.lossx'" in msg and "did you mean 'train.loss'" in msg and "loss_kwargs" in msg
    msg = _error(None, ["data.synthetic.epsilon=0.1"])
    assert "data.synthetic.epsilon" in msg and "'data.synthetic.eps'" in msg
    assert "Valid keys of the top level" in _error(None, ["trian.loss=dpo"])


def test_unknown_key_in_file_names_file(tmp_path):
    path = _write(tmp_path, "bad.yaml", "optim:\n  learning_rate: 1e-4\n")
    msg = _error(path)
    assert "bad.yaml" in msg and "'optim.learning_rate'" in msg and "Valid keys of optim" in msg and "lr" in msg


@pytest.mark.parametrize("override, words", [
    ("train.global_batch_size=abc", ["train.global_batch_size", "an integer"]),
    ("train.global_batch_size=2.5", ["train.global_batch_size", "an integer"]),
    ("optim.lr=fast", ["optim.lr", "a number"]),
    ("logging.jsonl=1", ["logging.jsonl", "true or false"]),
    ("train.epochs=null", ["train.epochs", "an integer"]),
    ("train.max_steps=[1]", ["train.max_steps", "an integer or null"]),
    ("distributed.local_device_ids=[a]", ["distributed.local_device_ids", "a list of integers"]),
    ("data.fields=3", ["data.fields", "mapping"]),
    ("model=tiny", ["model", "a mapping"]),
    ("train.loss.beta=1", ["train.loss", "not a section"]),
    ("nonsense", ["key=value"]),
])
def test_wrong_types(override, words):
    msg = _error(None, [override])
    for w in words:
        assert w in msg, (w, msg)


def test_wrong_type_in_file(tmp_path):
    path = _write(tmp_path, "a.yaml", "name: 12\n")
    assert "quote it" in _error(path)


@pytest.mark.parametrize("override, accepted", [
    ("train.loss=dpoo", "dpo, rdpo, orpo, rorpo, simpo, rsimpo"),
    ("model.dtype=fp16", "float32, bfloat16"),
    ("data.synthetic.task=colours", "colour, parity"),
    ("train.objective=rl", "sft, preference"),
    ("optim.schedule=linear", "paper, cosine, constant"),
    ("distributed.cpu_collectives=nccl", "gloo, mpi"),
])
def test_choices(override, accepted):
    msg = _error(None, [override])
    assert override.split("=")[0] in msg and accepted in msg


def test_loss_kwargs_checked_against_the_loss():
    msg = _error(None, ["train.loss=orpo", "train.loss_kwargs.beta=0.1"])
    assert "train.loss_kwargs.beta" in msg and "'orpo'" in msg and "lam" in msg and "Hint" in msg
    msg = _error(None, ["train.loss=dpo", "train.loss_kwargs.gama=0.1"])
    assert "train.loss_kwargs.gama" in msg and "did you mean 'gamma'" not in msg  # dpo has no gamma
    assert "beta, loss_type, loss_weights, label_smoothing, nll_weight" in msg
    msg = _error(None, ["train.loss=rdpo", "train.loss_kwargs.gama=0.1"])
    assert "did you mean 'gamma'" in msg
    msg = _error(None, ["train.loss=rdpo", "train.loss_kwargs.beta=-1"])
    assert "train.loss_kwargs.beta" in msg and "range" in msg
    msg = _error(None, ["train.loss=dpo", "train.loss_kwargs.loss_type=kto"])
    assert "loss_type" in msg and "sigmoid, hinge, ipo, exo_pair" in msg
    msg = _error(None, ["train.loss=rdpo", "train.loss_kwargs.gamma=big"])
    assert "train.loss_kwargs.gamma" in msg and "a number" in msg


@pytest.mark.parametrize("overrides, words", [
    (["train.global_batch_size=0"], ["train.global_batch_size", "positive"]),
    (["train.micro_batches=5"], ["train.global_batch_size", "multiple of train.micro_batches=5"]),
    (["data.synthetic.u=1.5"], ["data.synthetic.u", "[0, 1]"]),
    (["data.synthetic.eps=-0.1"], ["data.synthetic.eps", "[0, 1]"]),
    (["data.synthetic.eta=2"], ["data.synthetic.eta", "[0, 1]"]),
    (["data.max_prompt_length=128"], ["data.max_prompt_length", "below data.max_length=128"]),
    (["mesh.fsdp=0"], ["mesh.fsdp", "-1"]),
    (["mesh.data=-1"], ["mesh", "at most one axis"]),
    (["distributed.num_processes=2", "distributed.process_id=2"], ["distributed.process_id"]),
    (["model.tiny_num_kv_heads=3"], ["model.tiny_num_heads", "multiple of model.tiny_num_kv_heads=3"]),
    (["optim.b2=1.0"], ["optim.b2", "[0, 1)"]),
    (["optim.weight_decay=-0.1"], ["optim.weight_decay", ">= 0"]),
])
def test_ranges(overrides, words):
    msg = _error(None, overrides)
    for w in words:
        assert w in msg, (w, msg)


def test_post_init_errors_name_the_section(tmp_path):
    assert "optim.lr" in _error(None, ["optim.lr=-1"])
    msg = _error(None, ["optim.total_steps=5", "optim.warmup_steps=10"])
    assert "optim.total_steps" in msg and "optim.warmup_steps" in msg
    path = _write(tmp_path, "a.yaml", "optim: {lr: 0}\n")
    msg = _error(path)
    assert "a.yaml" in msg and "optim.lr" in msg


def test_file_errors(tmp_path):
    assert "does not exist" in _error(str(tmp_path / "missing.yaml"))
    assert "top level must be a mapping" in _error(_write(tmp_path, "l.yaml", "- 1\n- 2\n"))
    assert "not valid YAML" in _error(_write(tmp_path, "y.yaml", "a: [1\n"))
    assert load_config(_write(tmp_path, "empty.yaml", "")) == RunConfig()


# ---------------------------------------------------------------------------------------------- dump, extends


def test_dump_round_trip_with_overrides(tmp_path):
    cfg = load_config(None, ["optim.lr=3e-7", "train.loss_kwargs.gamma=0.5", "distributed.local_device_ids=[3]",
                             "data.data_files={train: a.jsonl}", "name=run 1"])
    p = tmp_path / "d.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(str(p)) == cfg
    d = config_to_dict(cfg)
    assert d["optim"]["lr"] == 3e-7 and d["data"]["synthetic"]["task"] == "colour"


def test_extends(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "base.yaml", """
        name: base
        train: {loss: rdpo, loss_kwargs: {beta: 0.1, gamma: 0.001}, global_batch_size: 8}
        optim: {lr: 1e-5}
    """)
    _write(tmp_path, "other.yaml", "model: {tiny_num_layers: 3}\n")
    child = _write(tmp_path, "sub/child.yaml", """
        extends: [../base.yaml, ../other.yaml]
        name: child
        train: {loss: dpo, loss_kwargs: {beta: 0.2}}
    """)
    cfg = load_config(child, ["optim.lr=2e-5"])
    assert cfg.name == "child" and cfg.train.loss == "dpo" and cfg.train.loss_kwargs == {"beta": 0.2}
    assert cfg.train.global_batch_size == 8 and cfg.model.tiny_num_layers == 3 and cfg.optim.lr == 2e-5
    a = _write(tmp_path, "a.yaml", "extends: b.yaml\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\n")
    assert "cycle" in _error(a)
    assert "extends expects" in _error(_write(tmp_path, "c.yaml", "extends: {x: 1}\n"))
    bad_base = _write(tmp_path, "d.yaml", "extends: e.yaml\n")
    _write(tmp_path, "e.yaml", "train: {bogus: 1}\n")
    assert "e.yaml" in _error(bad_base) and "train.bogus" in _error(bad_base)


def test_a_list_of_losses_in_yaml_and_as_overrides(tmp_path):
    """docs/losses.md: a combination written in the file or as overrides gives the same keywords."""
    path = tmp_path / "my.yaml"
    path.write_text("train:\n  loss: dpo\n  loss_kwargs: {loss_type: [sigmoid, bco_pair, sft], "
                    "loss_weights: [0.8, 0.2, 1.0], beta: 0.1}\n")
    from_file = load_config(str(path)).train.loss_kwargs
    from_overrides = load_config(None, ["train.loss=dpo", "train.loss_kwargs.loss_type=[sigmoid,bco_pair,sft]",
                                        "train.loss_kwargs.loss_weights=[0.8,0.2,1.0]",
                                        "train.loss_kwargs.beta=0.1"]).train.loss_kwargs
    assert from_file == from_overrides == {"loss_type": ["sigmoid", "bco_pair", "sft"],
                                           "loss_weights": [0.8, 0.2, 1.0], "beta": 0.1}
    msg = _error(None, ["train.loss=dpo", "train.loss_kwargs.loss_type=[sigmoid,bco_pair]",
                        "train.loss_kwargs.loss_weights=[1]"])
    assert "train.loss_kwargs" in msg and "loss_weights has 1 entries for 2 loss types" in msg
