"""E1-E3 estimators against exact ground truths (docs/spec.md section 5)."""

import math

import numpy as np
import pytest
from scipy import integrate

from rdpo_jax.analysis import ground_truth as gt
from rdpo_jax.analysis import information_gain, policy_information, pvi, swap_information

LN2 = math.log(2.0)


def h(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p)) if 0 < p < 1 else 0.0


def erasure_flip_sample(n, u, eps, rng):
    """Independent re-implementation: the channel itself, then the exact order log-likelihood ratio."""
    w = rng.integers(0, 2, n)
    erased = rng.random(n) < u
    r = np.where(rng.random(n) < eps, 1 - w, w)
    r = np.where(erased, -1, r)  # -1 stands for "?"

    def lik(rr, ww):  # p(R = rr | W = ww)
        return np.where(rr == -1, u, np.where(rr == ww, (1 - u) * (1 - eps), (1 - u) * eps))

    delta = np.log(lik(r, w)) - np.log(lik(r, 1 - w))  # true order vs swapped order
    post_true = lik(r, w) / (lik(r, w) + lik(r, 1 - w))  # exact posterior q(W = w | R)
    return delta, np.log(post_true)


def bt_truth(s, c=1.0):
    """log 2 - E[ sigma(d) sp(-c d) + sigma(-d) sp(c d) ], d ~ N(0, s^2), by scipy quadrature."""

    def f(d):
        p = 1.0 / (1.0 + math.exp(-d))
        ce = p * math.log1p(math.exp(-c * d)) + (1 - p) * math.log1p(math.exp(c * d))
        return ce * math.exp(-0.5 * (d / s) ** 2) / (s * math.sqrt(2 * math.pi))

    return LN2 - integrate.quad(f, -12 * s, 12 * s, limit=200, epsabs=1e-12)[0]


@pytest.mark.parametrize("u,eps", [(0.0, 0.05), (0.3, 0.1), (0.8, 0.2), (0.5, 0.4), (1.0, 0.1)])
def test_swap_information_erasure_flip(u, eps):
    rng = np.random.default_rng(hash((u, eps)) % 2**32)
    delta, _ = erasure_flip_sample(20_000, u, eps, rng)
    est = swap_information(delta, n_boot=2000)
    truth = (1 - u) * (LN2 - h(eps))
    # Monte-Carlo error: 4 standard errors (plus an absolute floor for the deterministic u = 1 case)
    assert abs(est.nats - truth) < 4 * est.se + 1e-12
    assert est.ci[0] - 1e-12 <= truth <= est.ci[1] + 1e-12 or abs(est.nats - truth) < 3 * est.se
    assert est.nats <= LN2 and est.per_example.max() <= LN2 + 1e-15
    np.testing.assert_allclose(est.bits, est.nats / LN2)


def test_swap_cap_holds_for_huge_log_ratios():
    delta = np.array([1e4, 3e3, 250.0, 80.0])
    est = swap_information(delta, n_boot=200)
    assert est.nats <= LN2 and est.ci[1] <= LN2
    np.testing.assert_allclose(est.nats, LN2, rtol=1e-12)


@pytest.mark.parametrize("u,eps", [(0.3, 0.1), (0.6, 0.25)])
def test_pvi_with_exact_posteriors(u, eps):
    rng = np.random.default_rng(7)
    _, logpost = erasure_flip_sample(20_000, u, eps, rng)
    est = pvi(logpost, math.log(0.5))
    truth = (1 - u) * (LN2 - h(eps))
    assert abs(est.nats - truth) < 4 * est.se
    np.testing.assert_allclose(est.per_example, logpost - math.log(0.5))


def test_ground_truth_module_matches_independent_formulas():
    for u, eps in [(0.3, 0.1), (0.8, 0.2)]:
        np.testing.assert_allclose(gt.erasure_flip_information(u, eps), (1 - u) * (LN2 - h(eps)), rtol=1e-12)
    # Gauss-Hermite (probabilists') quadrature as a second, independent integral of log 2 - E h(sigma(d))
    x, w = np.polynomial.hermite_e.hermegauss(200)
    t = 2.0 * x
    hh = np.logaddexp(0, -t) / (1 + np.exp(-t)) + np.logaddexp(0, t) / (1 + np.exp(t))
    np.testing.assert_allclose(gt.bradley_terry_information(2.0), LN2 - (w * hh).sum() / w.sum(), atol=1e-7)
    np.testing.assert_allclose(gt.bradley_terry_information(2.0), bt_truth(2.0), atol=1e-9)
    np.testing.assert_allclose(gt.bradley_terry_information(2.0, 3.0), bt_truth(2.0, 3.0), atol=1e-9)


