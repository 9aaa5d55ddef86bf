"""Deterministic, resumable, per-process batch iteration over an indexable dataset.

The order is a pure function of ``(seed, epoch)``: epoch ``e`` visits the dataset in the permutation
``PCG64(SeedSequence([seed, e])).permutation(N)`` (or in order with ``shuffle=False``). Global batch ``b`` of
an epoch holds the positions ``[b G, (b+1) G)`` of that permutation (G = ``global_batch_size``); with
P processes, process ``p`` yields the local slice ``[p G/P, (p+1) G/P)`` of every global batch, so the union
over processes of one step's batches is the global batch, and over an epoch the processes read disjoint
shards whose union is the epoch.

Remainder: with ``drop_remainder=True`` (default) an epoch has ``N // G`` batches and the last ``N mod G``
examples of its permutation are not seen that epoch (a new permutation next epoch). With
``drop_remainder=False`` it has ``ceil(N / G)`` batches; the last is filled up with padding slots whose
``mask`` is False (they repeat a real example, so shapes and types stay uniform).

The state (:meth:`BatchIterator.get_state`) is a JSON-able dict counted in global batches, so a run can be
resumed from a checkpoint, even on a different number of processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Batch(Generic[T]):
    """One process's slice of one global batch.

    Attributes:
      examples: the local examples, ``local_batch_size`` of them (padding slots included).
      indices: int64 [local_batch_size], dataset indices of the slots.
      mask: bool [local_batch_size], False for padding slots (the pair mask).
      step: global batch counter since the start of iteration (0-based, across epochs).
      epoch: the epoch this batch belongs to.
    """

    examples: list[T]
    indices: np.ndarray
    mask: np.ndarray
    step: int
    epoch: int


def epoch_permutation(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The visiting order of one epoch: int64 [num_examples], a function of (seed, epoch) only."""
    if not shuffle:
        return np.arange(num_examples, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))
    return rng.permutation(num_examples).astype(np.int64)


class BatchIterator(Iterator[Batch[T]]):
    """Iterates one process's local slices of global batches; resumable through :meth:`get_state`.

    Args:
      data: any indexable sequence (examples, tokenised rows, ...), identical on every process.
      global_batch_size: G, examples per global batch; must be divisible by ``process_count``.
      seed: shuffling seed; the same seed gives the same order.
      shuffle: reshuffle every epoch (else the natural order every epoch).
      drop_remainder: drop the last partial batch of each epoch (default) or pad it (mask False).
      num_epochs: stop after this many epochs (None: forever).
      process_index, process_count: this process and how many; default ``jax.process_index()``,
        ``jax.process_count()``.
    """

    def __init__(
        self,
        data: Sequence[T],
        global_batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        num_epochs: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        n = len(data)
        if n == 0:
            raise ValueError("cannot iterate over an empty dataset")
        if global_batch_size <= 0 or global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size={global_batch_size} must be positive and divisible by "
                f"process_count={process_count}"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        if drop_remainder and n < global_batch_size:
            raise ValueError(
                f"global_batch_size={global_batch_size} exceeds the {n} examples, so drop_remainder=True "
                f"leaves no batch; use a smaller batch or drop_remainder=False"
            )
        self.data = data
        self.num_examples = n
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seed, self.shuffle, self.drop_remainder = int(seed), bool(shuffle), bool(drop_remainder)
        self.num_epochs = num_epochs
        self.process_index, self.process_count = process_index, process_count
        self.epoch, self.position, self.step = 0, 0, 0
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    @property
    def batches_per_epoch(self) -> int:
        """``N // G`` with drop_remainder, else ``ceil(N / G)``."""
        n, g = self.num_examples, self.global_batch_size
        return n // g if self.drop_remainder else -(-n // g)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            self._order = epoch_permutation(self.num_examples, self.seed, epoch, self.shuffle)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def global_batch(self, epoch: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices int64 [G] and mask bool [G] of global batch ``position`` of ``epoch`` (all processes)."""
        order = self._epoch_order(epoch)
        g = self.global_batch_size
        idx = order[position * g : (position + 1) * g]
        mask = np.ones(g, dtype=bool)
        if len(idx) < g:
            mask[len(idx):] = False
            idx = np.concatenate([idx, np.full(g - len(idx), order[0], dtype=np.int64)])
        return idx, mask

    def __iter__(self) -> BatchIterator[T]:
        return self

    def __next__(self) -> Batch[T]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        idx, mask = self.global_batch(self.epoch, self.position)
        lo = self.process_index * self.local_batch_size
        local_idx, local_mask = idx[lo : lo + self.local_batch_size], mask[lo : lo + self.local_batch_size]
        batch = Batch(
            examples=[self.data[int(i)] for i in local_idx],
            indices=local_idx.copy(),
            mask=local_mask.copy(),
            step=self.step,
            epoch=self.epoch,
        )
        self.position += 1
        self.step += 1
        return batch

    # ---- checkpointing -------------------------------------------------------------------------------

    _CHECKED = ("num_examples", "global_batch_size", "seed", "shuffle", "drop_remainder")

    def get_state(self) -> dict[str, Any]:
        """JSON-able state: where the next batch comes from (epoch, position in global batches) and the
        settings that must match on restore. Does not depend on the process index or count."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": self.position,
            "step": self.step,
            **{k: getattr(self, k) for k in self._CHECKED},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`get_state`'s dict: the next batch is the one that followed the saved state.

        Raises ValueError naming the key when the saved settings differ from this iterator's.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"iterator state version {state.get('version')!r}; expected {STATE_VERSION}")
        for key in self._CHECKED:
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"iterator state has {key}={state.get(key)!r}, this iterator {getattr(self, key)!r}"
                )
        self.epoch, self.position, self.step = int(state["epoch"]), int(state["position"]), int(state["step"])
