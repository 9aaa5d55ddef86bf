"""Each config setting is defined once, by the module that owns it: accepted values come from the losses
registry, the attention backends, the templates, ...; the synthetic keys are `SyntheticTask`'s fields; the
mesh keys are the mesh axes; one `ConfigError`; and `rdpo_jax.config` imports nothing from `rdpo_jax.train`."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from rdpo_jax import errors, models
from rdpo_jax.config import CHOICES, MeshConfig, OptimConfig, RunConfig, SyntheticConfig
from rdpo_jax.config_loader import ConfigError, load_config
from rdpo_jax.data.formats import FORMATS
from rdpo_jax.data.rationale_templates import TEMPLATES, WORDINGS
from rdpo_jax.data.synthetic import RATIONALE_FOLLOWS, TASKS, SyntheticTask
from rdpo_jax.losses import LOSSES
from rdpo_jax.models.attention import BACKENDS
from rdpo_jax.sharding import MESH_AXES


@pytest.mark.parametrize("key, owner_values", [
    ("train.loss", tuple(LOSSES)),
    ("model.attention", BACKENDS),
    ("data.format", tuple(FORMATS)),
    ("data.rationale_wording", tuple(WORDINGS)),
    ("data.synthetic.task", TASKS),
    ("data.synthetic.rationale_follows", RATIONALE_FOLLOWS),
])
def test_every_value_the_owner_accepts_is_accepted(key, owner_values):
    assert set(CHOICES[key]) == set(owner_values)
    extra = {"train.loss": ["train.loss_kwargs={}"]}.get(key, [])
    for value in owner_values:
        cfg = load_config(None, [f"{key}={value}", *extra])
        section, name = key.rsplit(".", 1)
        obj = cfg
        for part in section.split("."):
            obj = getattr(obj, part)
        assert getattr(obj, name) == value


def test_templates_are_the_owners_plus_none():
    assert set(CHOICES["data.rationale_template"]) == {*TEMPLATES, "none"}


def test_splash_interpret_is_a_valid_attention_backend():
    assert load_config(None, ["model.attention=splash-interpret"]).model.attention == "splash-interpret"


def test_synthetic_keys_are_the_synthetic_task():
    assert issubclass(SyntheticConfig, SyntheticTask)
    task_fields = [f.name for f in dataclasses.fields(SyntheticTask)]
    config_fields = [f.name for f in dataclasses.fields(SyntheticConfig)]
    assert config_fields == [*task_fields, "n_train", "n_eval"]
    cfg = load_config(None).data.synthetic
    assert all(getattr(cfg, name) == getattr(SyntheticTask(), name) for name in task_fields)
    assert cfg.parity_bits == 4  # the task's own default (the config used to say 3)


def test_synthetic_range_is_the_tasks():
    with pytest.raises(ConfigError, match=r"data\.synthetic\.parity_bits=9 is out of range; accepted: an integer "
                                          r"in \[1, 8\]"):
        load_config(None, ["data.synthetic.parity_bits=9"])
    with pytest.raises(ConfigError, match=r"^u=1\.5 is out of range"):
        SyntheticTask(u=1.5)


def test_mesh_keys_are_the_mesh_axes():
    assert tuple(f.name for f in dataclasses.fields(MeshConfig)) == MESH_AXES
    assert tuple(MeshConfig(data=2, fsdp=3, tensor=4).sizes().values()) == (2, 3, 4)


def test_one_config_error():
    assert models.ConfigError is errors.ConfigError and ConfigError is errors.ConfigError
    assert issubclass(errors.ConfigError, errors.RdpoError)


def test_optim_config_is_the_run_configs():
    from rdpo_jax.train import optim

    assert optim.OptimConfig is OptimConfig and isinstance(RunConfig().optim, optim.OptimConfig)
    with pytest.raises(ConfigError, match="lr=-1 is out of range; accepted: a positive number"):
        OptimConfig(lr=-1)


def test_config_imports_nothing_from_train():
    code = ("import sys, rdpo_jax.config_loader, rdpo_jax.config_rules; "
            "print(sorted(m for m in sys.modules if m.startswith('rdpo_jax.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
