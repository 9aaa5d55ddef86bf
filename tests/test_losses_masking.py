"""Masks select, never multiply: a padded pair's values (NaN, inf) reach neither the loss nor its gradient;
-inf log-probs give the limiting loss where it is finite (closed forms) and a per-pair flag where it is not."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdpo_jax.losses import LOSSES, SequenceLogps, compute_loss, pair_finite
from tests import reference_losses as ref
from tests.test_losses import CONFIGS, IDS, random_inputs, rounded, to_logps

FIELDS = SequenceLogps._fields[:8]


def _poisoned(value, b=6, bad=(2, 4), seed=0):
    """Random pairs where the pairs ``bad`` hold ``value`` in every field (and count 0)."""
    x = random_inputs(np.random.default_rng(seed), b)
    for f in FIELDS:
        x[f] = x[f].copy()
        x[f][list(bad)] = 0.0 if f.endswith("tokens") else value
    mask = np.ones(b, bool)
    mask[list(bad)] = False
    return x, mask


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_masked_pair_reaches_neither_loss_nor_gradient(name, hp, value):
    x, mask = _poisoned(value)

    def loss_of(values):
        return compute_loss(name, to_logps(values), jnp.asarray(mask), **hp)[0]

    fields = {k: jnp.asarray(v, jnp.float32) for k, v in x.items()}
    loss, grads = jax.value_and_grad(loss_of)(fields)
    real = ref.reference_loss(name, rounded({k: v[mask] for k, v in x.items()}, jnp.float32), **hp).mean()
    np.testing.assert_allclose(float(loss), real, rtol=2e-5)
    for k, g in grads.items():
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), (k, g)
        np.testing.assert_array_equal(g[~mask], 0.0, err_msg=k)
    # the gradient of the real pairs equals the gradient of the real pairs alone
    alone = jax.grad(lambda v: compute_loss(name, to_logps(v), **hp)[0])(
        {k: jnp.asarray(v[mask], jnp.float32) for k, v in x.items()})
    for k in grads:
        np.testing.assert_allclose(np.asarray(grads[k])[mask], np.asarray(alone[k]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["rdpo", "rorpo", "rsimpo"])
def test_pairs_without_rationale_do_not_leak_a_nan_rationale(name):
    x = random_inputs(np.random.default_rng(1), 5)
    x["rationale"] = x["rationale"].copy()
    x["rationale"][[1, 3]] = np.nan
    keep = np.array([1, 0, 1, 0, 1], np.float32)

    def total(s_r):
        lp = to_logps({**x, "rationale": s_r})._replace(rationale_mask=jnp.asarray(keep))
        return LOSSES[name](lp)[0].sum()

    value, g = jax.value_and_grad(total)(jnp.asarray(x["rationale"], jnp.float32))
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g)[keep == 0] == 0.0)


def _one(**fields):
    base = {"chosen": -4.0, "rejected": -6.0, "chosen_tokens": 2.0, "rejected_tokens": 3.0, "ref_chosen": -5.0,
            "ref_rejected": -5.0, "rationale": -10.0, "rationale_tokens": 5.0}
    base.update(fields)
    return SequenceLogps(**{k: jnp.asarray([v], jnp.float32) for k, v in base.items()})


# (loss, keywords, inputs, the closed-form limit): rejected log-prob -> -inf, or a zero weight on an infinite term
LIMITS = [
    ("dpo", {}, {"rejected": -math.inf}, 0.0),                                       # -log sigma(+inf)
    ("dpo", {"nll_weight": 1.0}, {"rejected": -math.inf}, 2.0),                     # + A_w = -4 / 2
    ("dpo", {"loss_type": "hinge"}, {"rejected": -math.inf}, 0.0),                  # max(0, 1 - inf)
    ("dpo", {"loss_type": "robust", "label_smoothing": 0.0}, {"rejected": -math.inf}, 0.0),
    ("rdpo", {"gamma": 0.0, "rationale_form": "nll"}, {"rejected": -math.inf, "rationale": -math.inf}, 0.0),
    ("rdpo", {"gamma": 0.0}, {"rejected": -math.inf, "rationale": -math.inf}, math.log(2.0)),
    ("orpo", {"lam": 0.1}, {"rejected": -math.inf}, 2.0),                           # -A_w + lam * 0
    ("simpo", {}, {"rejected": -math.inf}, 0.0),
    ("simpo", {"sft_weight": 0.5}, {"rejected": -math.inf}, 1.0),
    ("rorpo", {"gamma": 0.0}, {"rejected": -math.inf, "rationale": -math.inf}, 2.0),
]


@pytest.mark.parametrize("name,hp,fields,limit", LIMITS, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(LIMITS)])
def test_minus_inf_logps_give_the_finite_limit_and_finite_gradients(name, hp, fields, limit):
    lp = _one(**fields)
    loss, _ = LOSSES[name](lp, **hp)
    np.testing.assert_allclose(float(loss[0]), limit, rtol=1e-6, atol=1e-7)
    # gradients with respect to the log-prob sums (what the model's parameters reach; counts are data)
    sums = ("chosen", "rejected", "ref_chosen", "ref_rejected", "rationale")
    grads = jax.grad(lambda v: LOSSES[name](lp._replace(**v), **hp)[0].sum())({f: getattr(lp, f) for f in sums})
    for f, g in grads.items():
        assert np.all(np.isfinite(np.asarray(g))), (f, g)


@pytest.mark.parametrize("name,hp,fields", [
    ("dpo", {}, {"chosen": -math.inf}),                                              # -log sigma(-inf) = inf
    ("dpo", {"label_smoothing": 0.1}, {"rejected": -math.inf}),                      # eps * inf
    ("dpo", {}, {"chosen": -math.inf, "ref_chosen": -math.inf}),                     # inf - inf
    ("dpo", {"loss_type": "ipo"}, {"rejected": -math.inf}),
    ("rdpo", {"gamma": 0.1}, {"rationale": -math.inf}),
    ("orpo", {}, {"chosen": -math.inf}),
])
def test_infinite_limits_are_flagged_per_pair(name, hp, fields):
    good, bad = _one(), _one(**fields)
    both = SequenceLogps(*(None if a is None else jnp.concatenate([a, b]) for a, b in zip(good, bad, strict=True)))
    loss, _ = LOSSES[name](both, **hp)
    assert not np.isfinite(float(loss[1]))
    np.testing.assert_array_equal(np.asarray(pair_finite(loss)), [True, False])
    np.testing.assert_array_equal(np.asarray(pair_finite(loss, jnp.asarray([True, False]))), [True, True])
