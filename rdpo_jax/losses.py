"""Pure per-pair preference losses over sequence log-probs (docs/spec.md section 2), and their registry.

Every loss is a pure, jittable function

    fn(logps: SequenceLogps, **hparams) -> (per_pair_loss [B], metrics: dict[str, Array[B]])

with TRL's metric names. The batch loss is the mean over real pairs, computed by `reduce_pairs`.
Notation (per pair): S_w, S_l summed log-probs of the chosen / rejected completion under the policy,
n_w, n_l their scored-token counts, A = S / max(n, 1) the per-token averages, R_w, R_l the reference
sums, S_r, n_r the rationale's, and h = (S_w - R_w) - (S_l - R_l).

All math is float32 whatever the input dtype. Shape, name and keyword checks happen at trace time
(inside `jax.jit` nothing value-dependent can raise); value checks on data (zero-token completions)
belong to data validation. Padded pairs (all fields 0) give finite losses and finite gradients.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Metrics = dict[str, Array]
LossFn = Callable[..., tuple[Array, Metrics]]

LOG1MEXP_CLAMP = -1e-12
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")
RATIONALE_FORMS = ("sigmoid", "nll")
RATIONALE_NORMS = ("sum", "mean")


class SequenceLogps(NamedTuple):
    """Per-pair sequence log-probs: every field is an array of one common shape, [B] in a batch.

    chosen, rejected: S_w, S_l, sums of the policy's token log-probs over each completion's scored tokens.
    chosen_tokens, rejected_tokens: n_w, n_l, the scored-token counts (int or float).
    ref_chosen, ref_rejected: R_w, R_l under the frozen reference (DPO family only).
    rationale, rationale_tokens: S_r and n_r, the rationale's sum and count (rationale losses only).
    rationale_mask: optional 0/1 per pair; the rationale term is dropped where it is 0 (pairs that
        have no rationale). Without it every pair must have one.
    """

    chosen: Array
    rejected: Array
    chosen_tokens: Array
    rejected_tokens: Array
    ref_chosen: Array | None = None
    ref_rejected: Array | None = None
    rationale: Array | None = None
    rationale_tokens: Array | None = None
    rationale_mask: Array | None = None


# ----------------------------------------------------------------------------------------------
# numerics


def log_sigmoid(x: Array) -> Array:
    """log sigma(x) = -softplus(-x), stable for |x| up to float32's range."""
    return jax.nn.log_sigmoid(x)


def log1mexp(a: Array) -> Array:
    """log(1 - e^a) for a <= 0, stable: log(-expm1(a)) for a > -ln 2, log1p(-exp(a)) below.

    The argument is clamped to at most -1e-12 so that a = 0 stays finite (docs/spec.md section 2). Each branch
    gets a safe argument (double `where`) so the unselected branch cannot put a NaN into the gradient.
    """
    a = jnp.minimum(a, LOG1MEXP_CLAMP)
    near_zero = a > -math.log(2.0)
    a_near = jnp.where(near_zero, a, -1.0)
    a_far = jnp.where(near_zero, -1.0, a)
    return jnp.where(near_zero, jnp.log(-jnp.expm1(a_near)), jnp.log1p(-jnp.exp(a_far)))


def _f32(x: Any) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def _mean_logp(total: Array, count: Array) -> Array:
    """A = S / max(n, 1): zero-count (padded) pairs divide by 1."""
    return total / jnp.maximum(_f32(count), 1.0)


def _scaled(weight: Any, term: Array) -> Array:
    """``weight * term``, exactly 0 where the weight is 0 (so a zero weight on an infinite term, e.g.
    ``label_smoothing = 0`` times ``-log sigma(-inf)``, gives the limit 0 instead of ``0 * inf = NaN``)."""
    if isinstance(weight, int | float):
        return jnp.zeros_like(term) if weight == 0 else weight * term
    return jnp.where(jnp.asarray(weight) == 0, 0.0, weight * term)


# ----------------------------------------------------------------------------------------------
# trace-time checks


