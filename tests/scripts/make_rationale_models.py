"""Regenerates tests/data/rationale_model: a tiny Llama (width 64, 2 layers) fine-tuned by SFT on the synthetic
colour task's chosen and rejected responses and rationale conversations (conversational template, mixed
informativeness u=0.3, eps=0.2), 4,000 steps (about 6 minutes on 2 CPU cores). tests/test_analysis_behaviour.py
probes its rationale log-probs; the training is too long for every CI run, so the result is kept in the repo.

usage: python tests/scripts/make_rationale_model.py [OUTPUT_RUN_DIR]
"""
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                                   "--xla_cpu_enable_concurrency_optimized_scheduler=false")

from rdpo_jax.config_loader import load_config  # noqa: E402
from rdpo_jax.train.trainer import train  # noqa: E402

OVERRIDES = [
    "train.objective=sft", "train.sft_rationales=true", "train.sft_rejected=true",
    "data.synthetic.n_train=4096", "data.synthetic.n_eval=128", "data.synthetic.u=0.3", "data.synthetic.eps=0.2",
    "train.max_steps=4000", "train.epochs=100", "train.eval_every=0",
    "data.max_length=96", "data.max_prompt_length=48",
    "optim.lr=3e-3", "optim.schedule=cosine", "optim.warmup_steps=20", "optim.clip_norm=1.0", "optim.weight_decay=0.0",
    "model.tiny_hidden_size=64", "model.tiny_intermediate_size=128",
    "checkpoint.every=100000", "checkpoint.keep=1", "checkpoint.async_save=false",
    "logging.progress=false", "logging.tensorboard=false", "logging.plot=false",
]

if __name__ == "__main__":
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/rationale_model")
    result = train(load_config(None, OVERRIDES + [f"output_dir={run}"]))
    target = Path(__file__).resolve().parents[1] / "data" / "rationale_model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(result.hf_dir, target)
    print(f"wrote {target}")
