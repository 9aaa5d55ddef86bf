"""The DPO family: every loss type of TRL 1.16's `DPOTrainer`, their weighted combinations, f-divergence
scores, LD-DPO's length desensitisation, WPO's pair weights and R-DPO's length penalty, in one pure loss.

Notation (per pair, arrays [B]): S_w, S_l policy sums; R_w, R_l reference sums; n_w, n_l scored-token
counts; rho_w = S_w - R_w and rho_l = S_l - R_l the log-ratios; g_w, g_l their f-divergence scores;
Delta = g_w - g_l; A_w = S_w / max(n_w, 1); sigma the logistic function; eps = label_smoothing.

With ``ld_alpha`` = a (LD-DPO, Liu et al. 2024) every S and R is first replaced by P + a (S - P), where P is
the sum over the completion's first min(n_w, n_l) scored tokens (the part both responses share in length).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rdpo_jax.losses.inputs import (
    PREFIX_FIELDS,
    REFERENCE_FIELDS,
    REFERENCE_PREFIX_FIELDS,
    WEIGHTING_FIELDS,
    SequenceLogps,
    check_choice,
    check_logps,
    check_range,
    reward_metrics,
)
from rdpo_jax.losses.numerics import capped_exp, f32, log_sigmoid, mean_logp, scaled

Array = jax.Array
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


class Margins(NamedTuple):
    """What the loss types read, per pair [B]: log-ratios, their f-divergence scores, the (LD-weighted) sums,
    counts, the chosen NLL and the pair mask (None: every pair is real)."""

    rho_w: Array
    rho_l: Array
    score_w: Array
    score_l: Array
    s_w: Array
    s_l: Array
    r_w: Array
    r_l: Array
    n_w: Array
    n_l: Array
    nll_w: Array
    mask: Array | None


class Options(NamedTuple):
    beta: Any
    label_smoothing: Any
    discopop_tau: Any
    length_penalty: Any


def smoothed(x: Array, eps: Any) -> Array:
    """-(1 - eps) log sigma(x) - eps log sigma(-x): the logistic loss with flip rate eps (cDPO)."""
    return scaled(1.0 - eps, -log_sigmoid(x)) + scaled(eps, -log_sigmoid(-x))


def sorted_over_real(values: Array, mask: Array | None) -> Array:
    """The real pairs' values sorted ascending, the r-th smallest placed at the r-th real pair (index order);
    padded pairs get 0. [B] -> [B]. Sorting couples pairs, so it is over one micro-batch."""
    if mask is None:
        return jnp.sort(values)
    keep = jnp.asarray(mask).astype(bool)
    ordered = jnp.sort(jnp.where(keep, values, jnp.inf))
    rank = jnp.clip(jnp.cumsum(keep) - 1, 0, values.shape[-1] - 1)
    return jnp.where(keep, ordered[rank], 0.0)


def _sigmoid(m: Margins, o: Options) -> Array:
    """-(1-eps) log sigma(beta Delta - lambda (n_w - n_l)) - eps log sigma(-(...)): DPO (Rafailov et al. 2023),
    cDPO for eps > 0, R-DPO's length penalty lambda (Park et al. 2024)."""
    x = o.beta * (m.score_w - m.score_l) - scaled(o.length_penalty, m.n_w - m.n_l)
    return smoothed(x, o.label_smoothing)


def _hinge(m: Margins, o: Options) -> Array:
    """max(0, 1 - beta Delta) (SLiC, Zhao et al. 2023)."""
    return jax.nn.relu(1.0 - o.beta * (m.score_w - m.score_l))


def _ipo(m: Margins, o: Options) -> Array:
    """(g_w / n_w - g_l / n_l - 1 / (2 beta))^2 (IPO, Azar et al. 2023; length-normalised as TRL)."""
    return (mean_logp(m.score_w, m.n_w) - mean_logp(m.score_l, m.n_l) - 1.0 / (2.0 * o.beta)) ** 2


def _exo_pair(m: Margins, o: Options) -> Array:
    """q_w (log q_w - log(1-eps)) + q_l (log q_l - log eps), q_w = sigma(beta Delta), q_l = 1 - q_w:
    KL(q || [1-eps, eps]) (EXO, Ji et al. 2024, eq. 16); eps in (0, 1)."""
    x = o.beta * (m.score_w - m.score_l)
    eps = o.label_smoothing
    return (jax.nn.sigmoid(x) * (log_sigmoid(x) - jnp.log1p(-eps))
            + jax.nn.sigmoid(-x) * (log_sigmoid(-x) - jnp.log(eps)))


