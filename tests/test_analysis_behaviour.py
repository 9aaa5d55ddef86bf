"""E2 (swap-order rationale information) measured with our LM extraction on a trained tiny rationale model
(tests/data/rationale_model, made by tests/scripts/make_rationale_models.py: SFT on colour and parity pairs
with content rationales that follow the label, leaky "response above/below wins" ones that follow the truth,
and a quarter of them with slot and label words masked).

On 256 held-out pairs, with a fitted temperature, E2 rises with the fraction of informative rationales, falls
with misleading ones and with label noise, stays below the generator's Shannon value and log 2; shuffled and
vacuous rationales agree; masking slot and label words collapses the leaky template only; and on the parity
task the rationale carries usable information beyond the responses although its Shannon value given them is 0.
"""
import dataclasses
import math
from pathlib import Path

import pytest

from rdpo_jax.analysis import swap_information
from rdpo_jax.analysis._pointwise import PINNED, ZERO_WIDTH
from rdpo_jax.analysis.command import analyze, synthetic_set
from rdpo_jax.analysis.lm import rationale_logps
from rdpo_jax.data import SyntheticTask, synthetic_tokenizer
from rdpo_jax.models import load_hf

DATA = Path(__file__).resolve().parent / "data"
MODEL = DATA / "rationale_model"
N = 256
#: A baseline rationale in the leaky template's own style: its swap score Δ(b) is the model's judgement of
#: which response is better (docs/spec.md section 5).
JUDGE = "response above wins"


@pytest.fixture(scope="module")
def tok():
    return synthetic_tokenizer()


@pytest.fixture(scope="module")
def colour_model():
    return load_hf(MODEL)


def _logps(model, tok, task: SyntheticTask, conditions, **kw):
    return rationale_logps(model, tok, task.examples(N, seed=123), template="conversational",
                           conditions=conditions, **kw)


def _e2(delta, **kw):
    return swap_information(delta, "fit", n_boot=1000, seed=0, **kw)


@pytest.fixture(scope="module")
def measure(colour_model, tok):
    def e2(**task):
        lp = _logps(colour_model, tok, SyntheticTask(task="colour", **task), ("rationale", "vacuous", "shuffled"))
        return _e2(lp.delta(), vacuous=lp.delta("vacuous"), shuffled=lp.delta("shuffled"))

    return e2


def test_e2_tracks_rationale_informativeness(measure):
    full, half, none, misleading = measure(u=0.0), measure(u=0.5), measure(u=1.0), measure(eps=0.3)
    print(f"\nE2 nats: u=0 {full.nats:.3f} {full.ci}, u=0.5 {half.nats:.3f}, u=1 {none.nats:.3f}, "
          f"eps=0.3 {misleading.nats:.3f}")
    assert full.ci[0] > half.ci[1] and half.ci[0] > none.nats   # more informative rationales, more information
    assert abs(none.nats) < 0.02                                # all vacuous: about nothing (out-of-fold fit)
    assert misleading.ci[1] < half.ci[0]                        # misleading rationales lower it
    for est, task in ((full, SyntheticTask(u=0.0)), (half, SyntheticTask(u=0.5)), (misleading, SyntheticTask(eps=0.3))):
        assert est.nats <= math.log(2)
        assert est.ci[0] <= task.information() + 1e-9           # usable information <= Shannon


def test_e2_falls_with_label_noise(measure):
    """Rationales that follow the truth disagree with noisy labels: I(W;V) = log 2 - h(eta) at u = eps = 0."""
    est = {eta: measure(eta=eta, rationale_follows="truth") for eta in (0.0, 0.2, 0.4)}
    print("\nE2 nats by label noise: " + ", ".join(f"eta={k} {v.nats:.3f} {v.ci}" for k, v in est.items()))
    assert est[0.0].ci[0] > est[0.2].ci[1] and est[0.2].ci[0] > est[0.4].nats
    for eta, e in est.items():
        shannon = SyntheticTask(eta=eta, rationale_follows="truth").information()
        assert e.ci[0] <= shannon + 1e-9 and e.nats <= math.log(2)
    assert est[0.2].ci[0] > 0.0


def test_shuffled_and_vacuous_controls_agree(measure):
    est = measure(u=0.0)
    shuffled, vacuous = est.controls["shuffled"].nats, est.controls["vacuous"].nats
    print(f"\nshuffled {shuffled:.4f}, vacuous {vacuous:.4f}")
    assert abs(shuffled) < 0.02 and abs(vacuous) < 0.02 and abs(shuffled - vacuous) < 0.02
    assert est.contrasts["rationale - vacuous"].ci[0] > 0.4


