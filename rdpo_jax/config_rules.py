"""Rules across config keys, checked before any data is read or anything is compiled.

Each rule finds a setting that would make a run quietly wrong and raises `ConfigError` naming the key and
what would be accepted:

* a value whose range depends on another key (``train.global_batch_size`` a multiple of
  ``train.micro_batches``, ``data.max_prompt_length`` below ``data.max_length``, heads divisible by KV heads,
  at most one mesh axis -1, ``distributed.process_id`` below ``distributed.num_processes``); the range of a
  single key is declared with the key (`rdpo_jax.config_fields.setting`);
* a number that is not finite (``beta=.inf``, ``optim.lr=nan``), in any section or in ``train.loss_kwargs``;
* an option the chosen objective or source ignores (``train.sft_rationales`` with the preference objective,
  ``train.loss_kwargs`` with SFT, ``data.synthetic.*`` with a file source, cosine-only optimiser keys with
  another schedule, ``data.pairs_per_row`` with the three-row layout, ...);
* settings that contradict each other (a rationale term with ``data.rationale_template=none``,
  ``train.reference=cache`` with a reference-free loss, two ways of choosing the held-out set).

The rules read only the built `RunConfig`, so they hold whatever parses the YAML.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

from rdpo_jax.config import NO_TEMPLATE, OptimConfig, RunConfig, SyntheticConfig
from rdpo_jax.config_fields import out_of_range
from rdpo_jax.data.rationale_templates import TEMPLATES
from rdpo_jax.errors import ConfigError
from rdpo_jax.losses import REFERENCE_FREE, has_rationale_term

__all__ = ["check_rules", "uses_rationales"]


def uses_rationales(cfg: RunConfig) -> bool:
    """Whether the run trains on rationales: a preference loss with a rationale term, or SFT that also fits
    the rationale conversations (``train.sft_rationales``)."""
    t = cfg.train
    if t.objective == "sft":
        return t.sft_rationales
    return has_rationale_term(t.loss, t.loss_kwargs)


def _numbers(obj: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key, value) of every float in a config section, mapping values included."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _numbers(getattr(obj, f.name), f"{prefix}{f.name}.")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{prefix}{k}.")
    elif isinstance(obj, float):
        yield prefix[:-1], obj


def _check_finite(cfg: RunConfig) -> None:
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            hint = " (null turns clipping off)" if key == "optim.clip_norm" else ""
            raise ConfigError(f"{key}={value} is not a finite number; accepted: a finite number{hint}")


def _multiple(value: int, of: int) -> bool:
    return of > 0 and value % of == 0


def _ranges_across_keys(cfg: RunConfig) -> list[tuple[str, Any, bool, str]]:
    """(dotted key, value, whether it is in range, what is accepted) of every range that depends on another key."""
    d, t, m, dist = cfg.data, cfg.train, cfg.model, cfg.distributed
    rules = [
        ("model.tiny_num_heads", m.tiny_num_heads, _multiple(m.tiny_num_heads, m.tiny_num_kv_heads),
         f"a multiple of model.tiny_num_kv_heads={m.tiny_num_kv_heads}"),
        ("model.tiny_hidden_size", m.tiny_hidden_size, _multiple(m.tiny_hidden_size, m.tiny_num_heads),
         f"a multiple of model.tiny_num_heads={m.tiny_num_heads}"),
        ("data.max_prompt_length", d.max_prompt_length, d.max_prompt_length < d.max_length,
         f"a positive integer below data.max_length={d.max_length}"),
        ("data.min_bucket", d.min_bucket, d.min_bucket <= d.max_length,
         f"a positive integer at most data.max_length={d.max_length}"),
        ("train.global_batch_size", t.global_batch_size, _multiple(t.global_batch_size, t.micro_batches),
         f"a multiple of train.micro_batches={t.micro_batches}"),
        ("mesh", cfg.mesh.sizes(), list(cfg.mesh.sizes().values()).count(-1) <= 1, "at most one axis set to -1"),
    ]
    if dist.process_id is not None:
        n = dist.num_processes
        below = n is None or dist.process_id < n
        rules.append(("distributed.process_id", dist.process_id, 0 <= dist.process_id and below,
                      "an integer in [0, distributed.num_processes)"))
    return rules


def _changed(section: Any, default: Any, names: tuple[str, ...] | None = None) -> list[str]:
    """Fields of ``section`` whose value differs from ``default``'s (all fields, or ``names``)."""
    names = names or tuple(f.name for f in dataclasses.fields(section))
    return [n for n in names if getattr(section, n) != getattr(default, n)]