def _nca_pair(m: Margins, o: Options) -> Array:
    """-log sigma(beta rho_w) - 1/2 log sigma(-beta rho_w) - 1/2 log sigma(-beta rho_l) (NCA, Chen et al. 2024)."""
    u_w, u_l = o.beta * m.rho_w, o.beta * m.rho_l
    return -log_sigmoid(u_w) - 0.5 * log_sigmoid(-u_w) - 0.5 * log_sigmoid(-u_l)


def _robust(m: Margins, o: Options) -> Array:
    """(-(1-eps) log sigma(beta Delta) + eps log sigma(-beta Delta)) / (1 - 2 eps) (Chowdhury et al. 2024),
    eps in [0, 0.5): unbiased under label flips at rate eps."""
    x, eps = o.beta * (m.score_w - m.score_l), o.label_smoothing
    return (scaled(1.0 - eps, -log_sigmoid(x)) + scaled(eps, log_sigmoid(-x))) / (1.0 - 2.0 * eps)


def _bco_pair(m: Margins, o: Options) -> Array:
    """-log sigma(beta rho_w) - log sigma(-beta rho_l) (BCO, Jung et al. 2024, as TRL 1.16: no running
    reward baseline)."""
    return -log_sigmoid(o.beta * m.rho_w) - log_sigmoid(-o.beta * m.rho_l)


def _sppo_hard(m: Margins, o: Options) -> Array:
    """(rho_w - 1/(2 beta))^2 + (rho_l + 1/(2 beta))^2 (SPPO, Wu et al. 2024, with hard win probabilities)."""
    half = 0.5 / o.beta
    return (m.rho_w - half) ** 2 + (m.rho_l + half) ** 2


def _aot(m: Margins, o: Options) -> Array:
    """smoothed(beta (sort(S_w - S_l) - sort(R_w - R_l))): AOT (Melnyk et al. 2024), the sorted policy
    margins against the sorted reference margins of the micro-batch's real pairs."""
    delta = sorted_over_real(m.s_w - m.s_l, m.mask) - sorted_over_real(m.r_w - m.r_l, m.mask)
    return smoothed(o.beta * delta, o.label_smoothing)


def _aot_unpaired(m: Margins, o: Options) -> Array:
    """smoothed(beta (sort(rho_w) - sort(rho_l))): AOT for unpaired data (Melnyk et al. 2024)."""
    delta = sorted_over_real(m.rho_w, m.mask) - sorted_over_real(m.rho_l, m.mask)
    return smoothed(o.beta * delta, o.label_smoothing)


def _apo_zero(m: Margins, o: Options) -> Array:
    """(1 - sigma(beta rho_w)) + sigma(beta rho_l) (APO-zero, D'Oosterlinck et al. 2024, eq. 7)."""
    return (1.0 - jax.nn.sigmoid(o.beta * m.rho_w)) + jax.nn.sigmoid(o.beta * m.rho_l)


def _apo_down(m: Margins, o: Options) -> Array:
    """sigma(beta rho_w) + (1 - sigma(beta (rho_w - rho_l))) (APO-down, eq. 8)."""
    return jax.nn.sigmoid(o.beta * m.rho_w) + (1.0 - jax.nn.sigmoid(o.beta * (m.rho_w - m.rho_l)))


def _discopop(m: Margins, o: Options) -> Array:
    """(1 - mu) log(1 + e^-x) + mu e^-x with x = beta Delta, mu = sigma(x / tau) (DiscoPOP, Chris Lu et al.
    2024, eq. 5). The second product is evaluated as exp(-x + log sigma(x / tau)), so it has its limit (0 for
    tau < 1) instead of 0 x inf at large -x; for tau >= 1 the exponent is capped (`numerics.EXP_CAP`)."""
    x = o.beta * (m.score_w - m.score_l)
    logistic = jax.nn.softplus(-x) * jax.nn.sigmoid(-x / o.discopop_tau)
    return logistic + capped_exp(-x + log_sigmoid(x / o.discopop_tau))


