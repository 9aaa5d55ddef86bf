"""Reference-free preference losses: ORPO, SimPO (the official code's sigmoid and hinge forms) and CPO (TRL's
CPO trainer: sigmoid, hinge, ipo). Notation as `rdpo_jax.losses.dpo_family`; A = S / max(n, 1)."""
from __future__ import annotations

import math

import jax

from rdpo_jax.losses.dpo_family import smoothed
from rdpo_jax.losses.inputs import SequenceLogps, check_choice, check_logps, check_range, reward_metrics
from rdpo_jax.losses.numerics import f32, log1mexp, log_sigmoid, mean_logp, scaled

Array = jax.Array
SIMPO_LOSS_TYPES = ("sigmoid", "hinge")
CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")


def _averages(logps: SequenceLogps) -> tuple[Array, Array]:
    return (mean_logp(f32(logps.chosen), logps.chosen_tokens),
            mean_logp(f32(logps.rejected), logps.rejected_tokens))


def _no_smoothing_for(loss: str, loss_type: str, label_smoothing) -> None:
    check_range(loss, "label_smoothing", label_smoothing, 0.0, 1.0)
    if loss_type != "sigmoid" and isinstance(label_smoothing, int | float) and label_smoothing:
        raise ValueError(f"loss {loss!r}: label_smoothing applies to loss_type 'sigmoid', not {loss_type!r} "
                         "(set it to 0)")


def orpo(logps: SequenceLogps, *, lam: float = 0.1) -> tuple[Array, dict[str, Array]]:
    """ORPO (Hong et al. 2024): -A_w + lam * (-log sigma(L)),
    L = (A_w - A_l) - (log1mexp(A_w) - log1mexp(A_l)), the log odds ratio of the per-token averages.

    The NLL is per pair over the completion only (TRL uses a batch token-mean over prompt and
    completion): see docs/losses.md, parameter conventions. No reference model. Rewards are lam * A as in
    TRL; logps/* are A.
    """
    check_logps(logps, "orpo", ())
    check_range("orpo", "lam", lam, 0.0, math.inf)
    a_w, a_l = _averages(logps)
    log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l))
    ratio = log_sigmoid(log_odds)
    pref = scaled(lam, -ratio)
    metrics = reward_metrics(lam * a_w, lam * a_l)
    metrics.update({"logps/chosen": a_w, "logps/rejected": a_l, "nll_loss": -a_w, "log_odds_ratio": ratio,
                    "log_odds_chosen": log_odds, "loss/preference": pref})
    return -a_w + pref, metrics


def simpo(logps: SequenceLogps, *, beta: float = 2.0, gamma_beta_ratio: float = 0.25, sft_weight: float = 0.0,
          loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> tuple[Array, dict[str, Array]]:
    """SimPO (Meng et al. 2024), official convention, with x = beta (A_w - A_l) - gamma_beta_ratio * beta:
      sigmoid: -(1-eps) log sigma(x) - eps log sigma(-x)      hinge: max(0, 1 - x)
    plus sft_weight * (-A_w). TRL's `simpo_gamma` is the absolute margin gamma_beta_ratio * beta. No reference.
    """
    check_logps(logps, "simpo", ())
    check_range("simpo", "beta", beta, 0.0, math.inf, lo_open=True)
    check_range("simpo", "gamma_beta_ratio", gamma_beta_ratio, 0.0, math.inf)
    check_range("simpo", "sft_weight", sft_weight, 0.0, math.inf)
    check_choice("simpo", "loss_type", loss_type, SIMPO_LOSS_TYPES)
    _no_smoothing_for("simpo", loss_type, label_smoothing)
    a_w, a_l = _averages(logps)
    x = beta * (a_w - a_l) - gamma_beta_ratio * beta
    pref = smoothed(x, label_smoothing) if loss_type == "sigmoid" else jax.nn.relu(1.0 - x)
    metrics = reward_metrics(beta * a_w, beta * a_l)
    metrics.update({"logps/chosen": a_w, "logps/rejected": a_l, "loss/preference": pref, "nll_loss": -a_w})
    return pref + scaled(sft_weight, -a_w), metrics


def cpo(logps: SequenceLogps, *, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
        cpo_alpha: float = 1.0) -> tuple[Array, dict[str, Array]]:
    """CPO (Xu et al. 2024) as TRL's CPOTrainer, with x = beta (S_w - S_l) (``ipo``: per-token averages A):
      sigmoid: -(1-eps) log sigma(x) - eps log sigma(-x);  hinge: max(0, 1 - x);
      ipo: (A_w - A_l - 1/(2 beta))^2
    plus cpo_alpha * (-A_w) (per pair; TRL's NLL is a batch token-mean). No reference model. Rewards beta S
    (beta A for ipo), as TRL.
    """
    check_logps(logps, "cpo", ())
    check_range("cpo", "beta", beta, 0.0, math.inf, lo_open=True)
    check_range("cpo", "cpo_alpha", cpo_alpha, 0.0, math.inf)
    check_choice("cpo", "loss_type", loss_type, CPO_LOSS_TYPES)
    _no_smoothing_for("cpo", loss_type, label_smoothing)
    a_w, a_l = _averages(logps)
    s_w, s_l = (a_w, a_l) if loss_type == "ipo" else (f32(logps.chosen), f32(logps.rejected))
    if loss_type == "sigmoid":
        pref = smoothed(beta * (s_w - s_l), label_smoothing)
    elif loss_type == "hinge":
        pref = jax.nn.relu(1.0 - beta * (s_w - s_l))
    else:
        pref = (s_w - s_l - 1.0 / (2.0 * beta)) ** 2
    metrics = reward_metrics(beta * s_w, beta * s_l)
    metrics.update({"logps/chosen": s_w, "logps/rejected": s_l, "loss/preference": pref, "nll_loss": -a_w})
    return pref + scaled(cpo_alpha, -a_w), metrics
