"""An output_dir on an object store (gs://): every file the project writes goes through one path abstraction
(etils.epath, as orbax's checkpoints do). The object-store code paths (no rename, no flock, no append, local
writers uploaded) run here on a local directory behind the same abstraction, since a bucket is not reachable
offline: the run's outputs must be complete, resumable and read back by transformers."""
import json

import pytest

from rdpo_jax import paths
from rdpo_jax.config_loader import load_config
from rdpo_jax.train.checkpoint import Checkpointer
from rdpo_jax.train.metrics_log import read_metrics
from rdpo_jax.train.run_lock import RunLock, RunLockedError
from rdpo_jax.train.trainer import train

ARGS = ["data.synthetic.n_train=48", "data.synthetic.n_eval=8", "train.global_batch_size=8", "data.max_length=64",
        "data.max_prompt_length=32", "logging.progress=false", "checkpoint.async_save=false", "checkpoint.every=2",
        "train.eval_every=2", "train.reference=cache", "train.loss_kwargs={beta: 0.5, gamma: 0.1}"]


@pytest.fixture
def object_store(monkeypatch):
    """Treat every path as an object store's (the local file system stands in for the bucket)."""
    monkeypatch.setattr(paths, "is_local", lambda path: False)


def test_a_run_into_an_object_store_writes_everything_and_resumes(object_store, tmp_path):
    out = tmp_path / "bucket" / "run"
    train(load_config(None, ARGS + [f"output_dir={out}", "train.max_steps=2"]))
    names = {p.relative_to(out).as_posix() for p in paths.files_under(out)}
    for name in ("config.yaml", "data_report.json", "summary.json", "metrics.jsonl", "curves.png",
                 "reference_cache_train.npz", "final/hf/config.json", "final/hf/model.safetensors"):
        assert name in names, name
    assert any(n.startswith("tensorboard/events.out.tfevents") for n in names)
    assert not any(".tmp-" in n for n in names)                      # writes are whole objects, not renames
    assert "run.lock" not in names and "run.lock.json" not in names   # no flock; the record is removed at the end
    ckpt = Checkpointer(out / "checkpoints")
    assert ckpt.all_steps() == [2] and ckpt.check_step(2) is None
    json.loads((out / "summary.json").read_text())
    # resume: the checkpoint's config is checked, metrics are rewritten without duplicates
    train(load_config(None, ARGS + [f"output_dir={out}", "train.max_steps=4"]))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["split"] == "eval"] == [2, 4]
    assert Checkpointer(out / "checkpoints").all_steps() == [2, 4]
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out / "final" / "hf")
    with torch.no_grad():
        assert torch.isfinite(hf(torch.tensor([[1, 5, 9]])).logits).all()


def test_the_object_store_lock_is_the_holder_record(object_store, tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    with pytest.raises(RunLockedError, match=r"in use by another run: pid \d+ .*delete .*run.lock.json"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    RunLock(tmp_path / "run").acquire().release()  # free again once released