def _sft(m: Margins, o: Options) -> Array:
    """-A_w, the chosen completion's per-token NLL (per pair; TRL's `sft` is a batch token-mean)."""
    return m.nll_w


def _sigmoid_norm(m: Margins, o: Options) -> Array:
    """-log sigma(beta (g_w / n_w - g_l / n_l)): length-normalised DPO (Tulu 3)."""
    return -log_sigmoid(o.beta * (mean_logp(m.score_w, m.n_w) - mean_logp(m.score_l, m.n_l)))


LOSS_TYPES: dict[str, Callable[[Margins, Options], Array]] = {
    "sigmoid": _sigmoid, "hinge": _hinge, "ipo": _ipo, "exo_pair": _exo_pair, "nca_pair": _nca_pair,
    "robust": _robust, "bco_pair": _bco_pair, "sppo_hard": _sppo_hard, "aot": _aot, "aot_unpaired": _aot_unpaired,
    "apo_zero": _apo_zero, "apo_down": _apo_down, "discopop": _discopop, "sft": _sft, "sigmoid_norm": _sigmoid_norm,
}
DPO_LOSS_TYPES = tuple(LOSS_TYPES)
SMOOTHED_TYPES = frozenset({"sigmoid", "robust", "exo_pair", "aot", "aot_unpaired"})  # read label_smoothing
F_DIVERGENCE_TYPES = frozenset({"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"})
SORTING_TYPES = frozenset({"aot", "aot_unpaired"})


def f_divergence_scores(rho: Array, kind: str, alpha: float) -> Array:
    """The f-DPO score f'(u) of the ratio u = e^rho (Wang et al. 2023, constants kept as TRL 1.16):
    reverse_kl rho; forward_kl 1 - e^-rho; js_divergence log 2 + log sigma(rho);
    alpha_divergence (e^{(alpha-1) rho} - 1) / (alpha - 1), rho at alpha = 1. Exponents are capped
    (`numerics.capped_exp`)."""
    if kind == "reverse_kl" or (kind == "alpha_divergence" and abs(alpha - 1.0) < 1e-6):
        return rho
    if kind == "forward_kl":
        return 1.0 - capped_exp(-rho)
    if kind == "js_divergence":
        return math.log(2.0) + log_sigmoid(rho)
    return (capped_exp((alpha - 1.0) * rho) - 1.0) / (alpha - 1.0)


def loss_types_of(loss_type: str | Sequence[str]) -> tuple[str, ...]:
    """``"sigmoid"`` or a list of types -> a tuple of types."""
    return (loss_type,) if isinstance(loss_type, str) else tuple(loss_type)


def needed_fields(hparams: dict[str, Any]) -> tuple[str, ...]:
    """The SequenceLogps fields a `dpo` call with keywords ``hparams`` reads beyond the base ones."""
    fields = [*REFERENCE_FIELDS]
    if hparams.get("ld_alpha") is not None:
        fields += [*PREFIX_FIELDS, *REFERENCE_PREFIX_FIELDS]
    if hparams.get("use_weighting"):
        fields += [*WEIGHTING_FIELDS]
    return tuple(fields)