def _ignored(cfg: RunConfig) -> list[tuple[str, Any, str]]:
    """(key, value, why it is ignored) for every option set that the run would not use."""
    d, t, o = cfg.data, cfg.train, cfg.optim
    out: list[tuple[str, Any, str]] = []
    if t.objective == "preference":
        for key in ("sft_rationales", "sft_rejected"):
            if getattr(t, key):
                out.append((f"train.{key}", True, "it applies to train.objective=sft; the preference objective's "
                                                  "loss decides what is fitted"))
    elif t.loss_kwargs:
        out.append(("train.loss_kwargs", t.loss_kwargs, "train.objective=sft fits the token NLL and uses no loss "
                                                       "keywords; set train.loss_kwargs={}"))
    if d.missing_rationale != "error" and not uses_rationales(cfg):
        who = "train.objective=sft without train.sft_rationales" if t.objective == "sft" else f"loss {t.loss!r}"
        out.append(("data.missing_rationale", d.missing_rationale, f"the run uses no rationales ({who})"))
    if d.source != "synthetic":
        for name in _changed(d.synthetic, SyntheticConfig()):
            out.append((f"data.synthetic.{name}", getattr(d.synthetic, name),
                        f"data.source is {d.source!r}, not 'synthetic'"))
    if d.layout == "three_row" and d.pairs_per_row != 1:
        out.append(("data.pairs_per_row", d.pairs_per_row, "it applies to data.layout=packed"))
    if o.schedule == "constant" and o.warmup_steps:
        out.append(("optim.warmup_steps", o.warmup_steps, "optim.schedule=constant has no warm-up (use 'paper' "
                                                          "or 'cosine')"))
    if o.schedule != "cosine":
        for name in _changed(o, OptimConfig(), ("total_steps", "final_lr_ratio")):
            out.append((f"optim.{name}", getattr(o, name), f"it applies to optim.schedule=cosine, not {o.schedule!r}"))
    if cfg.model.remat != "auto" and cfg.model.remat_memory_gib is not None:
        out.append(("model.remat_memory_gib", cfg.model.remat_memory_gib,
                    f"it applies to model.remat=auto, not {cfg.model.remat!r}"))
    if o.name == "sgd":
        for name in _changed(o, OptimConfig(weight_decay=0.0), ("weight_decay", "b1", "b2", "eps")):
            out.append((f"optim.{name}", getattr(o, name), "it applies to optim.name=adamw, not 'sgd'"))
    return out


def _contradictions(cfg: RunConfig) -> list[str]:
    d, t = cfg.data, cfg.train
    out = []
    if uses_rationales(cfg) and d.rationale_template == NO_TEMPLATE:
        who = "train.sft_rationales=true" if t.objective == "sft" else f"loss {t.loss!r} has a rationale term and"
        out.append(f"data.rationale_template={NO_TEMPLATE}: {who} needs a template to condition the rationale on; "
                   f"accepted: {', '.join(TEMPLATES)} (or a loss without a rationale term, e.g. dpo)")
    if t.reference == "cache":
        if t.objective == "sft":
            out.append("train.reference=cache: train.objective=sft uses no reference model; remove the key "
                       "(default live)")
        elif t.loss in REFERENCE_FREE:
            out.append(f"train.reference=cache: loss {t.loss!r} is reference-free, so there is no reference to "
                       "cache; remove the key (default live) or use a DPO-family loss")
    if d.eval_fraction is not None:
        if d.source == "synthetic":
            out.append("data.eval_fraction: the synthetic task draws its own held-out pairs "
                       "(data.synthetic.n_eval); remove data.eval_fraction")
        if d.eval_source is not None:
            out.append("data.eval_fraction and data.eval_source both choose the held-out set; set one of them")
    if d.eval_source is not None and d.source == "synthetic":
        out.append("data.eval_source: the synthetic task draws its own held-out pairs (data.synthetic.n_eval); "
                   "remove data.eval_source")
    return out


def check_rules(cfg: RunConfig) -> None:
    """Raises `ConfigError` for the first rule ``cfg`` breaks (see the module docstring); the keys' own choices
    and ranges are checked first (`rdpo_jax.config_loader.validate_config`)."""
    _check_finite(cfg)
    for key, value, ok, accepted in _ranges_across_keys(cfg):
        if not ok:
            raise ConfigError(out_of_range(key, value, accepted))
    problems = _contradictions(cfg) + [f"{key}={value!r} would be ignored: {why}. Remove it, or change the "
                                       "setting that makes it irrelevant" for key, value, why in _ignored(cfg)]
    if problems:
        raise ConfigError(problems[0])

