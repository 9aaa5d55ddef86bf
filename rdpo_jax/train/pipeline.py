"""Data side of a run: examples -> tokenised rows -> per-process local batches -> global sharded arrays.

Each process reads only its slice of every global batch (`BatchIterator`), lays it out (three-row or
packed layout, split into M micro-batches of whole pairs), and the global batch is assembled with
``jax.make_array_from_process_local_data``: rows are split over data x fsdp, so process p's rows are rows
``[p N_local, (p+1) N_local)`` of each micro-batch. Pair arrays ([M, P], replicated) are all-gathered, and
each process's row-slot pair indices are offset by ``p * P_local`` so they point into the global pair axis.
Shapes are agreed across processes (the largest row length and row count win) before assembly.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rdpo_jax.config import RunConfig
from rdpo_jax.data import (
    BatchPlan,
    Buckets,
    DataReport,
    PreferenceExample,
    SyntheticTask,
    TokenizedExample,
    TruncationConfig,
    load_preferences,
    load_tokenizer,
    make_batch,
    pad_id_for,
    synthetic_tokenizer,
    tokenize_examples,
)
from rdpo_jax.train.batches import PAIR_KEYS, ROW_PAD, pad_to, stack_micro_batches, step_inputs
from rdpo_jax.train.step import batch_shardings


@dataclasses.dataclass
class PreparedData:
    """Tokenised train / eval rows of a run, and where they came from."""

    tokenizer: Any
    train_examples: list[PreferenceExample]
    eval_examples: list[PreferenceExample]
    train_rows: list[TokenizedExample]
    eval_rows: list[TokenizedExample]
    reports: dict[str, DataReport]
    task: SyntheticTask | None = None


def build_tokenizer(cfg: RunConfig) -> Any:
    """The run's tokenizer: data.tokenizer ("synthetic", "llama3", "mistral-v1", "mistral-v3", a directory),
    else the model's own directory, else the synthetic one for the tiny model."""
    name = cfg.data.tokenizer
    if name is None:
        name = "synthetic" if cfg.model.source == "tiny" else cfg.model.source
    return synthetic_tokenizer() if name == "synthetic" else load_tokenizer(name)


def _synthetic_task(cfg: RunConfig) -> SyntheticTask:
    s = cfg.data.synthetic
    return SyntheticTask(task=s.task, u=s.u, eps=s.eps, eta=s.eta, wording=s.wording, parity_bits=s.parity_bits,
                         rationale_follows=s.rationale_follows)


def load_examples(cfg: RunConfig) -> tuple[list, list, dict[str, DataReport], SyntheticTask | None]:
    """Train and eval examples (synthetic task, named dataset or local files) and their load reports."""
    d = cfg.data
    if d.source == "synthetic":
        task = _synthetic_task(cfg)
        train = task.examples(d.synthetic.n_train, seed=cfg.train.seed)
        held_out = task.examples(d.synthetic.n_eval, seed=cfg.train.seed + 1_000_003)
        return train, held_out, {}, task
    kw = dict(data_files=d.data_files, on_bad_row=d.on_bad_row, fields=d.fields)
    train, train_report = load_preferences(d.source, split=d.split, **kw)
    reports = {"train": train_report}
    held_out: list = []
    if d.eval_split:
        held_out, reports["eval"] = load_preferences(d.source, split=d.eval_split, **kw)
    if d.n_examples is not None:
        train = train[: d.n_examples]
    return train, held_out, reports, None


def prepare_data(cfg: RunConfig, tokenizer: Any, *, with_rationale: bool) -> PreparedData:
    """Loads and tokenises the run's examples (bad rows per data.on_bad_row; reports kept)."""
    train, held_out, reports, task = load_examples(cfg)
    d = cfg.data
    kw = dict(truncation=TruncationConfig(d.max_length, d.max_prompt_length, d.max_rationale_length),
              rationale_template=d.rationale_template if with_rationale else None, wording=d.rationale_wording,
              on_bad_row=d.on_bad_row)
    tr = tokenize_examples(train, tokenizer, dataset=f"{d.source}:{d.split}", **kw)
    ev = tokenize_examples(held_out, tokenizer, dataset=f"{d.source}:{d.eval_split}", **kw) if held_out else None
    reports["train_rows"] = tr.report
    if ev is not None:
        reports["eval_rows"] = ev.report
    kept_eval = [held_out[r.index] for r in ev.rows] if ev is not None else []
    return PreparedData(tokenizer, [train[r.index] for r in tr.rows], kept_eval, tr.rows,
                        ev.rows if ev is not None else [], reports, task)


