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

from rdpo_jax.batch import PAIR_KEYS, ROW_KEYS, Role, add_score_index, pad_rows, row_dims, score_width, step_inputs
from rdpo_jax.config import RunConfig
from rdpo_jax.data import (
    BatchPlan,
    Buckets,
    DataReport,
    PreferenceExample,
    RowStats,
    SyntheticTask,
    TokenizedExample,
    TruncationConfig,
    load_preferences,
    load_tokenizer,
    make_batch,
    pad_id_for,
    rows_per_pair,
    tokenize_examples,
)
from rdpo_jax.train.batches import stack_micro_batches
from rdpo_jax.train.data_checks import check_rationales
from rdpo_jax.train.held_out import eval_source, overlap, split_fraction, synthetic_held_out
from rdpo_jax.train.preflight import SYNTHETIC, tokenizer_spec
from rdpo_jax.train.step import batch_shardings


@dataclasses.dataclass
class PreparedData:
    """Tokenised train / eval rows of a run, where they came from, and what the checks found.

    ``train_source_rows[i]``: the source row of training example i (for messages that name a pair);
    ``stats``: tokenisation counts per split (truncation, packing); ``rationales``: pairs with a rationale per
    split (`check_rationales`); ``eval_overlap``: held-out pairs that also occur in training; ``notes``: lines
    the trainer prints and saves (how the held-out set was chosen, warnings).
    """

    tokenizer: Any
    train_examples: list[PreferenceExample]
    eval_examples: list[PreferenceExample]
    train_rows: list[TokenizedExample]
    eval_rows: list[TokenizedExample]
    reports: dict[str, DataReport]
    task: SyntheticTask | None = None
    train_source_rows: list[int] = dataclasses.field(default_factory=list)
    stats: dict[str, RowStats] = dataclasses.field(default_factory=dict)
    rationales: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_overlap: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """The data report (``data_report.json``): load and tokenisation reports, truncation counts,
        rationale counts, held-out overlap and notes."""
        return {"reports": {k: r.to_dict() for k, r in self.reports.items()},
                "tokenisation": {k: v.to_dict() for k, v in self.stats.items()},
                "rationales": self.rationales, "eval_overlap": self.eval_overlap, "notes": list(self.notes)}

    def summary_lines(self) -> list[str]:
        """The data report as console lines: rows read / kept / skipped by reason, truncation counts."""
        lines = [str(r) for k, r in self.reports.items() if not k.endswith("_rows")]
        for split, st in self.stats.items():
            cut = {k: getattr(st, k) for k in ("prompt_truncated", "chosen_truncated", "rejected_truncated",
                                               "rationale_truncated") if getattr(st, k)}
            rows = self.reports.get(f"{split}_rows")
            skipped = f", {rows.n_skipped} dropped ({', '.join(f'{k}: {v}' for k, v in rows.counts.items())})" \
                if rows is not None and rows.n_skipped else ""
            lines.append(f"{split} rows: {st.n_examples} pairs tokenised{skipped}; truncated: "
                         + (", ".join(f"{k.removesuffix('_truncated')} {v}" for k, v in cut.items()) or "none"))
        return lines + list(self.notes)


def build_tokenizer(cfg: RunConfig) -> Any:
    """The run's tokenizer (`rdpo_jax.train.preflight.tokenizer_spec`): data.tokenizer, else the model's own
    directory, else the synthetic one for the tiny model."""
    name, _ = tokenizer_spec(cfg)
    return load_tokenizer(name)


def synthetic_task(cfg: RunConfig) -> SyntheticTask:
    """The run's synthetic task: ``data.synthetic`` without the set sizes (``n_train``, ``n_eval``)."""
    s = cfg.data.synthetic
    return SyntheticTask(**{f.name: getattr(s, f.name) for f in dataclasses.fields(SyntheticTask)})


@dataclasses.dataclass
class LoadedExamples:
    train: list[PreferenceExample]
    held_out: list[PreferenceExample]
    reports: dict[str, DataReport]
    task: SyntheticTask | None
    source_rows: list[int]
    notes: list[str]


