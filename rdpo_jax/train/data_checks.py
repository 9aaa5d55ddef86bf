"""Checks of a run's loaded data against its config: rationales for a rationale term, and steps that add up.

* Rationales (`check_rationales`): a run that uses rationales (a loss with a rationale term, or SFT with
  ``train.sft_rationales``) on data where no pair has one would train plain DPO while logging
  ``loss/rationale: 0``. It stops instead, naming the loss, the source, the column the rationale is read from
  and the columns that exist. Some pairs without a rationale are an error too unless
  ``data.missing_rationale=mask``, which trains those pairs without the rationale term (said in the log and in
  ``summary.json``).
* Steps (`plan_steps`): the number of optimiser steps the data gives is ``train.epochs x`` the batches per
  epoch; a ``train.max_steps`` beyond that stops the run naming both numbers, and every schedule is sized on
  the real number of steps.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rdpo_jax.config import RunConfig
from rdpo_jax.config_rules import uses_rationales
from rdpo_jax.data import FORMATS, DataReport, PreferenceExample
from rdpo_jax.errors import ConfigError

__all__ = ["MissingRationales", "check_rationales", "plan_steps"]


class MissingRationales(ConfigError):
    """A run that uses rationales got pairs without one (the message names the source and the columns)."""


def _who(cfg: RunConfig) -> str:
    t = cfg.train
    if t.objective == "sft":
        return "train.sft_rationales=true fits the rationale conversations, so it"
    return f"train.loss={t.loss} has a rationale term, so it"


def _where_read(cfg: RunConfig, report: DataReport | None) -> str:
    """Where the rationale would come from: the field mapping and the columns actually found."""
    if report is None:
        return ""
    fmt = report.format
    if fmt and "rationale" not in FORMATS[fmt][1] + FORMATS[fmt][2]:
        return (f" The rows are read in format {fmt!r}, which has no rationale field; columns found: "
                f"{report.columns}.")
    column = (cfg.data.fields or {}).get("rationale", "rationale")
    mapping = "data.fields.rationale" if cfg.data.fields and "rationale" in cfg.data.fields else \
        "data.fields.rationale (unset: the default column)"
    return (f" The rationale is read from column {column!r} ({mapping}); columns found: {report.columns}. Map the "
            "column that holds them with data.fields.rationale=<column>.")


def check_rationales(cfg: RunConfig, examples: Mapping[str, Sequence[PreferenceExample]],
                     reports: Mapping[str, DataReport]) -> dict[str, Any]:
    """Counts the pairs with a rationale per split (``{"train": [...], "eval": [...]}``) and enforces the
    rules of the module docstring. Returns ``{split: {"pairs", "with_rationale"}, "missing_rationale"}``
    (empty when the run uses no rationales)."""
    if not uses_rationales(cfg):
        return {}
    out: dict[str, Any] = {"missing_rationale": cfg.data.missing_rationale}
    for split, exs in examples.items():
        have = sum(e.rationale is not None for e in exs)
        out[split] = {"pairs": len(exs), "with_rationale": have}
        if not exs or have == len(exs):
            continue
        report = reports.get(split)
        source = f"{report.dataset} (split {report.split!r})" if report is not None else cfg.data.source
        if have == 0 and split == "train":
            raise MissingRationales(
                f"{_who(cfg)} needs rationales, but none of the {len(exs)} training pairs of {source} has one."
                f"{_where_read(cfg, report)} Or use a loss without a rationale term (e.g. train.loss=dpo).")
        if cfg.data.missing_rationale == "error":
            raise MissingRationales(
                f"{_who(cfg)} needs a rationale for every pair, but {len(exs) - have} of the {len(exs)} {split} "
                f"pairs of {source} have none.{_where_read(cfg, report)} Set data.missing_rationale=mask to train "
                "those pairs without the rationale term.")
    return out


def plan_steps(cfg: RunConfig, batches_per_epoch: int, n_pairs: int) -> int:
    """The run's number of optimiser steps: ``train.max_steps``, or ``train.epochs x batches_per_epoch``;
    raises `ConfigError` when ``max_steps`` asks for more than the data gives."""
    t = cfg.train
    available = t.epochs * batches_per_epoch
    if t.max_steps is None:
        return available
    if t.max_steps > available:
        need = -(-t.max_steps // batches_per_epoch)
        raise ConfigError(
            f"train.max_steps={t.max_steps} exceeds the {available} steps the data gives: train.epochs="
            f"{t.epochs} x {batches_per_epoch} steps per epoch ({n_pairs} training pairs / train.global_batch_size="
            f"{t.global_batch_size}, the last partial batch dropped). Lower train.max_steps, or set "
            f"train.epochs={need}")
    return t.max_steps
