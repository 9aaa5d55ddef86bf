"""Run configuration: frozen dataclasses, one per concern, composed into `RunConfig`.

YAML files map onto these (see `rdpo_jax.config_loader`), with dotted ``key=value`` overrides on the
command line; unknown keys and bad values are rejected before anything is compiled, naming the key and the
accepted values. Every field has a default, so the empty config is the built-in tiny CPU run.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from rdpo_jax.data.formats import FORMATS
from rdpo_jax.sharding import MeshConfig
from rdpo_jax.train.optim import OptimConfig

__all__ = ["CheckpointConfig", "DataConfig", "DistributedConfig", "LoggingConfig", "MeshConfig", "ModelSection",
           "OptimConfig", "RunConfig", "SyntheticConfig", "TrainConfig"]

# Accepted values of string fields (the loader checks these and lists them in its errors).
CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": ("float32", "bfloat16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "save_dots", "save_all_dots"),
    "model.attention": ("auto", "xla", "cudnn", "splash"),
    "data.rationale_template": ("conversational", "official", "none"),
    "data.rationale_wording": ("general", "detailed"),
    "data.layout": ("three_row", "packed"),
    "data.on_bad_row": ("error", "skip"),
    "data.format": tuple(FORMATS),
    "data.missing_rationale": ("error", "mask"),
    "data.synthetic.task": ("colour", "parity"),
    "data.synthetic.wording": ("content", "leaky"),
    "data.synthetic.rationale_follows": ("label", "truth"),
    "train.objective": ("sft", "preference"),
    "train.loss": ("dpo", "rdpo", "orpo", "rorpo", "simpo", "rsimpo"),
    "train.reference": ("live", "cache"),
    "train.nan_policy": ("error", "skip"),
    "optim.name": ("adamw", "sgd"),
    "optim.schedule": ("paper", "cosine", "constant"),
    "distributed.cpu_collectives": ("gloo", "mpi"),
}


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The policy: ``source`` "tiny" (a random tiny Llama sized by ``tiny_*``) or a HF checkpoint directory;
    ``init_from`` a checkpoint directory of ours (e.g. an SFT run's ``final/hf``) to start from instead."""

    source: str = "tiny"
    init_from: str | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "auto"
    tiny_hidden_size: int = 64
    tiny_intermediate_size: int = 128
    tiny_num_layers: int = 2
    tiny_num_heads: int = 4
    tiny_num_kv_heads: int = 2


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic task (`rdpo_jax.data.synthetic`): u vacuous, eps misleading, eta label noise."""

    task: str = "colour"
    u: float = 0.0
    eps: float = 0.0
    eta: float = 0.0
    wording: str = "content"
    parity_bits: int = 3
    rationale_follows: str = "label"
    n_train: int = 512
    n_eval: int = 128


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where pairs come from and how they become rows. ``source`` "synthetic", a named dataset
    (e.g. "redsgnaoh/orcaratspec") or a local file/directory; ``tokenizer`` "synthetic", "llama3",
    "mistral-v1", "mistral-v3" or a tokenizer directory (default: the model's own directory)."""

    source: str = "synthetic"
    split: str = "train"
    eval_split: str | None = "test"
    eval_source: str | None = None  # held-out pairs from another file / source (same format and fields)
    eval_fraction: float | None = None  # or: hold out this fraction of the training pairs (seeded by eval_seed)
    eval_seed: int = 0
    data_files: dict[str, str] | None = None
    fields: dict[str, str] | None = None
    format: str | None = None  # row format; null: the named source's own, else detected from the columns
    on_bad_row: str = "error"
    missing_rationale: str = "error"  # pairs without a rationale under a rationale term: error, or mask them
    n_examples: int | None = None
    synthetic: SyntheticConfig = SyntheticConfig()
    tokenizer: str | None = None
    max_length: int = 128
    max_prompt_length: int = 64
    max_rationale_length: int | None = None
    rationale_template: str = "conversational"
    rationale_wording: str = "general"
    layout: str = "three_row"
    pairs_per_row: int = 1
    min_bucket: int = 32


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What is optimised and for how long. ``loss_kwargs`` go to ``LOSSES[loss]`` (e.g. beta, gamma)."""

    objective: str = "preference"
    sft_rationales: bool = False  # SFT: also fit the rationale conversations (data.rationale_template)
    sft_rejected: bool = False  # SFT: also fit the rejected responses (a preference-neutral SFT model)
    loss: str = "rdpo"
    loss_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    reference: str = "live"
    global_batch_size: int = 32
    micro_batches: int = 1
    epochs: int = 1
    max_steps: int | None = None
    eval_every: int = 50
    eval_batches: int | None = None
    nan_policy: str = "error"
    max_skipped_steps: int = 10  # nan_policy=skip: stop after this many consecutive skipped steps
    block_size: int = 2048
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints under ``<output_dir>/checkpoints``: every N steps, keep K, async by default."""

    every: int = 100
    keep: int = 3
    async_save: bool = True
    resume: bool = True
    export_hf: bool = True


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    every: int = 1
    jsonl: bool = True
    tensorboard: bool = True
    progress: bool = True
    plot: bool = True


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """``jax.distributed.initialize`` arguments; all None: single process (or the TPU/SLURM environment's
    own auto-detection when ``auto`` is true)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: list[int] | None = None
    auto: bool = False
    cpu_collectives: str | None = None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = "tiny"
    output_dir: str = "runs/tiny"
    model: ModelSection = ModelSection()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    optim: OptimConfig = OptimConfig(lr=1e-3, schedule="constant", warmup_steps=0, weight_decay=0.0)
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    distributed: DistributedConfig = DistributedConfig()
