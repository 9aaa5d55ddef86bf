"""The loss registry: `LOSSES[name](logps, **hparams) -> (per_pair_loss [B], metrics)`, what each loss reads,
and the keywords other libraries use for the same knobs."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax

from rdpo_jax.losses import dpo_family
from rdpo_jax.losses.dpo_family import dpo
from rdpo_jax.losses.inputs import SequenceLogps
from rdpo_jax.losses.rationale import with_rationale
from rdpo_jax.losses.reference_free import cpo, orpo, simpo

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]

# The dpo family's rationale defaults are the official RDPO code's (sigmoid form over the sum); the
# reference-free ones are the official RORPO trainer's (the per-token mean, nll form).
_DPO_RATIONALE = {"form": "sigmoid", "norm": "sum"}
_MEAN_RATIONALE = {"form": "nll", "norm": "mean"}
_DEFINITIONS: list[tuple[str, Callable, dict, float | None]] = [
    ("dpo", dpo, _DPO_RATIONALE, None), ("rdpo", dpo, _DPO_RATIONALE, 0.001),
    ("orpo", orpo, _MEAN_RATIONALE, None), ("rorpo", orpo, _MEAN_RATIONALE, 1.0),
    ("simpo", simpo, _MEAN_RATIONALE, None), ("rsimpo", simpo, _MEAN_RATIONALE, 1.0),
    ("cpo", cpo, _MEAN_RATIONALE, None),
]
RATIONALE_PRESETS = frozenset(name for name, _, _, gamma in _DEFINITIONS if gamma is not None)
REFERENCE_FREE = frozenset({"orpo", "rorpo", "simpo", "rsimpo", "cpo"})
DPO_FAMILY = frozenset({"dpo", "rdpo"})

# Keywords other libraries use for the same knob, and what to pass here instead.
_SIMPO_HINTS = {"simpo_gamma": "TRL's simpo_gamma is an absolute margin; pass gamma_beta_ratio = simpo_gamma / beta",
                "gamma": "SimPO's margin is `gamma_beta_ratio` (official convention, margin / beta); the "
                         "rationale weight is `rationale_weight`"}
_ORPO_HINTS = {"beta": "TRL's ORPOConfig calls the odds-ratio weight `beta`; here it is `lam`",
               "alpha": "the official ORPO code calls the odds-ratio weight `alpha`; here it is `lam`"}
_DPO_HINTS = {"rpo_alpha": "the NLL weight is `nll_weight` (or the member 'sft' of loss_type with its loss_weights)",
              "reference_free": "use the reference-free losses 'simpo', 'orpo' or 'cpo'",
              "f_divergence_params": "pass the alpha-divergence coefficient as f_alpha_divergence_coef"}
_KEYWORD_HINTS: dict[str, dict[str, str]] = {
    "dpo": {**_DPO_HINTS, "gamma": "dpo's rationale weight is `rationale_weight` (or use loss 'rdpo', whose weight "
                                   "is gamma)"},
    "rdpo": _DPO_HINTS,
    "orpo": {**_ORPO_HINTS, "gamma": "orpo's rationale weight is `rationale_weight` (or use loss 'rorpo')"},
    "rorpo": _ORPO_HINTS,
    "simpo": _SIMPO_HINTS,
    "rsimpo": {k: v for k, v in _SIMPO_HINTS.items() if k != "gamma"},
    "cpo": {"simpo_gamma": "CPO's simpo form is loss 'simpo'", "alpha": "AlphaPO's reward transform is not "
            "supported", "gamma": "cpo's rationale weight is `rationale_weight`"},
}


def _registered(name: str, fn: LossFn) -> LossFn:
    """Wraps a loss so that a wrong keyword names the loss, the accepted keywords and a hint; list values
    (YAML lists) may be given as lists or tuples."""
    accepted = [p for p in inspect.signature(fn).parameters if p != "logps"]

    def loss(logps: SequenceLogps, **hparams: Any) -> tuple[Array, dict[str, Array]]:
        unknown = [k for k in hparams if k not in accepted]
        if unknown:
            hints = [_KEYWORD_HINTS.get(name, {}).get(k) for k in unknown]
            hint = "; ".join(h for h in hints if h)
            raise TypeError(f"loss {name!r} got unknown keyword(s) {', '.join(unknown)}; accepted: "
                            f"{', '.join(accepted)}" + (f". Hint: {hint}" if hint else ""))
        return fn(logps, **hparams)

    loss.__name__ = name
    loss.__doc__ = fn.__doc__
    loss.__wrapped__ = fn  # type: ignore[attr-defined]
    return loss


class _LossRegistry(dict):
    """`LOSSES[name]`; an unknown name is a KeyError listing the accepted names."""

    def __missing__(self, name: str) -> LossFn:
        raise KeyError(f"unknown loss {name!r}; accepted: {', '.join(sorted(self))}")


LOSSES: Mapping[str, LossFn] = _LossRegistry(
    (name, _registered(name, with_rationale(base, name, gamma=gamma, **rationale)))
    for name, base, rationale, gamma in _DEFINITIONS
)


def has_rationale_term(name: str, hparams: Mapping[str, Any] | None = None) -> bool:
    """Whether loss ``name`` with keywords ``hparams`` adds a rationale term (so it needs rationales): the
    presets ``rdpo``, ``rorpo``, ``rsimpo`` always (whatever their ``gamma``), any other loss when
    ``rationale_weight`` is given."""
    LOSSES[name]  # an unknown name raises, listing the accepted ones
    return name in RATIONALE_PRESETS or (hparams or {}).get("rationale_weight") is not None


def loss_inputs(name: str, hparams: Mapping[str, Any] | None = None) -> frozenset[str]:
    """What loss ``name`` with ``hparams`` reads beyond the policy's sums and counts: ``reference`` (R_w, R_l),
    ``rationale`` (S_r, n_r), ``prefix`` (LD-DPO's prefix sums, policy and reference), ``weighting`` (WPO)."""
    hparams = dict(hparams or {})
    out = set()
    if name not in REFERENCE_FREE:
        out.add("reference")
    if has_rationale_term(name, hparams):
        out.add("rationale")
    if name in DPO_FAMILY:
        fields = dpo_family.needed_fields(hparams)
        if "chosen_prefix" in fields:
            out.add("prefix")
        if "chosen_weighting" in fields:
            out.add("weighting")
    return frozenset(out)