def test_masking_collapses_the_leaky_template_only(colour_model, tok):
    """Leaky rationales name the slot ("response above wins"): large E2, nothing left once slot and label
    words are masked. Content rationales name the response's content, which masking leaves in place."""
    conds = ("rationale", "rationale_masked")
    leaky = _logps(colour_model, tok, SyntheticTask(wording="leaky"), conds)
    content = _logps(colour_model, tok, SyntheticTask(wording="content"), conds)
    e = {name: (_e2(lp.delta()), _e2(lp.delta("rationale_masked"))) for name, lp in (("leaky", leaky),
                                                                                   ("content", content))}
    print("\n" + ", ".join(f"{k}: E2 {a.nats:.3f} masked {b.nats:.3f}" for k, (a, b) in e.items()))
    assert e["leaky"][0].ci[0] > 0.05 and abs(e["leaky"][1].nats) < 0.03
    assert e["content"][0].ci[0] > 0.5 and e["content"][1].ci[0] > 0.5


@pytest.fixture(scope="module")
def parity_report(tok):
    """``analyze`` on the parity model with the judge as the baseline rationale (no reference policy)."""
    examples, kinds, shannon = synthetic_set("parity", parity_bits=4, n=N, seed=123)
    return analyze(MODEL, examples=examples, kinds=kinds, shannon=shannon, tokenizer=tok,
                   template="conversational", vacuous=JUDGE, n_boot=1000, plots=False)


def test_parity_conditional_usable_information(parity_report, colour_model, tok):
    """Parity: the responses determine the preference (Shannon I(W;V|C) = 0), but the small model cannot
    compute a 4-bit parity, so its own judgement Δ(b) carries about nothing and the rationale, which states
    the parity, carries usable information beyond the responses. On the colour task the same model judges
    well (the contrast that makes this V-information rather than Shannon information)."""
    r = parity_report
    assert r["shannon"]["I(W;V|C)"] == 0.0 and r["vacuous_rationale"] == JUDGE
    judge, cond, e2 = r["E2"]["controls"]["vacuous"], r["E2_conditional"], r["E2"]
    colour_judge = _e2(_logps(colour_model, tok, SyntheticTask(), ("vacuous",), vacuous=JUDGE).delta("vacuous"))
    print(f"\nparity: judge {judge['nats']:.3f}, E2 {e2['nats']:.3f}, conditional {cond['nats']:.3f} "
          f"{cond['ci_nats']}; colour judge {colour_judge.nats:.3f}")
    assert abs(judge["nats"]) < 0.03                      # the model cannot tell the better parity response
    assert colour_judge.ci[0] > 0.05                      # ... but can (somewhat) tell the better colour one
    assert cond["baseline"] == "vacuous" and cond["ci_nats"][0] > 0.5
    # a masked parity rationale ("the red fox has odd zaps so it -") still names the response: the
    # information survives masking
    assert r["E2_masked"]["ci_nats"][0] > 0.5


def test_constant_and_vacuous_rationales_give_contrasts_covering_zero(colour_model, tok):
    """One constant rationale for every pair ("the response above is better") against the vacuous control, on
    parity pairs the model cannot judge: neither carries information about which response is better, so in at
    least 19 of 20 held-out sets every contrast's interval covers 0 (17 of 20 before the bootstrap refitted the
    temperature); shuffling a constant rationale changes nothing: an exact 0, flagged as at its boundary."""
    n, sets = 128, 20
    examples = [dataclasses.replace(e, rationale="the response above is better")
                for seed in range(sets) for e in SyntheticTask(task="parity").examples(n, seed=1000 + seed)]
    lp = rationale_logps(colour_model, tok, examples, template="conversational", batch_size=256,
                         conditions=("rationale", "vacuous", "shuffled"))  # a constant, shuffled, is itself
    covered, flagged = 0, 0
    for seed in range(sets):
        part = slice(seed * n, (seed + 1) * n)
        est = swap_information(lp.delta()[part], "fit", vacuous=lp.delta("vacuous")[part],
                               shuffled=lp.delta("shuffled")[part], n_boot=1000, seed=seed)
        covered += all(c.contains(0.0) for c in est.contrasts.values())
        flagged += est.contrasts["rationale - shuffled"].boundary in (ZERO_WIDTH, PINNED)
    print(f"\nconstant vs vacuous: contrasts cover 0 in {covered} of 20 held-out sets")
    assert covered >= 19 and flagged == 20
