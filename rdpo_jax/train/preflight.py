"""Checks a run makes before it reads any data or compiles anything, each naming the key at fault.

* Paths: ``model.source`` / ``model.init_from`` must be Hugging Face model directories (``config.json``),
  the tokenizer must exist (a built-in name or a directory with tokenizer files), and local data files must
  exist. Without these checks a typo surfaces later as "unknown tokenizer" or a datasets error.
* Layout: every micro-batch's rows must split evenly over the mesh's ``data x fsdp`` devices (and over the
  processes), else `ShardingError` says which global batch sizes would work, before jax's own error.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from rdpo_jax.config import RunConfig
from rdpo_jax.config_rules import uses_rationales
from rdpo_jax.data import SOURCES, rows_per_pair
from rdpo_jax.data.tokenizers import NAMES as TOKENIZER_NAMES
from rdpo_jax.data.tokenizers import SYNTHETIC
from rdpo_jax.errors import ConfigError
from rdpo_jax.sharding import BATCH_AXES, ShardingError

__all__ = ["SYNTHETIC", "check_batch_layout", "check_paths", "step_rows_per_pair", "tokenizer_spec"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def tokenizer_spec(cfg: RunConfig) -> tuple[str, str]:
    """(tokenizer name or directory, the key it comes from): ``data.tokenizer``, else the directory of
    ``model.source``, else (the tiny model) the synthetic tokenizer."""
    if cfg.data.tokenizer is not None:
        return cfg.data.tokenizer, "data.tokenizer"
    if cfg.model.source == "tiny":
        return SYNTHETIC, "model.source"
    return cfg.model.source, "model.source"


def _check_model_dir(key: str, value: str) -> None:
    path = Path(value)
    accepted = "a Hugging Face Llama/Mistral directory (config.json and *.safetensors)"
    if not path.exists():
        raise ConfigError(f"{key}: {value} does not exist; accepted: {accepted}"
                          + ("" if key == "model.init_from" else ", or 'tiny'"))
    if not (path / "config.json").is_file():
        raise ConfigError(f"{key}: no config.json in {value}; accepted: {accepted}")


def _data_paths(cfg: RunConfig) -> list[tuple[str, str]]:
    d = cfg.data
    out = []
    for key, files in (d.data_files or {}).items():
        out.append((f"data.data_files.{key}", files))
    for key, source in (("data.source", d.source), ("data.eval_source", d.eval_source)):
        if source is None or source == SYNTHETIC or source in SOURCES or (key == "data.source" and d.data_files):
            continue
        looks_like_hub = d.format is not None and not Path(source).suffix and source.count("/") == 1
        if not looks_like_hub:
            out.append((key, source))
    return out


def check_paths(cfg: RunConfig) -> None:
    """Raises `ConfigError` when a model directory, the tokenizer or a local data file does not exist."""
    m = cfg.model
    if m.source != "tiny":
        _check_model_dir("model.source", m.source)
    if m.init_from is not None:
        _check_model_dir("model.init_from", m.init_from)
    name, key = tokenizer_spec(cfg)
    if name != SYNTHETIC and name not in TOKENIZER_NAMES:
        path = Path(name)
        accepted = f"{', '.join((SYNTHETIC, *TOKENIZER_NAMES))} or a tokenizer directory"
        if not path.exists():
            raise ConfigError(f"data.tokenizer: {name} does not exist; accepted: {accepted}")
        if path.is_dir() and not any((path / f).exists() for f in _TOKENIZER_FILES):
            how = "" if key == "data.tokenizer" else f" (data.tokenizer is null, so it comes from {key})"
            raise ConfigError(f"data.tokenizer: {name} holds no tokenizer files ({', '.join(_TOKENIZER_FILES)})"
                              f"{how}; accepted: {accepted}")
    for key, path in _data_paths(cfg):
        if not Path(path).exists():
            raise ConfigError(f"{key}: no such file or directory: {path}; accepted: a registered source "
                              f"({', '.join(SOURCES)}), a local json/jsonl/parquet file or a Dataset.save_to_disk "
                              "directory")


def step_rows_per_pair(cfg: RunConfig) -> int:
    """Rows of one pair in the three-row layout: chosen and rejected (+ the rationale row when rationales are
    used); SFT keeps chosen (+ rejected with ``train.sft_rejected``) (+ the rationale row)."""
    t = cfg.train
    if t.objective == "sft":
        return 1 + int(t.sft_rejected) + int(t.sft_rationales)
    return rows_per_pair(uses_rationales(cfg))


def check_batch_layout(cfg: RunConfig, mesh_shape: Mapping[str, int], process_count: int) -> int:
    """Checks that micro-batches split evenly over processes and over ``data x fsdp``; returns the number of
    rows each process's micro-batch must be a multiple of (packed layouts pad their row count to it)."""
    t = cfg.train
    batch_ways = [mesh_shape.get(axis, 1) for axis in BATCH_AXES]
    ways = math.prod(batch_ways)
    per_process = max(1, ways // process_count)
    if t.global_batch_size % (process_count * t.micro_batches):
        raise ShardingError(f"train.global_batch_size={t.global_batch_size} does not split into "
                            f"{process_count} processes x train.micro_batches={t.micro_batches}; use a multiple of "
                            f"{process_count * t.micro_batches}")
    if cfg.data.layout == "three_row" or t.objective == "sft":
        pairs = t.global_batch_size // (process_count * t.micro_batches)
        roles = step_rows_per_pair(cfg)
        if (pairs * roles) % per_process:
            step = process_count * t.micro_batches * per_process // math.gcd(roles, per_process)
            raise ShardingError(
                f"train.global_batch_size={t.global_batch_size} gives {pairs} pairs x {roles} rows = "
                f"{pairs * roles} rows per micro-batch and process, which do not split over {' x '.join(BATCH_AXES)} = "
                f"{' x '.join(map(str, batch_ways))} devices ({per_process} per process); "
                f"use a global batch size that is a multiple of {step}, or another mesh")
    return per_process
