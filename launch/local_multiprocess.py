#!/usr/bin/env python3
"""Run N cooperating processes on this machine, as N hosts of one multi-host job would run: each gets
``distributed.coordinator_address=127.0.0.1:PORT distributed.num_processes=N distributed.process_id=i``.

On CPU (the default) each process also gets ``distributed.cpu_collectives=gloo`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=K`` (K simulated devices per process, so the mesh spans
N x K devices); on GPU each process gets K GPUs through ``distributed.local_device_ids``. The launcher
waits for all processes; if one fails the others are stopped (they would wait forever in a collective)
and the exit code is nonzero.

    python launch/local_multiprocess.py configs/tiny_rdpo.yaml -n 2 -k 4 train.max_steps=10
    python launch/local_multiprocess.py configs/tiny_rdpo.yaml --dry-run

Process 0 writes to this terminal; process i > 0 to ``<log-dir>/process_<i>.log``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run config YAML")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides passed to every process")
    p.add_argument("-n", "--num-processes", type=int, default=2, help="number of processes (default 2)")
    p.add_argument("-k", "--devices-per-process", type=int, default=4,
                   help="devices per process: simulated CPU devices, or GPUs with --platform gpu (default 4)")
    p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
    p.add_argument("--command", default="train", help="rdpo-jax command to run (default train)")
    p.add_argument("--program", default=f"{shlex.quote(sys.executable)} -m rdpo_jax",
                   help="how to start rdpo-jax (default: this python -m rdpo_jax)")
    p.add_argument("--log-dir", default="runs/multiprocess_logs", help="logs of processes 1..N-1")
    p.add_argument("--timeout", type=float, default=None, help="stop everything after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="print the commands, one per line, and run nothing")
    a = p.parse_intermixed_args(argv)
    if a.num_processes < 1 or a.devices_per_process < 1:
        p.error("--num-processes and --devices-per-process must be positive")
    return a


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_commands(a: argparse.Namespace, port: int) -> list[list[str]]:
    """One argv list per process (``env`` with its variables, then the rdpo-jax command)."""
    n, k = a.num_processes, a.devices_per_process
    cmds = []
    for i in range(n):
        dist = [f"distributed.coordinator_address=127.0.0.1:{port}", f"distributed.num_processes={n}",
                f"distributed.process_id={i}"]
        if a.platform == "cpu":
            env = ["JAX_PLATFORMS=cpu", f"XLA_FLAGS=--xla_force_host_platform_device_count={k}"]
            dist.append("distributed.cpu_collectives=gloo")
        else:
            env = []
            ids = ",".join(str(i * k + j) for j in range(k))
            dist.append(f"distributed.local_device_ids=[{ids}]")
        cmds.append(["env", *env, *shlex.split(a.program), a.command, a.config, *dist, *a.overrides])
    return cmds


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminates the still-running processes this launcher started (then kills them after 10 s)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(cmds: list[list[str]], log_dir: Path, timeout: float | None) -> int:
    """Starts every command, waits for all; the first failure stops the rest. Returns 0 or a failing code."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    for i, c in enumerate(cmds):
        out = None
        if i > 0:
            out = open(log_dir / f"process_{i}.log", "w")  # noqa: SIM115 - closed below
            logs.append(out)
        procs.append(subprocess.Popen(c, stdout=out, stderr=subprocess.STDOUT if out else None))
    start, rc = time.monotonic(), 0
    try:
        while None in [p.poll() for p in procs]:  # a list: poll every process, not just the first running
            failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
            if failed:
                i, rc = failed[0]
                print(f"local_multiprocess: process {i} exited with {rc}; stopping the others", file=sys.stderr)
                break
            if timeout is not None and time.monotonic() - start > timeout:
                print(f"local_multiprocess: timed out after {timeout} s; stopping all processes", file=sys.stderr)
                rc = 124
                break
            time.sleep(0.2)
    finally:
        _stop(procs)
        for f in logs:
            f.close()
    if rc == 0:
        rc = next((p.returncode for p in procs if p.returncode), 0)
    for i, p in enumerate(procs):
        if i > 0 and p.returncode:
            tail = (log_dir / f"process_{i}.log").read_text(errors="replace").splitlines()[-20:]
            print(f"--- process {i} (exit {p.returncode}), last lines of {log_dir}/process_{i}.log:",
                  *tail, sep="\n", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    port = a.port or (12355 if a.dry_run else free_port())
    cmds = build_commands(a, port)
    if a.dry_run:
        for c in cmds:
            print(shlex.join(c))
        return 0
    for c in cmds:
        print("+ " + shlex.join(c), flush=True)
    os.chdir(REPO)
    return run(cmds, Path(a.log_dir), a.timeout)


if __name__ == "__main__":
    sys.exit(main())
