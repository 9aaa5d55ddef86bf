"""Shape buckets, padding and the two batch layouts (three rows per pair; packed trees).

Shapes: every padded length is one of a small configured set (:class:`Buckets`, by default powers of two
from ``min_length`` up to ``max_length``), and the number of rows of each part is padded to a bucket of row
counts as well, so a whole run compiles for at most ``len(lengths) * len(row_counts)`` shapes per part.
Padded tokens carry ``pad_id`` with ``attention_mask`` 0 and ``loss_mask`` False; padded pairs have
``pair_mask`` 0 (the global batch is always ``global_batch_size`` pairs).

Both layouts produce the row-batch contract of :mod:`rdpo_jax.batch` (numpy arrays; N rows of T tokens, S
scoring slots per row, P pairs), with ``attn_mask`` (the tree mask) in the packed layout only and
``rationale_mask`` only with rationales.

Three-row layout (:func:`three_row_batch`): rows pair-major (pair p: chosen, rejected[, rationale]),
S = 1, N = P * roles. Packed layout (:func:`packed_batch`): packed rows with S = 3 * pairs_per_row, then one
row per sequence of each pair refused by the prefix check (or too long to pack), S slot 0 used;
N is bucketed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rdpo_jax.batch import NUM_ROLES, TREE_MASK, UNUSED, Role, empty_rows, pad_rows

from .packing import PackedRow, pack_rows, tree_attention_mask
from .rows import TokenizedExample

LAYOUTS = (THREE_ROW, PACKED) = ("three_row", "packed")  # the two batch layouts (module doc)


def powers_of_two(lo: int, hi: int) -> tuple[int, ...]:
    """``lo, 2 lo, 4 lo, ... < hi`` and ``hi`` itself."""
    out, n = [], lo
    while n < hi:
        out.append(n)
        n *= 2
    return tuple(out) + (hi,)


@dataclasses.dataclass(frozen=True)
class Buckets:
    """A sorted set of allowed lengths; :meth:`fit` picks the smallest one that holds ``n``."""

    lengths: tuple[int, ...]

    @classmethod
    def powers_of_two(cls, max_length: int, min_length: int = 64) -> Buckets:
        return cls(powers_of_two(min(min_length, max_length), max_length))

    def __post_init__(self):
        if not self.lengths or list(self.lengths) != sorted(set(self.lengths)) or self.lengths[0] < 1:
            raise ValueError(f"bucket lengths must be positive, sorted and distinct, got {self.lengths}")

    def fit(self, n: int) -> int:
        for b in self.lengths:
            if n <= b:
                return b
        raise ValueError(f"length {n} exceeds the largest bucket {self.lengths[-1]}; raise max_length or "
                         "truncate (TruncationConfig)")


def _sequence_rows(rows: Sequence[TokenizedExample], positions: Sequence[int], with_rationale: bool
                   ) -> list[PackedRow]:
    """One row per sequence, pair-major (chosen, rejected[, rationale]); a missing rationale keeps an empty
    row whose slot scores nothing, so every pair has the same number of rows."""
    out = []
    for p, ex in zip(positions, rows, strict=True):
        seqs = [ex.chosen, ex.rejected] + ([ex.rationale] if with_rationale else [])
        for role, seq in zip(Role, seqs, strict=False):  # no rationale role without rationales
            row = PackedRow()
            if seq is None:
                row.add_empty_slot()
            else:
                row.add_sequence(seq.context, seq.completion, p, role)
            out.append(row)
    return out


def _row_arrays(rows: Sequence[PackedRow], *, t: int, n_rows: int, n_slots: int, pad_id: int,
                with_attn_mask: bool) -> dict[str, np.ndarray]:
    """The row keys of the contract (`rdpo_jax.batch`) for ``rows``, padded to ``n_rows`` x ``t`` tokens."""
    if len(rows) > n_rows:
        raise ValueError(f"{len(rows)} rows do not fit {n_rows} rows")
    out = empty_rows(len(rows), t, n_slots, pad_id, tree_mask=with_attn_mask)
    for i, r in enumerate(rows):
        n = len(r)
        out["input_ids"][i, :n] = r.ids
        out["positions"][i, :n] = r.positions
        out["positions"][i, n:] = np.arange(n, t) if not r.ids else r.positions[-1] + 1 + np.arange(t - n)
        out["attention_mask"][i, :n] = 1
        out["targets"][i, :n] = r.targets
        out["loss_mask"][i, :n] = r.loss_mask
        out["score_slot"][i, :n] = r.score_ids
        for s, (pair, role) in enumerate(r.slots):
            out["slot_pair"][i, s] = pair if role != UNUSED else UNUSED
            out["slot_role"][i, s] = role if pair != UNUSED else UNUSED
        if with_attn_mask:
            out[TREE_MASK][i] = tree_attention_mask(r.parent, t)
    return pad_rows(out, n_rows=n_rows, length=t, n_slots=n_slots, pad_id=pad_id)


def _pair_arrays(rows: Sequence[TokenizedExample], p: int, with_rationale: bool,
                 dataset_index: Sequence[int] | None) -> dict[str, np.ndarray]:
    n = len(rows)
    pad = [UNUSED] * (p - n)
    out = {"pair_mask": np.arange(p) < n,
           "example_index": np.array([r.index for r in rows] + pad, np.int32)}
    if dataset_index is not None:
        if len(dataset_index) != n:
            raise ValueError(f"{len(dataset_index)} dataset indices for {n} pairs")
        out["dataset_index"] = np.array(list(dataset_index) + pad, np.int32)
    if with_rationale:
        out["rationale_mask"] = np.array([r.rationale is not None for r in rows] + [False] * (p - n), bool)
    return out


def _check_size(rows: Sequence[TokenizedExample], global_batch_size: int) -> None:
    if len(rows) > global_batch_size:
        raise ValueError(f"{len(rows)} pairs do not fit a global batch of {global_batch_size}")


def rows_per_pair(with_rationale: bool) -> int:
    """Rows of one pair in the three-row layout: chosen and rejected, and the rationale when scored."""
    return NUM_ROLES if with_rationale else NUM_ROLES - 1


def three_row_batch(rows: Sequence[TokenizedExample], *, buckets: Buckets, global_batch_size: int,
                    pad_id: int, with_rationale: bool = False, dataset_index: Sequence[int] | None = None
                    ) -> dict[str, np.ndarray]:
    """The three-row layout of ``rows`` padded to ``global_batch_size`` pairs (keys in the module doc)."""
    _check_size(rows, global_batch_size)
    seq_rows = _sequence_rows(rows, range(len(rows)), with_rationale)
    t = buckets.fit(max([len(r) for r in seq_rows] + [1]))
    out = _row_arrays(seq_rows, t=t, n_rows=global_batch_size * rows_per_pair(with_rationale), n_slots=1,
                      pad_id=pad_id, with_attn_mask=False)
    return {**out, **_pair_arrays(rows, global_batch_size, with_rationale, dataset_index)}


def packed_batch(rows: Sequence[TokenizedExample], *, buckets: Buckets, global_batch_size: int, pad_id: int,
                 with_rationale: bool = False, pairs_per_row: int = 1, row_buckets: Buckets | None = None,
                 row_multiple: int = 1, dataset_index: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The packed layout (docs/spec.md section 3) of ``rows``; pairs that fail the prefix check or do not fit the
    largest bucket get one row per sequence. N is the smallest of ``row_buckets`` (default ``row_multiple``
    times the powers of two, up to ``global_batch_size * roles`` rounded up to a multiple of ``row_multiple``)
    that holds the rows."""
    _check_size(rows, global_batch_size)
    packed, fallback = pack_rows(rows, with_rationale=with_rationale, max_length=buckets.lengths[-1],
                                 pairs_per_row=pairs_per_row)
    all_rows = packed + _sequence_rows([rows[i] for i in fallback], fallback, with_rationale)
    most = -(-global_batch_size * rows_per_pair(with_rationale) // row_multiple)
    row_buckets = row_buckets or Buckets(tuple(row_multiple * n for n in powers_of_two(1, most)))
    t = buckets.fit(max([len(r) for r in all_rows] + [1]))
    out = _row_arrays(all_rows, t=t, n_rows=row_buckets.fit(max(len(all_rows), 1)),
                      n_slots=NUM_ROLES * pairs_per_row, pad_id=pad_id, with_attn_mask=True)
    out = {**out, **_pair_arrays(rows, global_batch_size, with_rationale, dataset_index)}
    out["n_packed_rows"] = np.int32(len(packed))
    return out


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How to lay out global batches: ``layout`` "three_row" or "packed" (see the module doc)."""

    buckets: Buckets
    global_batch_size: int
    pad_id: int
    layout: str = THREE_ROW
    with_rationale: bool = False
    pairs_per_row: int = 1
    row_multiple: int = 1  # packed layout: row counts are multiples of it (they split over the devices)

    def __call__(self, rows: Sequence[TokenizedExample], dataset_index: Sequence[int] | None = None
                 ) -> dict[str, np.ndarray]:
        return make_batch(rows, self, dataset_index)


def make_batch(rows: Sequence[TokenizedExample], plan: BatchPlan, dataset_index: Sequence[int] | None = None
               ) -> dict[str, np.ndarray]:
    """Lay out one global batch of pairs by ``plan`` (``dataset_index``: the pairs' positions in the dataset
    being iterated, carried as the ``dataset_index`` key)."""
    kw = dict(buckets=plan.buckets, global_batch_size=plan.global_batch_size, pad_id=plan.pad_id,
              with_rationale=plan.with_rationale, dataset_index=dataset_index)
    if plan.layout == THREE_ROW:
        return three_row_batch(rows, **kw)
    if plan.layout == PACKED:
        return packed_batch(rows, pairs_per_row=plan.pairs_per_row, row_multiple=plan.row_multiple, **kw)
    raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {plan.layout!r}")


def pad_id_for(tokenizer) -> int:
    """The id used for padding: ``pad_token_id``, else ``eos_token_id``, else 0 (padding is always masked)."""
    for i in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if i is not None:
            return int(i)
    return 0
