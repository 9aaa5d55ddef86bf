"""Bootstrap intervals: agreement with scipy's BCa / percentile, coverage, and the two-stage (seed) scheme."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from rdpo_jax.analysis import bootstrap_mean, policy_information, swap_information

LN2 = math.log(2.0)


def skewed_values(n, rng):
    """Per-example swap information of BT oracle margins: heavy left tail, like real PVI."""
    d = rng.normal(0, 3.0, n)
    m = np.where(rng.random(n) < 1 / (1 + np.exp(-d)), d, -d)
    return LN2 - np.logaddexp(0, -m)


@pytest.mark.parametrize("method,scipy_method", [("bca", "BCa"), ("percentile", "percentile")])
def test_interval_matches_scipy_bootstrap(method, scipy_method):
    rng = np.random.default_rng(0)
    x = skewed_values(150, rng)
    ours = bootstrap_mean(x, method=method, n_boot=20_000, seed=1)
    ref = stats.bootstrap(
        (x,), np.mean, method=scipy_method, n_resamples=20_000, confidence_level=0.95, rng=2
    ).confidence_interval
    width = ref.high - ref.low
    assert abs(ours.low[0] - ref.low) < 0.03 * width
    assert abs(ours.high[0] - ref.high) < 0.03 * width


def test_bca_differs_from_percentile_on_skewed_data():
    """Left-skewed values: BCa shifts both bounds down relative to the percentile interval."""
    rng = np.random.default_rng(1)
    x = skewed_values(60, rng)
    bca = bootstrap_mean(x, method="bca", n_boot=20_000, seed=3)
    pct = bootstrap_mean(x, method="percentile", n_boot=20_000, seed=3)
    assert bca.low[0] < pct.low[0] and bca.high[0] < pct.high[0]
    # acceleration check: for the mean, a = skewness / (6 sqrt(n)) with the plug-in skewness (Efron & Tibshirani)
    from rdpo_jax.analysis.bootstrap import _jackknife_acceleration

    c = x - x.mean()
    a_ref = (c**3).sum() / (6 * ((c**2).sum()) ** 1.5)
    np.testing.assert_allclose(_jackknife_acceleration(x[None, :], None)[0], a_ref, rtol=1e-10)


def bt_truth(s):
    def f(z):
        d = s * z
        p = 1 / (1 + math.exp(-d))
        hh = -(p * math.log(p) + (1 - p) * math.log1p(-p)) if 0 < p < 1 else 0.0
        return hh * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    return LN2 - integrate.quad(f, -12, 12, limit=200)[0]


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_coverage_over_replicates(method):
    """>= 90% of nominal-95% intervals cover the truth over 240 synthetic replicates (two tasks)."""
    rng = np.random.default_rng(42)
    n, reps_per_block, blocks = 300, 40, 3
    truth_bt = bt_truth(3.0)
    u, eps = 0.3, 0.1
    truth_ef = (1 - u) * (LN2 + eps * math.log(eps) + (1 - eps) * math.log(1 - eps))
    llr = math.log((1 - eps) / eps)
    covered_bt, covered_ef = [], []
    for b in range(blocks):
        vals = skewed_values(n * reps_per_block, rng).reshape(reps_per_block, n)
        res = bootstrap_mean(vals, method=method, n_boot=2000, seed=100 + b)
        covered_bt.append((res.low <= truth_bt) & (truth_bt <= res.high))
        erased = rng.random((reps_per_block, n)) < u
        delta = np.where(erased, 0.0, np.where(rng.random((reps_per_block, n)) < eps, -llr, llr))
        res = bootstrap_mean(LN2 - np.logaddexp(0, -delta), method=method, n_boot=2000, seed=200 + b)
        covered_ef.append((res.low <= truth_ef) & (truth_ef <= res.high))
    cov_bt, cov_ef = np.concatenate(covered_bt).mean(), np.concatenate(covered_ef).mean()
    assert cov_bt >= 0.90, cov_bt
    assert cov_ef >= 0.90, cov_ef
    assert cov_bt <= 0.995 and cov_ef <= 0.995  # not vacuously wide


def test_hierarchical_bootstrap_covers_seed_variance():
    """Runs with a random seed effect: the example-only bootstrap undercovers, the two-stage one does not."""
    rng = np.random.default_rng(9)
    n_runs, per_run, n_rep = 20, 30, 200
    groups = np.repeat(np.arange(n_runs), per_run)
    run_effect = rng.normal(0, 0.3, (n_rep, n_runs))
    vals = 0.2 + np.repeat(run_effect, per_run, axis=1) + rng.normal(0, 0.5, (n_rep, n_runs * per_run))
    hier = bootstrap_mean(vals, groups=groups, method="percentile", n_boot=2000, seed=1)
    flat = bootstrap_mean(vals, method="percentile", n_boot=2000, seed=1)
    cov_h = ((hier.low <= 0.2) & (0.2 <= hier.high)).mean()
    cov_f = ((flat.low <= 0.2) & (0.2 <= flat.high)).mean()
    assert cov_h >= 0.85, cov_h
    assert cov_f < 0.6, cov_f
    # the two-stage bootstrap s.d. matches the between-run standard error sd(run means) / sqrt(G)
    run_means = vals.reshape(n_rep, n_runs, per_run).mean(axis=2)
    se_ref = run_means.std(axis=1, ddof=1) / math.sqrt(n_runs)
    ratio = hier.replicates.std(axis=1) / se_ref
    assert 0.85 < np.median(ratio) < 1.05


def test_hierarchical_option_through_the_estimators():
    rng = np.random.default_rng(4)
    n_runs, per_run = 5, 400
    seeds = np.repeat([11, 22, 33, 44, 55], per_run)
    scale = np.repeat(np.array([0.2, 0.6, 1.5, 3.0, 8.0]), per_run)  # runs differ a lot
    d = rng.normal(0, 2.0, n_runs * per_run)
    m = np.where(rng.random(d.size) < 1 / (1 + np.exp(-d)), d, -d) * scale
    flat = policy_information(m, null=False)
    hier = policy_information(m, null=False, seeds=seeds)
    assert hier.n_runs == 5 and "runs=5" in repr(hier)
    assert flat.nats == hier.nats
    assert hier.ci[1] - hier.ci[0] > 1.3 * (flat.ci[1] - flat.ci[0])
    fit = policy_information(m, "fit", null=False, seeds=seeds)
    assert fit.fold_temperatures.shape == (5 * 5,)  # one temperature per (run, fold)


def test_seeded_and_paired():
    rng = np.random.default_rng(5)
    d = rng.normal(1.0, 2.0, 500)
    a = swap_information(d, seed=3)
    b = swap_information(d, seed=3)
    c = swap_information(d, seed=4)
    assert a.ci == b.ci and a.ci != c.ci
    np.testing.assert_array_equal(a.replicates, b.replicates)
    # paired contrast: its replicates are the differences of the two rows' replicates
    e = swap_information(d, vacuous=0.5 * d, seed=3)
    np.testing.assert_allclose(
        e.contrasts["rationale - vacuous"].replicates,
        e.replicates - e.controls["vacuous"].replicates,
        atol=1e-12,
    )
