"""`rdpo-jax analyze` on tiny checkpoints: report numbers equal the library calls on the same arrays."""
import json

import numpy as np
import pytest

from rdpo_jax.analysis import information_gain, policy_information, swap_information
from rdpo_jax.analysis.command import synthetic_set
from rdpo_jax.analysis.lm import policy_margins, rationale_logps
from rdpo_jax.cli import main
from rdpo_jax.data import synthetic_tokenizer
from rdpo_jax.models import load_hf
from rdpo_jax.tiny import tiny_models


@pytest.fixture(scope="session")
def tiny(tiny_default):
    """The session's tiny SFT / RDPO / DPO checkpoints (tiny_models finds them and trains nothing)."""
    return tiny_models(tiny_default[0])


def test_analyze_report_matches_library(tiny, tmp_path):
    out = tmp_path / "analysis"
    argv = ["analyze", str(tiny["rdpo"]), "--compare", str(tiny["dpo"]), "--reference", str(tiny["sft"]),
            "--labels", "rdpo", "dpo", "--n", "48", "--u", "0.3", "--eps", "0.1", "--n-boot", "200",
            "--template", "conversational", "--beta", "0.5", "--out", str(out),
            "--curve", "rdpo", "8", str(tiny["rdpo"]), "--curve", "dpo", "8", str(tiny["dpo"])]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    for name in ("per_example.png", "by_kind.png", "curve.png"):
        assert (out / name).stat().st_size > 1000
    examples, kinds, shannon = synthetic_set("colour", u=0.3, eps=0.1, n=48, seed=1)
    assert rep["kinds"] == kinds and rep["shannon"]["I(W;V)"] == pytest.approx(shannon["I(W;V)"])
    tok = synthetic_tokenizer()
    policy, ref = load_hf(str(tiny["rdpo"])), load_hf(str(tiny["sft"]))
    h_r = policy_margins(policy, tok, examples, reference=ref, beta=0.5)["margins"]
    h_d = policy_margins(load_hf(str(tiny["dpo"])), tok, examples, reference=ref, beta=0.5)["margins"]
    np.testing.assert_allclose(rep["E3"]["rdpo"]["margins"], h_r, rtol=1e-6, atol=1e-6)
    e3 = policy_information(h_r, "fit", n_boot=200, seed=0)
    assert rep["E3"]["rdpo"]["nats"] == pytest.approx(e3.nats, abs=1e-6)
    assert rep["E3"]["rdpo"]["ci_nats"] == pytest.approx(list(e3.ci), abs=1e-6)
    gain = information_gain(h_r, h_d, "fit", labels=("rdpo", "dpo"), n_boot=200, seed=0)
    assert rep["E3_gain"]["rdpo - dpo"]["nats"] == pytest.approx(gain.nats, abs=1e-6)
    lp = rationale_logps(policy, tok, examples, template="conversational", shuffle_seed=0)
    e2 = swap_information(lp.delta(), "fit", vacuous=lp.delta("vacuous"), shuffled=lp.delta("shuffled"),
                          n_boot=200, seed=0)
    assert rep["E2"]["nats"] == pytest.approx(e2.nats, abs=1e-6)
    assert rep["E2"]["contrasts"]["rationale - vacuous"]["nats"] == pytest.approx(
        e2.contrasts["rationale - vacuous"].nats, abs=1e-6)
    em = swap_information(lp.delta("rationale_masked"), "fit", vacuous=lp.delta("vacuous_masked"),
                          shuffled=lp.delta("shuffled_masked"), n_boot=200, seed=0)
    assert rep["E2_masked"]["nats"] == pytest.approx(em.nats, abs=1e-6)
    ec = swap_information(lp.delta(), "fit", baseline=h_r, n_boot=200, seed=0)
    assert rep["E2_conditional"]["nats"] == pytest.approx(ec.nats, abs=1e-6)
    assert rep["E2"]["nats"] <= np.log(2) + 1e-9
    assert set(rep["by_kind"]["E2"]) <= {"informative", "misleading", "vacuous"}
    assert rep["E3_curve"]["rdpo"]["n_train"] == [8]


def test_analyze_reports_the_rows_it_dropped(tiny, tmp_path, capsys):
    examples, _, _ = synthetic_set("colour", n=24, seed=3)
    rows = [ex.to_dict() for ex in examples] + [{"prompt": "p", "chosen": "same", "rejected": "same"}]
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["analyze", str(tiny["rdpo"]), "--data", str(path), "--n", "24", "--n-boot", "100",
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"{path} [test]: 25 rows read, 24 kept, 1 skipped" in printed
    assert "identical: rows [24]" in printed
