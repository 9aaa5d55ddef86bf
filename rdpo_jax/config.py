"""Run configuration: frozen dataclasses, one per concern, composed into `RunConfig`.

YAML files map onto these (see `rdpo_jax.config_loader`), with dotted ``key=value`` overrides on the
command line; unknown keys and bad values are rejected before anything is compiled, naming the key and the
accepted values. Every field has a default, so the empty config is the built-in tiny CPU run.

Each key is declared once, here or by the module that owns it (the synthetic task in
`rdpo_jax.data.synthetic`, the mesh in `rdpo_jax.sharding`), with `rdpo_jax.config_fields.setting`: its
description, and its accepted values read from the module that implements them (losses, attention
backends, templates, formats, ...). docs/configuration.md is generated from these declarations
(`python -m rdpo_jax.config_docs`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from rdpo_jax.config_fields import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_NUMBER,
    POSITIVE_NUMBER_OR_NULL,
    POSITIVE_OR_NULL,
    UNIT_INTERVAL,
    Range,
    check_settings,
    choices_of,
    setting,
)
from rdpo_jax.data.batching import LAYOUTS
from rdpo_jax.data.formats import FORMATS
from rdpo_jax.data.rationale_templates import TEMPLATES, WORDINGS
from rdpo_jax.data.schema import ON_BAD_ROW
from rdpo_jax.data.sources import SOURCES
from rdpo_jax.data.synthetic import SyntheticTask
from rdpo_jax.data.tokenizers import NAMES as BUILTIN_TOKENIZERS
from rdpo_jax.errors import ConfigError
from rdpo_jax.losses import LOSSES
from rdpo_jax.models.attention import BACKENDS
from rdpo_jax.models.layers import REMAT_POLICIES
from rdpo_jax.sharding import MeshConfig

__all__ = ["CHOICES", "CPU_COLLECTIVES", "DTYPES", "LAYOUTS", "MISSING_RATIONALE", "NAN_POLICIES", "NO_TEMPLATE",
           "OBJECTIVES", "OPTIMIZERS", "REFERENCES", "SCHEDULES", "CheckpointConfig", "DataConfig",
           "DistributedConfig", "LoggingConfig", "MeshConfig", "ModelSection", "OptimConfig", "RunConfig",
           "SyntheticConfig", "TrainConfig", "is_section", "settings"]

# Accepted values that the config itself defines: the code that acts on them is under rdpo_jax.train, which
# this module does not import (rdpo_jax.train.step and .optim import theirs from here).
DTYPES = ("float32", "bfloat16")
NO_TEMPLATE = "none"  # data.rationale_template: no rationale conditioning
MISSING_RATIONALE = ("error", "mask")
OBJECTIVES = ("sft", "preference")
REFERENCES = ("live", "cache")
NAN_POLICIES = ("error", "skip")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("paper", "cosine", "constant")
CPU_COLLECTIVES = ("gloo", "mpi")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The policy: a random tiny Llama or a Hugging Face checkpoint directory, its dtypes and kernels."""

    source: str = setting("tiny", doc="`tiny` (a random tiny Llama sized by `tiny_*`) or a local Hugging Face "
                                      "Llama/Mistral directory")
    init_from: str | None = setting(None, doc="a HF directory of ours to start from instead (e.g. an SFT run's "
                                              "`runs/tiny_sft/final/hf`); also the reference of DPO-family losses")
    dtype: str = setting("float32", choices=DTYPES, doc="compute dtype")
    param_dtype: str = setting("float32", choices=DTYPES,
                               doc="parameter (and AdamW state) dtype; the paper keeps bf16 weights")
    remat: str = setting("none", choices=("none", *REMAT_POLICIES, "auto"),
                         doc="activation checkpointing of the layers (`auto`: the fastest of none, save_dots, full "
                             "whose compiled step fits `remat_memory_gib`)")
    remat_memory_gib: float | None = setting(None, within=POSITIVE_NUMBER_OR_NULL,
                                             doc="`remat: auto`: per-device memory the step must fit in GiB (null: "
                                                 "the device's own limit; none is known on CPU, so `none` is kept)")
    attention: str = setting("auto", choices=BACKENDS,
                             doc="attention backend (`auto`: cuDNN on GPU, splash on TPU, XLA otherwise; `xla`: "
                                 "memory-efficient blocks, no [T, T] scores; `xla-dense`: the dense reference; "
                                 "`splash-interpret`: the splash kernels in Pallas interpret mode on any "
                                 "platform, slow, for tests)")
    tiny_hidden_size: int = setting(64, within=POSITIVE, doc="width of the tiny model (a multiple of "
                                                             "`model.tiny_num_heads`)")
    tiny_intermediate_size: int = setting(128, within=POSITIVE, doc="MLP width of the tiny model")
    tiny_num_layers: int = setting(2, within=POSITIVE, doc="layers of the tiny model")
    tiny_num_heads: int = setting(4, within=POSITIVE, doc="attention heads of the tiny model (a multiple of "
                                                          "`model.tiny_num_kv_heads`)")
    tiny_num_kv_heads: int = setting(2, within=POSITIVE, doc="KV heads of the tiny model (GQA; divides the heads)")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig(SyntheticTask):
    """The synthetic task (`rdpo_jax.data.synthetic.SyntheticTask`, whose keys and defaults these are) and how
    many pairs to draw from it."""

    n_train: int = setting(512, within=POSITIVE, doc="synthetic training pairs")
    n_eval: int = setting(128, within=NON_NEGATIVE, doc="synthetic held-out pairs")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where pairs come from and how they become token rows."""

    source: str = setting("synthetic", doc=f'`synthetic`, a named dataset ({", ".join(f"`{s}`" for s in SOURCES)}) '
                                           "or a local file/directory")
    split: str = setting("train", doc="training split")
    eval_split: str | None = setting("test", doc="held-out split (null: no evaluation data); refused when it is the "
                                                 "training data itself (a single local file)")
    eval_source: str | None = setting(None, doc="held-out pairs from another file, directory or named source (same "
                                                "format and fields; its split: `data.eval_split`, else `data.split`)")
    eval_fraction: float | None = setting(
        None, within=Range("a number in (0, 1) or null", lambda v: v is None or 0.0 < v < 1.0),
        doc="hold out this share of the training pairs instead (seeded by `data.eval_seed`, by pair: copies stay "
            "together)")
    eval_seed: int = setting(0, doc="seed of the `data.eval_fraction` split")
    data_files: dict[str, str] | None = setting(None, doc="split -> file mapping for local files")
    fields: dict[str, str] | None = setting(None, doc="column mapping: the format's field name -> the column "
                                                      "holding it")
    format: str | None = setting(None, choices=tuple(FORMATS), doc="row format; null: the named source's own, else "
                                                                   "detected from the columns and the first row")
    on_bad_row: str = setting("error", choices=ON_BAD_ROW,
                              doc="what a malformed row does: stop with an error naming it, or skip it (counted in "
                                  "the report; skipping every row is an error)")
    missing_rationale: str = setting("error", choices=MISSING_RATIONALE,
                                     doc="pairs without a rationale when the run uses rationales: stop naming the "
                                         "counts, or train them without the rationale term (stated in the log and "
                                         "`summary.json`)")
    n_examples: int | None = setting(None, within=POSITIVE_OR_NULL, doc="cap on the training pairs (data-budget runs)")
    synthetic: SyntheticConfig = SyntheticConfig()
    tokenizer: str | None = setting(None, doc=f'`synthetic`, {", ".join(f"`{n}`" for n in BUILTIN_TOKENIZERS)} '
                                              "(built in, no download) or a tokenizer directory; null: the model's "
                                              "own directory (`synthetic` for the tiny model)")
    max_length: int = setting(128, within=POSITIVE, doc="tokens of prompt + response")
    max_prompt_length: int = setting(64, within=POSITIVE, doc="prompt tokens kept (below `data.max_length`)")
    max_rationale_length: int | None = setting(None, within=POSITIVE_OR_NULL,
                                               doc="rationale tokens kept (null: no separate limit)")
    rationale_template: str = setting("conversational", choices=(*TEMPLATES, NO_TEMPLATE),
                                      doc="how the rationale is conditioned (docs/spec.md section 3): `official` (the "
                                          "official code's prompt), `conversational` (a packable follow-up turn), "
                                          "`none`")
    rationale_wording: str = setting("general", choices=tuple(WORDINGS),
                                     doc="wording of the templates' question: `general`, or `detailed` (asks for a "
                                         "point-by-point rationale)")
    layout: str = setting("three_row", choices=LAYOUTS,
                          doc="rows per pair: chosen/rejected/rationale rows, or packed")
    pairs_per_row: int = setting(1, within=POSITIVE, doc="pairs packed per row (`packed` layout)")
    min_bucket: int = setting(32, within=POSITIVE, doc="smallest padded sequence-length bucket (buckets are powers "
                                                       "of two up to `data.max_length`, which it may not exceed)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What is optimised and for how long."""

    objective: str = setting("preference", choices=OBJECTIVES,
                             doc="`sft` (token NLL on chosen responses) or `preference` (`train.loss`)")
    sft_rationales: bool = setting(False, doc="SFT: also fit the rationale conversations (as laid out by "
                                              "`data.rationale_template`)")
    sft_rejected: bool = setting(False, doc="SFT: also fit the rejected responses (a preference-neutral SFT model)")
    loss: str = setting("rdpo", choices=tuple(LOSSES), doc="the preference loss (`rdpo_jax.losses.LOSSES`)")
    loss_kwargs: dict[str, Any] = setting(default_factory=dict,
                                          doc="keywords of `LOSSES[train.loss]`, checked against its signature "
                                              "(e.g. `beta`, `gamma`; ORPO's weight is `lam`)")
    reference: str = setting("live", choices=REFERENCES,
                             doc="reference log-probs: a frozen model forward each step (`live`) or precomputed "
                                 "once (`cache`)")
    global_batch_size: int = setting(32, within=POSITIVE, doc="pairs per optimiser step, over all devices and "
                                                              "processes (a multiple of `train.micro_batches`)")
    micro_batches: int = setting(1, within=POSITIVE, doc="gradient accumulation: micro-batches per step")
    epochs: int = setting(1, within=POSITIVE, doc="passes over the training pairs")
    max_steps: int | None = setting(None, within=POSITIVE_OR_NULL,
                                    doc="stop after this many steps (null: epochs decide); more than epochs x steps "
                                        "per epoch is an error")
    eval_every: int = setting(50, within=Range("an integer >= 0 (0: no evaluation during training)", lambda v: v >= 0),
                              doc="steps between evaluations on the held-out split")
    eval_batches: int | None = setting(None, within=POSITIVE_OR_NULL,
                                       doc="global batches per evaluation (null: the whole held-out split)")
    nan_policy: str = setting("error", choices=NAN_POLICIES,
                              doc="a non-finite loss, gradient or update stops the run (`error`) or the step is "
                                  "skipped (`skip`)")
    max_skipped_steps: int = setting(10, within=POSITIVE,
                                     doc="`nan_policy: skip`: stop after this many consecutive skipped steps")
    block_size: int = setting(2048, within=POSITIVE, doc="block size of the chunked log-prob head (memory of the LM "
                                                         "head, not the math)")
    seed: int = setting(0, doc="seed of data order, init and sampling")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (`rdpo_jax.train.optim`). The class defaults are the paper's
    (adamw, lr 5e-7, warm-up 150, schedule "paper", clip 10); the empty run config uses a constant lr 1e-3."""

    name: str = setting("adamw", choices=OPTIMIZERS, doc="optimiser (AdamW with decoupled weight decay, as torch)")
    lr: float = setting(5e-7, within=POSITIVE_NUMBER, doc="peak learning rate")
    schedule: str = setting("paper", choices=SCHEDULES,
                            doc="`paper`: lr * min(1, (t+1)/(warmup+1)); `cosine`: warm-up then cosine decay; "
                                "`constant`")
    warmup_steps: int = setting(150, within=NON_NEGATIVE, doc="warm-up steps")
    total_steps: int | None = setting(None, within=POSITIVE_OR_NULL,
                                      doc="cosine decay horizon (null: the run's length); it must exceed "
                                          "`optim.warmup_steps`")
    final_lr_ratio: float = setting(0.0, within=UNIT_INTERVAL, doc="cosine: final lr / peak lr")
    weight_decay: float = setting(0.01, within=Range("a number >= 0", lambda v: v >= 0),
                                  doc="decoupled weight decay (torch's 0.01; optax's own default is 1e-4)")
    b1: float = setting(0.9, within=Range("a number in [0, 1)", lambda v: 0.0 <= v < 1.0), doc="AdamW beta1")
    b2: float = setting(0.999, within=Range("a number in [0, 1)", lambda v: 0.0 <= v < 1.0), doc="AdamW beta2")
    eps: float = setting(1e-8, within=POSITIVE_NUMBER, doc="AdamW epsilon")
    clip_norm: float | None = setting(10.0, within=POSITIVE_NUMBER_OR_NULL,
                                      doc="global-norm gradient clipping (null: none)")

    def __post_init__(self):
        check_settings(self)
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ConfigError(f"optim.total_steps={self.total_steps} must exceed optim.warmup_steps="
                              f"{self.warmup_steps}")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints under ``<output_dir>/checkpoints``: every N steps, keep K, async by default."""

    every: int = setting(100, within=POSITIVE, doc="steps between orbax checkpoints")
    keep: int = setting(3, within=POSITIVE, doc="checkpoints kept")
    async_save: bool = setting(True, doc="save in the background")
    resume: bool = setting(True, doc="resume from the latest checkpoint in `output_dir` if there is one (its stored "
                                     "config must match); false: start afresh, removing the directory's checkpoints")
    export_hf: bool = setting(True, doc="write the final model as a HF directory (`<output_dir>/final/hf`)")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Metrics: where they go and how often."""

    every: int = setting(1, within=POSITIVE, doc="steps between metric logs")
    jsonl: bool = setting(True, doc="metrics to `<output_dir>/metrics.jsonl`")
    tensorboard: bool = setting(True, doc="TensorBoard event files (tensorboardX)")
    progress: bool = setting(True, doc="console progress bar")
    plot: bool = setting(True, doc="plot the curves to `<output_dir>/curves.png` at the end (needs jsonl)")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """``jax.distributed.initialize`` arguments; all null: a single process (or the TPU/SLURM environment's
    own auto-detection when ``auto`` is true)."""

    coordinator_address: str | None = setting(None, doc="`host:port` of process 0 for `jax.distributed.initialize`")
    num_processes: int | None = setting(None, within=POSITIVE_OR_NULL, doc="number of processes")
    process_id: int | None = setting(None, doc="this process's id, in [0, `distributed.num_processes`)")
    local_device_ids: list[int] | None = setting(None, doc="devices this process uses (e.g. one process per GPU)")
    auto: bool = setting(False, doc="call `jax.distributed.initialize()` without arguments (TPU pods and SLURM "
                                    "detect everything)")
    cpu_collectives: str | None = setting(None, choices=CPU_COLLECTIVES,
                                          doc="cross-process collectives on CPU (several CPU processes need `gloo`)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run: its name and output directory, and one section per concern."""

    name: str = setting("tiny", doc="run name (logs, HF export metadata)")
    output_dir: str = setting("runs/tiny", doc="where checkpoints, logs and the final model go "
                                               "(`<output_dir>/final/hf`)")
    model: ModelSection = ModelSection()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    optim: OptimConfig = OptimConfig(lr=1e-3, schedule="constant", warmup_steps=0, weight_decay=0.0)
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    distributed: DistributedConfig = DistributedConfig()


def settings(cls: type = RunConfig, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every key below section ``cls``, subsections expanded, in declaration order."""
    for field in dataclasses.fields(cls):
        if is_section(field):
            yield from settings(type(field.default), f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", field


def is_section(field: dataclasses.Field) -> bool:
    """Whether ``field`` holds a section (a config dataclass) rather than a value."""
    return dataclasses.is_dataclass(field.default) and not isinstance(field.default, type)


#: Accepted values of the string keys, by dotted key (read from the fields' `setting` declarations).
CHOICES: dict[str, tuple[str, ...]] = {key: choices_of(f) for key, f in settings() if choices_of(f)}
