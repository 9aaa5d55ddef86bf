"""Regenerates tests/data/rationale_model, the tiny rationale model that tests/test_analysis_behaviour.py probes.

A tiny Llama (width 64, 2 layers) fine-tuned by SFT (conversational template) on chosen and rejected
responses and rationale conversations of 8,192 synthetic pairs, half colour and half parity (4 hidden bits),
10,000 steps (about 15 minutes on 2 CPU cores). The training is too long for every CI run, so the result
is kept in the repo (336 KB).

Per task, half the pairs have content rationales that follow the *label* (they name the chosen response,
which sits in the model's own turn, so they teach a position association: "the rationale names the first
response"), half leaky ones ("response above wins" / "response below wins") that follow the *truth* (they
teach the model to judge which response is better, where it can). Both halves have u=0.3, eps=0.2 and label
noise eta=0.25, so the kind of rationale is independent of the slot order and of which response is good
(vacuous and shuffled rationales carry no order prior). A quarter of the rationales have the conversational
template's slot and label words masked, so that masked rationales are not out of distribution for the
model (RoRa trains its evaluator on masked rationales for the same reason).

What did not work (measured with the behaviour tests' probes):
- content rationales only, 1,500 steps: nothing order-dependent is learnt (Δ about 0.001 nats);
- the parity task alone, 4,000 steps: nothing order-dependent is learnt either; with the colour task in the
  same run, the copying skill transfers;
- no masked rationales in training: the end-of-turn token after a placeholder gets order-dependent noise of
  about ±10 nats, which erases the information left in a masked content rationale (0.69 -> 0.03 nats);
- the same recipe with seed 0 and 8,000 steps learnt no colour judgement (E2 of leaky rationales 0.002); how
  well a model this small learns to judge varies from run to run.

usage: python tests/scripts/make_rationale_models.py [--runs DIR] [--target DIR] [--set KEY=VALUE ...]
"""
import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                                   "--xla_cpu_enable_concurrency_optimized_scheduler=false")

import numpy as np  # noqa: E402

from rdpo_jax.analysis.leakage import mask_rationale, mask_words_for  # noqa: E402
from rdpo_jax.config_loader import load_config  # noqa: E402
from rdpo_jax.data import SyntheticTask  # noqa: E402
from rdpo_jax.train.trainer import train  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
N_TRAIN = 4096

COMMON = [
    "train.objective=sft", "train.sft_rationales=true", "train.sft_rejected=true",
    "train.max_steps=10000", "train.epochs=100", "train.eval_every=0",
    "data.max_length=96", "data.max_prompt_length=48",
    "optim.lr=3e-3", "optim.schedule=cosine", "optim.warmup_steps=20", "optim.clip_norm=1.0", "optim.weight_decay=0.0",
    "model.tiny_hidden_size=64", "model.tiny_intermediate_size=128",
    "checkpoint.every=100000", "checkpoint.keep=1", "checkpoint.async_save=false",
    "logging.progress=false", "logging.tensorboard=false", "logging.plot=false",
]


def mixed_examples(task: str, parity_bits: int = 4, n: int = N_TRAIN, seed: int = 0,
                   masked_fraction: float = 0.0) -> list[dict]:
    """Half content/label-following, half leaky/truth-following pairs (module docstring), interleaved; a
    random ``masked_fraction`` of them with the conversational template's slot and label words masked."""
    kw = dict(task=task, u=0.3, eps=0.2, eta=0.25, parity_bits=parity_bits)
    content = SyntheticTask(wording="content", rationale_follows="label", **kw).examples(n // 2, seed=seed)
    leaky = SyntheticTask(wording="leaky", rationale_follows="truth", **kw).examples(n - n // 2, seed=seed + 1)
    rows = [ex for pair in zip(content, leaky, strict=True) for ex in pair]
    masked = np.random.default_rng(seed + 2).random(len(rows)) < masked_fraction
    words = mask_words_for("conversational")
    return [{"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected,
             "rationale": mask_rationale(ex.rationale, words) if m else ex.rationale}
            for ex, m in zip(rows, masked, strict=True)]


def overrides(run: Path) -> list[str]:
    """Writes the training pairs to ``run/train.jsonl``; the config overrides that train on them."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / "train.jsonl"
    rows = [r for pair in zip(*(mixed_examples(t, masked_fraction=0.25) for t in ("colour", "parity")), strict=True)
            for r in pair]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"data.source={path}", "data.eval_split=null", "data.tokenizer=synthetic", "train.seed=1"]


def make(runs: Path, extra: Sequence[str] = (), target: Path | None = None) -> Path:
    run = runs / "rationale_model"
    result = train(load_config(None, COMMON + overrides(run) + list(extra) + [f"output_dir={run}"]))
    target = target or DATA / "rationale_model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(result.hf_dir, target)
    print(f"wrote {target}")
    return target


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs", help="directory for the training run")
    ap.add_argument("--target", help="where the HF checkpoint goes (default tests/data/rationale_model)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    args = ap.parse_args()
    make(Path(args.runs), args.set, Path(args.target) if args.target else None)
