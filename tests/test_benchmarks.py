"""The benchmark scripts run in their smoke form, as a user runs them (a fresh process on one CPU device): the
CPU pair (our step, the PyTorch peer, the HH packed vs three-row comparison, the summary) and the GPU call's
script on tiny shapes. The packed and three-row layouts train the same pairs to the same loss."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_script(script, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_XDIST_WORKER")}
    environ.update(SMOKE="1", OUT=str(tmp_path / "out.jsonl") if script == "run_cpu.sh" else str(tmp_path),
                   PATH=os.path.dirname(sys.executable) + os.pathsep + environ.get("PATH", ""), **env)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / script)], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _records(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and "tokens_per_s" in line]


@pytest.mark.slow
def test_cpu_pair_smoke(tmp_path):
    out = _run_script("run_cpu.sh", tmp_path)
    records = _records(out)
    assert {r["bench"] for r in records} == {"rdpo_jax", "torch_peer"}
    assert all(r["tokens_per_s"] > 0 and r["step_s"] > 0 for r in records)
    hh = {r["layout"]: r for r in records if r.get("workload") == "hh"}
    assert set(hh) == {"three_row", "packed"} and all(r["finite"] for r in hh.values())
    assert hh["packed"]["loss"] == pytest.approx(hh["three_row"]["loss"], rel=1e-5)  # same pairs, same training
    assert "ratio rdpo_jax / peer (eager) tiny dpo three_row 2x32:" in out
    assert _records((tmp_path / "out.jsonl").read_text()) == records


@pytest.mark.slow
def test_device_script_smoke_on_cpu(tmp_path):
    out = _run_script("run_device.sh", tmp_path)
    records = _records(out)
    assert [r["bench"] for r in records] == ["rdpo_jax", "torch_peer"]
    assert "ratio rdpo_jax / peer" in out and (tmp_path / "device.jsonl").exists()
    assert any(line.startswith("{") and "causal" in line for line in out.splitlines())  # attention check ran
