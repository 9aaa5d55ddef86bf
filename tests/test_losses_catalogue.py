"""Losses II against float64 numpy formulas written from the papers (tests/reference_losses.py): every DPO
loss type of TRL 1.16, f-divergences, LD-DPO, WPO, R-DPO, combinations, SimPO/CPO forms and the rationale
term on any loss; closed forms at h = 0; finite values and gradients at the extremes and for padding."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdpo_jax.losses import DPO_LOSS_TYPES, LOSSES, SequenceLogps, compute_loss, mask_pairs
from tests import reference_losses as ref
from tests.test_losses import adversarial_inputs, random_inputs, to_logps

EPS_TYPES = {"exo_pair": 0.05, "robust": 0.1, "aot": 0.2, "aot_unpaired": 0.1, "sigmoid": 0.15}
F_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop")


def _with_extras(x, rng):
    """random_inputs plus prefix sums (a share of each sum) and WPO weighting sums."""
    b = len(x["chosen"])
    for side in ("chosen", "rejected"):
        share = rng.uniform(0.2, 1.0, b)
        x[f"{side}_prefix"] = x[side] * share
        x[f"ref_{side}_prefix"] = x[f"ref_{side}"] * share
        x[f"{side}_weighting"] = -x[f"{side}_tokens"] * rng.uniform(0.0, 0.5, b)
    return x


def _hp(loss_type):
    hp = {"loss_type": loss_type, "beta": 0.3}
    if loss_type in EPS_TYPES:
        hp["label_smoothing"] = EPS_TYPES[loss_type]
    return hp


def _np(x, loss_type, **kw):
    return ref.dpo_type(loss_type, x["chosen"], x["rejected"], x["chosen_tokens"], x["rejected_tokens"],
                        x["ref_chosen"], x["ref_rejected"], **kw)


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_every_dpo_type_matches_the_numpy_formula(loss_type):
    x = random_inputs(np.random.default_rng(1), 48)
    hp = _hp(loss_type)
    got, metrics = jax.jit(lambda v: LOSSES["dpo"](v, **hp))(to_logps(x))
    want = _np(x, loss_type, beta=0.3, eps=hp.get("label_smoothing", 0.0))
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(metrics["rewards/chosen"], 0.3 * (x["chosen"] - x["ref_chosen"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("f", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("loss_type", F_TYPES)
def test_f_divergences_match_the_numpy_formula(f, loss_type):
    x = random_inputs(np.random.default_rng(2), 32)
    for k in ("ref_chosen", "ref_rejected"):  # log-ratios of order 1: the f-scores are not saturated
        x[k] = x[k.removeprefix("ref_")] + np.random.default_rng(3).normal(0, 1.0, 32)
    hp = {**_hp(loss_type), "f_divergence_type": f}
    if f == "alpha_divergence":
        hp["f_alpha_divergence_coef"] = 0.3
    got, _ = LOSSES["dpo"](to_logps(x), **hp)
    want = _np(x, loss_type, beta=0.3, eps=hp.get("label_smoothing", 0.0), f=f, alpha=0.3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=5e-5, atol=5e-5)


def test_alpha_divergence_at_one_is_reverse_kl_and_at_zero_is_forward_kl():
    x = to_logps(random_inputs(np.random.default_rng(4), 16))
    base, _ = LOSSES["dpo"](x)
    one, _ = LOSSES["dpo"](x, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0)
    zero, _ = LOSSES["dpo"](x, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.0)
    fwd, _ = LOSSES["dpo"](x, f_divergence_type="forward_kl")
    np.testing.assert_array_equal(one, base)
    np.testing.assert_allclose(zero, fwd, rtol=1e-6)


def test_closed_forms_at_zero_margin():
    """rho_w = rho_l = 0 (policy = reference) and equal responses: each type's value from its formula."""
    z = np.zeros(2)
    x = SequenceLogps(chosen=jnp.array([-5.0, -7.0]), rejected=jnp.array([-5.0, -7.0]),
                      chosen_tokens=jnp.array([5, 7]), rejected_tokens=jnp.array([5, 7]),
                      ref_chosen=jnp.array([-5.0, -7.0]), ref_rejected=jnp.array([-5.0, -7.0]))
    beta, eps, ln2 = 0.25, 0.1, math.log(2.0)
    closed = {
        "sigmoid": ln2, "hinge": 1.0, "ipo": (1 / (2 * beta)) ** 2, "nca_pair": 2 * ln2, "bco_pair": 2 * ln2,
        "sppo_hard": 2 * (1 / (2 * beta)) ** 2, "aot": ln2, "aot_unpaired": ln2, "apo_zero": 1.0, "apo_down": 1.0,
        "discopop": (ln2 + 1) / 2, "sft": 1.0, "sigmoid_norm": ln2, "robust": ln2,
        "exo_pair": 0.5 * (math.log(0.5) - math.log(1 - eps)) + 0.5 * (math.log(0.5) - math.log(eps)),
    }
    assert set(closed) == set(DPO_LOSS_TYPES)
    for t, want in closed.items():
        hp = {"loss_type": t, "beta": beta}
        if t in ("exo_pair", "robust"):
            hp["label_smoothing"] = eps
        got, _ = LOSSES["dpo"](x, **hp)
        np.testing.assert_allclose(np.asarray(got), z + want, rtol=1e-6, err_msg=t)
    # robust at h = 0: ((1-eps) - eps) ln2 / (1 - 2 eps) = ln2, as listed.


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_finite_values_and_gradients_at_extremes_and_padding(loss_type):
    x = adversarial_inputs()
    hp = _hp(loss_type)
    mask = jnp.array([True] * 6 + [False, True])
    lp = to_logps(x)

    def total(v):
        loss, _ = compute_loss("dpo", v, mask, **hp)
        return loss

    value, grads = jax.jit(jax.value_and_grad(total))(lp)
    assert np.isfinite(float(value)), loss_type
    for field, g in grads._asdict().items():
        if g is not None:
            assert np.all(np.isfinite(np.asarray(g))), (loss_type, field)


