"""The rationale term (the paper's idea, for any preference loss) and the builder of losses that add it.

With S = S_r (``rationale_norm="sum"``) or S_r / n_r (``"mean"``) and weight gamma:
  form "sigmoid" (the official RDPO/RORPO code):  -log sigma(gamma S)
  form "nll" (the paper's equation):              gamma * (-S)
Since S < 0, the sigmoid form's gradient weight on S is gamma (1 - sigma(gamma S)), between gamma/2 and
gamma; at gamma = 0 it adds exactly log 2 and the nll form adds 0. Pairs outside ``rationale_mask`` get 0,
their S_r selected away before the term is computed (a NaN there reaches neither the loss nor the gradient).
No reference model is used for the term.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rdpo_jax.losses.inputs import RATIONALE_FIELDS, SequenceLogps, check_choice, check_logps, check_range
from rdpo_jax.losses.numerics import f32, log_sigmoid, mean_logp, scaled

Array = jax.Array
RATIONALE_FORMS = ("sigmoid", "nll")
RATIONALE_NORMS = ("sum", "mean")
RATIONALE_KEYWORDS = ("rationale_weight", "rationale_form", "rationale_norm")


def rationale_fields(norm: str) -> tuple[str, ...]:
    """The SequenceLogps fields the term reads."""
    return (*RATIONALE_FIELDS, "rationale_tokens") if norm == "mean" else RATIONALE_FIELDS


def rationale_term(logps: SequenceLogps, weight: Any, form: str, norm: str, loss: str,
                   weight_key: str = "gamma") -> tuple[Array, dict]:
    """(term [B], {"logps/rationale": S_r, "loss/rationale": term}): the module docstring's term.
    ``weight_key`` names the weight in errors."""
    check_choice(loss, "rationale_form", form, RATIONALE_FORMS)
    check_choice(loss, "rationale_norm", norm, RATIONALE_NORMS)
    check_range(loss, weight_key, weight, 0.0, math.inf)
    check_logps(logps, loss, rationale_fields(norm))
    s_r, n_r = f32(logps.rationale), logps.rationale_tokens
    keep = None
    if logps.rationale_mask is not None:
        keep = f32(logps.rationale_mask) > 0
        s_r = jnp.where(keep, s_r, 0.0)
        n_r = None if n_r is None else jnp.where(keep, f32(n_r), 0.0)
    s = s_r if norm == "sum" else mean_logp(s_r, n_r)
    term = -log_sigmoid(scaled(weight, s)) if form == "sigmoid" else scaled(weight, -s)
    if keep is not None:
        term = jnp.where(keep, term, 0.0)
    return term, {"logps/rationale": s_r, "loss/rationale": term}


def _keyword_only(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def with_rationale(base: Callable, name: str, *, form: str, norm: str, gamma: float | None) -> Callable:
    """``base`` (a preference loss) plus the rationale term, as loss ``name``.

    ``gamma`` given: a preset (``rdpo``, ``rorpo``, ``rsimpo``) that always adds the term, weight ``gamma``
    by default (``rationale_weight`` is an alias: give one of the two). ``gamma`` None: ``base`` with an
    optional term, added only when ``rationale_weight`` is given (the form and norm alone are an error).
    ``form`` and ``norm`` are the defaults of ``rationale_form`` and ``rationale_norm``."""
    base_params = [p for p in inspect.signature(base).parameters.values() if p.name != "logps"]
    extra = [_keyword_only("gamma", gamma, float)] if gamma is not None else []
    extra += [_keyword_only("rationale_weight", None, float | None),
              _keyword_only("rationale_form", None if gamma is None else form, str | None),
              _keyword_only("rationale_norm", None if gamma is None else norm, str | None)]
    base_names = {p.name for p in base_params}

    def loss(logps: SequenceLogps, **hparams: Any) -> tuple[Array, dict[str, Array]]:
        own = {k: hparams.pop(k) for k in [p.name for p in extra] if k in hparams}
        weight = own.get("rationale_weight")
        if gamma is not None:
            if weight is not None and "gamma" in own:
                raise ValueError(f"loss {name!r}: give the rationale weight once, as gamma or rationale_weight "
                                 f"(got gamma={own['gamma']}, rationale_weight={weight})")
            weight = own.get("gamma", gamma) if weight is None else weight
        elif weight is None:
            given = [k for k in ("rationale_form", "rationale_norm") if own.get(k) is not None]
            if given:
                raise ValueError(f"loss {name!r}: {', '.join(given)} has no effect without rationale_weight "
                                 "(set rationale_weight to add the rationale term, or remove it)")
            return base(logps, **{k: v for k, v in hparams.items() if k in base_names})
        key = "rationale_weight" if "rationale_weight" in own else "gamma"
        per_pair, metrics = base(logps, **hparams)
        term, term_metrics = rationale_term(logps, weight, own.get("rationale_form") or form,
                                            own.get("rationale_norm") or norm, name, key)
        metrics.update(term_metrics)
        return per_pair + term, metrics

    loss.__signature__ = inspect.Signature(
        [inspect.Parameter("logps", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=SequenceLogps),
         *base_params, *extra])
    loss.__annotations__ = {**getattr(base, "__annotations__", {}), **{p.name: p.annotation for p in extra}}
    loss.__name__ = name
    weight_name = "gamma" if gamma is not None else "rationale_weight"
    loss.__doc__ = (base.__doc__ or "") + (
        f"\n    Rationale term (`rdpo_jax.losses.rationale`): weight {weight_name}, rationale_form (default "
        f"{form!r}), rationale_norm (default {norm!r}).\n")
    return loss
