"""docs/configuration.md: generated from the config declarations and fresh; every key of the loaded default
config is on it with its default, accepted values from their owners, and the resume rule of run_identity."""
from __future__ import annotations

import dataclasses
import os
import re
import shlex

import pytest

from rdpo_jax.config import RunConfig, settings
from rdpo_jax.config_docs import REGENERATE, render
from rdpo_jax.config_fields import doc_of
from rdpo_jax.config_loader import config_to_dict, load_config
from rdpo_jax.data.synthetic import SyntheticTask
from rdpo_jax.losses import LOSSES
from rdpo_jax.models.attention import BACKENDS
from rdpo_jax.train.run_identity import flatten

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "configuration.md")


@pytest.fixture(scope="module")
def page() -> str:
    with open(PAGE, encoding="utf-8") as f:
        return f.read()


def _rows(page: str) -> dict[str, list[str]]:
    """key -> [type, default, accepted, on resume, description] from the page's tables."""
    rows = {}
    for line in page.splitlines():
        m = re.match(r"\| `([\w.]+)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", m.group(2))]
    return rows


def test_page_is_fresh(page):
    assert page == render(), f"docs/configuration.md is stale; regenerate it: {REGENERATE}"


def test_every_key_of_the_default_config_has_a_row_with_its_default(page):
    rows = _rows(page)
    defaults = flatten(config_to_dict(load_config(None)))
    assert set(rows) == set(defaults)
    assert rows["optim.lr"][1] == "`0.001`" and rows["train.loss"][1] == "`rdpo`"
    assert rows["model.init_from"][1] == "null" and rows["checkpoint.resume"][1] == "true"
    assert rows["data.synthetic.parity_bits"][1] == f"`{SyntheticTask().parity_bits}`"


def test_every_key_is_described_in_the_code():
    missing = [key for key, field in settings() if not (doc_of(field) or "").strip()]
    assert not missing, f"keys without a description (give them setting(..., doc=...)): {missing}"


def test_accepted_values_come_from_their_owners(page):
    rows = _rows(page)
    assert rows["train.loss"][2].split(", ") == list(LOSSES)
    assert rows["model.attention"][2].split(", ") == list(BACKENDS)
    assert "splash-interpret" in rows["model.attention"][2]
    assert rows["data.synthetic.u"][2] == "a number in [0, 1]"


def test_resume_column_follows_the_run_identity_rules(page):
    # run_identity's own examples: the mesh and the attention backend give equal results, max_steps extends
    # a run; the loss and the data decide what is trained.
    rows = _rows(page)
    for key in ("mesh.fsdp", "model.attention", "train.max_steps", "checkpoint.every", "output_dir"):
        assert rows[key][3] == "may change", key
    for key in ("train.loss", "train.loss_kwargs", "optim.lr", "data.source", "data.synthetic.u", "train.seed"):
        assert rows[key][3] == "must match", key


def test_page_examples_are_valid_configs(page):
    commands = [line for line in page.splitlines() if line.startswith("rdpo-jax ")]
    assert any(c.startswith("rdpo-jax config ") for c in commands)
    for command in commands:
        args = shlex.split(command)[2:]
        path = os.path.join(ROOT, args[0]) if args and "=" not in args[0] else None
        load_config(path, args[1:] if path else args)


def test_the_documented_commands_exist():
    from rdpo_jax.cli import COMMANDS

    assert {"config", "train"} <= set(COMMANDS)


def test_declared_defaults_are_the_dataclass_defaults():
    # the rows show the empty run config's values; the synthetic keys are SyntheticTask's own
    task = SyntheticTask()
    synthetic = RunConfig().data.synthetic
    for field in dataclasses.fields(SyntheticTask):
        assert getattr(synthetic, field.name) == getattr(task, field.name), field.name
