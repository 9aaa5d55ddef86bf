"""Public API of rdpo_jax.analysis: result objects, input validation, curves and the data-efficiency ratio."""

import math

import numpy as np
import pytest

import rdpo_jax.analysis as an

LN2 = math.log(2.0)


def test_result_fields_and_repr():
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, 400)
    est = an.swap_information(d, vacuous=0.5 * d, shuffled=rng.normal(0, 1, 400))
    assert isinstance(est, an.InformationEstimate)
    np.testing.assert_allclose(est.nats, np.mean(LN2 - np.logaddexp(0, -d)), rtol=1e-12)
    np.testing.assert_allclose(est.bits, est.nats / LN2)
    assert est.per_example.shape == (400,)
    lo, hi = est.ci
    assert lo < est.nats < hi
    text = repr(est)
    for token in ("swap_information", "nats", "bits", "95% bca CI", "control vacuous", "rationale - shuffled"):
        assert token in text
    summary = est.to_dict()
    assert summary["bits"] == est.bits and "rationale - vacuous" in summary["contrasts"]
    assert an.pvi(np.log([0.9, 0.6, 0.7]), np.log([0.5, 0.5, 0.5]), n_boot=200).n == 3


def test_ci_level_and_percentile_options():
    rng = np.random.default_rng(1)
    m = rng.normal(1.0, 2.0, 500)
    wide = an.policy_information(m, ci_level=0.99, method="percentile", null=False)
    narrow = an.policy_information(m, ci_level=0.5, method="percentile", null=False)
    assert wide.ci[0] < narrow.ci[0] < narrow.ci[1] < wide.ci[1]
    assert "99% percentile CI" in repr(wide)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: an.pvi(np.zeros(3), np.zeros(4)), r"`logp_base` has shape \(4,\) but `logp_full` has shape \(3,\)"),
        (lambda: an.pvi(np.array([-0.1, np.nan]), np.zeros(2)), r"`logp_full` \(shape \(2,\)\) has 1 non-finite"),
        (lambda: an.pvi(np.array([0.5, -1.0]), np.zeros(2)), r"`logp_full`.*log-probabilities"),
        (lambda: an.swap_information(np.array([])), r"`delta` is empty \(shape \(0,\)\)"),
        (lambda: an.swap_information(np.zeros((2, 3))), r"`delta` must have shape \(n,\).*\(2, 3\)"),
        (lambda: an.swap_information(np.zeros(3), vacuous=np.zeros(2)), r"`vacuous` has shape \(2,\)"),
        (lambda: an.swap_information(np.zeros(3), shuffled=[1, np.inf, 0]), r"`shuffled`.*non-finite"),
        (lambda: an.swap_information(np.zeros(3), baseline=np.zeros(5)), r"`baseline` has shape \(5,\)"),
        (lambda: an.swap_information(np.zeros(3), temperature=-1), "temperature"),
        (lambda: an.swap_information(np.zeros(3), temperature="auto"), "temperature"),
        (lambda: an.policy_information(np.zeros(3), method="bc"), "method"),
        (lambda: an.policy_information(np.zeros(3), n_boot=10), "n_boot"),
        (lambda: an.policy_information(np.zeros(3), ci_level=95), "ci_level"),
        (lambda: an.policy_information(np.zeros(3), seeds=[0, 1]), r"`seeds`.*\(3,\)"),
        (lambda: an.policy_information(np.ones(6), "fit"), "at least 10 examples per run"),
        (lambda: an.information_gain(np.zeros(3), np.zeros(4)), r"`margins_b` has shape \(4,\)"),
    ],
)
def test_validation_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pvi_null_control_and_scalar_base():
    rng = np.random.default_rng(2)
    n = 3000
    w = rng.integers(0, 2, n)
    x = np.where(rng.random(n) < 0.8, w, 1 - w)  # feature agrees with the label 80% of the time
    logq = np.log(np.where(x == w, 0.8, 0.2))
    x_shuf = rng.permutation(x)
    logq_null = np.log(np.where(x_shuf == w, 0.8, 0.2))
    est = an.pvi(logq, math.log(0.5), null=logq_null)
    truth = LN2 + 0.8 * math.log(0.8) + 0.2 * math.log(0.2)
    assert abs(est.nats - truth) < 4 * est.se
    assert est.controls["null"].ci[1] >= -0.3 and est.controls["null"].nats < 0.02
    assert est.contrasts["full - null"].ci[0] > 0.1