@pytest.mark.parametrize("f", ["forward_kl", "alpha_divergence"])
def test_f_divergence_exponents_are_capped_to_finite_values(f):
    """|rho| = 1e4: e^{-rho} overflows float32; the cap (e^40) keeps every loss finite, the square of IPO too."""
    x = SequenceLogps(chosen=jnp.array([-1e4, 0.0]), rejected=jnp.array([0.0, -1e4]),
                      chosen_tokens=jnp.array([1.0, 1.0]), rejected_tokens=jnp.array([1.0, 1.0]),
                      ref_chosen=jnp.array([0.0, 0.0]), ref_rejected=jnp.array([0.0, 0.0]))
    for t in ("sigmoid", "ipo", "hinge", "discopop"):
        loss, grads = jax.value_and_grad(lambda v, t=t: LOSSES["dpo"](v, loss_type=t, f_divergence_type=f)[0].sum())(x)
        assert np.isfinite(float(loss)) and np.isfinite(np.asarray(grads.chosen)).all(), (f, t)
    np.testing.assert_allclose(float(ref.f_score(-1e4, "forward_kl")), 1 - math.exp(40.0))


def test_discopop_takes_its_limit_instead_of_zero_times_infinity():
    """At x = beta Delta = -1e4, (1-mu) log(1+e^-x) + mu e^-x -> 1e4: mu e^-x = e^{x (1/tau - 1)} -> 0."""
    x = SequenceLogps(chosen=jnp.array([-1e5]), rejected=jnp.array([0.0]), chosen_tokens=jnp.array([1]),
                      rejected_tokens=jnp.array([1]), ref_chosen=jnp.array([0.0]), ref_rejected=jnp.array([0.0]))
    got, _ = LOSSES["dpo"](x, loss_type="discopop", beta=0.1)
    np.testing.assert_allclose(np.asarray(got), [1e4], rtol=1e-6)
    with np.errstate(over="ignore", invalid="ignore"):  # the plain product is 0 x inf = NaN there
        assert np.isnan(ref.sigmoid(-1e4 / 0.05) * np.exp(np.float64(1e4)))