def _check_logps(logps: SequenceLogps, loss: str, *, need_ref: bool, need_rationale: bool,
                 need_rationale_tokens: bool) -> None:
    if not isinstance(logps, SequenceLogps):
        raise TypeError(f"loss {loss!r}: expected a SequenceLogps, got {type(logps).__name__}")
    required = ["chosen", "rejected", "chosen_tokens", "rejected_tokens"]
    if need_ref:
        required += ["ref_chosen", "ref_rejected"]
    if need_rationale:
        required += ["rationale"]
    if need_rationale_tokens:
        required += ["rationale_tokens"]
    missing = [f for f in required if getattr(logps, f) is None]
    if missing:
        why = {
            "ref_chosen": "reference sums R_w, R_l (a frozen reference forward or a reference cache)",
            "ref_rejected": "reference sums R_w, R_l (a frozen reference forward or a reference cache)",
            "rationale": "the rationale's summed log-probs S_r (use the non-rationale loss, or a "
                         "rationale_mask, for pairs without rationales)",
            "rationale_tokens": "the rationale's scored-token counts n_r",
        }
        raise ValueError(
            f"loss {loss!r} needs SequenceLogps.{', '.join(missing)}: "
            + "; ".join(dict.fromkeys(why[m] for m in missing if m in why))
        )
    shapes = {}
    for field in SequenceLogps._fields:
        value = getattr(logps, field)
        if value is None:
            continue
        if not hasattr(value, "shape"):
            value = jnp.asarray(value)
        shapes[field] = tuple(value.shape)
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{k}={v}" for k, v in shapes.items())
        raise ValueError(f"loss {loss!r}: SequenceLogps fields must share one shape ([B]); got {listing}")


def _check_choice(loss: str, key: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"loss {loss!r}: {key}={value!r} is not supported; accepted: {', '.join(accepted)}")


def _check_range(loss: str, key: str, value: Any, lo: float, hi: float, *, lo_open=False,
                 hi_open=False) -> None:
    """Checks a hyperparameter's range, finite, when it is a Python number (traced values are not checked)."""
    if not isinstance(value, int | float):
        return
    if not math.isfinite(value):
        raise ValueError(f"loss {loss!r}: {key}={value} is not a finite number")
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi):
        interval = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
        raise ValueError(f"loss {loss!r}: {key}={value} is outside the accepted range {interval}")


# ----------------------------------------------------------------------------------------------
# shared pieces


def _reward_metrics(chosen_reward: Array, rejected_reward: Array) -> Metrics:
    return {
        "rewards/chosen": chosen_reward,
        "rewards/rejected": rejected_reward,
        "rewards/margins": chosen_reward - rejected_reward,
        "rewards/accuracies": (chosen_reward > rejected_reward).astype(jnp.float32),
    }


def _dpo_preference(logps: SequenceLogps, beta, loss_type: str, label_smoothing) -> tuple[Array, Metrics]:
    """The DPO-family preference term and its reward metrics (no NLL, no rationale)."""
    s_w, s_l = _f32(logps.chosen), _f32(logps.rejected)
    r_w, r_l = _f32(logps.ref_chosen), _f32(logps.ref_rejected)
    rho_w, rho_l = s_w - r_w, s_l - r_l
    h = rho_w - rho_l
    eps = label_smoothing
    if loss_type == "sigmoid":
        loss = _scaled(1.0 - eps, -log_sigmoid(beta * h)) + _scaled(eps, -log_sigmoid(-beta * h))
    elif loss_type == "ipo":
        h_bar = _mean_logp(rho_w, logps.chosen_tokens) - _mean_logp(rho_l, logps.rejected_tokens)
        loss = (h_bar - 1.0 / (2.0 * beta)) ** 2
    elif loss_type == "hinge":
        loss = jax.nn.relu(1.0 - beta * h)
    else:  # robust
        loss = (_scaled(1.0 - eps, -log_sigmoid(beta * h)) + _scaled(eps, log_sigmoid(-beta * h))) / (1.0 - 2.0 * eps)
    metrics = _reward_metrics(beta * rho_w, beta * rho_l)
    metrics["logps/chosen"] = s_w
    metrics["logps/rejected"] = s_l
    return loss, metrics


