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
from rdpo_jax.logprobs import DEFAULT_BLOCK_SIZE, pair_sums, row_token_logps, shared_prefix_mask
from rdpo_jax.losses import LOSSES, SequenceLogps, loss_inputs, mask_pairs, masked_pair_sums, pair_finite


def _frozen(value: Any) -> Any:
    """Lists (YAML) as tuples, so the hyperparameters stay hashable (a static jit argument)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def _per_token_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    return total / jnp.maximum(count.astype(jnp.float32), 1.0)


def head_metrics(stats: dict[str, jax.Array], rows: dict[str, jax.Array], counts: jax.Array,
                 num_pairs: int) -> dict[str, jax.Array]:
    """TRL's head metrics per pair [P] from the head's per-token statistics [N, T]: ``logits/chosen`` and
    ``logits/rejected`` (mean over scored tokens of the mean logit over the vocabulary), ``entropy/chosen``,
    ``entropy/rejected`` and ``entropy`` (their mean), ``mean_token_accuracy`` (share of the chosen's scored
    tokens whose target is the top-1 prediction). Each is a per-response token mean, then averaged over
    pairs (TRL: one token mean over the batch)."""
    def per_role(name: str, role: Role) -> jax.Array:
        sums, _ = pair_sums(stats[name], rows, num_pairs)
        return _per_token_mean(sums[:, role], counts[:, role])

    out = {"logits/chosen": per_role("mean_logit", Role.CHOSEN),
           "logits/rejected": per_role("mean_logit", Role.REJECTED),
           "entropy/chosen": per_role("entropy", Role.CHOSEN),
           "entropy/rejected": per_role("entropy", Role.REJECTED),
           "mean_token_accuracy": per_role("is_top1", Role.CHOSEN)}
    out["entropy"] = 0.5 * (out["entropy/chosen"] + out["entropy/rejected"])
    return out


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
        object.__setattr__(self, "hparams", tuple((k, _frozen(v)) for k, v in self.hparams))
        fn = LOSSES[self.loss]  # unknown names raise, listing the accepted ones
        accepted = [p for p in inspect.signature(fn.__wrapped__).parameters if p != "logps"]
        bad = [k for k, _ in self.hparams if k not in accepted]
        if bad:
            fn(None, **dict(self.hparams))  # the registry checks keywords first: raises its TypeError and hint

    @property
    def inputs(self) -> frozenset[str]:
        """What the loss reads beyond the policy sums (`rdpo_jax.losses.loss_inputs`)."""
        return loss_inputs(self.loss, dict(self.hparams))

    @property
    def needs_reference(self) -> bool:
        return "reference" in self.inputs

    @property
    def needs_rationale(self) -> bool:
        return "rationale" in self.inputs

    def count(self, batch: dict[str, jax.Array]) -> jax.Array:
        """Number of real pairs in a (possibly multi-micro-batch) batch."""
        return batch["pair_mask"].astype(jnp.float32).sum()

    def _reference(self, ref_model, rows, num_pairs, shared) -> tuple[jax.Array | None, ...]:
        """(R_w, R_l, their prefix sums or None): cached in the batch, or a frozen forward of ``ref_model``."""
        if "ref_chosen" in rows:
            if shared is not None and "ref_chosen_prefix" not in rows:
                raise ValueError(f"loss {self.loss!r} with ld_alpha needs the reference's prefix sums: the batch "
                                 "has cached ref_chosen/ref_rejected without ref_chosen_prefix/ref_rejected_prefix "
                                 "(recompute the reference cache)")
            prefix = (rows["ref_chosen_prefix"], rows["ref_rejected_prefix"]) if shared is not None else (None, None)
            return rows["ref_chosen"], rows["ref_rejected"], *prefix
        if ref_model is None:
            raise ValueError(f"loss {self.loss!r} needs a reference: pass reference params or a batch "
                             "with cached ref_chosen/ref_rejected")
        lp = jax.lax.stop_gradient(row_token_logps(ref_model, rows, self.block_size))
        sums, _ = pair_sums(lp, rows, num_pairs)
        prefix = (None, None)
        if shared is not None:
            p_sums, _ = pair_sums(jnp.where(shared, lp, 0.0), rows, num_pairs)
            prefix = (p_sums[:, Role.CHOSEN], p_sums[:, Role.REJECTED])
        return sums[:, Role.CHOSEN], sums[:, Role.REJECTED], *prefix

    def sequence_logps(self, model, ref_model, rows: dict[str, jax.Array]
                       ) -> tuple[SequenceLogps, dict[str, jax.Array]]:
        """(SequenceLogps [P], head metrics [P]) for one micro-batch: policy sums (and, as the loss needs them,
        LD-DPO prefix sums and WPO weighting sums), reference sums (frozen forward or cache), rationale sums."""
        num_pairs = rows["pair_mask"].shape[-1]
        needs = self.inputs
        lp, stats = row_token_logps(model, rows, self.block_size, with_stats=True)
        sums, counts = pair_sums(lp, rows, num_pairs)
        fields: dict[str, Any] = {}
        shared = shared_prefix_mask(rows, counts) if "prefix" in needs else None
        if shared is not None:
            p_sums, _ = pair_sums(jnp.where(shared, lp, 0.0), rows, num_pairs)
            fields |= {"chosen_prefix": p_sums[:, Role.CHOSEN], "rejected_prefix": p_sums[:, Role.REJECTED]}
        if "weighting" in needs:
            w_sums, _ = pair_sums(jax.lax.stop_gradient(lp - stats["log_sum_sq_probs"]), rows, num_pairs)
            fields |= {"chosen_weighting": w_sums[:, Role.CHOSEN], "rejected_weighting": w_sums[:, Role.REJECTED]}
        if self.needs_reference:
            r_w, r_l, rp_w, rp_l = self._reference(ref_model, rows, num_pairs, shared)
            fields |= {"ref_chosen": r_w, "ref_rejected": r_l}
            if shared is not None:
                fields |= {"ref_chosen_prefix": rp_w, "ref_rejected_prefix": rp_l}
        if self.needs_rationale:
            fields |= {"rationale": sums[:, Role.RATIONALE], "rationale_tokens": counts[:, Role.RATIONALE],
                       "rationale_mask": rows.get("rationale_mask")}
        logps = SequenceLogps(chosen=sums[:, Role.CHOSEN], rejected=sums[:, Role.REJECTED],
                              chosen_tokens=counts[:, Role.CHOSEN], rejected_tokens=counts[:, Role.REJECTED],
                              **fields)
        return logps, head_metrics(stats, rows, counts, num_pairs)

    def __call__(self, model, ref_model, rows: dict[str, jax.Array]
                 ) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
        """(sum of per-pair losses over real pairs, metric sums, per-pair finite flags [P]) for one
        micro-batch. Padded pairs are selected out of the loss's inputs and of its output (`mask_pairs`,
        `masked_pair_sums`), so nothing they hold reaches the loss or the gradient."""
        logps, extra = self.sequence_logps(model, ref_model, rows)
        per_pair, metrics = LOSSES[self.loss](mask_pairs(logps, rows["pair_mask"]), **dict(self.hparams))
        loss_sum, metric_sums, _ = masked_pair_sums(per_pair, {**metrics, **extra}, rows["pair_mask"])
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
