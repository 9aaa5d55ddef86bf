"""Training objectives over a row batch (`rdpo_jax.batch`): the preference objective (any loss of the
registry) and SFT. Both score through `rdpo_jax.logprobs` (`row_token_logps`, then `pair_sums` for pairs), so
the loss sees the same `SequenceLogps` whatever the layout (three rows per pair, or packed trees).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp

from rdpo_jax.batch import Role
from rdpo_jax.logprobs import DEFAULT_BLOCK_SIZE, pair_sums, row_token_logps
from rdpo_jax.losses import (
    LOSSES,
    REFERENCE_FREE,
    SequenceLogps,
    has_rationale_term,
    mask_pairs,
    masked_pair_sums,
    pair_finite,
)


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
                ref_w, ref_l = ref_sums[:, Role.CHOSEN], ref_sums[:, Role.REJECTED]
            else:
                raise ValueError(f"loss {self.loss!r} needs a reference: pass reference params or a batch "
                                 "with cached ref_chosen/ref_rejected")
        rat = rat_n = None
        if self.needs_rationale:
            rat, rat_n = sums[:, Role.RATIONALE], counts[:, Role.RATIONALE]
        return SequenceLogps(
            chosen=sums[:, Role.CHOSEN], rejected=sums[:, Role.REJECTED],
            chosen_tokens=counts[:, Role.CHOSEN], rejected_tokens=counts[:, Role.REJECTED],
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
