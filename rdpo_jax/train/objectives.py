"""Training objectives over a row batch: the preference objective (any loss of the registry) and SFT.

The row-batch contract (one micro-batch; N rows of T tokens, P pairs, S scoring slots per row):

    input_ids       int   [N, T]
    positions       int   [N, T]      position ids (packed rows restart / branch them)
    attention_mask  0/1   [N, T]      padding (1 = real token)
    attn_mask       bool  [N, T, T]   optional explicit tree mask of packed rows (replaces causal)
    targets         int   [N, T]      token predicted from position t (already shifted)
    loss_mask       bool  [N, T]      whether targets[n, t] is scored
    score_slot      int   [N, T]      the row-local slot in [0, S) that a scored target belongs to
    slot_pair       int   [N, S]      pair index in [0, P) of each slot (-1: unused slot)
    slot_role       int   [N, S]      0 chosen, 1 rejected, 2 rationale (-1: unused)
    pair_mask       bool  [P]         real pairs (False: padding)
    rationale_mask  0/1   [P]         optional: pairs that have a rationale
    ref_chosen, ref_rejected f32 [P]  optional: cached reference sums (no reference forward then)

The three-row layout has one slot per row (chosen / rejected / rationale rows); the packed layout of spec
section 3 has three slots per pair in one row, and several pairs per row repeat it. Either way the pair sums
are ``sums[p, role] = sum over (n, s) with slot_pair = p, slot_role = role of the row-slot sums``, so the
loss sees the same `SequenceLogps` whatever the layout. SFT rows need only the first six keys.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp

from rdpo_jax.logprobs import DEFAULT_BLOCK_SIZE, segment_logps, token_logps_from_hidden
from rdpo_jax.losses import (
    LOSSES,
    REFERENCE_FREE,
    SequenceLogps,
    has_rationale_term,
    mask_pairs,
    masked_pair_sums,
    pair_finite,
)

ROLE_CHOSEN, ROLE_REJECTED, ROLE_RATIONALE = 0, 1, 2
ROW_KEYS = ("input_ids", "positions", "attention_mask", "targets", "loss_mask")
SLOT_KEYS = ("score_slot", "slot_pair", "slot_role")


def row_token_logps(model, rows: dict[str, jax.Array], block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
    """log pi(targets | row prefix) [N, T] float32: model hidden states -> blocked LM head."""
    hidden = model(rows["input_ids"], rows.get("attention_mask"), positions=rows["positions"],
                   attn_mask=rows.get("attn_mask"), return_hidden=True)
    head, layout = model.lm_head_weight()
    return token_logps_from_hidden(hidden, head, rows["targets"], block_size=block_size, layout=layout)


def pair_sums(token_lp: jax.Array, rows: dict[str, jax.Array], num_pairs: int) -> tuple[jax.Array, jax.Array]:
    """Per-pair, per-role sums and counts [P, 3] from row-slot sums (see the module docstring)."""
    n_slots = rows["slot_pair"].shape[-1]
    sums, counts = segment_logps(token_lp, rows["loss_mask"], rows["score_slot"], n_slots)
    valid = (rows["slot_pair"] >= 0) & (rows["slot_role"] >= 0)
    index = jnp.where(valid, rows["slot_pair"] * 3 + rows["slot_role"], num_pairs * 3).reshape(-1)
    out_sums = jax.ops.segment_sum(sums.reshape(-1), index, num_segments=num_pairs * 3)
    out_counts = jax.ops.segment_sum(counts.reshape(-1), index, num_segments=num_pairs * 3)
    return out_sums.reshape(num_pairs, 3), out_counts.reshape(num_pairs, 3)


@dataclasses.dataclass(frozen=True)
class PreferenceObjective:
    """One loss of the registry with its hyperparameters, computed from a row batch.

    ``hparams`` is a tuple of (keyword, value) pairs (hashable, so the objective can be a static jit
    argument); unknown keywords fail here, before anything is traced.
    """

    loss: str = "rdpo"
    hparams: tuple[tuple[str, Any], ...] = ()
    block_size: int = DEFAULT_BLOCK_SIZE

    def __post_init__(self):
        fn = LOSSES[self.loss]  # unknown names raise, listing the accepted ones
        accepted = [p for p in inspect.signature(fn.__wrapped__).parameters if p != "logps"]
        bad = [k for k, _ in self.hparams if k not in accepted]
        if bad:
            fn(None, **dict(self.hparams))  # the registry checks keywords first: raises its TypeError and hint

    @property
    def needs_reference(self) -> bool:
        return self.loss not in REFERENCE_FREE

    @property
    def needs_rationale(self) -> bool:
        return has_rationale_term(self.loss, dict(self.hparams))

    def count(self, batch: dict[str, jax.Array]) -> jax.Array:
        """Number of real pairs in a (possibly multi-micro-batch) batch."""
        return batch["pair_mask"].astype(jnp.float32).sum()

    def sequence_logps(self, model, ref_model, rows: dict[str, jax.Array]) -> SequenceLogps:
        """SequenceLogps [P] for one micro-batch: policy sums, and reference sums (frozen forward or cache)."""
        num_pairs = rows["pair_mask"].shape[-1]
        sums, counts = pair_sums(row_token_logps(model, rows, self.block_size), rows, num_pairs)
        ref_w = ref_l = None
        if self.needs_reference:
            if "ref_chosen" in rows:
                ref_w, ref_l = rows["ref_chosen"], rows["ref_rejected"]
            elif ref_model is not None:
                ref_sums, _ = pair_sums(row_token_logps(ref_model, rows, self.block_size), rows, num_pairs)
                ref_sums = jax.lax.stop_gradient(ref_sums)
                ref_w, ref_l = ref_sums[:, ROLE_CHOSEN], ref_sums[:, ROLE_REJECTED]
            else:
                raise ValueError(f"loss {self.loss!r} needs a reference: pass reference params or a batch "
                                 "with cached ref_chosen/ref_rejected")
        rat = rat_n = None
        if self.needs_rationale:
            rat, rat_n = sums[:, ROLE_RATIONALE], counts[:, ROLE_RATIONALE]
        return SequenceLogps(
            chosen=sums[:, ROLE_CHOSEN], rejected=sums[:, ROLE_REJECTED],
            chosen_tokens=counts[:, ROLE_CHOSEN], rejected_tokens=counts[:, ROLE_REJECTED],
            ref_chosen=ref_w, ref_rejected=ref_l, rationale=rat, rationale_tokens=rat_n,
            rationale_mask=rows.get("rationale_mask") if self.needs_rationale else None)

    def __call__(self, model, ref_model, rows: dict[str, jax.Array]
                 ) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
        """(sum of per-pair losses over real pairs, metric sums, per-pair finite flags [P]) for one
        micro-batch. Padded pairs are selected out of the loss's inputs and of its output (`mask_pairs`,
        `masked_pair_sums`), so nothing they hold reaches the loss or the gradient."""
        logps = mask_pairs(self.sequence_logps(model, ref_model, rows), rows["pair_mask"])
        per_pair, metrics = LOSSES[self.loss](logps, **dict(self.hparams))
        loss_sum, metric_sums, _ = masked_pair_sums(per_pair, metrics, rows["pair_mask"])
        return loss_sum, metric_sums, pair_finite(per_pair, rows["pair_mask"])


@dataclasses.dataclass(frozen=True)
class SFTObjective:
    """Token-mean negative log-likelihood over the scored targets of the whole (global) batch:
    ``L = -sum_{n,t} m[n,t] log pi(targets[n,t]) / sum_{n,t} m[n,t]`` (chosen responses or plain text)."""

    block_size: int = DEFAULT_BLOCK_SIZE
    needs_reference = False

    def count(self, batch: dict[str, jax.Array]) -> jax.Array:
        return batch["loss_mask"].astype(jnp.float32).sum()

    def __call__(self, model, ref_model, rows: dict[str, jax.Array]
                 ) -> tuple[jax.Array, dict[str, jax.Array], None]:
        """(NLL sum over scored targets, metric sums, None: SFT has no pairs to flag)."""
        lp = row_token_logps(model, rows, self.block_size)
        mask = rows["loss_mask"].astype(bool)
        nll = jnp.where(mask, -lp, 0.0).sum()
        return nll, {"nll_loss": nll}, None