def _check_options(loss: str, types: tuple[str, ...], weights, o: Options, nll_weight, f_divergence_type,
                   f_alpha_divergence_coef, ld_alpha, use_weighting) -> None:
    if not types:
        raise ValueError(f"loss {loss!r}: loss_type is empty; accepted: one of {', '.join(DPO_LOSS_TYPES)} "
                         "or a list of them")
    for t in types:
        check_choice(loss, "loss_type", t, DPO_LOSS_TYPES)
    if len(set(types)) != len(types):
        raise ValueError(f"loss {loss!r}: loss_type {list(types)} lists a type twice; give each once with its weight")
    if weights is not None:
        if len(weights) != len(types):
            raise ValueError(f"loss {loss!r}: loss_weights has {len(weights)} entries for {len(types)} loss types "
                             f"{list(types)}; give one weight per type")
        for w in weights:
            check_range(loss, "loss_weights", w, 0.0, math.inf)
    check_range(loss, "beta", o.beta, 0.0, math.inf, lo_open=True)
    check_range(loss, "nll_weight", nll_weight, 0.0, math.inf)
    eps = o.label_smoothing
    if "exo_pair" in types:
        check_range(loss, "label_smoothing", eps, 0.0, 1.0, lo_open=True, hi_open=True)
    if "robust" in types:
        check_range(loss, "label_smoothing", eps, 0.0, 0.5, hi_open=True)
    check_range(loss, "label_smoothing", eps, 0.0, 1.0)
    if isinstance(eps, int | float) and eps and not SMOOTHED_TYPES & set(types):
        raise ValueError(f"loss {loss!r}: label_smoothing={eps} has no effect on loss_type {list(types)}; it applies "
                         f"to {', '.join(sorted(SMOOTHED_TYPES))} (set it to 0)")
    check_choice(loss, "f_divergence_type", f_divergence_type, F_DIVERGENCES)
    if f_divergence_type != "reverse_kl" and not set(types) <= F_DIVERGENCE_TYPES:
        bad = sorted(set(types) - F_DIVERGENCE_TYPES)
        raise ValueError(f"loss {loss!r}: f_divergence_type={f_divergence_type!r} is not defined for loss_type "
                         f"{', '.join(bad)} (the f-DPO reparameterisation only cancels in the chosen-rejected "
                         f"difference); accepted with it: {', '.join(sorted(F_DIVERGENCE_TYPES))}")
    if not isinstance(f_alpha_divergence_coef, int | float):
        raise ValueError(f"loss {loss!r}: f_alpha_divergence_coef must be a Python number (it selects the formula)")
    check_range(loss, "f_alpha_divergence_coef", f_alpha_divergence_coef, -math.inf, math.inf)
    if f_alpha_divergence_coef != 0.5 and f_divergence_type != "alpha_divergence":
        raise ValueError(f"loss {loss!r}: f_alpha_divergence_coef={f_alpha_divergence_coef} has no effect with "
                         f"f_divergence_type={f_divergence_type!r}; it applies to 'alpha_divergence'")
    check_range(loss, "discopop_tau", o.discopop_tau, 0.0, math.inf, lo_open=True)
    if isinstance(o.discopop_tau, int | float) and o.discopop_tau != 0.05 and "discopop" not in types:
        raise ValueError(f"loss {loss!r}: discopop_tau={o.discopop_tau} has no effect without loss_type 'discopop'")
    check_range(loss, "length_penalty", o.length_penalty, 0.0, math.inf)
    if isinstance(o.length_penalty, int | float) and o.length_penalty and "sigmoid" not in types:
        raise ValueError(f"loss {loss!r}: length_penalty (R-DPO) applies to loss_type 'sigmoid', which "
                         f"{list(types)} does not include")
    if ld_alpha is not None:
        check_range(loss, "ld_alpha", ld_alpha, 0.0, 1.0)
    if use_weighting and SORTING_TYPES & set(types):
        raise ValueError(f"loss {loss!r}: use_weighting (WPO) cannot weight loss_type "
                         f"{', '.join(sorted(SORTING_TYPES & set(types)))}: those sort pairs, so a pair's weight "
                         "would land on another pair's loss")


def _ld_weighted(total: Array, prefix: Array | None, ld_alpha) -> Array:
    """P + a (S - P) (LD-DPO); S itself without ``ld_alpha``."""
    if ld_alpha is None:
        return total
    prefix = f32(prefix)
    return prefix + scaled(ld_alpha, total - prefix)


