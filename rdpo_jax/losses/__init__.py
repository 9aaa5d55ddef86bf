"""Pure per-pair preference losses over sequence log-probs (docs/spec.md section 2), and their registry.

Every loss is a pure, jittable function

    fn(logps: SequenceLogps, **hparams) -> (per_pair_loss [B], metrics: dict[str, Array[B]])

with TRL's metric names. The batch loss is the mean over real pairs, computed by `reduce_pairs`.
Notation (per pair): S_w, S_l summed log-probs of the chosen / rejected completion under the policy,
n_w, n_l their scored-token counts, A = S / max(n, 1) the per-token averages, R_w, R_l the reference
sums, S_r, n_r the rationale's, and h = (S_w - R_w) - (S_l - R_l).

Modules: `inputs` (SequenceLogps and the trace-time checks), `numerics`, `dpo_family` (TRL 1.16's DPO loss
types, combinations, f-divergences, LD-DPO, WPO, R-DPO), `reference_free` (ORPO, SimPO, CPO), `rationale`
(the rationale term for any loss), `registry` (LOSSES) and `reduce` (masks and batch means).

All math is float32 whatever the input dtype. Padded pairs (all fields 0) give finite losses and gradients.
"""
from rdpo_jax.losses.dpo_family import DPO_LOSS_TYPES, F_DIVERGENCES, LOSS_TYPES, dpo
from rdpo_jax.losses.inputs import SequenceLogps
from rdpo_jax.losses.numerics import LOG1MEXP_CLAMP, log1mexp, log_sigmoid
from rdpo_jax.losses.rationale import RATIONALE_FORMS, RATIONALE_NORMS, rationale_term
from rdpo_jax.losses.reduce import compute_loss, mask_pairs, masked_pair_sums, pair_finite, reduce_pairs
from rdpo_jax.losses.reference_free import cpo, orpo, simpo
from rdpo_jax.losses.registry import (
    _KEYWORD_HINTS,
    LOSSES,
    RATIONALE_PRESETS,
    REFERENCE_FREE,
    has_rationale_term,
    loss_inputs,
)

__all__ = [
    "DPO_LOSS_TYPES", "F_DIVERGENCES", "LOG1MEXP_CLAMP", "LOSSES", "LOSS_TYPES", "RATIONALE_FORMS",
    "RATIONALE_NORMS", "RATIONALE_PRESETS", "REFERENCE_FREE", "SequenceLogps", "_KEYWORD_HINTS", "compute_loss",
    "cpo", "dpo", "has_rationale_term", "log1mexp", "log_sigmoid", "loss_inputs", "mask_pairs",
    "masked_pair_sums", "orpo", "pair_finite", "rationale_term", "reduce_pairs", "simpo",
]
