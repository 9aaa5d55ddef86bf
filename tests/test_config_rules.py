"""Config errors before any data is read or anything compiled, each naming the key: duplicate YAML keys,
infinite hyperparameters, contradicting settings, options the objective ignores, missing model / tokenizer /
data paths, and batches that do not split over the mesh (the project's ShardingError, before jax's own)."""
import textwrap

import pytest

from rdpo_jax.config_loader import ConfigError, load_config
from rdpo_jax.sharding import ShardingError
from rdpo_jax.train.preflight import check_batch_layout, check_paths


def _error(overrides=(), path=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    return str(e.value)


def test_duplicate_yaml_keys_name_the_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(textwrap.dedent("""\
        train:
          loss: dpo
          seed: 3
          loss: rdpo
    """))
    msg = _error(path=str(path))
    assert str(path) in msg and "line 4: duplicate key 'loss' (first at line 2)" in msg
    assert "duplicate key 'beta'" in _error(["train.loss_kwargs={beta: 0.1, beta: 0.2}"])


@pytest.mark.parametrize("override,key", [
    ("train.loss_kwargs.beta=.inf", "train.loss_kwargs.beta"),
    ("train.loss_kwargs.gamma=.nan", "train.loss_kwargs.gamma"),
    ("optim.lr=.inf", "optim.lr"),
    ("optim.clip_norm=.inf", "optim.clip_norm"),
    ("data.synthetic.u=.nan", "data.synthetic.u"),
])
def test_infinite_numbers_are_rejected(override, key):
    msg = _error([override])
    assert key in msg and ("not a finite number" in msg or "out of range" in msg), msg


@pytest.mark.parametrize("overrides,needle", [
    (["data.rationale_template=none"], "data.rationale_template=none: loss 'rdpo' has a rationale term"),
    (["data.rationale_template=none", "train.loss=dpo", "train.loss_kwargs={loss_type: bco_pair, "
      "rationale_weight: 0.1}"], "data.rationale_template=none: loss 'dpo' has a rationale term"),
    (["train.loss=cpo", "train.loss_kwargs={}", "train.reference=cache"], "loss 'cpo' is reference-free"),
    (["train.objective=sft", "train.sft_rationales=true", "data.rationale_template=none",
      "train.loss_kwargs={}"], "data.rationale_template=none: train.sft_rationales=true"),
    (["train.loss=simpo", "train.loss_kwargs={}", "train.reference=cache"], "loss 'simpo' is reference-free"),
    (["train.objective=sft", "train.loss_kwargs={}", "train.reference=cache"], "objective=sft uses no reference"),
    (["data.eval_fraction=0.1"], "the synthetic task draws its own held-out pairs"),
    (["data.source=x.jsonl", "data.eval_fraction=0.1", "data.eval_source=y.jsonl"], "set one of them"),
])
def test_contradicting_settings(overrides, needle):
    assert needle in _error(overrides)


@pytest.mark.parametrize("overrides,key", [
    (["train.sft_rationales=true"], "train.sft_rationales"),
    (["train.sft_rejected=true"], "train.sft_rejected"),
    (["train.objective=sft"], "train.loss_kwargs"),  # the default loss_kwargs are {}: set some first
    (["data.missing_rationale=mask", "train.loss=dpo"], "data.missing_rationale"),
    (["data.missing_rationale=mask", "train.loss=simpo", "train.loss_kwargs={loss_type: hinge}"],
     "data.missing_rationale"),
    (["data.source=my.jsonl", "data.synthetic.u=0.3"], "data.synthetic.u"),
    (["data.pairs_per_row=2"], "data.pairs_per_row"),
    (["optim.total_steps=100"], "optim.total_steps"),
    (["optim.schedule=paper", "optim.final_lr_ratio=0.1"], "optim.final_lr_ratio"),
    (["optim.warmup_steps=10"], "optim.warmup_steps"),
    (["optim.name=sgd", "optim.weight_decay=0.01"], "optim.weight_decay"),
])
def test_options_the_run_would_ignore_are_errors(overrides, key):
    if overrides == ["train.objective=sft"]:
        overrides = ["train.objective=sft", "train.loss_kwargs={beta: 0.2}"]
    msg = _error(overrides)
    assert msg.startswith(key) or f" {key}=" in msg or msg.split(": ", 1)[-1].startswith(key), msg
    assert "would be ignored" in msg


def test_defaults_and_valid_combinations_pass():
    load_config(None)
    load_config(None, ["data.missing_rationale=mask"])                       # rdpo uses rationales
    load_config(None, ["train.objective=sft", "train.loss_kwargs={}", "train.sft_rationales=true"])
    load_config(None, ["train.reference=cache"])                             # rdpo has a reference
    load_config(None, ["optim.schedule=cosine", "optim.total_steps=100", "optim.warmup_steps=10"])


def test_missing_model_tokenizer_and_data_paths(tmp_path):
    def check(overrides):
        with pytest.raises(ConfigError) as e:
            check_paths(load_config(None, overrides))
        return str(e.value)

    assert check([f"model.source={tmp_path / 'nope'}"]).startswith(f"model.source: {tmp_path / 'nope'} does not exist")
    (tmp_path / "empty").mkdir()
    assert check([f"model.source={tmp_path / 'empty'}"]) == (
        f"model.source: no config.json in {tmp_path / 'empty'}; accepted: a Hugging Face Llama/Mistral directory "
        "(config.json and *.safetensors)")
    assert "model.init_from: no config.json" in check([f"model.init_from={tmp_path / 'empty'}"])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    msg = check([f"model.source={tmp_path / 'model'}"])
    assert "data.tokenizer" in msg and "holds no tokenizer files" in msg and "comes from model.source" in msg
    assert "data.tokenizer: llama-3 does not exist; accepted: synthetic, llama3" in check(["data.tokenizer=llama-3"])
    assert "data.source: no such file or directory" in check(["data.source=missing.jsonl"])
    assert "data.eval_source: no such file" in check(["data.source=Anthropic/hh-rlhf", "data.eval_source=gone.jsonl"])
    check_paths(load_config(None, ["data.source=Anthropic/hh-rlhf"]))  # a registered name is not a path


@pytest.mark.parametrize("overrides,mesh,processes,ok", [
    (["train.global_batch_size=8"], {"data": 1, "fsdp": 8}, 1, True),         # 8 pairs x 3 rows
    (["train.global_batch_size=12"], {"data": 1, "fsdp": 8}, 1, False),       # 36 rows over 8 devices
    (["train.global_batch_size=12", "train.loss=dpo", "train.loss_kwargs={}"], {"data": 2, "fsdp": 2}, 1, True),
    (["train.global_batch_size=16", "train.micro_batches=4"], {"data": 1, "fsdp": 8}, 1, False),
    (["train.global_batch_size=16"], {"data": 1, "fsdp": 8}, 2, True),        # 8 pairs x 3 rows per process
    (["train.global_batch_size=9"], {"data": 1, "fsdp": 1}, 2, False),        # 9 pairs over 2 processes
])
def test_batch_layout_is_checked_before_jax(overrides, mesh, processes, ok):
    cfg = load_config(None, overrides)
    if ok:
        check_batch_layout(cfg, mesh, processes)
        return
    with pytest.raises(ShardingError, match="train.global_batch_size=") as e:
        check_batch_layout(cfg, mesh, processes)
    assert "multiple of" in str(e.value)
