"""The packed (tree-shaped) layout of docs/spec.md section 3: a pair's chosen, rejected and rationale in one row.

Packed row for one pair (conversational template)::

    segment:    x         | y_w          | x_last' , y_l          | F                | r
    attends to: x (causal)| x, y_w       | x[:-1], itself, y_l    | x, y_w, F        | x, y_w, F, r
    positions:  0..|x|-1  | |x|..        | |x|-1, |x|..           | after y_w ..     | continuing
    scores:     -         | y_w          | y_l (x_last' predicts y_l[0]) | -        | r

The row is a forest: every token has a *parent* (the token before it in the unpacked sequence it belongs
to; -1 for a root). A token attends to itself and its ancestors; its position id is its depth. So each
token sees exactly the context it has in its unpacked sequence, at the same positions. Plain DPO packs
``x | y_w | x_last', y_l``. Several pairs per row repeat the layout as separate trees (segment ids 1, 2, ...),
so attention never crosses pairs.

Scores: ``score_ids[t] = 3 k + j`` for slot k's chosen (j=0), rejected (1), rationale (2); feed
``segment_logps(token_logps, loss_mask, score_ids, 3 * pairs_per_row)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rdpo_jax.batch import NUM_ROLES, UNUSED, Role

from .rows import TokenizedExample


@dataclasses.dataclass
class PackedRow:
    """One unpadded packed row (numpy, length L).

    ids, parent (-1 root), positions, segment_ids (pair slot + 1), targets (token predicted from t),
    loss_mask (bool), score_ids (the scoring slot where scored, else 0) and, per scoring slot, the position of
    its pair in the list of rows being laid out and its `Role` (``slots``; (-1, -1) for a slot that scores
    nothing). A packed pair k owns slots 3 k + role; a plain sequence owns one slot.
    """

    ids: list[int] = dataclasses.field(default_factory=list)
    parent: list[int] = dataclasses.field(default_factory=list)
    positions: list[int] = dataclasses.field(default_factory=list)
    segment_ids: list[int] = dataclasses.field(default_factory=list)
    targets: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[bool] = dataclasses.field(default_factory=list)
    score_ids: list[int] = dataclasses.field(default_factory=list)
    slots: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    @property
    def pairs(self) -> list[int]:
        """Positions of the pairs this row holds (in order, each once)."""
        return list(dict.fromkeys(p for p, _ in self.slots if p != UNUSED))

    def __len__(self) -> int:
        return len(self.ids)

    def _chain(self, tokens: Sequence[int], parent: int, segment: int) -> list[int]:
        idx = []
        for tok in tokens:
            self.ids.append(int(tok))
            self.parent.append(parent)
            self.positions.append(0 if parent < 0 else self.positions[parent] + 1)
            self.segment_ids.append(segment)
            self.targets.append(0)
            self.loss_mask.append(False)
            self.score_ids.append(0)
            parent = len(self.ids) - 1
            idx.append(parent)
        return idx

    def _score(self, at: int, target: int, score_id: int | None) -> None:
        self.targets[at] = int(target)
        if score_id is not None:
            self.loss_mask[at] = True
            self.score_ids[at] = score_id

    def _continue(self, idx: list[int], tokens: Sequence[int], score_id: int | None) -> None:
        """Targets inside a chain: token j predicts token j + 1."""
        for j in range(len(idx) - 1):
            self._score(idx[j], tokens[j + 1], score_id)

    def add_sequence(self, context: Sequence[int], completion: Sequence[int], position: int, role: Role) -> None:
        """Append one plain sequence (a causal chain) whose completion is scored in a new slot, as ``role`` of
        the pair at ``position``."""
        slot = len(self.slots)
        ids = list(context) + list(completion)
        idx = self._chain(ids, -1, slot + 1)
        for j in range(max(len(context) - 1, 0), len(ids) - 1):
            self._score(idx[j], ids[j + 1], slot)
        self._continue(idx[: max(len(context) - 1, 0) + 1], ids, None)
        self.slots.append((position, int(role)))

    def add_empty_slot(self) -> None:
        """A slot that scores nothing (a role the pair does not have, kept so rows stay pair-major)."""
        self.slots.append((UNUSED, UNUSED))

    def add_pair(self, ex: TokenizedExample, with_rationale: bool, position: int) -> None:
        """Append the tree of the pair at ``position`` (requires ``ex.dpo_packable``, and ``ex.rdpo_packable``
        with a rationale): slots 3 k + role for the row's k-th pair."""
        k = len(self.slots) // NUM_ROLES
        seg = k + 1
        base = NUM_ROLES * k
        x, yw, yl = ex.chosen.context, ex.chosen.completion, ex.rejected.completion
        xi = self._chain(x, -1, seg)
        self._continue(xi, x, None)
        ywi = self._chain(yw, xi[-1], seg)
        self._score(xi[-1], yw[0], base + Role.CHOSEN)
        self._continue(ywi, yw, base + Role.CHOSEN)
        xl = self._chain([x[-1]], xi[-2] if len(xi) > 1 else -1, seg)  # x_last' at position |x| - 1
        yli = self._chain(yl, xl[0], seg)
        self._score(xl[0], yl[0], base + Role.REJECTED)
        self._continue(yli, yl, base + Role.REJECTED)
        if with_rationale:
            f, r = ex.followup, ex.rationale.completion
            fi = self._chain(f, ywi[-1], seg)
            self._score(ywi[-1], f[0], None)
            self._continue(fi, f, None)
            ri = self._chain(r, fi[-1], seg)
            self._score(fi[-1], r[0], base + Role.RATIONALE)
            self._continue(ri, r, base + Role.RATIONALE)
        self.slots += [(position, Role.CHOSEN), (position, Role.REJECTED),
                       (position, Role.RATIONALE) if with_rationale else (UNUSED, UNUSED)]


