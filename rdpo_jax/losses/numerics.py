"""Numerically safe building blocks shared by every loss (float32 whatever the input dtype)."""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

LOG1MEXP_CLAMP = -1e-12
# exp(t) is evaluated at min(t, EXP_CAP): e^40 ~ 2.4e17, so a score built from it stays finite in float32
# even when a loss squares it (IPO: (2.4e17)^2 ~ 5.5e34 < 3.4e38). TRL caps at 80 (finite, but IPO's square
# then overflows); the two agree wherever neither cap is reached, i.e. policy/reference ratios below e^40.
EXP_CAP = 40.0


def f32(x: Any) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


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


def capped_exp(t: Array) -> Array:
    """e^min(t, EXP_CAP): finite for any finite t (the gradient is 0 above the cap)."""
    return jnp.exp(jnp.minimum(t, EXP_CAP))


def mean_logp(total: Array, count: Array) -> Array:
    """A = S / max(n, 1): zero-count (padded) pairs divide by 1."""
    return total / jnp.maximum(f32(count), 1.0)


def scaled(weight: Any, term: Array) -> Array:
    """``weight * term``, exactly 0 where the weight is 0 (so a zero weight on an infinite term, e.g.
    ``label_smoothing = 0`` times ``-log sigma(-inf)``, gives the limit 0 instead of ``0 * inf = NaN``)."""
    if isinstance(weight, int | float):
        return jnp.zeros_like(term) if weight == 0 else weight * term
    return jnp.where(jnp.asarray(weight) == 0, 0.0, weight * term)