def test_aot_sorts_over_the_real_pairs_of_the_micro_batch():
    x = random_inputs(np.random.default_rng(5), 10)
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], bool)
    for t in ("aot", "aot_unpaired"):
        per_pair, _ = LOSSES["dpo"](mask_pairs(to_logps(x), jnp.asarray(mask)), loss_type=t)
        want = _np({k: np.where(mask, v, 0.0) for k, v in x.items()}, t, mask=mask)
        np.testing.assert_allclose(np.asarray(per_pair)[mask], want[mask], rtol=1e-5)
        loss, _ = compute_loss("dpo", to_logps(x), jnp.asarray(mask), loss_type=t)
        np.testing.assert_allclose(float(loss), want[mask].mean(), rtol=1e-5)


def test_aot_micro_batches_are_not_one_large_batch():
    """The documented exception to exact accumulation: sorting within each micro-batch differs from sorting all."""
    x = to_logps(random_inputs(np.random.default_rng(15), 8))
    x = x._replace(ref_chosen=x.ref_chosen[::-1])  # reference margins in another order than the policy's
    whole = float(LOSSES["dpo"](x, loss_type="aot")[0].sum())
    halves = sum(float(LOSSES["dpo"](jax.tree.map(lambda v, s=s: v[s], x), loss_type="aot")[0].sum())
                 for s in (slice(0, 4), slice(4, 8)))
    assert abs(whole - halves) > 1e-3


def test_ld_dpo_weights_the_tail_by_alpha():
    rng = np.random.default_rng(6)
    x = _with_extras(random_inputs(rng, 24), rng)
    got, m = LOSSES["dpo"](to_logps(x), ld_alpha=0.4, beta=0.2)
    lw = {k: ref.ld(x[k], x[f"{k}_prefix"], 0.4) for k in ("chosen", "rejected", "ref_chosen", "ref_rejected")}
    want = ref.dpo_type("sigmoid", lw["chosen"], lw["rejected"], x["chosen_tokens"], x["rejected_tokens"],
                        lw["ref_chosen"], lw["ref_rejected"], beta=0.2)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    np.testing.assert_allclose(m["logps/chosen"], lw["chosen"], rtol=1e-5)
    full, _ = LOSSES["dpo"](to_logps(x), ld_alpha=1.0, beta=0.2)  # alpha = 1: plain DPO
    np.testing.assert_allclose(full, LOSSES["dpo"](to_logps(x), beta=0.2)[0], rtol=1e-5)
    with pytest.raises(ValueError, match="ld_alpha needs the policy's sums"):
        LOSSES["dpo"](to_logps(random_inputs(rng, 4)), ld_alpha=0.5)