def packed_length(ex: TokenizedExample, with_rationale: bool) -> int:
    """Tokens of a pair packed: ``|x| + |y_w| + 1 + |y_l| (+ |F| + |r|)``."""
    n = len(ex.chosen) + 1 + len(ex.rejected.completion)
    if with_rationale:
        n += len(ex.followup) + len(ex.rationale.completion)
    return n


def unpacked_length(ex: TokenizedExample, with_rationale: bool) -> int:
    """Tokens of the same pair in the row-per-sequence layout: ``|x y_w| + |x y_l| (+ |c r|)``."""
    n = len(ex.chosen) + len(ex.rejected)
    if with_rationale and ex.rationale is not None:
        n += len(ex.rationale)
    return n


def can_pack(ex: TokenizedExample, with_rationale: bool, max_length: int) -> bool:
    """Whether the pair passes the prefix check and fits in ``max_length`` once packed."""
    ok = ex.rdpo_packable if with_rationale else ex.dpo_packable
    return ok and packed_length(ex, with_rationale) <= max_length


def pack_rows(rows: Sequence[TokenizedExample], *, with_rationale: bool, max_length: int,
              pairs_per_row: int = 1) -> tuple[list[PackedRow], list[int]]:
    """Pack the packable pairs greedily in order (up to ``pairs_per_row`` pairs and ``max_length`` tokens
    per row). Returns (packed rows, positions in ``rows`` of the pairs that must use the three-row layout)."""
    packed: list[PackedRow] = []
    fallback: list[int] = []
    cur = PackedRow()
    for i, ex in enumerate(rows):
        if not can_pack(ex, with_rationale, max_length):
            fallback.append(i)
            continue
        n = packed_length(ex, with_rationale)
        if cur.slots and (len(cur.pairs) >= pairs_per_row or len(cur) + n > max_length):
            packed.append(cur)
            cur = PackedRow()
        cur.add_pair(ex, with_rationale, i)
    if cur.slots:
        packed.append(cur)
    return packed, fallback


def tree_attention_mask(parent: Sequence[int], length: int | None = None) -> np.ndarray:
    """bool [T, T]: ``mask[i, j]`` iff j is i or an ancestor of i; rows/cols past ``len(parent)`` (padding)
    attend only to themselves, so no softmax row is empty."""
    n = len(parent)
    t = n if length is None else length
    mask = np.zeros((t, t), dtype=bool)
    for i, p in enumerate(parent):
        if p >= 0:
            mask[i, :n] = mask[p, :n]
        mask[i, i] = True
    idx = np.arange(n, t)
    mask[idx, idx] = True
    return mask
