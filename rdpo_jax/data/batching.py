"""Shape buckets, padding and the two batch layouts (three rows per pair; packed trees).

Shapes: every padded length is one of a small configured set (:class:`Buckets`, by default powers of two
from ``min_length`` up to ``max_length``), and the number of rows of each part is padded to a bucket of row
counts as well, so a whole run compiles for at most ``len(lengths) * len(row_counts)`` shapes per part.
Padded tokens carry ``pad_id`` with ``attention_mask`` 0 and ``loss_mask`` False; padded pairs have
``pair_mask`` 0 (the global batch is always ``global_batch_size`` pairs).

Both layouts produce the row-batch contract of :mod:`rdpo_jax.train.objectives` (numpy arrays; N rows of T
tokens, S scoring slots per row, P pairs):

- ``input_ids``, ``positions``, ``attention_mask``, ``targets``, ``score_slot`` int32 [N, T];
  ``loss_mask`` bool [N, T] (``targets[n, t]`` is the token predicted from position t);
- ``slot_pair``, ``slot_role`` int32 [N, S] (pair index, 0 chosen / 1 rejected / 2 rationale; -1 unused);
- ``pair_mask`` bool [P], ``rationale_mask`` bool [P] (with rationales), ``example_index`` int32 [P]
  (position of the pair in the input list, -1 for padding);
- packed layout only: ``attn_mask`` bool [N, T, T] (the tree mask; pass as the model's ``attn_mask``).

Three-row layout (:func:`three_row_batch`): rows pair-major (pair p: chosen, rejected[, rationale]),
S = 1, N = P * roles. Packed layout (:func:`packed_batch`): packed rows with S = 3 * pairs_per_row, then one
row per sequence of each pair refused by the prefix check (or too long to pack), S slot 0 used;
N is bucketed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .packing import PackedRow, pack_rows, tree_attention_mask
from .rows import TokenizedExample


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
    out = []
    for p, ex in zip(positions, rows, strict=True):
        seqs = [ex.chosen, ex.rejected] + ([ex.rationale] if with_rationale else [])
        for role, seq in enumerate(seqs):
            row = PackedRow()
            if seq is not None:
                row.add_sequence(seq.context, seq.completion, 0, p)
            row.roles = [role if seq is not None else -1]  # type: ignore[attr-defined]
            row.examples = [p] if seq is not None else [-1]
            out.append(row)
    return out


def _pad_rows(rows: Sequence[PackedRow], *, t: int, n_rows: int, n_slots: int, pad_id: int,
              with_attn_mask: bool) -> dict[str, np.ndarray]:
    if len(rows) > n_rows:
        raise ValueError(f"{len(rows)} rows do not fit {n_rows} rows")
    out = {
        "input_ids": np.full((n_rows, t), pad_id, np.int32),
        "positions": np.zeros((n_rows, t), np.int32),
        "attention_mask": np.zeros((n_rows, t), np.int32),
        "targets": np.full((n_rows, t), pad_id, np.int32),
        "loss_mask": np.zeros((n_rows, t), bool),
        "score_slot": np.zeros((n_rows, t), np.int32),
        "slot_pair": np.full((n_rows, n_slots), -1, np.int32),
        "slot_role": np.full((n_rows, n_slots), -1, np.int32),
    }
    if with_attn_mask:
        out["attn_mask"] = np.zeros((n_rows, t, t), bool)
    idx = np.arange(t)
    for i in range(n_rows):
        if i >= len(rows):
            out["positions"][i] = idx
            if with_attn_mask:
                out["attn_mask"][i, idx, idx] = True
            continue
        r = rows[i]
        n = len(r)
        out["input_ids"][i, :n] = r.ids
        out["positions"][i, :n] = r.positions
        out["positions"][i, n:] = np.arange(n, t) if not r.ids else r.positions[-1] + 1 + np.arange(t - n)
        out["attention_mask"][i, :n] = 1
        out["targets"][i, :n] = r.targets
        out["loss_mask"][i, :n] = r.loss_mask
        out["score_slot"][i, :n] = r.score_ids
        roles = getattr(r, "roles", None)
        for k, p in enumerate(r.examples):
            for j in range(3 if roles is None else 1):
                s = 3 * k + j if roles is None else k
                out["slot_pair"][i, s] = p
                out["slot_role"][i, s] = j if roles is None else roles[k]
        if with_attn_mask:
            out["attn_mask"][i] = tree_attention_mask(r.parent, t)
    return out


def _pair_arrays(rows: Sequence[TokenizedExample], p: int, with_rationale: bool) -> dict[str, np.ndarray]:
    n = len(rows)
    out = {"pair_mask": np.arange(p) < n,
           "example_index": np.array([r.index for r in rows] + [-1] * (p - n), np.int32)}
    if with_rationale:
        out["rationale_mask"] = np.array([r.rationale is not None for r in rows] + [False] * (p - n), bool)
    return out


def _check_size(rows: Sequence[TokenizedExample], global_batch_size: int) -> None:
    if len(rows) > global_batch_size:
        raise ValueError(f"{len(rows)} pairs do not fit a global batch of {global_batch_size}")


def three_row_batch(rows: Sequence[TokenizedExample], *, buckets: Buckets, global_batch_size: int,
                    pad_id: int, with_rationale: bool = False) -> dict[str, np.ndarray]:
    """The three-row layout of ``rows`` padded to ``global_batch_size`` pairs (keys in the module doc)."""
    _check_size(rows, global_batch_size)
    seq_rows = _sequence_rows(rows, range(len(rows)), with_rationale)
    t = buckets.fit(max([len(r) for r in seq_rows] + [1]))
    roles = 3 if with_rationale else 2
    out = _pad_rows(seq_rows, t=t, n_rows=global_batch_size * roles, n_slots=1, pad_id=pad_id,
                    with_attn_mask=False)
    return {**out, **_pair_arrays(rows, global_batch_size, with_rationale)}


def packed_batch(rows: Sequence[TokenizedExample], *, buckets: Buckets, global_batch_size: int, pad_id: int,
                 with_rationale: bool = False, pairs_per_row: int = 1,
                 row_buckets: Buckets | None = None, row_multiple: int = 1) -> dict[str, np.ndarray]:
    """The packed layout (spec section 3) of ``rows``; pairs that fail the prefix check or do not fit the
    largest bucket get one row per sequence. N is the smallest of ``row_buckets`` (default ``row_multiple``
    times the powers of two, up to ``global_batch_size * roles`` rounded up to a multiple of ``row_multiple``)
    that holds the rows."""
    _check_size(rows, global_batch_size)
    packed, fallback = pack_rows(rows, with_rationale=with_rationale, max_length=buckets.lengths[-1],
                                 pairs_per_row=pairs_per_row)
    all_rows = packed + _sequence_rows([rows[i] for i in fallback], fallback, with_rationale)
    roles = 3 if with_rationale else 2
    most = -(-global_batch_size * roles // row_multiple)
    row_buckets = row_buckets or Buckets(tuple(row_multiple * n for n in powers_of_two(1, most)))
    t = buckets.fit(max([len(r) for r in all_rows] + [1]))
    out = _pad_rows(all_rows, t=t, n_rows=row_buckets.fit(max(len(all_rows), 1)), n_slots=3 * pairs_per_row,
                    pad_id=pad_id, with_attn_mask=True)
    out = {**out, **_pair_arrays(rows, global_batch_size, with_rationale)}
    if not with_rationale:  # plain DPO packs no rationale slot
        out["slot_role"] = np.where(out["slot_role"] == 2, -1, out["slot_role"])
        out["slot_pair"] = np.where(out["slot_role"] < 0, -1, out["slot_pair"])
    out["n_packed_rows"] = np.int32(len(packed))
    return out


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How to lay out global batches: ``layout`` "three_row" or "packed" (see the module doc)."""

    buckets: Buckets
    global_batch_size: int
    pad_id: int
    layout: str = "three_row"
    with_rationale: bool = False
    pairs_per_row: int = 1
    row_multiple: int = 1  # packed layout: row counts are multiples of it (they split over the devices)

    def __call__(self, rows: Sequence[TokenizedExample]) -> dict[str, np.ndarray]:
        return make_batch(rows, self)


def make_batch(rows: Sequence[TokenizedExample], plan: BatchPlan) -> dict[str, np.ndarray]:
    """Lay out one global batch of pairs by ``plan``."""
    kw = dict(buckets=plan.buckets, global_batch_size=plan.global_batch_size, pad_id=plan.pad_id,
              with_rationale=plan.with_rationale)
    if plan.layout == "three_row":
        return three_row_batch(rows, **kw)
    if plan.layout == "packed":
        return packed_batch(rows, pairs_per_row=plan.pairs_per_row, row_multiple=plan.row_multiple, **kw)
    raise ValueError(f"layout must be 'three_row' or 'packed', got {plan.layout!r}")


def pad_id_for(tokenizer) -> int:
    """The id used for padding: ``pad_token_id``, else ``eos_token_id``, else 0 (padding is always masked)."""
    for i in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if i is not None:
            return int(i)
    return 0