def load_examples(cfg: RunConfig) -> LoadedExamples:
    """Train and held-out examples (synthetic task, named dataset or local files; held-out pairs chosen as
    `rdpo_jax.train.held_out` describes) and their load reports."""
    d = cfg.data
    if d.source == SYNTHETIC:
        task = synthetic_task(cfg)
        train = task.examples(d.synthetic.n_train, seed=cfg.train.seed)
        held = synthetic_held_out(task, d.synthetic.n_eval, cfg.train.seed + 1_000_003, train)
        return LoadedExamples(train, held, {}, task, list(range(len(train))), [])
    kw = dict(on_bad_row=d.on_bad_row, fields=d.fields, format=d.format)
    train, train_report = load_preferences(d.source, split=d.split, data_files=d.data_files, **kw)
    reports, notes = {"train": train_report}, []
    rows = list(train_report.kept_rows)
    held: list[PreferenceExample] = []
    if d.eval_fraction is not None:
        train_idx, held_idx = split_fraction(train, d.eval_fraction, d.eval_seed)
        held = [train[i] for i in held_idx]
        notes.append(f"held out {len(held)} of {len(train)} pairs of {d.source} (data.eval_fraction="
                     f"{d.eval_fraction}, data.eval_seed={d.eval_seed})")
        train, rows = [train[i] for i in train_idx], [rows[i] for i in train_idx]
    elif (source := eval_source(cfg)) is not None:
        name, split, files = source
        held, reports["eval"] = load_preferences(name, split=split, data_files=files, **kw)
    if d.n_examples is not None:
        train, rows = train[: d.n_examples], rows[: d.n_examples]
    return LoadedExamples(train, held, reports, None, rows, notes)


def prepare_data(cfg: RunConfig, tokenizer: Any, *, with_rationale: bool) -> PreparedData:
    """Loads, checks and tokenises the run's examples (bad rows per data.on_bad_row; reports kept): pairs
    without rationales under a rationale term stop the run (`check_rationales`), and held-out pairs that also
    occur in training are counted and warned about."""
    loaded = load_examples(cfg)
    train, held_out, reports = loaded.train, loaded.held_out, loaded.reports
    rationales = check_rationales(cfg, {"train": train, "eval": held_out}, reports)
    notes = list(loaded.notes)
    for split in ("train", "eval"):
        if split in rationales and rationales[split]["with_rationale"] < rationales[split]["pairs"]:
            r = rationales[split]
            notes.append(f"data.missing_rationale=mask: {r['pairs'] - r['with_rationale']} of {r['pairs']} {split} "
                         "pairs have no rationale and train without the rationale term")
    n_overlap = overlap(train, held_out)
    if n_overlap:
        notes.append(f"warning: {n_overlap} of {len(held_out)} held-out pairs also occur in training (same prompt, "
                     "chosen and rejected); the held-out metrics overstate generalisation")
    d = cfg.data
    kw = dict(truncation=TruncationConfig(d.max_length, d.max_prompt_length, d.max_rationale_length),
              rationale_template=d.rationale_template if with_rationale else None, wording=d.rationale_wording,
              on_bad_row=d.on_bad_row)
    tr = tokenize_examples(train, tokenizer, dataset=f"{d.source}:{d.split}", **kw)
    ev = tokenize_examples(held_out, tokenizer, dataset=f"{d.source}:held-out", **kw) if held_out else None
    reports["train_rows"] = tr.report
    stats = {"train": tr.stats}
    if ev is not None:
        reports["eval_rows"], stats["eval"] = ev.report, ev.stats
    kept_eval = [held_out[r.index] for r in ev.rows] if ev is not None else []
    return PreparedData(tokenizer, [train[r.index] for r in tr.rows], kept_eval, tr.rows,
                        ev.rows if ev is not None else [], reports, loaded.task,
                        train_source_rows=[loaded.source_rows[r.index] for r in tr.rows], stats=stats,
                        rationales=rationales, eval_overlap=n_overlap, notes=notes)