def dpo(logps: SequenceLogps, *, beta: float = 0.1, loss_type: str | list[str] = "sigmoid",
        loss_weights: list[float] | None = None, label_smoothing: float = 0.0, nll_weight: float = 0.0,
        f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5, discopop_tau: float = 0.05,
        ld_alpha: float | None = None, use_weighting: bool = False,
        length_penalty: float = 0.0) -> tuple[Array, dict[str, Array]]:
    """The DPO family: sum_k w_k * W * loss_k + nll_weight * (-A_w), over ``loss_type`` (one type or a list)
    with ``loss_weights`` w_k (default 1 each; TRL's `loss_type=[...]`, `loss_weights=[...]`, e.g. MPO =
    ["sigmoid", "bco_pair", "sft"] with [0.8, 0.2, 1.0]). Every keyword is shared by all members.

    Types (Delta = g_w - g_l, rho the log-ratios, eps = label_smoothing):
      sigmoid       -(1-eps) log s(beta Delta - lambda (n_w - n_l)) - eps log s(-...)    (cDPO; R-DPO's lambda)
      hinge         max(0, 1 - beta Delta)
      ipo           (g_w/n_w - g_l/n_l - 1/(2 beta))^2
      exo_pair      KL(softmax(beta [g_w, g_l]) || [1-eps, eps]),  eps in (0, 1)
      nca_pair      -log s(beta rho_w) - (log s(-beta rho_w) + log s(-beta rho_l)) / 2
      robust        (-(1-eps) log s(beta Delta) + eps log s(-beta Delta)) / (1 - 2 eps)
      bco_pair      -log s(beta rho_w) - log s(-beta rho_l)
      sppo_hard     (rho_w - 1/(2 beta))^2 + (rho_l + 1/(2 beta))^2
      aot           smoothed(beta (sort(S_w - S_l) - sort(R_w - R_l)))   (sorted over the micro-batch)
      aot_unpaired  smoothed(beta (sort(rho_w) - sort(rho_l)))
      apo_zero      1 - s(beta rho_w) + s(beta rho_l)
      apo_down      s(beta rho_w) + 1 - s(beta (rho_w - rho_l))
      discopop      (1 - mu) log(1 + e^-x) + mu e^-x,  x = beta Delta, mu = s(x / discopop_tau)
      sft           -A_w
      sigmoid_norm  -log s(beta (g_w/n_w - g_l/n_l))
    g = rho unless ``f_divergence_type`` (see `f_divergence_scores`; only for the types listed in
    ``F_DIVERGENCE_TYPES``). ``use_weighting`` (WPO, Zhou et al. 2024) multiplies every member by
    W = exp(c_w / n_w + c_l / n_l), c the ``*_weighting`` sums (no gradient). ``ld_alpha`` applies LD-DPO to
    S and R (module docstring). ``length_penalty`` is R-DPO's lambda.
    Shapes: every SequenceLogps field [B]; returns loss [B] and metrics of [B] arrays.
    """
    types = loss_types_of(loss_type)
    o = Options(beta, label_smoothing, discopop_tau, length_penalty)
    _check_options("dpo", types, loss_weights, o, nll_weight, f_divergence_type, f_alpha_divergence_coef,
                   ld_alpha, use_weighting)
    check_logps(logps, "dpo", needed_fields({"ld_alpha": ld_alpha, "use_weighting": use_weighting}))
    s_w = _ld_weighted(f32(logps.chosen), logps.chosen_prefix, ld_alpha)
    s_l = _ld_weighted(f32(logps.rejected), logps.rejected_prefix, ld_alpha)
    r_w = _ld_weighted(f32(logps.ref_chosen), logps.ref_chosen_prefix, ld_alpha)
    r_l = _ld_weighted(f32(logps.ref_rejected), logps.ref_rejected_prefix, ld_alpha)
    rho_w, rho_l = s_w - r_w, s_l - r_l
    n_w, n_l = f32(logps.chosen_tokens), f32(logps.rejected_tokens)
    nll_w = -mean_logp(f32(logps.chosen), n_w)
    m = Margins(rho_w, rho_l, f_divergence_scores(rho_w, f_divergence_type, f_alpha_divergence_coef),
                f_divergence_scores(rho_l, f_divergence_type, f_alpha_divergence_coef),
                s_w, s_l, r_w, r_l, n_w, n_l, nll_w, logps.pair_mask)
    weight = None
    if use_weighting:
        c_w = jax.lax.stop_gradient(f32(logps.chosen_weighting))
        c_l = jax.lax.stop_gradient(f32(logps.rejected_weighting))
        weight = capped_exp(mean_logp(c_w, n_w) + mean_logp(c_l, n_l))
    weights = loss_weights if loss_weights is not None else [1.0] * len(types)
    metrics = reward_metrics(beta * rho_w, beta * rho_l)
    pref = jnp.zeros_like(rho_w)
    for t, w in zip(types, weights, strict=True):
        member = LOSS_TYPES[t](m, o)
        if weight is not None:
            member = member * weight
        if len(types) > 1:
            metrics[f"loss/{t}"] = member
        pref = pref + scaled(w, member)
    metrics.update({"logps/chosen": s_w, "logps/rejected": s_l, "loss/preference": pref, "nll_loss": nll_w})
    if weight is not None:
        metrics["wpo_weight"] = weight
    return pref + scaled(nll_weight, nll_w), metrics