def test_wpo_multiplies_each_member_by_the_pair_weight_without_gradient():
    rng = np.random.default_rng(7)
    x = _with_extras(random_inputs(rng, 24), rng)
    got, m = LOSSES["dpo"](to_logps(x), use_weighting=True, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    w = ref.wpo_weight(x["chosen_weighting"], x["rejected_weighting"], x["chosen_tokens"], x["rejected_tokens"])
    want = w * _np(x, "sigmoid") + 0.5 * w * _np(x, "sft")
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    np.testing.assert_allclose(m["wpo_weight"], w, rtol=1e-5)
    grads = jax.grad(lambda v: LOSSES["dpo"](v, use_weighting=True)[0].sum())(to_logps(x))
    assert not np.any(np.asarray(grads.chosen_weighting))


def test_a_combination_equals_the_weighted_sum_of_its_members():
    """MPO = sigmoid + bco_pair + sft with TRL's example weights; any list is the weighted sum."""
    x = to_logps(random_inputs(np.random.default_rng(8), 16))
    types, weights = ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]
    got, m = jax.jit(lambda v: LOSSES["dpo"](v, loss_type=types, loss_weights=weights))(x)
    members = [LOSSES["dpo"](x, loss_type=t)[0] for t in types]
    np.testing.assert_allclose(got, sum(w * v for w, v in zip(weights, members, strict=True)), rtol=1e-6)
    for t, v in zip(types, members, strict=True):
        np.testing.assert_allclose(m[f"loss/{t}"], v, rtol=1e-6)
    even, _ = LOSSES["dpo"](x, loss_type=("ipo", "hinge"))  # default weights 1
    np.testing.assert_allclose(even, LOSSES["dpo"](x, loss_type="ipo")[0] + LOSSES["dpo"](x, loss_type="hinge")[0],
                               rtol=1e-6)
    sft, _ = LOSSES["dpo"](x, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.7])  # = RPO's nll_weight
    np.testing.assert_allclose(sft, LOSSES["dpo"](x, nll_weight=0.7)[0], rtol=1e-6)


def test_r_dpo_length_penalty():
    x = random_inputs(np.random.default_rng(9), 16)
    got, _ = LOSSES["dpo"](to_logps(x), length_penalty=0.01)
    np.testing.assert_allclose(np.asarray(got), _np(x, "sigmoid", length_penalty=0.01), rtol=1e-5)


@pytest.mark.parametrize("hp", [{"loss_type": "hinge"}, {"label_smoothing": 0.1}, {"beta": 3.0},
                                {"loss_type": "hinge", "gamma_beta_ratio": 0.5}])
def test_simpo_forms(hp):
    x = random_inputs(np.random.default_rng(10), 16)
    got, _ = LOSSES["simpo"](to_logps(x), **hp)
    want = ref.simpo_form(x["chosen"], x["rejected"], x["chosen_tokens"], x["rejected_tokens"],
                          beta=hp.get("beta", 2.0), gamma_beta_ratio=hp.get("gamma_beta_ratio", 0.25),
                          loss_type=hp.get("loss_type", "sigmoid"), eps=hp.get("label_smoothing", 0.0))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


@pytest.mark.parametrize("hp", [{}, {"loss_type": "hinge", "beta": 0.01}, {"loss_type": "ipo", "beta": 0.5},
                                {"label_smoothing": 0.2, "cpo_alpha": 0.0}])
def test_cpo_forms(hp):
    x = random_inputs(np.random.default_rng(11), 16)
    got, _ = jax.jit(lambda v: LOSSES["cpo"](v, **hp))(to_logps(x)._replace(ref_chosen=None, ref_rejected=None))
    want = ref.cpo(x["chosen"], x["rejected"], x["chosen_tokens"], x["rejected_tokens"], beta=hp.get("beta", 0.1),
                   loss_type=hp.get("loss_type", "sigmoid"), eps=hp.get("label_smoothing", 0.0),
                   cpo_alpha=hp.get("cpo_alpha", 1.0))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_rationale_term_on_any_loss_and_the_presets():
    x = to_logps(random_inputs(np.random.default_rng(12), 16))
    # dpo + rationale_weight == rdpo, exactly, with each preset's own form and norm defaults
    np.testing.assert_array_equal(LOSSES["dpo"](x, rationale_weight=0.001)[0], LOSSES["rdpo"](x)[0])
    np.testing.assert_array_equal(LOSSES["dpo"](x, rationale_weight=0.05, loss_type="ipo")[0],
                                  LOSSES["rdpo"](x, gamma=0.05, loss_type="ipo")[0])
    np.testing.assert_array_equal(LOSSES["orpo"](x, rationale_weight=1.0)[0], LOSSES["rorpo"](x)[0])
    np.testing.assert_array_equal(LOSSES["simpo"](x, rationale_weight=0.5)[0], LOSSES["rsimpo"](x, gamma=0.5)[0])
    np.testing.assert_array_equal(LOSSES["rdpo"](x, rationale_weight=0.2)[0], LOSSES["rdpo"](x, gamma=0.2)[0])
    # the official RORPO's sigmoid form: -log sigma(gamma A_r)
    a_r = np.asarray(x.rationale, np.float64) / np.asarray(x.rationale_tokens)
    got = LOSSES["rorpo"](x, rationale_form="sigmoid", gamma=2.0)[0] - LOSSES["orpo"](x)[0]
    np.testing.assert_allclose(got, -ref.log_sigmoid(2.0 * a_r), rtol=1e-5)
    # any other loss: a catalogue type, CPO
    base, m = LOSSES["dpo"](x, loss_type="bco_pair", rationale_weight=0.1, rationale_form="nll")
    np.testing.assert_allclose(base - LOSSES["dpo"](x, loss_type="bco_pair")[0], 0.1 * -np.asarray(x.rationale),
                               rtol=1e-5)
    assert "loss/rationale" in m
    cpo_r = LOSSES["cpo"](x, rationale_weight=1.0)[0] - LOSSES["cpo"](x)[0]
    np.testing.assert_allclose(cpo_r, -a_r, rtol=1e-5)


