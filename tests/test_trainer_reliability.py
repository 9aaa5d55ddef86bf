"""No silently wrong run: each way the trainer used to let a wrong run through now stops with an error that
names what to change, or is stated where the user looks (log, summary.json, data_report.json)."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rdpo_jax.cli import format_eval
from rdpo_jax.cli import main as cli_main
from rdpo_jax.config_loader import ConfigError, load_config
from rdpo_jax.data import synthetic_tokenizer
from rdpo_jax.train.checkpoint import Checkpointer
from rdpo_jax.train.data_checks import MissingRationales
from rdpo_jax.train.held_out import overlap
from rdpo_jax.train.metrics_log import read_metrics
from rdpo_jax.train.pipeline import load_examples, prepare_data
from rdpo_jax.train.run_identity import ResumeMismatch
from rdpo_jax.train.trainer import NonFiniteLoss, train

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tests" / "scripts" / "train_job.py"
HH_FILE = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
QUIET = ["logging.progress=false", "logging.plot=false", "logging.tensorboard=false", "checkpoint.async_save=false",
         "train.eval_every=0", "checkpoint.export_hf=false"]
SMALL = QUIET + ["data.synthetic.n_train=32", "data.synthetic.n_eval=8", "train.global_batch_size=8",
                 "data.max_length=64", "data.max_prompt_length=32"]
TEXT = QUIET + ["data.tokenizer=synthetic", "model.tiny_hidden_size=32", "model.tiny_intermediate_size=64",
                "train.global_batch_size=8", "data.max_length=96", "data.max_prompt_length=48",
                "train.loss_kwargs={beta: 0.5, gamma: 0.1}"]


def _pairs(n, rationale=lambda i: None):
    return [{"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": f"It is {2 * i + 1}.",
             **({"why": rationale(i)} if rationale(i) is not None else {})} for i in range(n)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------------------------- rationales


@pytest.mark.skipif(not HH_FILE.exists(), reason="the shared HH file is not present")
def test_rationale_loss_on_hh_without_rationales_is_an_error(tmp_path):
    cfg = load_config(None, TEXT + [f"output_dir={tmp_path}", "data.source=Anthropic/hh-rlhf", "data.split=test",
                                    "data.eval_split=null", "data.on_bad_row=skip",
                                    f"data.data_files={{test: {HH_FILE}}}"])
    with pytest.raises(MissingRationales) as e:
        train(cfg)
    msg = str(e.value)
    assert "train.loss=rdpo has a rationale term" in msg and "none of the 2303 training pairs" in msg
    assert "format 'hh', which has no rationale field" in msg and "train.loss=dpo" in msg
    assert not (tmp_path / "checkpoints").exists()  # stopped before anything was trained or compiled


def test_rationale_column_under_another_name_is_an_error_until_mapped(tmp_path):
    path = _jsonl(tmp_path / "pairs.jsonl", _pairs(40, rationale=lambda i: f"{2 * i} is {i} + {i}."))
    base = TEXT + [f"output_dir={tmp_path / 'run'}", f"data.source={path}", "data.eval_fraction=0.2"]
    with pytest.raises(MissingRationales) as e:
        train(load_config(None, base))
    msg = str(e.value)
    assert "column 'rationale' (data.fields.rationale (unset: the default column))" in msg
    assert "'why'" in msg and "data.fields.rationale=<column>" in msg
    data = prepare_data(load_config(None, base + ["data.fields.rationale=why"]), synthetic_tokenizer(),
                        with_rationale=True)
    assert data.rationales["train"] == {"pairs": 32, "with_rationale": 32}


def test_some_pairs_without_rationale_error_or_train_masked(tmp_path, capsys):
    rows = _pairs(40, rationale=lambda i: f"{2 * i} is {i} + {i}." if i % 2 else None)
    path = _jsonl(tmp_path / "half.jsonl", rows)
    base = TEXT + [f"output_dir={tmp_path / 'run'}", f"data.source={path}", "data.eval_fraction=0.2",
                   "data.fields.rationale=why"]
    with pytest.raises(MissingRationales, match=r"but \d+ of the 32 train pairs .* have none.*missing_rationale=mask"):
        train(load_config(None, base))
    capsys.readouterr()
    assert cli_main(["train", *base, "data.missing_rationale=mask", "train.max_steps=2"]) == 0  # the command line
    printed = capsys.readouterr().out
    final_eval = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "eval"][-1]
    assert final_eval["step"] == 2
    shown = {k: v for k, v in final_eval.items() if k not in ("step", "split", "time")}
    assert format_eval(shown, 2) in printed and f"{final_eval['loss']:.4g}" in printed  # eval printed as logged
    assert "done: 2 steps" in printed
    assert f"{path} [train]: 40 rows read, 40 kept, 0 skipped" in printed  # the data report, printed and saved
    assert _strict_json(tmp_path / "run" / "data_report.json")["reports"]["train"]["n_kept"] == 40
    summary = _strict_json(tmp_path / "run" / "summary.json")
    have = summary["rationales"]["train"]["with_rationale"]
    assert summary["rationales"]["train"]["pairs"] == 32 and 10 < have < 22
    assert summary["rationales"]["missing_rationale"] == "mask"
    assert any(f"{32 - have} of 32 train pairs have no rationale" in n for n in summary["notes"])
    assert np.isfinite([r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]).all()


# ---------------------------------------------------------------------------------------------- held-out data


def test_eval_split_of_one_file_is_the_training_file(tmp_path):
    path = _jsonl(tmp_path / "pairs.jsonl", _pairs(20))
    cfg = load_config(None, TEXT + [f"output_dir={tmp_path / 'run'}", f"data.source={path}", "train.loss=dpo",
                                    "train.loss_kwargs={}"])
    with pytest.raises(ConfigError) as e:  # before anything is read: the default eval_split=test is the file itself
        train(cfg)
    msg = str(e.value)
    assert msg.startswith("data.eval_split='test': the held-out pairs would be the training pairs")
    assert "data.eval_fraction" in msg and "data.eval_source" in msg and "data.eval_split=null" in msg
    assert not (tmp_path / "run").exists()


def test_eval_fraction_holds_out_a_seeded_share_and_overlap_is_counted(tmp_path):
    rows = _pairs(30) + _pairs(30)[:5]  # five exact duplicates
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    tok = synthetic_tokenizer()
    cfg = load_config(None, TEXT + [f"output_dir={tmp_path}", f"data.source={path}", "data.eval_fraction=0.2",
                                    "train.loss=dpo", "train.loss_kwargs={}"])
    data = prepare_data(cfg, tok, with_rationale=False)
    held_keys = {(e.prompt, e.chosen, e.rejected) for e in data.eval_examples}
    assert len(held_keys) == 6  # round(0.2 x 30 distinct pairs), each with all its copies
    assert len(data.train_examples) + len(data.eval_examples) == 35
    assert data.eval_overlap == 0 and overlap(data.train_examples, data.eval_examples) == 0
    assert data.notes[0] == f"held out {len(data.eval_examples)} of 35 pairs of {path} (data.eval_fraction=0.2, " \
                            "data.eval_seed=0)"
    again = prepare_data(cfg, tok, with_rationale=False)
    assert again.eval_examples == data.eval_examples  # deterministic
    other = prepare_data(load_config(None, TEXT + [f"output_dir={tmp_path}", f"data.source={path}",
                                                   "data.eval_fraction=0.2", "data.eval_seed=1", "train.loss=dpo",
                                                   "train.loss_kwargs={}"]), tok, with_rationale=False)
    assert other.eval_examples != data.eval_examples
    # an explicit held-out file that repeats training pairs: counted and warned about
    held = _jsonl(tmp_path / "held.jsonl", _pairs(30)[:4] + [{"prompt": "new?", "chosen": "a", "rejected": "b"}])
    cfg = load_config(None, TEXT + [f"output_dir={tmp_path}", f"data.source={path}", f"data.eval_source={held}",
                                    "train.loss=dpo", "train.loss_kwargs={}"])
    data = prepare_data(cfg, tok, with_rationale=False)
    assert data.eval_overlap == 4 and any(n.startswith("warning: 4 of 5 held-out pairs also occur") for n in data.notes)


def test_synthetic_held_out_pairs_never_occur_in_training():
    loaded = load_examples(load_config(None, []))  # the defaults: 512 train, 128 held out (9 overlapped before)
    assert len(loaded.held_out) == 128 and overlap(loaded.train, loaded.held_out) == 0


# ---------------------------------------------------------------------------------------------- one run per dir


def _spawn(args, devices=1):
    return subprocess.Popen([sys.executable, str(JOB), str(devices), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_into_one_output_dir_second_fails_fast_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    args = SMALL + [f"output_dir={out}", "data.synthetic.n_train=512", "train.global_batch_size=8",
                    "checkpoint.every=1000"]
    first = _spawn(args)
    holder = out / "run.lock.json"
    deadline = time.time() + 120
    while not holder.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert holder.exists(), first.communicate()[1][-2000:]
    started = time.time()
    second = subprocess.run([sys.executable, str(JOB), "1", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode != 0
    assert f"is in use by another run: pid {first.pid} on host" in second.stderr
    assert time.time() - started < 60  # fails at once, before loading data or compiling
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, 65))  # one run's records, each step once


# ---------------------------------------------------------------------------------------------- resume


def test_resume_with_other_settings_is_refused_and_resume_false_starts_afresh(tmp_path, capsys):
    out = tmp_path / "run"
    base = SMALL + [f"output_dir={out}", "checkpoint.every=2", "train.loss_kwargs={beta: 0.5, gamma: 0.1}"]
    train(load_config(None, base + ["train.max_steps=2"]))
    assert (out / "config.yaml").read_text().startswith("# rdpo_jax run config; fingerprint ")
    other = SMALL + [f"output_dir={out}", "checkpoint.every=2", "train.loss=dpo", "train.loss_kwargs={beta: 0.5}",
                     "optim.lr=5e-4", "data.synthetic.task=parity"]
    with pytest.raises(ResumeMismatch) as e:
        train(load_config(None, other + ["train.max_steps=4"]))
    msg = str(e.value)
    for line in ("train.loss: 'rdpo' (checkpoint) -> 'dpo' (now)", "optim.lr: 0.001 (checkpoint) -> 0.0005 (now)",
                 "data.synthetic.task: 'colour' (checkpoint) -> 'parity' (now)", "checkpoint.resume=false"):
        assert line in msg
    # keys that may change on resume: the run continues and says what changed
    capsys.readouterr()
    result = train(load_config(None, base + ["train.max_steps=4", "model.remat=full", "logging.every=2"]))
    printed = capsys.readouterr().out
    assert result.steps == 4 and f"resumed from step 2 of {out}" in printed
    assert "model.remat: 'none' -> 'full'" in printed
    # checkpoint.resume=false replaces the earlier run: its checkpoints go, its metrics are not mixed in
    train(load_config(None, other + ["train.max_steps=2", "checkpoint.resume=false"]))
    assert Checkpointer(out / "checkpoints").all_steps() == [2]
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
    assert "loss/rationale" not in records[0]  # the DPO run's records only


def test_max_steps_beyond_the_data_is_an_error_and_cosine_spans_the_real_run(tmp_path, capsys):
    with pytest.raises(ConfigError) as e:
        train(load_config(None, SMALL + [f"output_dir={tmp_path / 'a'}", "train.max_steps=40"]))
    assert str(e.value).startswith("train.max_steps=40 exceeds the 4 steps the data gives: train.epochs=1 x 4 steps")
    assert "train.epochs=10" in str(e.value)
    # this run also starts into a directory holding the lock record of a process that died
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "run.lock.json").write_text(json.dumps({
        "pid": int(dead.stdout), "host": socket.gethostname(), "started": "yesterday", "command": "rdpo-jax train",
        "nonce": "x"}))
    train(load_config(None, SMALL + [f"output_dir={tmp_path / 'b'}", "optim.schedule=cosine", "optim.warmup_steps=1",
                                     "train.epochs=2", "train.eval_every=4"]))
    printed = capsys.readouterr().out
    assert f"replaced a stale run lock of pid {dead.stdout.strip()}" in printed and "that process is gone" in printed
    assert "train rows: 32 pairs tokenised; truncated: none" in printed  # the data report, printed
    assert not (tmp_path / "b" / "run.lock.json").exists()  # released at the end
    records = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "eval"] == [4, 8]  # the final evaluation once
    lrs = [r["learning_rate"] for r in records if r["split"] == "train"]
    t = np.arange(8)  # 2 epochs x 4 steps: warm-up over step 0, cosine to 0 at step 8
    want = np.where(t < 1, 1e-3 * t, 1e-3 * 0.5 * (1 + np.cos(np.pi * (t - 1) / 7)))
    np.testing.assert_allclose(lrs, want, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------------------------- NaN policy


def test_an_update_that_overflows_is_skipped_and_a_run_that_trained_nothing_fails(tmp_path):
    # SGD at lr 1e308 (inf in float32): loss and gradient are finite, the updated params are not
    args = SMALL + ["optim.name=sgd", "optim.lr=1e308", "optim.clip_norm=null", "train.nan_policy=skip",
                    "checkpoint.export_hf=true", "checkpoint.every=1"]
    with pytest.raises(NonFiniteLoss, match=r"no step was trained: all 2 steps were skipped \(\[1, 2\]"):
        train(load_config(None, args + [f"output_dir={tmp_path / 'a'}", "train.max_steps=2"]))
    assert not (tmp_path / "a" / "final").exists() and not (tmp_path / "a" / "summary.json").exists()
    ckpt = Checkpointer(tmp_path / "a" / "checkpoints")
    assert all(ckpt.check_step(s) is None for s in ckpt.all_steps())  # only finite states were saved
    with pytest.raises(NonFiniteLoss, match=r"3 consecutive steps were skipped \(\[1, 2, 3\]"):
        train(load_config(None, args + [f"output_dir={tmp_path / 'b'}", "train.max_skipped_steps=3"]))


# ---------------------------------------------------------------------------------------------- output dirs


def _mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def test_read_only_and_full_output_dirs_fail_with_one_clear_error(tmp_path):
    from rdpo_jax.errors import OutputDirError

    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, "3m")
    try:
        args = SMALL + ["checkpoint.every=1", "checkpoint.keep=10", "train.max_steps=4"]
        with pytest.raises(OutputDirError) as e:  # the tiny model's checkpoints are ~1 MiB: the third does not fit
            train(load_config(None, args + [f"output_dir={mnt / 'run'}"]))
        assert f"cannot write checkpoint step 3 to {mnt / 'run' / 'checkpoints'}" in str(e.value)
        ckpt = Checkpointer(mnt / "run" / "checkpoints")
        assert ckpt.all_steps() == [1, 2] and all(ckpt.check_step(s) is None for s in (1, 2))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(OutputDirError, match=f"cannot create the output directory {mnt / 'new'}: the file "
                                                 "system is read-only"):
            train(load_config(None, args + [f"output_dir={mnt / 'new'}"]))
        with pytest.raises(OutputDirError, match=f"cannot create the run lock {mnt / 'run' / 'run.lock'}: the file "
                                                 "system is read-only"):
            train(load_config(None, args + [f"output_dir={mnt / 'run'}"]))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_command_line_prints_project_errors_without_a_traceback(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    bad = subprocess.run([sys.executable, "-m", "rdpo_jax", "train", "train.loss_kwargs.beta=.inf"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "rdpo-jax train: ConfigError: train.loss_kwargs.beta" in bad.stderr


def test_non_finite_pairs_are_named_with_their_source_rows():
    from types import SimpleNamespace

    from rdpo_jax.train.trainer import _nonfinite_pairs

    data = SimpleNamespace(train_source_rows=[10, 11, 12, 13, 14, 15, 16, 17])
    flags = np.array([[True, False, True], [True, True, False]])
    index = np.array([[0, 3, 5], [6, 7, -1]])  # positions in the training rows; -1: a padded slot
    named = _nonfinite_pairs(flags, index, data, "pairs.jsonl")
    assert named == " at 1 pair(s): training pair 3 (row 13 of pairs.jsonl)"
    assert _nonfinite_pairs(None, index, data, "x") == ""