class LocalBatcher:
    """One process's slice of a global batch -> its local micro-batches [M, N_local, ...] (numpy).

    ``sft``: only the chosen rows of the three-row layout are kept (token NLL on chosen responses), plus the
    rejected rows with ``train.sft_rejected`` and the rationale rows when ``with_rationale`` (kept by position,
    so a pair without a rationale keeps an empty row and every batch has the same row count).
    ``row_multiple``: packed micro-batches pad their row count to a multiple of it (the process's share of
    the mesh's ``data x fsdp`` devices, `rdpo_jax.train.preflight.check_batch_layout`).
    """

    def __init__(self, cfg: RunConfig, tokenizer: Any, *, sft: bool, with_rationale: bool, process_count: int,
                 row_multiple: int = 1):
        d, t = cfg.data, cfg.train
        self.micro_batches = t.micro_batches
        self.pad_id = pad_id_for(tokenizer)
        self.sft = sft
        self.sft_roles = ((Role.CHOSEN,) + ((Role.REJECTED,) if t.sft_rejected else ())
                          + ((Role.RATIONALE,) if with_rationale else ()))
        local_pairs = t.global_batch_size // process_count
        if local_pairs % t.micro_batches:
            raise ValueError(f"train.global_batch_size={t.global_batch_size} over {process_count} processes gives "
                             f"{local_pairs} pairs per process, not divisible by train.micro_batches="
                             f"{t.micro_batches}")
        longest = 2 * d.max_length if d.layout == "packed" else d.max_length
        self.plan = BatchPlan(Buckets.powers_of_two(longest, d.min_bucket), local_pairs // t.micro_batches,
                              self.pad_id, layout="three_row" if sft else d.layout,
                              with_rationale=with_rationale, pairs_per_row=d.pairs_per_row,
                              row_multiple=row_multiple)

    def _one(self, rows: Sequence[TokenizedExample], dataset_index: Sequence[int]) -> dict[str, np.ndarray]:
        batch = make_batch(list(rows), self.plan, dataset_index)
        if self.sft:  # the three-row layout is pair-major: row n holds role n mod rows_per_pair
            roles = rows_per_pair(self.plan.with_rationale)
            keep = np.isin(np.arange(batch["input_ids"].shape[0]) % roles, self.sft_roles)
            batch = {k: (v[keep] if k in ROW_KEYS else v) for k, v in batch.items()}
        return batch

    def __call__(self, rows: Sequence[TokenizedExample], mask: np.ndarray, dataset_index: np.ndarray
                 ) -> dict[str, np.ndarray]:
        """Local micro-batches [M, ...] of one process's slice: its ``rows`` with their pair ``mask`` and
        ``dataset_index`` (positions in the iterated dataset, carried as the ``dataset_index`` key)."""
        per = len(rows) // self.micro_batches
        parts = [slice(i * per, (i + 1) * per) for i in range(self.micro_batches)]
        chunks = [self._one([r for r, m in zip(rows[c], mask[c], strict=True) if m], dataset_index[c][mask[c]])
                  for c in parts]
        return stack_micro_batches(chunks, pad_id=self.pad_id)


def _agree(local: dict[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
    """Pads this process's rows to the largest [N, T, S] over all processes (all must call it)."""
    dims = np.array(row_dims(local, row_axis=1))
    n, t, s = (multihost_utils.process_allgather(dims).max(0) if jax.process_count() > 1 else dims)
    return pad_rows(local, n_rows=n, length=t, n_slots=s, pad_id=pad_id, row_axis=1)


def to_global(local: dict[str, np.ndarray], mesh: Mesh, pad_id: int) -> dict[str, jax.Array]:
    """Assembles the global batch from every process's local micro-batches (collective: all processes), with
    the ``score_index`` of the scored targets (one width on every process)."""
    local = _agree(step_inputs(local), pad_id)
    nproc, pid = jax.process_count(), jax.process_index()
    most = int(np.asarray(local["loss_mask"], bool).sum(-1).max(initial=0))
    if nproc > 1:
        most = int(multihost_utils.process_allgather(np.int32(most)).max())
    local = add_score_index(local, score_width(local["loss_mask"], most))
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