class LocalBatcher:
    """One process's slice of a global batch -> its local micro-batches [M, N_local, ...] (numpy).

    ``sft``: only the chosen rows of the three-row layout are kept (token NLL on chosen responses), plus the
    rejected rows with ``train.sft_rejected`` and the rationale rows when ``with_rationale``.
    """

    def __init__(self, cfg: RunConfig, tokenizer: Any, *, sft: bool, with_rationale: bool, process_count: int):
        d, t = cfg.data, cfg.train
        self.micro_batches = t.micro_batches
        self.pad_id = pad_id_for(tokenizer)
        self.sft = sft
        self.sft_roles = (0,) + ((1,) if t.sft_rejected else ()) + ((2,) if with_rationale else ())
        local_pairs = t.global_batch_size // process_count
        if local_pairs % t.micro_batches:
            raise ValueError(f"train.global_batch_size={t.global_batch_size} over {process_count} processes gives "
                             f"{local_pairs} pairs per process, not divisible by train.micro_batches="
                             f"{t.micro_batches}")
        longest = 2 * d.max_length if d.layout == "packed" else d.max_length
        self.plan = BatchPlan(Buckets.powers_of_two(longest, d.min_bucket), local_pairs // t.micro_batches,
                              self.pad_id, layout="three_row" if sft else d.layout,
                              with_rationale=with_rationale, pairs_per_row=d.pairs_per_row)

    def _one(self, rows: Sequence[TokenizedExample]) -> dict[str, np.ndarray]:
        batch = make_batch(list(rows), self.plan)
        if self.sft:
            keep = np.isin(batch["slot_role"][:, 0], self.sft_roles)
            batch = {k: (v[keep] if k in ROW_PAD else v) for k, v in batch.items()}
        return batch

    def __call__(self, rows: Sequence[TokenizedExample], mask: np.ndarray) -> dict[str, np.ndarray]:
        per = len(rows) // self.micro_batches
        chunks = [[r for r, m in zip(rows[i * per:(i + 1) * per], mask[i * per:(i + 1) * per], strict=True) if m]
                  for i in range(self.micro_batches)]
        batch = stack_micro_batches([self._one(c) for c in chunks], pad_id=self.pad_id)
        return batch


def _agree(local: dict[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """Pads this process's rows to the largest [N, T, S] over all processes (all must call it)."""
    dims = np.array([local["input_ids"].shape[1], local["input_ids"].shape[2], local["slot_pair"].shape[2]])
    n, t, s = (multihost_utils.process_allgather(dims).max(0) if jax.process_count() > 1 else dims)
    out = {}
    for key, v in local.items():
        if key in ROW_PAD:
            fill = pad_id if key == "input_ids" else ROW_PAD[key]
            target = {"slot_pair": (n, s), "slot_role": (n, s), "attn_mask": (n, t, t)}.get(key, (n, t))
            out[key] = pad_to(v, (v.shape[0], *target), fill)
        else:
            out[key] = v
    return out


def to_global(local: dict[str, np.ndarray], mesh: Mesh, pad_id: int) -> dict[str, jax.Array]:
    """Assembles the global batch from every process's local micro-batches (collective: all processes)."""
    local = _agree(step_inputs(local), pad_id)
    nproc, pid = jax.process_count(), jax.process_index()
    local_pairs = local["pair_mask"].shape[1]
    if nproc > 1:
        local["slot_pair"] = np.where(local["slot_pair"] >= 0, local["slot_pair"] + pid * local_pairs, -1)
    shardings = batch_shardings(mesh, local)
    out = {}
    for key, v in local.items():
        if key in PAIR_KEYS:
            full = (np.concatenate(list(multihost_utils.process_allgather(v)), axis=1) if nproc > 1 else v)
            out[key] = jax.make_array_from_process_local_data(shardings[key], full, full.shape)
        else:
            global_shape = (v.shape[0], v.shape[1] * nproc, *v.shape[2:])
            out[key] = jax.make_array_from_process_local_data(shardings[key], v, global_shape)
    return out