@pytest.mark.parametrize("s", [0.5, 2.0, 5.0])
def test_policy_information_bradley_terry_oracle(s):
    rng = np.random.default_rng(11)
    delta = rng.normal(0, s, 20_000)
    w = rng.random(delta.size) < 1 / (1 + np.exp(-delta))
    margins = np.where(w, delta, -delta)  # oracle margin, chosen minus rejected
    est = policy_information(margins, n_boot=2000)
    truth = bt_truth(s)
    assert abs(est.nats - truth) < 4 * est.se
    assert est.nats <= LN2


def test_overconfident_margins_lose_information_and_gain_is_paired():
    rng = np.random.default_rng(3)
    m = gt.sample_bradley_terry(20_000, 2.0, rng)
    est = information_gain(m, 4.0 * m, labels=("oracle", "overconfident"))
    truth = bt_truth(2.0) - bt_truth(2.0, 4.0)
    assert truth > 0.05
    # paired interval: much narrower than the unpaired one would be, and covers the truth
    assert est.ci[0] <= truth <= est.ci[1] or abs(est.nats - truth) < 3 * est.se
    assert abs(est.controls["overconfident"].nats - bt_truth(2.0, 4.0)) < 4 * est.controls["overconfident"].se
    np.testing.assert_allclose(
        est.nats, est.controls["oracle"].nats - est.controls["overconfident"].nats, rtol=1e-12
    )


def test_fitted_logistic_predictor_is_below_shannon_and_misspecified_is_lower():
    """E1 on a BT task: a held-out logistic predictor gives I_V <= I; a coarsened feature gives less."""
    rng = np.random.default_rng(5)
    s, n = 2.0, 20_000
    d = rng.normal(0, s, 2 * n)
    y = rng.random(2 * n) < 1 / (1 + np.exp(-d))
    ysign = np.where(y, 1.0, -1.0)
    truth = bt_truth(s)
    for feat in (d, np.sign(d)):
        # one-parameter logistic fit on the first half (closed-form Newton), evaluated on the second half
        a = 0.0
        for _ in range(50):
            z = ysign[:n] * feat[:n]
            p = 1 / (1 + np.exp(a * z))
            a += (z * p).mean() / (z * z * p * (1 - p)).mean()
        logq = -np.log1p(np.exp(-a * ysign[n:] * feat[n:]))
        est = pvi(logq, math.log(0.5))
        assert est.nats <= truth + 3 * est.se
        if feat is d:
            assert abs(est.nats - truth) < 4 * est.se
        else:
            assert est.ci[1] < truth - 0.02


def test_permuted_labels_and_shuffled_rationales_contain_zero():
    rng = np.random.default_rng(21)
    n = 4000
    # E1: logistic predictor trained on permuted labels, evaluated on held-out (also permuted) labels
    x = rng.normal(0, 2, 2 * n)
    y = rng.permutation(rng.random(2 * n) < 1 / (1 + np.exp(-x)))
    ys = np.where(y, 1.0, -1.0)
    a = (ys[:n] * x[:n]).mean() / (x[:n] ** 2).mean() * 4  # one Newton step from 0
    logq = -np.log1p(np.exp(-a * ys[n:] * x[n:]))
    e1 = pvi(logq, math.log(0.5))
    assert e1.ci[0] <= 0 <= e1.ci[1]
    # E2: rationale of another example (symmetric log-ratios), fitted temperature
    informative, _ = erasure_flip_sample(n, 0.3, 0.1, rng)
    shuffled = rng.permutation(informative) * rng.choice([-1.0, 1.0], n)
    e2 = swap_information(informative, "fit", shuffled=shuffled)
    c = e2.controls["shuffled"]
    assert c.ci[0] <= 0 <= c.ci[1]
    assert e2.contrasts["rationale - shuffled"].ci[0] > 0.15
    # E3: margins with permuted preference labels
    e3 = policy_information(rng.choice([-1.0, 1.0], n) * gt.sample_bradley_terry(n, 2.0, rng), "fit")
    assert e3.ci[0] <= 0 <= e3.ci[1]
    assert e3.controls["permuted"].ci[0] <= 0 <= e3.controls["permuted"].ci[1]
