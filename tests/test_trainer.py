"""The trainer: the tiny default learns (oracle win rate over SFT, held-out accuracy), logs and plots are
written, a NaN stops or skips without reaching a checkpoint, SIGKILL + resume continues exactly, and two
processes x 4 devices give the same losses as one process x 8 devices."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rdpo_jax.config_loader import load_config
from rdpo_jax.train.checkpoint import Checkpointer
from rdpo_jax.train.metrics_log import read_metrics
from rdpo_jax.train.trainer import NonFiniteLoss, train

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tests" / "scripts" / "train_job.py"
SMALL = ["data.synthetic.n_train=64", "data.synthetic.n_eval=16", "train.global_batch_size=8",
         "data.max_length=64", "data.max_prompt_length=32", "logging.progress=false", "logging.plot=false",
         "logging.tensorboard=false", "checkpoint.async_save=false", "train.eval_every=0",
         "train.loss=dpo", "train.loss_kwargs={beta: 0.5}"]


def test_tiny_default_learns(tiny_default):
    _, table = tiny_default
    for name in ("rdpo", "dpo"):
        row = table[name]
        lo, hi = row["win_rate_ci95"]
        print(f"\n{name}: held-out accuracy {row['eval/rewards/accuracies']:.3f}, oracle win rate over SFT "
              f"{100 * row['win_rate_vs_sft']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
        assert row["eval/rewards/accuracies"] > 0.6
    assert table["rdpo"]["win_rate_vs_sft"] > 0.5


def test_tiny_default_writes_logs_plots_checkpoints_and_hf_export(tiny_default):
    root, _ = tiny_default
    assert (root / "curves.png").stat().st_size > 1000
    assert (root / "summary.json").exists()
    for name in ("sft", "rdpo", "dpo"):
        run = root / name
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
        records = read_metrics(run / "metrics.jsonl")
        assert records and all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
        assert Checkpointer(run / "checkpoints").latest_good_step() is not None
        assert (run / "final" / "hf" / "config.json").exists()
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(root / "rdpo" / "final" / "hf")
    with torch.no_grad():
        assert torch.isfinite(hf(torch.tensor([[1, 5, 9]])).logits).all()


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_nan_policy_never_checkpoints_a_nan(tmp_path, policy):
    # SGD at lr 1e30 blows the params up to ~1e30 in one step; the next forward overflows to NaN/Inf.
    cfg = load_config(None, SMALL + [f"output_dir={tmp_path}", "optim.name=sgd", "optim.lr=1e30",
                                     "optim.schedule=constant", "optim.warmup_steps=0", "optim.clip_norm=null",
                                     "checkpoint.every=1", "train.max_steps=4", f"train.nan_policy={policy}",
                                     "checkpoint.export_hf=false"])
    if policy == "error":
        with pytest.raises(NonFiniteLoss, match="non-finite loss, gradient or update at step 2"):
            train(cfg)
    else:
        result = train(cfg)
        assert result.steps == 4
        assert result.final_train["finite"] == 0.0
        # step 1 applied (params ~1e30), steps 2-4 skipped; summary.json stays strict JSON (NaN -> null)
        def refuse(name):
            raise AssertionError(f"summary.json holds {name}, which is not JSON")
        summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
        assert summary["skipped_steps"] == [2, 3, 4] and summary["applied_steps"] == 1
        assert None in summary["train"].values()
    ckpt = Checkpointer(tmp_path / "checkpoints")
    steps = ckpt.all_steps()
    assert steps and (max(steps) == 1 if policy == "error" else max(steps) == 4)
    for s in steps:  # every checkpoint restores and holds only finite values (restore re-verifies them)
        assert ckpt.check_step(s) is None


def _job(devices, args, *, env=None, check=True):
    proc = subprocess.run([sys.executable, str(JOB), str(devices), *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"job failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _losses(path):
    out = {}
    for r in read_metrics(path):
        if r["split"] == "train":
            out[r["step"]] = r["loss"]  # the last record of a step wins (a resumed run rewrites steps)
    return out


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted(tmp_path):
    args = SMALL + ["train.max_steps=8", "checkpoint.every=2", "train.loss=rdpo",
                    "train.loss_kwargs={beta: 0.5, gamma: 0.1}", "checkpoint.export_hf=false"]
    _job(1, args + [f"output_dir={tmp_path / 'straight'}"])
    killed = _job(1, ["--kill-after-checkpoint", "4", *args, f"output_dir={tmp_path / 'killed'}"], check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert max(_losses(tmp_path / "killed" / "metrics.jsonl")) == 4
    _job(1, args + [f"output_dir={tmp_path / 'killed'}"])
    straight, resumed = _losses(tmp_path / "straight" / "metrics.jsonl"), _losses(tmp_path / "killed" / "metrics.jsonl")
    assert sorted(resumed) == list(range(1, 9))
    np.testing.assert_array_equal([resumed[s] for s in range(5, 9)], [straight[s] for s in range(5, 9)])
    # each step once
    steps = [r["step"] for r in read_metrics(tmp_path / "killed" / "metrics.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, 9))


def test_resume_falls_back_past_a_truncated_checkpoint(tmp_path):
    args = SMALL + ["train.max_steps=6", "checkpoint.every=2", "checkpoint.keep=3", "checkpoint.export_hf=false"]
    _job(1, args + [f"output_dir={tmp_path / 'straight'}"])
    _job(1, ["--kill-after-checkpoint", "4", *args, f"output_dir={tmp_path / 'run'}"], check=False)
    step4 = tmp_path / "run" / "checkpoints" / "4"
    biggest = max((p for p in step4.rglob("*") if p.is_file() and p.name != "rdpo_manifest.json"),
                  key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    proc = _job(1, args + [f"output_dir={tmp_path / 'run'}"])
    assert "step 4" in proc.stderr and "Warning" in proc.stderr
    straight, resumed = _losses(tmp_path / "straight" / "metrics.jsonl"), _losses(tmp_path / "run" / "metrics.jsonl")
    np.testing.assert_array_equal([resumed[s] for s in range(3, 7)], [straight[s] for s in range(3, 7)])
    # resumed from step 2: the killed run's records of steps 3 and 4 were dropped, not duplicated
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, 7))


def test_two_processes_match_one_process(tmp_path):
    args = SMALL + ["train.max_steps=5", "mesh.fsdp=-1", "checkpoint.every=5", "train.loss=rdpo",
                    "train.loss_kwargs={beta: 0.5, gamma: 0.1}"]
    _job(8, args + [f"output_dir={tmp_path / 'one'}"])
    port = 20000 + os.getpid() % 20000
    common = args + [f"output_dir={tmp_path / 'two'}", f"distributed.coordinator_address=127.0.0.1:{port}",
                     "distributed.num_processes=2", "distributed.cpu_collectives=gloo"]
    procs = [subprocess.Popen([sys.executable, str(JOB), "4", *common, f"distributed.process_id={i}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    one, two = _losses(tmp_path / "one" / "metrics.jsonl"), _losses(tmp_path / "two" / "metrics.jsonl")
    assert sorted(two) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([two[s] for s in range(1, 6)], [one[s] for s in range(1, 6)], rtol=1e-5)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["steps"] == 5
    assert (tmp_path / "two" / "final" / "hf" / "config.json").exists()


def test_reference_cache_run_equals_live_run_and_checks_its_fingerprint(tmp_path):
    from rdpo_jax.train.reference_cache import ReferenceCacheMismatch

    args = SMALL + ["train.max_steps=3", "checkpoint.export_hf=false", "checkpoint.resume=false",
                    "train.loss=rdpo", "train.loss_kwargs={beta: 0.5, gamma: 0.1}"]
    live = train(load_config(None, args + [f"output_dir={tmp_path / 'live'}"]))
    cached_cfg = load_config(None, args + [f"output_dir={tmp_path / 'cached'}", "train.reference=cache",
                                           "train.eval_every=3"])
    cached = train(cached_cfg)
    assert (tmp_path / "cached" / "reference_cache_train.npz").exists()
    np.testing.assert_allclose([r["loss"] for r in read_metrics(tmp_path / "cached" / "metrics.jsonl")
                                if r["split"] == "train"],
                               [r["loss"] for r in read_metrics(tmp_path / "live" / "metrics.jsonl")
                                if r["split"] == "train"], rtol=1e-5)
    assert cached.final_train["loss"] == pytest.approx(live.final_train["loss"], rel=1e-5)
    again = train(cached_cfg)  # reuses the cache (fingerprint matches)
    assert again.final_train["loss"] == pytest.approx(cached.final_train["loss"], rel=1e-6)
    other_data = load_config(None, args + [f"output_dir={tmp_path / 'cached'}", "train.reference=cache",
                                           "data.synthetic.n_train=72"])
    with pytest.raises(ReferenceCacheMismatch, match="different data"):
        train(other_data)