def _check_dpo_options(loss: str, beta, loss_type, label_smoothing, nll_weight) -> None:
    _check_choice(loss, "loss_type", loss_type, DPO_LOSS_TYPES)
    _check_range(loss, "beta", beta, 0.0, math.inf, lo_open=True)
    _check_range(loss, "nll_weight", nll_weight, 0.0, math.inf)
    if loss_type == "robust":
        _check_range(loss, "label_smoothing", label_smoothing, 0.0, 0.5, hi_open=True)
    else:
        _check_range(loss, "label_smoothing", label_smoothing, 0.0, 1.0)
    if loss_type in ("ipo", "hinge") and isinstance(label_smoothing, int | float) and label_smoothing:
        raise ValueError(f"loss {loss!r}: label_smoothing applies to loss_type 'sigmoid' and 'robust', "
                         f"not {loss_type!r}")


def _rationale_parts(logps: SequenceLogps) -> tuple[Array, Array, Array | None]:
    """(S_r, n_r, keep): the rationale sum and count with pairs outside ``rationale_mask`` set to 0 *before*
    any term is computed from them (so a NaN there reaches neither the loss nor its gradient), and the
    mask as bool (None: every pair has a rationale)."""
    s_r, n_r = _f32(logps.rationale), logps.rationale_tokens
    if logps.rationale_mask is None:
        return s_r, n_r, None
    keep = _f32(logps.rationale_mask) > 0
    n_r = None if n_r is None else jnp.where(keep, _f32(n_r), 0.0)
    return jnp.where(keep, s_r, 0.0), n_r, keep


def _drop_unmasked(term: Array, keep: Array | None) -> Array:
    """The rationale term, 0 for pairs without a rationale."""
    return term if keep is None else jnp.where(keep, term, 0.0)


# ----------------------------------------------------------------------------------------------
# the losses


def dpo(logps: SequenceLogps, *, beta: float = 0.1, loss_type: str = "sigmoid",
        label_smoothing: float = 0.0, nll_weight: float = 0.0) -> tuple[Array, Metrics]:
    """DPO family (Rafailov et al. 2023; cDPO; IPO, Azar et al. 2023; hinge/SLiC; robust DPO,
    Chowdhury et al. 2024), optionally plus an NLL term (RPO, Pang et al. 2024).

    With h = (S_w - R_w) - (S_l - R_l) and eps = label_smoothing:
      sigmoid: -(1-eps) log sigma(beta h) - eps log sigma(-beta h)        (eps > 0 is cDPO)
      ipo:     (h_bar - 1/(2 beta))^2, h_bar = (S_w-R_w)/n_w - (S_l-R_l)/n_l (length-normalised, as TRL)
      hinge:   max(0, 1 - beta h)
      robust:  (-(1-eps) log sigma(beta h) + eps log sigma(-beta h)) / (1 - 2 eps), eps in [0, 0.5)
    plus nll_weight * (-A_w), the per-pair mean NLL of the chosen completion.
    Shapes: every SequenceLogps field [B]; returns loss [B] and metrics of [B] arrays.
    """
    _check_logps(logps, "dpo", need_ref=True, need_rationale=False, need_rationale_tokens=False)
    _check_dpo_options("dpo", beta, loss_type, label_smoothing, nll_weight)
    pref, metrics = _dpo_preference(logps, beta, loss_type, label_smoothing)
    a_w = _mean_logp(_f32(logps.chosen), logps.chosen_tokens)
    metrics["loss/preference"] = pref
    metrics["nll_loss"] = -a_w
    return pref + _scaled(nll_weight, -a_w), metrics


