"""Losses against an independent float64 numpy reference written from docs/spec.md section 2, closed forms,
finite-difference gradients, and properties."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdpo_jax.losses import LOSSES, SequenceLogps, compute_loss, log1mexp, reduce_pairs
from tests import reference_losses as ref

FIELDS = SequenceLogps._fields[:8]

CONFIGS = [
    ("dpo", {}),
    ("dpo", {"label_smoothing": 0.2}),
    ("dpo", {"loss_type": "ipo", "beta": 0.5}),
    ("dpo", {"loss_type": "hinge", "beta": 0.3}),
    ("dpo", {"loss_type": "robust", "label_smoothing": 0.1}),
    ("dpo", {"nll_weight": 1.0, "beta": 0.2}),
    ("rdpo", {}),
    ("rdpo", {"rationale_form": "nll", "gamma": 0.05}),
    ("rdpo", {"rationale_norm": "mean", "gamma": 0.7}),
    ("rdpo", {"gamma": 0.1, "loss_type": "ipo", "beta": 0.4}),
    ("rdpo", {"gamma": 0.01, "loss_type": "robust", "label_smoothing": 0.25, "nll_weight": 0.5}),
    ("orpo", {}),
    ("orpo", {"lam": 1.0}),
    ("rorpo", {}),
    ("rorpo", {"lam": 0.5, "gamma": 0.3}),
    ("simpo", {}),
    ("simpo", {"beta": 2.5, "gamma_beta_ratio": 0.55, "sft_weight": 1.0}),
    ("rsimpo", {}),
    ("rsimpo", {"beta": 10.0, "gamma_beta_ratio": 0.3, "gamma": 0.5}),
    # Losses II (more in tests/test_losses_catalogue.py)
    ("dpo", {"loss_type": "bco_pair"}),
    ("dpo", {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]}),
    ("dpo", {"loss_type": "discopop", "beta": 0.5}),
    ("dpo", {"loss_type": "exo_pair", "label_smoothing": 0.01}),
    ("dpo", {"loss_type": "apo_down", "beta": 0.05}),
    ("dpo", {"f_divergence_type": "js_divergence"}),
    ("dpo", {"length_penalty": 0.02}),
    ("simpo", {"loss_type": "hinge"}),
    ("simpo", {"label_smoothing": 0.1, "sft_weight": 0.5}),
    ("cpo", {}),
    ("cpo", {"loss_type": "ipo", "beta": 0.5}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'default'}" for n, hp in CONFIGS]


def random_inputs(rng, b=64):
    n_w = rng.integers(1, 120, b).astype(np.float64)
    n_l = rng.integers(1, 120, b).astype(np.float64)
    s_w = -n_w * rng.uniform(0.05, 3.0, b)
    s_l = -n_l * rng.uniform(0.05, 3.0, b)
    return {
        "chosen": s_w, "rejected": s_l, "chosen_tokens": n_w, "rejected_tokens": n_l,
        "ref_chosen": s_w + rng.normal(0, 5, b), "ref_rejected": s_l + rng.normal(0, 5, b),
        "rationale": -rng.uniform(1, 600, b), "rationale_tokens": rng.integers(1, 200, b).astype(np.float64),
    }


def adversarial_inputs():
    """Rows: |h| = 1e4 both signs, A_w = -1e-9, A_w = 0, A_w = -1e4, equal log-probs, zero-count padding."""
    rows = [
        # s_w,     s_l,     n_w, n_l,  r_w, r_l,  s_r,     n_r
        (-1e4, -1.0, 1, 1, 0.0, 0.0, -50.0, 10),
        (-1.0, -1e4, 1, 1, 0.0, 0.0, -50.0, 10),
        (-1e-9, -2.0, 1, 1, -1.0, -1.0, -1e4, 3),
        (0.0, -3.0, 5, 5, -2.0, -2.0, 0.0, 4),
        (-1e4, -5.0, 1, 5, -3.0, -3.0, -1e-9, 1),
        (-7.5, -7.5, 3, 3, -7.5, -7.5, -20.0, 5),
        (0.0, 0.0, 0, 0, 0.0, 0.0, 0.0, 0),
        (-3.0, -1e-9, 2, 1, 0.0, 0.0, -1e4, 1000),
    ]
    cols = np.array(rows, np.float64).T
    return dict(zip(FIELDS, cols, strict=True))


def to_logps(x, dtype=jnp.float32):
    return SequenceLogps(**{k: jnp.asarray(v, dtype) for k, v in x.items()})


def rounded(x, dtype):
    """The float64 values the loss actually sees after casting to `dtype`."""
    return {k: np.asarray(jnp.asarray(v, dtype).astype(jnp.float32), np.float64) for k, v in x.items()}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_golden_values_random_and_adversarial(name, hp, dtype):
    rng = np.random.default_rng(0)
    for x in (random_inputs(rng), adversarial_inputs()):
        expected = ref.reference_loss(name, rounded(x, dtype), **hp)
        loss, metrics = jax.jit(lambda lp: LOSSES[name](lp, **hp))(to_logps(x, dtype))
        assert loss.dtype == jnp.float32
        assert np.all(np.isfinite(loss)), loss
        assert all(np.all(np.isfinite(v)) for v in metrics.values())
        np.testing.assert_allclose(np.asarray(loss, np.float64), expected, rtol=2e-5, atol=2e-5)
        per_pair = jax.vmap(lambda lp: LOSSES[name](lp, **hp)[0])(to_logps(x, dtype))
        np.testing.assert_allclose(np.asarray(per_pair, np.float64), expected, rtol=2e-5, atol=2e-5)


def test_closed_forms():
    b = 5
    x = {"chosen": np.full(b, -12.0), "rejected": np.full(b, -20.0), "chosen_tokens": np.full(b, 4.0),
         "rejected_tokens": np.full(b, 8.0), "ref_chosen": np.full(b, -12.0), "ref_rejected": np.full(b, -20.0),
         "rationale": np.full(b, -30.0), "rationale_tokens": np.full(b, 6.0)}
    lp = to_logps(x)
    # sigmoid DPO at h = 0 is log 2
    np.testing.assert_allclose(LOSSES["dpo"](lp)[0], math.log(2), rtol=1e-7)
    # IPO at h_bar = 0 is 1 / (4 beta^2)
    np.testing.assert_allclose(LOSSES["dpo"](lp, loss_type="ipo", beta=0.3)[0], 1 / (4 * 0.09), rtol=1e-6)
    # SimPO with A_w = A_l is softplus(gamma_beta_ratio * beta): A_w = -12/4 = -3, A_l = -24/8 = -3
    lp_eq = to_logps({**x, "rejected": np.full(b, -24.0)})
    np.testing.assert_allclose(LOSSES["simpo"](lp_eq, beta=2.5, gamma_beta_ratio=0.4)[0],
                               math.log1p(math.exp(1.0)), rtol=1e-6)
    # ORPO with A_w = A_l is -A_w + lam log 2
    np.testing.assert_allclose(LOSSES["orpo"](lp_eq, lam=0.3)[0], 3.0 + 0.3 * math.log(2), rtol=1e-6)
    # RDPO nll with gamma = 0 equals DPO; the sigmoid form then differs by exactly log 2
    lp_r = to_logps(random_inputs(np.random.default_rng(1), b))
    d = LOSSES["dpo"](lp_r)[0]
    np.testing.assert_allclose(LOSSES["rdpo"](lp_r, gamma=0.0, rationale_form="nll")[0], d, rtol=1e-7)
    np.testing.assert_allclose(LOSSES["rdpo"](lp_r, gamma=0.0)[0] - d, math.log(2), rtol=1e-6)
    # RDPO sigmoid term, the paper's worked example: weight on S_r is gamma * (1 - sigma(gamma S_r))
    g = jax.grad(lambda s: LOSSES["rdpo"](lp_r._replace(rationale=s), gamma=0.001)[0].sum())(
        jnp.full(b, -500.0))
    np.testing.assert_allclose(-g / 0.001, 1 - 1 / (1 + math.exp(0.5)), rtol=1e-5)  # 0.62 in the paper's table


def test_log1mexp_clamp_and_extremes():
    a = jnp.array([0.0, -1e-12, -1e-9, -0.5, -math.log(2), -1.0, -30.0, -1e4], jnp.float32)
    out = np.asarray(log1mexp(a), np.float64)
    assert np.all(np.isfinite(out))
    expected = ref.log1mexp(np.asarray(a, np.float64))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(out[2], math.log(1e-9), rtol=1e-6)  # exact at -1e-9
    assert out[-1] == 0.0 or abs(out[-1]) < 1e-30  # log(1 - e^-1e4) = -e^-1e4
    grads = jax.vmap(jax.grad(lambda v: log1mexp(v)))(a)
    assert np.all(np.isfinite(grads))


def _fd_grad(fn, x, key, eps_rel=1e-6):
    """Central finite difference of a float64 reference w.r.t. field `key` (per pair; pairs independent)."""
    step = eps_rel * np.maximum(np.abs(x[key]), 1.0)
    hi, lo = dict(x), dict(x)
    hi[key] = x[key] + step
    lo[key] = x[key] - step
    return (fn(hi) - fn(lo)) / (2 * step)


GRAD_FIELDS = ["chosen", "rejected", "ref_chosen", "ref_rejected", "rationale"]


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_gradients_match_finite_differences(name, hp):
    x = random_inputs(np.random.default_rng(2), 32)
    x32 = rounded(x, jnp.float32)
    fields = [f for f in GRAD_FIELDS if not (name in ("orpo", "simpo", "cpo") and f in ("ref_chosen", "ref_rejected",
                                                                              "rationale"))]
    if name in ("rorpo", "rsimpo"):
        fields = [f for f in fields if not f.startswith("ref")]
    if name == "dpo":
        fields = [f for f in fields if f != "rationale"]

    def total(values):
        lp = to_logps({**x32, **values})
        return LOSSES[name](lp, **hp)[0].sum()

    grads = jax.grad(total)({f: jnp.asarray(x32[f], jnp.float32) for f in fields})
    for f in fields:
        expected = _fd_grad(lambda v: ref.reference_loss(name, v, **hp), x32, f)
        got = np.asarray(grads[f], np.float64)
        scale = max(np.abs(expected).max(), 1e-6)
        np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=1e-3, err_msg=f"d/d{f}")


def test_dpo_gradient_analytic():
    x = random_inputs(np.random.default_rng(3), 16)
    beta = 0.2
    g = jax.grad(lambda s: LOSSES["dpo"](to_logps({**x, "chosen": s}), beta=beta)[0].sum())(
        jnp.asarray(x["chosen"], jnp.float32))
    h = (x["chosen"] - x["ref_chosen"]) - (x["rejected"] - x["ref_rejected"])
    expected = -beta / (1 + np.exp(beta * h))  # d/dS_w -log sigma(beta h) = -beta sigma(-beta h)
    np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_gradients_finite_at_extremes_and_padding(name, hp):
    x = adversarial_inputs()

    def total(values):
        return LOSSES[name](to_logps(values), **hp)[0].sum()

    grads = jax.grad(total)({k: jnp.asarray(v, jnp.float32) for k, v in x.items()})
    for k, g in grads.items():
        assert np.all(np.isfinite(np.asarray(g))), (k, g)
    # the zero-count padded pair (row 6) contributes a finite loss; masked out, it contributes nothing
    mask = np.ones(len(x["chosen"]), bool)
    mask[6] = False
    loss, _ = compute_loss(name, to_logps(x), jnp.asarray(mask), **hp)
    real = ref.reference_loss(name, rounded(x, jnp.float32), **hp)[mask].mean()
    np.testing.assert_allclose(float(loss), real, rtol=2e-5)


def test_pair_mask_blocks_non_finite_padding_in_reduction():
    per_pair = jnp.array([1.0, 2.0, jnp.nan, jnp.inf])
    loss, metrics = reduce_pairs(per_pair, {"m": jnp.array([3.0, 5.0, jnp.nan, 1.0])},
                                 jnp.array([True, True, False, False]))
    assert float(loss) == 1.5 and float(metrics["m"]) == 4.0
    g = jax.grad(lambda p: reduce_pairs(p, None, jnp.array([True, False, True, False]))[0])(
        jnp.array([1.0, jnp.nan, 3.0, 4.0]))
    np.testing.assert_array_equal(np.asarray(g), [0.5, 0.0, 0.5, 0.0])
    assert float(reduce_pairs(jnp.zeros(3), None, jnp.zeros(3, bool))[0]) == 0.0


finite = st.floats(-500, -0.0625, allow_nan=False, width=32)
counts = st.integers(1, 64)


@settings(max_examples=60, deadline=None)
@given(s_w=finite, s_l=finite, r_w=finite, r_l=finite, s_r=finite, n_w=counts, n_l=counts, n_r=counts,
       beta=st.floats(0.01, 2.0))
def test_properties(s_w, s_l, r_w, r_l, s_r, n_w, n_l, n_r, beta):
    x = {"chosen": [s_w], "rejected": [s_l], "chosen_tokens": [n_w], "rejected_tokens": [n_l],
         "ref_chosen": [r_w], "ref_rejected": [r_l], "rationale": [s_r], "rationale_tokens": [n_r]}
    lp = to_logps(x)
    swapped = to_logps({**x, "chosen": [s_l], "rejected": [s_w], "chosen_tokens": [n_l],
                        "rejected_tokens": [n_w], "ref_chosen": [r_l], "ref_rejected": [r_w]})
    loss, m = LOSSES["dpo"](lp, beta=beta)
    loss_s, m_s = LOSSES["dpo"](swapped, beta=beta)
    # swapping chosen and rejected maps h to -h: margins flip; -log s(-x) + log s(x) = x
    np.testing.assert_allclose(m_s["rewards/margins"], -m["rewards/margins"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(loss_s - loss, m["rewards/margins"], rtol=1e-4, atol=1e-3)
    d = LOSSES["dpo"](lp, beta=beta)[0]
    np.testing.assert_allclose(LOSSES["rdpo"](lp, beta=beta, gamma=0.0, rationale_form="nll")[0], d, rtol=1e-7)
    ulps = 4 * np.finfo(np.float32).eps * (abs(float(d[0])) + 1)  # float32 cancellation of d + log 2 - d
    np.testing.assert_allclose(LOSSES["rdpo"](lp, beta=beta, gamma=0.0)[0] - d, math.log(2), rtol=0, atol=ulps)
    np.testing.assert_allclose(LOSSES["rorpo"](lp, gamma=0.0)[0], LOSSES["orpo"](lp)[0], rtol=1e-7)
    np.testing.assert_allclose(LOSSES["rsimpo"](lp, beta=2 * beta, gamma=0.0)[0],
                               LOSSES["simpo"](lp, beta=2 * beta)[0], rtol=1e-7)


@settings(max_examples=30, deadline=None)
@given(n_real=st.integers(1, 8), n_pad=st.integers(0, 8), seed=st.integers(0, 1000))
def test_pair_mask_excludes_padded_pairs_exactly(n_real, n_pad, seed):
    rng = np.random.default_rng(seed)
    real = random_inputs(rng, n_real)
    pad = {k: np.zeros(n_pad) for k in real}
    both = {k: np.concatenate([real[k], pad[k]]) for k in real}
    mask = jnp.asarray([True] * n_real + [False] * n_pad)
    for name in LOSSES:
        loss, metrics = compute_loss(name, to_logps(both), mask)
        loss_real, metrics_real = compute_loss(name, to_logps(real))
        np.testing.assert_allclose(loss, loss_real, rtol=1e-6)
        for k in metrics_real:
            np.testing.assert_allclose(metrics[k], metrics_real[k], rtol=1e-5, atol=1e-6)


def test_rationale_mask_drops_the_term_for_pairs_without_rationale():
    x = random_inputs(np.random.default_rng(4), 6)
    keep = np.array([1, 0, 1, 0, 1, 1], np.float64)
    for name, hp in [("rdpo", {"gamma": 0.1}), ("rorpo", {}), ("rsimpo", {})]:
        got = LOSSES[name](to_logps({**x, "rationale_mask": keep}), **hp)[0]
        base = {"rdpo": "dpo", "rorpo": "orpo", "rsimpo": "simpo"}[name]
        with_r = ref.reference_loss(name, x, **hp)
        without = ref.reference_loss(base, x, **{k: v for k, v in hp.items() if k != "gamma"})
        np.testing.assert_allclose(got, np.where(keep > 0, with_r, without), rtol=1e-5)


def test_trace_time_errors_are_clear():
    x = random_inputs(np.random.default_rng(5), 4)
    lp = to_logps(x)
    with pytest.raises(KeyError, match="unknown loss .dpoo.; accepted: cpo, dpo, orpo, rdpo"):
        LOSSES["dpoo"]
    with pytest.raises(TypeError, match="orpo.*beta.*accepted: lam.*here it is `lam`"):
        LOSSES["orpo"](lp, beta=0.1)
    with pytest.raises(TypeError, match="simpo_gamma / beta"):
        LOSSES["simpo"](lp, simpo_gamma=0.5)
    with pytest.raises(ValueError, match="loss_type='kto' is not supported; accepted: sigmoid, hinge, ipo, exo_pair"):
        jax.jit(lambda v: LOSSES["dpo"](v, loss_type="kto"))(lp)
    with pytest.raises(ValueError, match="needs SequenceLogps.ref_chosen, ref_rejected"):
        jax.jit(lambda v: LOSSES["dpo"](v))(lp._replace(ref_chosen=None, ref_rejected=None))
    with pytest.raises(ValueError, match="'rdpo' needs SequenceLogps.rationale"):
        jax.jit(lambda v: LOSSES["rdpo"](v))(lp._replace(rationale=None))
    with pytest.raises(ValueError, match="rorpo' needs SequenceLogps.rationale_tokens"):
        LOSSES["rorpo"](lp._replace(rationale_tokens=None))
    with pytest.raises(ValueError, match=r"share one shape.*chosen=\(4,\).*rejected=\(3,\)"):
        jax.jit(lambda v: LOSSES["simpo"](v))(lp._replace(rejected=jnp.zeros(3)))
    with pytest.raises(ValueError, match=r"label_smoothing=0.5 is outside the accepted range \[0.0, 0.5\)"):
        LOSSES["dpo"](lp, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="rationale_form='mean'"):
        LOSSES["rdpo"](lp, rationale_form="mean")
    with pytest.raises(ValueError, match="beta=0"):
        LOSSES["simpo"](lp, beta=0)


def test_reference_free_losses_need_no_reference():
    x = random_inputs(np.random.default_rng(6), 4)
    lp = to_logps(x)._replace(ref_chosen=None, ref_rejected=None)
    for name in ("orpo", "rorpo", "simpo", "rsimpo", "cpo"):
        loss, _ = jax.jit(lambda v, n=name: LOSSES[n](v))(lp)
        assert np.all(np.isfinite(loss))


def test_metrics_follow_trl_definitions():
    x = random_inputs(np.random.default_rng(7), 8)
    _, m = LOSSES["rdpo"](to_logps(x), beta=0.1)
    np.testing.assert_allclose(m["rewards/chosen"], 0.1 * (x["chosen"] - x["ref_chosen"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m["rewards/rejected"], 0.1 * (x["rejected"] - x["ref_rejected"]), rtol=1e-5,
                               atol=1e-5)
    acc = (x["chosen"] - x["ref_chosen"]) > (x["rejected"] - x["ref_rejected"])
    np.testing.assert_array_equal(np.asarray(m["rewards/accuracies"]), acc.astype(np.float32))
    np.testing.assert_allclose(m["logps/rationale"], x["rationale"], rtol=1e-6)
    _, mo = LOSSES["orpo"](to_logps(x), lam=0.1)
    a_w = x["chosen"] / x["chosen_tokens"]
    a_l = x["rejected"] / x["rejected_tokens"]
    L = (a_w - a_l) - (ref.log1mexp(a_w) - ref.log1mexp(a_l))
    np.testing.assert_allclose(mo["log_odds_chosen"], L, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mo["log_odds_ratio"], ref.log_sigmoid(L), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mo["rewards/chosen"], 0.1 * a_w, rtol=1e-5)
    _, ms = LOSSES["simpo"](to_logps(x), beta=2.0)
    np.testing.assert_allclose(ms["rewards/margins"], 2.0 * (a_w - a_l), rtol=1e-4, atol=1e-5)