def test_n_at_target_interpolates_in_log_n():
    n_train = [64, 256, 1024, 4096]
    info = [0.1, 0.2, 0.3, 0.4]
    # 0.25 lies halfway between 256 and 1024 in log N: sqrt(256 * 1024) = 512
    np.testing.assert_allclose(an.n_at_target(n_train, info, 0.25), 512.0)
    np.testing.assert_allclose(an.n_at_target(n_train, info, 0.25, log_n=False), 640.0)
    assert an.n_at_target(n_train, info, 0.05) == 64.0
    assert np.isinf(an.n_at_target(n_train, info, 0.5))
    # first crossing of a non-monotone curve
    np.testing.assert_allclose(an.n_at_target(n_train, [0.1, 0.3, 0.2, 0.4], 0.2), 128.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        an.n_at_target([64, 64, 128], [0.1, 0.2, 0.3], 0.1)


def test_curves_and_data_efficiency_ratio():
    """Policy a at N behaves like policy b at 4N: N_b / N_a at any reachable target is about 4."""
    rng = np.random.default_rng(6)
    n = 12_000
    d = rng.normal(0, 3.0, n)
    m = np.where(rng.random(n) < 1 / (1 + np.exp(-d)), d, -d)  # oracle margins on held-out pairs
    n_train = np.array([64, 256, 1024, 4096, 16384])

    def margins(quality, noise):  # noisier margins for less data; quality grows with log N
        return [m + (10.0 / q) * noise for q in quality]

    q = np.log2(n_train / 32)  # 1, 3, 5, 7, 9; a at N is distributed like b at 4N (independent noise)
    curve_a = an.information_curve(n_train, margins(q + 2, rng.normal(0, 1, n)), "fit", n_boot=1000)
    curve_b = an.information_curve(n_train, margins(q, rng.normal(0, 1, n)), "fit", n_boot=1000)
    assert np.all(np.diff(curve_a.nats) > 0) and np.all(curve_a.nats > curve_b.nats)
    target = float(curve_b.nats[2])  # b reaches it exactly at N = 1024
    ratio = an.data_efficiency_ratio(curve_a, curve_b, target)
    np.testing.assert_allclose(ratio.n_b, 1024.0, rtol=1e-9)
    np.testing.assert_allclose(ratio.ratio, 4.0, rtol=0.25)
    assert ratio.ci[0] <= ratio.ratio <= ratio.ci[1] and ratio.ci[0] <= 4.0 <= ratio.ci[1]
    assert ratio.ci[0] > 2.0 and ratio.frac_undefined < 0.05
    assert "N_b/N_a" in repr(ratio) and "InformationCurve" in repr(curve_a)


@pytest.mark.parametrize("call,match", [
    (lambda: an.policy_information(np.zeros(3), nboot=500), r"policy_information\(\) got unexpected keyword "
                                                                 r"argument\(s\) nboot; its interval options are "
                                                                 r"n_folds, ci_level, n_boot, method, seed, seeds"),
    (lambda: an.pvi(np.zeros(3), np.zeros(3), n_folds=3), r"pvi\(\) got unexpected keyword argument\(s\) "
                                                             r"n_folds; its interval options are ci_level, n_boot"),
])
def test_unknown_interval_options_are_type_errors_naming_the_accepted_ones(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_interval_options_are_defined_once_with_their_defaults():
    """Every estimator takes the same interval keywords, with the defaults of `INTERVAL_DEFAULTS`: the
    default call equals the call that spells them out."""
    from rdpo_jax.analysis.estimators import INTERVAL_DEFAULTS, IntervalOptions

    assert list(INTERVAL_DEFAULTS) == list(IntervalOptions.__annotations__)
    m = np.random.default_rng(2).normal(1.0, 2.0, 60)
    spelled = an.policy_information(m, "fit", **INTERVAL_DEFAULTS)
    default = an.policy_information(m, "fit")
    assert spelled.ci == default.ci and spelled.nats == default.nats
    assert an.policy_information(m, "fit", n_folds=3).ci != default.ci  # the option reaches the estimator