def rdpo(logps: SequenceLogps, *, beta: float = 0.1, gamma: float = 0.001,
         rationale_form: str = "sigmoid", rationale_norm: str = "sum", loss_type: str = "sigmoid",
         label_smoothing: float = 0.0, nll_weight: float = 0.0) -> tuple[Array, Metrics]:
    """RDPO (Just et al. 2024): the DPO loss plus a rationale-likelihood term with no reference model.

      form "sigmoid" (official code, the published runs; default): dpo - log sigma(gamma * S)
      form "nll" (the paper's equation):                          dpo + gamma * (-S)
    with S = S_r (rationale_norm "sum", paper and code) or S_r / n_r ("mean"). Since S < 0, the
    sigmoid form's gradient weight on S is gamma * (1 - sigma(gamma S)), between gamma/2 and gamma;
    at gamma = 0 it adds exactly log 2 and the nll form equals dpo. The dpo keywords apply unchanged.
    Shapes: every SequenceLogps field [B]; returns loss [B] and metrics of [B] arrays.
    """
    _check_choice("rdpo", "rationale_form", rationale_form, RATIONALE_FORMS)
    _check_choice("rdpo", "rationale_norm", rationale_norm, RATIONALE_NORMS)
    _check_logps(logps, "rdpo", need_ref=True, need_rationale=True,
                 need_rationale_tokens=rationale_norm == "mean")
    _check_dpo_options("rdpo", beta, loss_type, label_smoothing, nll_weight)
    _check_range("rdpo", "gamma", gamma, 0.0, math.inf)
    pref, metrics = _dpo_preference(logps, beta, loss_type, label_smoothing)
    s_r, n_r, keep = _rationale_parts(logps)
    s = s_r if rationale_norm == "sum" else _mean_logp(s_r, n_r)
    term = -log_sigmoid(_scaled(gamma, s)) if rationale_form == "sigmoid" else _scaled(gamma, -s)
    term = _drop_unmasked(term, keep)
    a_w = _mean_logp(_f32(logps.chosen), logps.chosen_tokens)
    metrics.update({"logps/rationale": s_r, "loss/preference": pref, "loss/rationale": term,
                    "nll_loss": -a_w})
    return pref + term + _scaled(nll_weight, -a_w), metrics


def _orpo_parts(logps: SequenceLogps, lam) -> tuple[Array, Array, Metrics]:
    a_w = _mean_logp(_f32(logps.chosen), logps.chosen_tokens)
    a_l = _mean_logp(_f32(logps.rejected), logps.rejected_tokens)
    log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l))
    ratio = log_sigmoid(log_odds)
    metrics = _reward_metrics(lam * a_w, lam * a_l)
    metrics.update({"logps/chosen": a_w, "logps/rejected": a_l, "nll_loss": -a_w,
                    "log_odds_ratio": ratio, "log_odds_chosen": log_odds,
                    "loss/preference": _scaled(lam, -ratio)})
    return -a_w, _scaled(lam, -ratio), metrics


def orpo(logps: SequenceLogps, *, lam: float = 0.1) -> tuple[Array, Metrics]:
    """ORPO (Hong et al. 2024): -A_w + lam * (-log sigma(L)),
    L = (A_w - A_l) - (log1mexp(A_w) - log1mexp(A_l)), the log odds ratio of the per-token averages.

    The NLL is per pair over the completion only (TRL uses a batch token-mean over prompt and
    completion): see docs/losses.md, parameter conventions. No reference model. Rewards are lam * A as in
    TRL; logps/* are A.
    """
    _check_logps(logps, "orpo", need_ref=False, need_rationale=False, need_rationale_tokens=False)
    _check_range("orpo", "lam", lam, 0.0, math.inf)
    nll, pref, metrics = _orpo_parts(logps, lam)
    return nll + pref, metrics


def rorpo(logps: SequenceLogps, *, lam: float = 0.1, gamma: float = 1.0) -> tuple[Array, Metrics]:
    """RORPO (the official SimpleRORPOTrainer): orpo + gamma * (-S_r / n_r)."""
    _check_logps(logps, "rorpo", need_ref=False, need_rationale=True, need_rationale_tokens=True)
    _check_range("rorpo", "lam", lam, 0.0, math.inf)
    _check_range("rorpo", "gamma", gamma, 0.0, math.inf)
    nll, pref, metrics = _orpo_parts(logps, lam)
    s_r, n_r, keep = _rationale_parts(logps)
    term = _drop_unmasked(_scaled(gamma, -_mean_logp(s_r, n_r)), keep)
    metrics.update({"logps/rationale": s_r, "loss/rationale": term})
    return nll + pref + term, metrics


def _simpo_parts(logps: SequenceLogps, beta, gamma_beta_ratio, sft_weight) -> tuple[Array, Metrics]:
    a_w = _mean_logp(_f32(logps.chosen), logps.chosen_tokens)
    a_l = _mean_logp(_f32(logps.rejected), logps.rejected_tokens)
    pref = -log_sigmoid(beta * (a_w - a_l) - gamma_beta_ratio * beta)
    metrics = _reward_metrics(beta * a_w, beta * a_l)
    metrics.update({"logps/chosen": a_w, "logps/rejected": a_l, "loss/preference": pref,
                    "nll_loss": -a_w})
    return pref + _scaled(sft_weight, -a_w), metrics


