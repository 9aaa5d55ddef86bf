"""The row-batch contract: what the data layer produces and the step, the log-prob bridge and the analysis read.

One micro-batch holds N rows of T tokens, S scoring slots per row and P pairs (docs/spec.md section 3):

    key             dtype    shape      pad value    meaning
    input_ids       int32    [N, T]     pad id       token ids
    positions       int32    [N, T]     0            position ids (packed rows branch them)
    attention_mask  int32    [N, T]     0            1 = real token
    targets         int32    [N, T]     pad id       token predicted from position t (already shifted)
    loss_mask       bool     [N, T]     False        whether targets[n, t] is scored
    score_slot      int32    [N, T]     0            the row-local slot in [0, S) a scored target belongs to
    attn_mask       bool     [N, T, T]  diagonal     optional tree mask of packed rows (replaces causal)
    slot_pair       int32    [N, S]     -1           pair index in [0, P) of each slot (-1: unused slot)
    slot_role       int32    [N, S]     -1           the slot's `Role` (-1: unused slot)
    pair_mask       bool     [P]                     real pairs (False: padding)
    rationale_mask  bool     [P]                     optional: pairs that have a rationale
    ref_chosen, ref_rejected float32 [P]             optional: cached reference sums (no reference forward)
    ref_chosen_prefix, ref_rejected_prefix float32 [P]  optional: their sums over the first min(n_w, n_l) tokens

One derived step input is added last, when a batch goes to the devices (:func:`add_score_index`):

    score_index     int32    [N, W]     -1           positions t of the row's scored targets, in order

with W the smallest of T/4, T/2, T that holds every row's scored count; the log-prob bridge then runs the LM
head at those W positions only (`rdpo_jax.logprobs.row_token_logps`), not at the prompt's.

Bookkeeping keys ride along but are never step inputs: ``example_index`` int32 [P] (position of the pair
in the list of examples the batch was laid out from, -1 for padding), ``dataset_index`` int32 [P] (position
of the pair in the dataset being iterated, when the caller passes it; the reference cache is keyed by it)
and ``n_packed_rows`` (a count, packed layout). Padding rows score nothing (``loss_mask`` False, slots -1) and
attend to themselves only (``attn_mask`` diagonal), so no padded query sees an empty key set.

The pair sums are ``sums[p, role] = sum over (n, s) with slot_pair = p, slot_role = role of the row-slot
sums`` (`rdpo_jax.logprobs.pair_sums`), whatever the layout. SFT rows need only the first six keys.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping

import numpy as np


class Role(enum.IntEnum):
    """What a scoring slot holds: the chosen response, the rejected response or the rationale."""

    CHOSEN = 0
    REJECTED = 1
    RATIONALE = 2


NUM_ROLES = len(Role)
UNUSED = -1  # slot_pair / slot_role of a slot that scores nothing

#: Per-token keys [N, T] and their pad values (None: the tokenizer's pad id).
TOKEN_PAD: Mapping[str, int | bool | None] = {"input_ids": None, "positions": 0, "attention_mask": 0,
                                              "targets": None, "loss_mask": False, "score_slot": 0}
#: Per-slot keys [N, S].
SLOT_PAD: Mapping[str, int] = {"slot_pair": UNUSED, "slot_role": UNUSED}
TREE_MASK = "attn_mask"  # [N, T, T]
#: Every key indexed by row first: the keys that split over the devices.
ROW_KEYS = (*TOKEN_PAD, *SLOT_PAD, TREE_MASK)
#: Per-pair keys [P] the step reads (replicated over the devices).
REFERENCE_KEYS = ("ref_chosen", "ref_rejected", "ref_chosen_prefix", "ref_rejected_prefix")
PAIR_KEYS = ("pair_mask", "rationale_mask", *REFERENCE_KEYS)
#: Per-pair bookkeeping, never a step input.
INDEX_KEYS = ("example_index", "dataset_index")
DTYPES: Mapping[str, type] = {**{k: np.int32 for k in ROW_KEYS}, "loss_mask": np.bool_, TREE_MASK: np.bool_,
                              "pair_mask": np.bool_, "rationale_mask": np.bool_,
                              **{k: np.float32 for k in REFERENCE_KEYS},
                              "example_index": np.int32, "dataset_index": np.int32}


def empty_rows(n_rows: int, length: int, n_slots: int, pad_id: int, *, tree_mask: bool = False
               ) -> dict[str, np.ndarray]:
    """All row keys of ``n_rows`` padding rows of ``length`` tokens and ``n_slots`` slots (plus the tree
    mask, diagonal, when ``tree_mask``): fill the real rows in place."""
    out = {k: np.full((n_rows, length), pad_id if v is None else v, DTYPES[k]) for k, v in TOKEN_PAD.items()}
    out.update({k: np.full((n_rows, n_slots), v, np.int32) for k, v in SLOT_PAD.items()})
    if tree_mask:
        out[TREE_MASK] = np.broadcast_to(np.eye(length, dtype=bool), (n_rows, length, length)).copy()
    return out


def pad_rows(batch: Mapping[str, np.ndarray], *, n_rows: int, length: int, n_slots: int, pad_id: int,
             row_axis: int = 0) -> dict[str, np.ndarray]:
    """``batch`` with every row key padded to ``n_rows`` rows, ``length`` tokens and ``n_slots`` slots
    (axes from ``row_axis`` on: 0 for [N, ...], 1 for stacked micro-batches [M, N, ...]); other keys as they
    are. Padded tokens and rows take the pad values of the module table; a padded tree-mask entry is True on
    the diagonal only."""
    out = dict(batch)
    for key in ROW_KEYS:
        if key not in batch:
            continue
        arr = np.asarray(batch[key])
        lead = arr.shape[:row_axis]
        tail = {TREE_MASK: (n_rows, length, length)}.get(key, (n_rows, n_slots) if key in SLOT_PAD
                                                           else (n_rows, length))
        shape = (*lead, *tail)
        if arr.shape == shape:
            continue
        if any(a > b for a, b in zip(arr.shape, shape, strict=True)):
            raise ValueError(f"{key!r} of shape {arr.shape} does not fit {shape}")
        if key == TREE_MASK:
            grown = np.broadcast_to(np.eye(length, dtype=bool), shape).copy()
        else:
            fill = TOKEN_PAD.get(key, SLOT_PAD.get(key))
            grown = np.full(shape, pad_id if fill is None else fill, arr.dtype)
        grown[tuple(slice(0, s) for s in arr.shape)] = arr
        out[key] = grown
    return out


def row_dims(batch: Mapping[str, np.ndarray], row_axis: int = 0) -> tuple[int, int, int]:
    """(N rows, T tokens, S slots) of a batch whose row axis is ``row_axis``."""
    n, t = batch["input_ids"].shape[row_axis:row_axis + 2]
    return int(n), int(t), int(batch["slot_pair"].shape[row_axis + 1])


SCORE_INDEX = "score_index"


def score_width(loss_mask: np.ndarray, most: int | None = None) -> int:
    """W of :func:`add_score_index`: the smallest of T/4, T/2, T (at least 1) that holds ``most`` (default:
    the largest per-row count of scored targets in ``loss_mask`` [..., T])."""
    t = loss_mask.shape[-1]
    most = int(np.asarray(loss_mask, bool).sum(-1).max(initial=0)) if most is None else most
    for width in (t // 4, t // 2):
        if width >= max(most, 1):
            return width
    return t


def add_score_index(batch: Mapping[str, np.ndarray], width: int | None = None) -> dict[str, np.ndarray]:
    """``batch`` with ``score_index`` [..., N, W]: each row's scored positions (``loss_mask`` True) in order,
    then -1. ``width`` W (default :func:`score_width`) must hold every row's count (several processes pass
    the width they agreed on)."""
    mask = np.asarray(batch["loss_mask"], bool)
    width = score_width(mask) if width is None else width
    counts = mask.sum(-1)
    if counts.max(initial=0) > width:
        raise ValueError(f"score_index width {width} is smaller than a row's {int(counts.max())} scored targets")
    order = np.argsort(~mask, axis=-1, kind="stable")[..., :width]  # scored positions first, in order
    rank = np.arange(width)
    index = np.where(rank < counts[..., None], order, -1).astype(np.int32)
    return {**batch, SCORE_INDEX: index}


def step_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The keys the step reads (row keys and per-pair keys), without the bookkeeping."""
    return {k: v for k, v in batch.items() if k in ROW_KEYS or k in PAIR_KEYS}
