"""Launch scripts: each ``--dry-run`` prints the exact commands; the local launcher waits and reports failures."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _dry(script: str, *args: str) -> list[str]:
    r = _run(script, *args, "--dry-run")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()


def test_tpu_pod_dry_run():
    lines = _dry("tpu_pod.py", "configs/paper/mistral7b_instruct_v02_orcaratspec_rdpo.yaml", "--name", "rdpo-v4",
                 "--zone", "us-central2-b", "--accelerator-type", "v4-32", "--project", "proj", "--delete",
                 "train.max_steps=10", "--setup", "echo ready")
    create, tar, scp, untar, install, setup, train, delete = lines
    assert create.startswith("gcloud compute tpus tpu-vm create rdpo-v4")
    assert "--zone us-central2-b" in create and "--accelerator-type v4-32" in create and "--project proj" in create
    assert "--version tpu-ubuntu2204-base" in create
    assert tar.startswith("tar -czf") and "--exclude=./.git" in tar
    assert scp.startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in scp
    for line in (untar, install, setup, train):
        assert line.startswith("gcloud compute tpus tpu-vm ssh rdpo-v4") and "--worker=all" in line
    assert "pip install" in install and "requirements.txt -e ." in install and "jax[tpu]" in install
    assert "echo ready" in setup
    assert ("rdpo-jax train configs/paper/mistral7b_instruct_v02_orcaratspec_rdpo.yaml distributed.auto=true "
            "train.max_steps=10") in train
    assert delete.startswith("gcloud compute tpus tpu-vm delete rdpo-v4") and "--quiet" in delete
    # the printed lines are shell commands: the remote command is one argument
    argv = shlex.split(train)
    assert argv[argv.index("--command") + 1].endswith("distributed.auto=true train.max_steps=10")


def test_tpu_pod_reuse_without_delete():
    lines = _dry("tpu_pod.py", "configs/tiny_rdpo.yaml", "--name", "x", "--zone", "z", "--no-create", "--no-copy",
                 "--no-install")
    assert len(lines) == 1 and "tpu-vm ssh x" in lines[0] and "configs/tiny_rdpo.yaml" in lines[0]


def test_single_gpu_dry_run():
    lines = _dry("single_gpu.py", "configs/tiny_dpo.yaml", "optim.lr=1e-4", "--xla-flags=--xla_dump_to=/tmp/d")
    venv, install, jax_gpu, train = lines
    assert "-m venv .venv" in venv
    assert "pip install" in install and "-r requirements.txt -e ." in install
    assert "jax[cuda12]" in jax_gpu
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.95" in train
    assert "--xla_gpu_enable_latency_hiding_scheduler=true --xla_dump_to=/tmp/d" in train
    assert train.endswith(".venv/bin/rdpo-jax train configs/tiny_dpo.yaml optim.lr=1e-4")
    assert len(_dry("single_gpu.py", "configs/tiny_dpo.yaml", "--no-install")) == 1


def test_local_multiprocess_dry_run():
    lines = _dry("local_multiprocess.py", "configs/tiny_rdpo.yaml", "-n", "3", "-k", "2", "--port", "4321",
                 "train.max_steps=3")
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert "-m rdpo_jax train configs/tiny_rdpo.yaml" in line
        assert "distributed.coordinator_address=127.0.0.1:4321" in line
        assert "distributed.num_processes=3" in line and f"distributed.process_id={i}" in line
        assert "distributed.cpu_collectives=gloo" in line and "JAX_PLATFORMS=cpu" in line
        assert "XLA_FLAGS=--xla_force_host_platform_device_count=2" in line
        assert line.endswith("train.max_steps=3")
    gpu = _dry("local_multiprocess.py", "configs/tiny_rdpo.yaml", "--platform", "gpu", "-n", "2", "-k", "2")
    assert "distributed.local_device_ids=[2,3]" in gpu[1] and "gloo" not in gpu[1]


def _fake(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_local_multiprocess_waits_for_all(tmp_path):
    code = "import sys; assert 'distributed.num_processes=2' in sys.argv; print('ok', sys.argv[-1])"
    r = _run("local_multiprocess.py", "configs/tiny_rdpo.yaml", "-n", "2", "--program", _fake(code),
             "--log-dir", str(tmp_path), "extra=1")
    assert r.returncode == 0, r.stderr
    assert "ok extra=1" in r.stdout and "ok extra=1" in (tmp_path / "process_1.log").read_text()


def test_local_multiprocess_failure_stops_the_rest(tmp_path):
    code = ("import sys, time\n"
            "if 'distributed.process_id=1' in sys.argv:\n    print('boom'); sys.exit(3)\n"
            "time.sleep(60)")
    start = time.monotonic()
    r = _run("local_multiprocess.py", "configs/tiny_rdpo.yaml", "-n", "2", "--program", _fake(code),
             "--log-dir", str(tmp_path))
    assert r.returncode == 3
    assert time.monotonic() - start < 30
    assert "process 1 exited with 3" in r.stderr and "boom" in r.stderr
