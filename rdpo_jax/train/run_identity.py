"""What a run is: the settings that decide the trained function, their fingerprint, and the check that a
resumed run is the run its checkpoint came from.

Every config key defines the run (model, data and tokenisation, loss and its hyperparameters, optimiser and
schedule, global batch size, seed, ...) except the keys of `MAY_CHANGE_ON_RESUME`, which change how or how
long a run trains, not what the trained function is: the mesh and the attention backend give equal results,
``train.max_steps`` extends a run, and so on. The fingerprint is a SHA-256 over the run-defining keys, so
two configs that differ only in those keys have the same fingerprint.

The trainer compares the config it resumes with against the one stored in the checkpoint (`check_resume`):
a run-defining key that differs stops the run with `ResumeMismatch`, listing each key with both values and
how to start afresh; keys that may change are listed in the "resumed from" line.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from rdpo_jax.config import RunConfig
from rdpo_jax.config_loader import config_to_dict
from rdpo_jax.errors import ConfigError

__all__ = ["MAY_CHANGE_ON_RESUME", "ResumeMismatch", "check_resume", "defines_run", "fingerprint", "flatten",
           "run_settings"]

#: Keys (or whole sections) that may differ between a checkpoint and the run that resumes it.
MAY_CHANGE_ON_RESUME: tuple[str, ...] = (
    "name", "output_dir",
    "model.attention", "model.remat", "model.remat_memory_gib",
    "data.eval_split", "data.eval_source", "data.layout", "data.pairs_per_row", "data.min_bucket",
    "train.reference", "train.micro_batches", "train.epochs", "train.max_steps", "train.eval_every",
    "train.eval_batches", "train.nan_policy", "train.max_skipped_steps", "train.block_size",
    "mesh", "checkpoint", "logging", "distributed",
)


class ResumeMismatch(ConfigError):
    """The checkpoint in ``output_dir`` was trained with different run-defining settings."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"loss": "dpo"}}`` -> ``{"train.loss": "dpo"}`` (mapping values are flattened too)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def defines_run(key: str) -> bool:
    """Whether dotted ``key`` decides the trained function (it is not in `MAY_CHANGE_ON_RESUME`)."""
    return not any(key == k or key.startswith(k + ".") for k in MAY_CHANGE_ON_RESUME)


def _flat(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    return flatten(config_to_dict(cfg) if isinstance(cfg, RunConfig) else cfg)


def run_settings(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The run-defining keys of a config (a `RunConfig` or its `config_to_dict` form), flattened."""
    return {k: v for k, v in _flat(cfg).items() if defines_run(k)}


def fingerprint(cfg: RunConfig | Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the run-defining settings in canonical JSON."""
    text = json.dumps(run_settings(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_resume(stored: Mapping[str, Any] | None, cfg: RunConfig, *, where: str) -> list[str]:
    """Compares the config a checkpoint was written with (``stored``, `config_to_dict` form) with ``cfg``.

    Raises `ResumeMismatch` listing every run-defining key that differs (``key: checkpoint value -> now``).
    Returns the keys that may change on resume and did, as ``"key: old -> new"`` lines. A key the stored
    config lacks (written by an older version) counts as having today's default.
    """
    if stored is None:
        return []
    defaults, old, new = _flat(RunConfig()), _flat(stored), _flat(cfg)
    keys = sorted(set(old) | set(new))
    changed = [(k, old.get(k, defaults.get(k)), new.get(k, defaults.get(k))) for k in keys]
    changed = [(k, a, b) for k, a, b in changed if a != b]
    wrong = [f"  {k}: {a!r} (checkpoint) -> {b!r} (now)" for k, a, b in changed if defines_run(k)]
    if wrong:
        raise ResumeMismatch(
            f"cannot resume {where}: it was trained with other settings:\n" + "\n".join(wrong) + "\nThese keys "
            "decide what is trained, so they must match to resume. To start afresh instead, set "
            "checkpoint.resume=false (the checkpoints and metrics in that output_dir are replaced) or give the "
            "run a new output_dir.")
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in changed]