def _check_simpo_options(loss: str, beta, gamma_beta_ratio, sft_weight) -> None:
    _check_range(loss, "beta", beta, 0.0, math.inf, lo_open=True)
    _check_range(loss, "gamma_beta_ratio", gamma_beta_ratio, 0.0, math.inf)
    _check_range(loss, "sft_weight", sft_weight, 0.0, math.inf)


def simpo(logps: SequenceLogps, *, beta: float = 2.0, gamma_beta_ratio: float = 0.25,
          sft_weight: float = 0.0) -> tuple[Array, Metrics]:
    """SimPO (Meng et al. 2024), official convention:
    -log sigma(beta (A_w - A_l) - gamma_beta_ratio * beta) + sft_weight * (-A_w).

    TRL's `simpo_gamma` is the absolute margin gamma_beta_ratio * beta. No reference model.
    """
    _check_logps(logps, "simpo", need_ref=False, need_rationale=False, need_rationale_tokens=False)
    _check_simpo_options("simpo", beta, gamma_beta_ratio, sft_weight)
    return _simpo_parts(logps, beta, gamma_beta_ratio, sft_weight)


def rsimpo(logps: SequenceLogps, *, beta: float = 2.0, gamma_beta_ratio: float = 0.25,
           sft_weight: float = 0.0, gamma: float = 1.0) -> tuple[Array, Metrics]:
    """RSimPO: simpo + gamma * (-S_r / n_r), length-normalised like SimPO's rewards (not in the
    official code; see docs/losses.md)."""
    _check_logps(logps, "rsimpo", need_ref=False, need_rationale=True, need_rationale_tokens=True)
    _check_simpo_options("rsimpo", beta, gamma_beta_ratio, sft_weight)
    _check_range("rsimpo", "gamma", gamma, 0.0, math.inf)
    loss, metrics = _simpo_parts(logps, beta, gamma_beta_ratio, sft_weight)
    s_r, n_r, keep = _rationale_parts(logps)
    term = _drop_unmasked(_scaled(gamma, -_mean_logp(s_r, n_r)), keep)
    metrics.update({"logps/rationale": s_r, "loss/rationale": term})
    return loss + term, metrics


# ----------------------------------------------------------------------------------------------
# registry


# Keywords other libraries use for the same knob, and what to pass here instead.
_KEYWORD_HINTS: dict[str, dict[str, str]] = {
    "orpo": {"beta": "TRL's ORPOConfig calls the odds-ratio weight `beta`; here it is `lam`",
             "alpha": "the official ORPO code calls the odds-ratio weight `alpha`; here it is `lam`"},
    "simpo": {"simpo_gamma": "TRL's simpo_gamma is an absolute margin; pass "
                             "gamma_beta_ratio = simpo_gamma / beta",
              "gamma": "SimPO's margin is `gamma_beta_ratio` (official convention, margin / beta)"},
    "dpo": {"rpo_alpha": "the NLL weight is `nll_weight`",
            "reference_free": "use the reference-free losses 'simpo' or 'orpo'"},
}
_KEYWORD_HINTS["rorpo"] = _KEYWORD_HINTS["orpo"]
_KEYWORD_HINTS["rsimpo"] = {k: v for k, v in _KEYWORD_HINTS["simpo"].items() if k != "gamma"}
_KEYWORD_HINTS["rdpo"] = _KEYWORD_HINTS["dpo"]


def _registered(name: str, fn: LossFn) -> LossFn:
    """Wraps a loss so that a wrong keyword names the loss, the accepted keywords and a hint."""
    accepted = [p for p in inspect.signature(fn).parameters if p != "logps"]

    def loss(logps: SequenceLogps, **hparams: Any) -> tuple[Array, Metrics]:
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
    (name, _registered(name, fn))
    for name, fn in [("dpo", dpo), ("rdpo", rdpo), ("orpo", orpo), ("rorpo", rorpo),
                     ("simpo", simpo), ("rsimpo", rsimpo)]
)
REFERENCE_FREE = frozenset({"orpo", "rorpo", "simpo", "rsimpo"})
RATIONALE_LOSSES = frozenset({"rdpo", "rorpo", "rsimpo"})


