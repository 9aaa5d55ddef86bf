"""From the data layer's global batches (`rdpo_jax.data.batching`) to the step's [M, ...] micro-batches.

Micro-batches of one step must share a shape: `stack_micro_batches` pads each to the largest row count N,
row length T and slot count S among them (`rdpo_jax.batch.pad_rows`: padding rows score nothing) and stacks
them on a new leading axis. Bookkeeping keys (``example_index``, ``dataset_index``) are stacked the same way;
`rdpo_jax.batch.step_inputs` drops them before the step.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rdpo_jax.batch import INDEX_KEYS, PAIR_KEYS, ROW_KEYS, pad_rows, row_dims


def stack_micro_batches(batches: Sequence[dict[str, np.ndarray]], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Pads micro-batches to a common [N, T] (slots [N, S], tree masks [N, T, T]) and stacks them: [M, ...].

    Every micro-batch must have the same number of pairs P (the data layer pads each to its batch size)
    and the same keys.
    """
    if not batches:
        raise ValueError("stack_micro_batches needs at least one micro-batch")
    keys = set(batches[0])
    for i, b in enumerate(batches):
        if set(b) != keys:
            raise ValueError(f"micro-batch {i} has keys {sorted(b)}, micro-batch 0 has {sorted(keys)}")
    n, t, s = np.max([row_dims(b) for b in batches], axis=0)
    padded = [pad_rows(b, n_rows=n, length=t, n_slots=s, pad_id=pad_id) for b in batches]
    out = {}
    for key in keys:
        arrays = [np.asarray(b[key]) for b in padded]
        if key not in ROW_KEYS and any(a.shape != arrays[0].shape for a in arrays):
            what = "each must hold the same number of pairs" if key in (*PAIR_KEYS, *INDEX_KEYS) else "shapes"
            raise ValueError(f"micro-batches disagree on {key!r} shapes {sorted({a.shape for a in arrays})}: {what}")
        out[key] = np.stack(arrays)
    return out
