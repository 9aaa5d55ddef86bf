"""From the data layer's global batches (`rdpo_jax.data.batching`) to the step's [M, ...] micro-batches.

Micro-batches of one step must share a shape: `stack_micro_batches` pads each to the largest row length
T and row count N among them (padding rows score nothing: ``loss_mask`` False, slots -1) and stacks them
on a new leading axis. Keys outside the step's contract (bookkeeping such as ``example_index``) are kept
aside, stacked the same way.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROW_PAD = {"input_ids": None, "positions": 0, "attention_mask": 0, "targets": 0, "loss_mask": False,
           "score_slot": 0, "slot_pair": -1, "slot_role": -1, "attn_mask": False}
PAIR_KEYS = ("pair_mask", "rationale_mask", "ref_chosen", "ref_rejected", "example_index")


def pad_to(arr: np.ndarray, shape: tuple[int, ...], value) -> np.ndarray:
    if arr.shape == shape:
        return arr
    out = np.full(shape, value, arr.dtype)
    out[tuple(slice(0, s) for s in arr.shape)] = arr
    return out


def stack_micro_batches(batches: Sequence[dict[str, np.ndarray]], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Pads micro-batches to a common [N, T] (and [N, T, T] tree masks) and stacks them: [M, ...].

    Every micro-batch must have the same number of pairs P (the data layer pads each to its batch size)
    and the same keys.
    """
    if not batches:
        raise ValueError("stack_micro_batches needs at least one micro-batch")
    keys = set(batches[0])
    for i, b in enumerate(batches):
        if set(b) != keys:
            raise ValueError(f"micro-batch {i} has keys {sorted(b)}, micro-batch 0 has {sorted(keys)}")
    n = max(b["input_ids"].shape[0] for b in batches)
    t = max(b["input_ids"].shape[1] for b in batches)
    s = max(b["slot_pair"].shape[1] for b in batches)
    out = {}
    for key in keys:
        arrays = [np.asarray(b[key]) for b in batches]
        if key in ROW_PAD:
            fill = pad_id if key == "input_ids" else ROW_PAD[key]
            if key in ("slot_pair", "slot_role"):
                target = (n, s)
            elif key == "attn_mask":
                target = (n, t, t)
            else:
                target = (n, t)
            arrays = [pad_to(a, target, fill) for a in arrays]
        elif key in PAIR_KEYS:
            sizes = {a.shape for a in arrays}
            if len(sizes) > 1:
                raise ValueError(f"micro-batches disagree on {key!r} shapes {sorted(sizes)}: each must hold the "
                                 "same number of pairs")
        elif any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError(f"micro-batches disagree on the shape of {key!r}")
        out[key] = np.stack(arrays)
    return out


def step_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The keys the step reads (row contract + pair arrays), without the data layer's bookkeeping."""
    return {k: v for k, v in batch.items() if k in ROW_PAD or (k in PAIR_KEYS and k != "example_index")}