def has_rationale_term(name: str, hparams: Mapping[str, Any] | None = None) -> bool:
    """Whether loss ``name`` with keywords ``hparams`` adds a rationale term (so it needs rationales).

    Decided by the term, not by the name alone: today the losses with a term are ``rdpo``, ``rorpo`` and
    ``rsimpo``, whatever their ``gamma``."""
    LOSSES[name]  # an unknown name raises, listing the accepted ones
    return name in RATIONALE_LOSSES


def mask_pairs(logps: SequenceLogps, pair_mask: Array | None) -> SequenceLogps:
    """``logps`` with every field of a padded pair (``pair_mask`` False) replaced by 0 via ``where``.

    This is the first of the two selections that keep a padded pair out of the loss (spec: "select with
    where, never multiply"): the per-pair loss is then computed on finite zeros, so whatever the padded
    pair held (NaN, inf) reaches neither the loss nor the gradient; `masked_pair_sums` then selects the
    real pairs' losses. Shapes: every field [B], ``pair_mask`` [B] bool.
    """
    if pair_mask is None:
        return logps
    keep = jnp.asarray(pair_mask).astype(bool)
    return SequenceLogps(*(None if v is None else jnp.where(keep, v, jnp.zeros((), jnp.asarray(v).dtype))
                           for v in logps))


def pair_finite(per_pair_loss: Array, pair_mask: Array | None = None) -> Array:
    """Per pair: the loss is finite, or the pair is padding. [B] bool.

    A real pair whose log-probs make the loss infinite or NaN (``S_w = -inf`` under DPO, say; where the
    limit is finite the losses return it) cannot raise inside ``jax.jit``: this flag goes to the host,
    which names the pair."""
    ok = jnp.isfinite(_f32(per_pair_loss))
    return ok if pair_mask is None else ok | ~jnp.asarray(pair_mask).astype(bool)


def masked_pair_sums(per_pair_loss: Array, metrics: Mapping[str, Array] | None = None,
                     pair_mask: Array | None = None) -> tuple[Array, dict[str, Array], Array]:
    """Sums over real pairs, sum_b where(m_b, x_b, 0), for the loss and each metric, and the count sum_b m_b.

    `where` comes before the sum, so a non-finite value in a padded pair never reaches the result. Use
    these with gradient accumulation: the mean over all micro-batches is sum(sums) / sum(counts), which
    equals one large batch exactly. Returns float32 scalars.
    """
    loss = _f32(per_pair_loss)
    mask = jnp.ones(loss.shape, bool) if pair_mask is None else jnp.asarray(pair_mask).astype(bool)
    if mask.shape != loss.shape:
        raise ValueError(f"pair_mask shape {mask.shape} does not match per-pair loss shape {loss.shape}")

    def total(x: Array) -> Array:
        return jnp.where(mask, _f32(x), 0.0).sum()

    return total(loss), {k: total(v) for k, v in (metrics or {}).items()}, mask.sum().astype(jnp.float32)


def reduce_pairs(per_pair_loss: Array, metrics: Mapping[str, Array] | None = None,
                 pair_mask: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """Mean over real pairs: sum_b where(m_b, x_b, 0) / max(sum_b m_b, 1), for the loss and each metric.

    Shapes: per_pair_loss, pair_mask and each metric [B]; returns float32 scalars. A batch with no real
    pair gives 0 (not NaN).
    """
    loss_sum, metric_sums, count = masked_pair_sums(per_pair_loss, metrics, pair_mask)
    denom = jnp.maximum(count, 1.0)
    return loss_sum / denom, {k: v / denom for k, v in metric_sums.items()}


def compute_loss(name: str, logps: SequenceLogps, pair_mask: Array | None = None,
                 **hparams: Any) -> tuple[Array, dict[str, Array]]:
    """`mask_pairs`, `LOSSES[name]`, then `reduce_pairs`: the batch loss (scalar) and averaged metrics.
    Padded pairs reach neither the loss nor its gradient, whatever values they hold."""
    per_pair, metrics = LOSSES[name](mask_pairs(logps, pair_mask), **hparams)
    return reduce_pairs(per_pair, metrics, pair_mask)
