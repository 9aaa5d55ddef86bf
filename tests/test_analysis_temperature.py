"""Fitted temperature (cross-fitted, out-of-fold) and the conditional (baseline) swap information."""

import itertools
import math

import numpy as np
import pytest
from scipy import optimize

from rdpo_jax.analysis import fit_temperature, policy_information, swap_information
from rdpo_jax.analysis.calibration import make_folds

LN2 = math.log(2.0)


def logsig(z):
    return -np.logaddexp(0.0, -z)


def erasure_llr(n, u, eps, rng):
    erased = rng.random(n) < u
    llr = math.log((1 - eps) / eps)
    return np.where(erased, 0.0, np.where(rng.random(n) < eps, -llr, llr))


def bt_oracle(n, s, rng):
    d = rng.normal(0, s, n)
    return np.where(rng.random(n) < 1 / (1 + np.exp(-d)), d, -d)


@pytest.mark.parametrize("t_true", [0.5, 3.0, 10.0])
def test_fit_recovers_known_temperature(t_true):
    rng = np.random.default_rng(int(t_true * 10))
    calibrated = bt_oracle(20_000, 2.0, rng)  # calibrated log-ratios: T = 1 is optimal
    t_hat = fit_temperature(t_true * calibrated)
    assert abs(t_hat / t_true - 1) < 0.05
    # out-of-fold estimate with a fitted T equals the calibrated estimate (within noise), a fixed T=1 is worse
    fitted = policy_information(t_true * calibrated, "fit", null=False)
    oracle = policy_information(calibrated, null=False)
    assert abs(fitted.nats - oracle.nats) < 0.01
    assert np.all(np.abs(fitted.fold_temperatures / t_true - 1) < 0.1)
    assert abs(fitted.temperature / t_true - 1) < 0.05
    if t_true != 1.0:
        assert policy_information(t_true * calibrated, null=False).nats < oracle.nats - 0.005


def test_fit_recovers_temperature_on_erasure_channel():
    rng = np.random.default_rng(0)
    delta = 4.0 * erasure_llr(20_000, 0.3, 0.15, rng)
    assert abs(fit_temperature(delta) / 4.0 - 1) < 0.05
    est = swap_information(delta, "fit")
    truth = 0.7 * (LN2 + 0.15 * math.log(0.15) + 0.85 * math.log(0.85))
    assert abs(est.nats - truth) < 4 * est.se


def test_cross_fitting_is_out_of_fold_and_matches_scipy_optimiser():
    """Recompute each fold's temperature with scipy on the training folds and the out-of-fold values."""
    rng = np.random.default_rng(3)
    n = 300
    delta = 2.5 * bt_oracle(n, 1.5, rng)
    est = swap_information(delta, "fit", n_folds=4, seed=7, n_boot=200)
    folds = make_folds(n, 4, 7)
    expected = np.empty(n)
    for k in range(4):
        train = folds.weights[k] > 0
        res = optimize.minimize_scalar(
            lambda a, tr=train: np.logaddexp(0, -a * delta[tr]).mean(), bounds=(0, 50), method="bounded",
            options={"xatol": 1e-10},
        )
        held = ~train
        expected[held] = LN2 + logsig(res.x * delta[held])
        np.testing.assert_allclose(1 / est.fold_temperatures[k], res.x, rtol=1e-5)
    np.testing.assert_allclose(est.per_example, expected, atol=1e-6)


def test_null_fit_never_overfits_in_sample_sense():
    """In-sample fitted log-loss is <= log 2 by construction; the out-of-fold estimate is not biased upward."""
    rng = np.random.default_rng(8)
    vals = []
    for _ in range(30):
        d = rng.normal(0, 3, 60)  # no information about the order
        vals.append(swap_information(d, "fit", n_boot=200).nats)
    assert np.mean(vals) <= 0.005


def conditional_truth(ua, ea, ub, eb):
    """I(W; B | A) = I(W; A, B) - I(W; A) for two erasure-flip channels, by exact enumeration."""

    def channel(u, e, r, w):
        return u if r == "?" else (1 - u) * ((1 - e) if r == w else e)

    def mi(pairs):  # pairs: function of w giving dict outcome->prob
        tot = 0.0
        outs = set(pairs(0)) | set(pairs(1))
        for o in outs:
            p0, p1 = pairs(0).get(o, 0.0), pairs(1).get(o, 0.0)
            for pw in (p0, p1):
                if pw > 0:
                    tot += 0.5 * pw * math.log(pw / (0.5 * (p0 + p1)))
        return tot

    outs = ["?", 0, 1]

    def a_only(w):
        return {ra: channel(ua, ea, ra, w) for ra in outs}

    def both(w):
        return {(ra, rb): channel(ua, ea, ra, w) * channel(ub, eb, rb, w) for ra, rb in itertools.product(outs, outs)}

    return mi(both) - mi(a_only)


def test_conditional_naive_bayes_exact_likelihoods():
    """Two conditionally independent signals: naive Bayes with exact LLRs is the exact posterior."""
    rng = np.random.default_rng(12)
    n = 20_000
    s0 = erasure_llr(n, 0.5, 0.1, rng)  # baseline signal A about the order
    delta = erasure_llr(n, 0.3, 0.2, rng)  # rationale signal B
    est = swap_information(delta, baseline=s0)
    truth = conditional_truth(0.5, 0.1, 0.3, 0.2)
    assert abs(est.nats - truth) < 4 * est.se
    np.testing.assert_allclose(est.per_example, logsig(s0 + delta) - logsig(s0), atol=1e-12)
    base = est.controls["baseline"]
    assert abs(base.nats - 0.5 * (LN2 + 0.1 * math.log(0.1) + 0.9 * math.log(0.9))) < 4 * base.se


@pytest.mark.parametrize("combine", ["naive_bayes", "stacked"])
def test_conditional_fitted_recovers_truth_from_overconfident_scores(combine):
    rng = np.random.default_rng(13)
    n = 20_000
    s0 = 2.0 * erasure_llr(n, 0.5, 0.1, rng)
    delta = 3.0 * erasure_llr(n, 0.3, 0.2, rng)
    shuffled = rng.permutation(delta) * rng.choice([-1.0, 1.0], n)  # another pair: orientation random
    est = swap_information(delta, "fit", baseline=s0, combine=combine, shuffled=shuffled)
    truth = conditional_truth(0.5, 0.1, 0.3, 0.2)
    assert abs(est.nats - truth) < 4 * est.se + 0.003
    c = est.controls["shuffled"]
    assert c.ci[0] <= 0.002 and c.nats < 0.005  # a rationale from another example adds nothing
    if combine == "stacked":
        a, b = est.info["stacked_coefs"]
        np.testing.assert_allclose([a, b], [0.5, 1 / 3], rtol=0.05)
    else:
        np.testing.assert_allclose(est.info["baseline_temperature"], 2.0, rtol=0.05)
        np.testing.assert_allclose(est.temperature, 3.0, rtol=0.05)


def test_stacked_requires_fit_and_baseline():
    d = np.linspace(-1, 1, 50)
    with pytest.raises(ValueError, match="stacked"):
        swap_information(d, baseline=d, combine="stacked")
    with pytest.raises(ValueError, match="stacked"):
        swap_information(d, "fit", combine="stacked")
