"""The built-in tiny default, end to end on CPU: a tiny Llama trained by SFT on the synthetic task, then
RDPO and DPO from it; held-out rewards/accuracies and the oracle's win rate of each against the SFT model
(`rdpo_jax.eval.judges`: each pair judged in both orders; the oracle scores each response alone, so the
position consistency is 100%).

`run_tiny(root)` writes ``<root>/{sft,rdpo,dpo}`` (checkpoints, metrics.jsonl, TensorBoard, final/hf),
``<root>/curves.png`` and ``<root>/summary.json``, and returns the summary table.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rdpo_jax.config import (
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    ModelSection,
    OptimConfig,
    RunConfig,
    SyntheticConfig,
    TrainConfig,
)
from rdpo_jax.files import write_json


def tiny_configs(root: str | Path, *, fast: bool = False) -> dict[str, RunConfig]:
    """SFT, then RDPO and DPO from its export, on the synthetic colour task (informative rationales)."""
    root = Path(root)
    n_train, n_eval = (512, 64) if fast else (1024, 128)
    data = DataConfig(source="synthetic", synthetic=SyntheticConfig(task="colour", n_train=n_train, n_eval=n_eval),
                      max_length=64, max_prompt_length=32, min_bucket=32)
    model = ModelSection(source="tiny", tiny_hidden_size=64, tiny_intermediate_size=128, tiny_num_layers=2)
    ckpt = CheckpointConfig(every=1000, keep=1, async_save=False, resume=False)
    logging = LoggingConfig(progress=not fast)
    sft = RunConfig(name="sft", output_dir=str(root / "sft"), model=model, data=data,
                    train=TrainConfig(objective="sft", sft_rationales=True, sft_rejected=True, global_batch_size=32,
                                      epochs=3, eval_every=0),
                    optim=OptimConfig(lr=3e-3, schedule="cosine", warmup_steps=5, weight_decay=0.0, clip_norm=1.0),
                    checkpoint=ckpt, logging=logging)
    pref_model = dataclasses.replace(model, init_from=str(root / "sft" / "final" / "hf"))
    pref_optim = OptimConfig(lr=1e-3, schedule="constant", warmup_steps=0, weight_decay=0.0, clip_norm=1.0)
    runs = {"sft": sft}
    # beta 0.5 plus the per-pair chosen NLL (RPO): without it this width-64 model drifts off its SFT
    # distribution under DPO and generates garbage (configs/tiny_rdpo.yaml says more).
    for name, loss, kwargs in (("rdpo", "rdpo", {"beta": 0.5, "gamma": 0.1, "nll_weight": 1.0}),
                               ("dpo", "dpo", {"beta": 0.5, "nll_weight": 1.0})):
        runs[name] = dataclasses.replace(
            sft, name=name, output_dir=str(root / name), model=pref_model, optim=pref_optim,
            train=TrainConfig(objective="preference", loss=loss, loss_kwargs=kwargs, global_batch_size=32,
                              epochs=8, eval_every=0))
    return runs


def run_tiny(root: str | Path = "runs/tiny", *, fast: bool = False, n_judge: int | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Trains the three runs, judges generations with the synthetic oracle, prints and returns the table."""
    from rdpo_jax.eval import generate_responses
    from rdpo_jax.eval.judges import judge_pairs
    from rdpo_jax.eval.judges.oracle import OracleJudge
    from rdpo_jax.models import load_hf
    from rdpo_jax.train.pipeline import synthetic_task
    from rdpo_jax.train.plots import plot_runs
    from rdpo_jax.train.trainer import build_tokenizer, train

    root = Path(root)
    configs = tiny_configs(root, fast=fast)
    results = {name: train(cfg) for name, cfg in configs.items()}
    sft_cfg = configs["sft"]
    task = synthetic_task(sft_cfg)
    n_judge = n_judge or (64 if fast else 256)
    prompts = [ex.prompt for ex in task.examples(n_judge, seed=seed + 7)]
    tokenizer = build_tokenizer(sft_cfg)
    responses = {name: generate_responses(load_hf(results[name].hf_dir), tokenizer, prompts, max_new_tokens=24,
                                          temperature=1.0, top_p=0.95, seed=seed) for name in results}
    table: dict[str, Any] = {}
    for name in ("rdpo", "dpo"):
        ev = results[name].final_eval
        wr = judge_pairs(OracleJudge(task.oracle), prompts, responses[name], responses["sft"], protocol="both")
        table[name] = {"eval/rewards/accuracies": ev.get("rewards/accuracies"),
                       "eval/rewards/margins": ev.get("rewards/margins"), "eval/loss": ev.get("loss"),
                       "win_rate_vs_sft": wr.rate, "win_rate_ci95": wr.wilson(), "wins": wr.wins, "ties": wr.ties,
                       "losses": wr.losses, "position_consistency": wr.consistency, "steps": results[name].steps}
    table["sft"] = {"eval/nll_loss": results["sft"].final_eval.get("nll_loss"), "steps": results["sft"].steps}
    plot_runs({name: r.output_dir / "metrics.jsonl" for name, r in results.items()}, root / "curves.png")
    write_json(root / "summary.json", table)
    print(format_table(table))
    return table


def format_table(table: dict[str, Any]) -> str:
    lines = [f"{'run':<6} {'steps':>5} {'eval acc':>9} {'eval margin':>12} {'win rate vs SFT (95% CI)':>32} "
             f"{'consistency':>11}"]
    for name in ("rdpo", "dpo"):
        r = table[name]
        lo, hi = r["win_rate_ci95"]
        lines.append(f"{name:<6} {r['steps']:>5} {r['eval/rewards/accuracies']:>9.3f} "
                     f"{r['eval/rewards/margins']:>12.3f} "
                     f"{100 * r['win_rate_vs_sft']:>12.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
                     f"{r['wins']}W/{r['ties']}T/{r['losses']}L "
                     f"{_pct(r.get('position_consistency')):>11}")
    lines.append(f"{'sft':<6} {table['sft']['steps']:>5}  eval nll {table['sft']['eval/nll_loss']:.3f}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def tiny_models(root: str | Path, *, sft_steps: int = 60, pref_steps: int = 16) -> dict[str, Path]:
    """Short SFT -> RDPO and DPO runs of the built-in tiny preset (:func:`tiny_configs`, fast
    settings, ``sft_steps`` / ``pref_steps`` steps, with as many epochs as they need) unless
    ``<root>/{sft,rdpo,dpo}/final/hf`` exist; returns those directories."""
    from rdpo_jax.train.trainer import train

    root = Path(root)
    dirs = {name: root / name / "final" / "hf" for name in ("sft", "rdpo", "dpo")}
    if all((d / "config.json").exists() for d in dirs.values()):
        return dirs
    for name, cfg in tiny_configs(root, fast=True).items():
        steps = sft_steps if name == "sft" else pref_steps
        per_epoch = cfg.data.synthetic.n_train // cfg.train.global_batch_size
        epochs = max(cfg.train.epochs, -(-steps // per_epoch))  # enough passes for `steps`
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps, epochs=epochs),
                                  logging=dataclasses.replace(cfg.logging, tensorboard=False, plot=False))
        train(cfg)
    return dirs
