#!/usr/bin/env python3
"""Train on one GPU host: make a venv, install the package with ``jax[cuda12]``, then run
``rdpo-jax train CONFIG ...`` with XLA settings suited to GPUs.

    python launch/single_gpu.py configs/tiny_rdpo.yaml
    python launch/single_gpu.py configs/paper/llama3_8b_instruct_orcaratspec_rdpo.yaml train.micro_batches=4
    python launch/single_gpu.py configs/tiny_dpo.yaml --no-install --dry-run

Environment of the training command:
- ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default 0.95): the share of GPU memory JAX preallocates (its own
  default is 0.75, which wastes a quarter of the card on a dedicated training box);
- ``XLA_FLAGS``: ``--xla_gpu_enable_latency_hiding_scheduler=true`` (overlaps collectives and copies with
  compute; matters once FSDP spans several GPUs of the host) plus anything given with ``--xla-flags``.
All GPUs of the host are used (mesh.fsdp=-1 in the paper presets shards over them).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPU_XLA_FLAGS = ["--xla_gpu_enable_latency_hiding_scheduler=true"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run config YAML")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides passed to rdpo-jax train")
    p.add_argument("--venv", default=".venv", help="venv directory, relative to the repo (default .venv)")
    p.add_argument("--no-install", dest="install", action="store_false", help="use the venv as it is")
    p.add_argument("--jax-extra", default="cuda12", help="the jax extra to install (default cuda12)")
    p.add_argument("--mem-fraction", type=float, default=0.95, help="XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.95)")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS, appended to the GPU defaults")
    p.add_argument("--command", default="train", help="rdpo-jax command to run (default train)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, one per line, and run nothing")
    return p.parse_intermixed_args(argv)


def build_commands(a: argparse.Namespace) -> list[list[str]]:
    """The commands to run (argv lists), run from the repo root."""
    venv = Path(a.venv)
    pip = str(venv / "bin" / "pip")
    cmds: list[list[str]] = []
    if a.install:
        cmds.append([sys.executable, "-m", "venv", str(venv)])
        cmds.append([pip, "install", "-q", "-r", "requirements.txt", "-e", "."])
        cmds.append([pip, "install", "-q", "-U", f"jax[{a.jax_extra}]"])
    xla_flags = " ".join(GPU_XLA_FLAGS + ([a.xla_flags] if a.xla_flags else []))
    env = [f"XLA_PYTHON_CLIENT_MEM_FRACTION={a.mem_fraction}", f"XLA_FLAGS={xla_flags}"]
    cmds.append(["env", *env, str(venv / "bin" / "rdpo-jax"), a.command, a.config, *a.overrides])
    return cmds


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cmds = build_commands(a)
    if a.dry_run:
        for c in cmds:
            print(shlex.join(c))
        return 0
    os.chdir(REPO)
    for c in cmds:
        print("+ " + shlex.join(c), flush=True)
        rc = subprocess.run(c).returncode
        if rc:
            print(f"single_gpu: command failed with exit code {rc}: {shlex.join(c)}", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