def test_wrong_combinations_are_errors_naming_the_keyword():
    x = to_logps(random_inputs(np.random.default_rng(13), 4))
    cases = [
        (dict(loss_type="exo_pair"), "label_smoothing=0.0 is outside the accepted range \\(0.0, 1.0\\)"),
        (dict(loss_type="bco_pair", label_smoothing=0.1), "label_smoothing=0.1 has no effect on loss_type"),
        (dict(loss_type="bco_pair", f_divergence_type="forward_kl"), "not defined for loss_type bco_pair"),
        (dict(loss_type="aot", use_weighting=True), "use_weighting .WPO. cannot weight loss_type aot"),
        (dict(discopop_tau=0.1), "discopop_tau=0.1 has no effect"),
        (dict(f_alpha_divergence_coef=0.3), "f_alpha_divergence_coef=0.3 has no effect"),
        (dict(loss_type=["sigmoid", "ipo"], loss_weights=[1.0]), "loss_weights has 1 entries for 2"),
        (dict(loss_type=["sigmoid", "sigmoid"]), "lists a type twice"),
        (dict(loss_type=[]), "loss_type is empty"),
        (dict(loss_type="ipo", length_penalty=0.1), "length_penalty .R-DPO. applies to loss_type 'sigmoid'"),
        (dict(ld_alpha=1.5), "ld_alpha=1.5 is outside"),
        (dict(rationale_form="nll"), "rationale_form has no effect without rationale_weight"),
    ]
    for hp, match in cases:
        with pytest.raises(ValueError, match=match):
            LOSSES["dpo"](x, **hp)
    with pytest.raises(ValueError, match="give the rationale weight once"):
        LOSSES["rdpo"](x, gamma=0.1, rationale_weight=0.1)
    with pytest.raises(ValueError, match="label_smoothing applies to loss_type 'sigmoid', not 'hinge'"):
        LOSSES["simpo"](x, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(TypeError, match="Hint: dpo's rationale weight is `rationale_weight`"):
        LOSSES["dpo"](x, gamma=0.1)


def test_numeric_keywords_may_be_traced():
    """Values passed through jit (a sweep over beta, tau, eps) are not checked at trace time and do not fail."""
    x = random_inputs(np.random.default_rng(14), 8)
    fn = jax.jit(lambda v, b, tau, eps: LOSSES["dpo"](v, loss_type=["discopop", "sigmoid"], beta=b,
                                                      discopop_tau=tau, label_smoothing=eps)[0])
    got = fn(to_logps(x), 0.3, 0.1, 0.05)
    want = _np(x, "discopop", beta=0.3, tau=0.1) + _np(x, "sigmoid", beta=0.3, eps=0.05)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
