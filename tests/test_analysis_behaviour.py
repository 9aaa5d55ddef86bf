"""E2 (swap-order rationale information) measured with our LM extraction on a trained tiny rationale model
(tests/data/rationale_model, made by tests/scripts/make_rationale_model.py): it rises with the fraction of
informative rationales, falls with misleading ones, stays below the generator's Shannon value
(1-u)(log 2 - h(eps)) and log 2, and the shuffled and vacuous controls agree (about 0)."""
import math
from pathlib import Path

import pytest

from rdpo_jax.analysis import swap_information
from rdpo_jax.analysis.lm import rationale_logps
from rdpo_jax.data import SyntheticTask, synthetic_tokenizer
from rdpo_jax.data.synthetic import rationale_information
from rdpo_jax.models import load_hf

MODEL = Path(__file__).resolve().parent / "data" / "rationale_model"


@pytest.fixture(scope="module")
def measure():
    model, tok = load_hf(MODEL), synthetic_tokenizer()

    def e2(u, eps, n=256):
        examples = SyntheticTask(task="colour", u=u, eps=eps).examples(n, seed=123)
        lp = rationale_logps(model, tok, examples, template="conversational",
                             conditions=("rationale", "vacuous", "shuffled"))
        return swap_information(lp.delta(), "fit", vacuous=lp.delta("vacuous"), shuffled=lp.delta("shuffled"),
                                n_boot=1000, seed=0)

    return e2


def test_e2_tracks_rationale_informativeness(measure):
    full, half, none, misleading = measure(0.0, 0.0), measure(0.5, 0.0), measure(1.0, 0.0), measure(0.0, 0.3)
    print(f"\nE2 nats: u=0 {full.nats:.3f} {full.ci}, u=0.5 {half.nats:.3f}, u=1 {none.nats:.3f}, "
          f"eps=0.3 {misleading.nats:.3f}")
    assert full.ci[0] > half.nats > none.nats                  # more informative rationales, more information
    assert abs(none.nats) < 0.02                                # all vacuous: about nothing (out-of-fold fit)
    assert misleading.nats < full.ci[0]                         # misleading rationales lower it
    for est, u, eps in ((full, 0.0, 0.0), (half, 0.5, 0.0), (misleading, 0.0, 0.3)):
        assert est.nats <= math.log(2)
        assert est.ci[0] <= rationale_information(u, eps) + 1e-9  # usable information <= Shannon
    assert half.ci[0] > 0.0


def test_shuffled_and_vacuous_controls_agree(measure):
    est = measure(0.0, 0.0)
    shuffled, vacuous = est.controls["shuffled"].nats, est.controls["vacuous"].nats
    assert abs(shuffled - vacuous) < 0.05
    assert est.contrasts["rationale - vacuous"].ci[0] > 0.3
