"""Usable-information estimators for preference data with rationales (docs/spec.md section 5, E1-E3).

Every estimator takes per-example arrays of held-out log-probs / logits and returns an
`InformationEstimate` with `.nats`, `.bits`, `.per_example` (nats), `.ci` (nats) and a readable repr.

* `pvi(logp_full, logp_base)`: E1, (conditional) V-information.
* `swap_information(delta, temperature=1.0)`: E2, swap-order rationale information (vacuous / shuffled
  controls, conditional version over a `baseline` logit).
* `policy_information(margins, temperature=1.0)`: E3, usable preference information of a policy;
  `information_gain(margins_a, margins_b)` the paired difference (RDPO - DPO).
* `information_curve`, `data_efficiency_ratio`: curves against N and N_DPO / N_RDPO at a target level.
* `infonce`, `smile`: E4 bounds from a critic score matrix (no critic training yet).
* `mask_rationale`, `mask_words_for`: the leakage control's slot/label-word masking.

From our models (imports JAX): `rdpo_jax.analysis.lm` (`rationale_logps`, `policy_margins`, `score_sequences`),
`rdpo_jax.analysis.report` (report sections), `rdpo_jax.analysis.plots`, `rdpo_jax.analysis.command`
(`analyze`, the `rdpo-jax analyze` command).
"""

from .bootstrap import MeanInterval, bootstrap_mean
from .calibration import fit_temperature
from .contrastive import ContrastiveEstimate, infonce, smile
from .curves import EfficiencyRatio, InformationCurve, data_efficiency_ratio, information_curve, n_at_target
from .estimators import information_gain, policy_information, pvi, swap_information
from .leakage import MASK_WORDS, mask_rationale, mask_words_for
from .result import InformationEstimate

__all__ = [
    "pvi",
    "swap_information",
    "policy_information",
    "information_gain",
    "information_curve",
    "data_efficiency_ratio",
    "n_at_target",
    "fit_temperature",
    "infonce",
    "smile",
    "ContrastiveEstimate",
    "bootstrap_mean",
    "InformationEstimate",
    "InformationCurve",
    "EfficiencyRatio",
    "MeanInterval",
    "MASK_WORDS",
    "mask_rationale",
    "mask_words_for",
]
