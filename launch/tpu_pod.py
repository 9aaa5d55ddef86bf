#!/usr/bin/env python3
"""Train on a Cloud TPU VM slice (single- or multi-host): create it, copy this repo to every worker, install,
run ``rdpo-jax train CONFIG distributed.auto=true ...`` on all workers at once, optionally delete it.

On a TPU pod slice ``jax.distributed.initialize()`` with no arguments detects the coordinator, the number of
processes and each worker's id from the TPU metadata, so the same command runs on every worker.

    python launch/tpu_pod.py --name rdpo-v4 --zone us-central2-b --accelerator-type v4-32 \\
        configs/paper/mistral7b_instruct_v02_orcaratspec_rdpo.yaml output_dir=/mnt/shared/runs/m7b_rdpo
    python launch/tpu_pod.py ... --dry-run     # print the commands, one per line, run nothing

Only the standard library is used, so this runs on a laptop with ``gcloud`` installed.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run config YAML, relative to the repo root (e.g. configs/tiny_rdpo.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides passed to rdpo-jax train")
    p.add_argument("--name", required=True, help="TPU VM name")
    p.add_argument("--zone", required=True, help="e.g. us-central2-b")
    p.add_argument("--accelerator-type", default="v4-8", help="e.g. v4-8, v4-32, v5litepod-16 (default v4-8)")
    p.add_argument("--version", default="tpu-ubuntu2204-base",
                   help="TPU VM software version (v5e: v2-alpha-tpuv5-lite; default tpu-ubuntu2204-base)")
    p.add_argument("--project", default=None, help="GCP project (default: gcloud's configured one)")
    p.add_argument("--spot", action="store_true", help="create a Spot TPU VM")
    p.add_argument("--no-create", dest="create", action="store_false", help="reuse an existing TPU VM")
    p.add_argument("--no-copy", dest="copy", action="store_false", help="do not copy the repo")
    p.add_argument("--no-install", dest="install", action="store_false", help="skip the pip install step")
    p.add_argument("--setup", action="append", default=[], metavar="CMD",
                   help="extra shell command run on all workers before training (repeatable), e.g. a model "
                        "download to the directory model.source names")
    p.add_argument("--command", default="train", help="rdpo-jax command to run (default train)")
    p.add_argument("--remote-dir", default="rdpo_jax", help="repo directory on the workers, under ~ (default rdpo_jax)")
    p.add_argument("--delete", action="store_true", help="delete the TPU VM afterwards (also after a failure)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, one per line, and run nothing")
    return p.parse_intermixed_args(argv)


def build_commands(a: argparse.Namespace) -> tuple[list[list[str]], list[list[str]]]:
    """(main commands, cleanup commands), each an argv list."""
    scope = ["--zone", a.zone] + (["--project", a.project] if a.project else [])
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", a.name, *scope, "--worker=all", "--command"]
    cmds: list[list[str]] = []
    if a.create:
        cmds.append(["gcloud", "compute", "tpus", "tpu-vm", "create", a.name, *scope,
                     "--accelerator-type", a.accelerator_type, "--version", a.version]
                    + (["--spot"] if a.spot else []))
    remote = f"~/{a.remote_dir}"
    if a.copy:
        tarball = f"/tmp/rdpo_jax_{a.name}.tar.gz"
        cmds.append(["tar", "-czf", tarball, "--exclude=./.git", "--exclude=./runs", "--exclude=./.venv",
                     "--exclude=__pycache__", "-C", str(REPO), "."])
        cmds.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, f"{a.name}:~/rdpo_jax.tar.gz", *scope,
                     "--worker=all"])
        cmds.append([*ssh, f"mkdir -p {remote} && tar -xzf ~/rdpo_jax.tar.gz -C {remote}"])
    if a.install:
        cmds.append([*ssh, f"cd {remote} && python3 -m venv .venv && . .venv/bin/activate && "
                           "pip install -q -U pip && pip install -q -r requirements.txt -e . && "
                           "pip install -q -U 'jax[tpu]'"])
    for setup in a.setup:
        cmds.append([*ssh, f"cd {remote} && . .venv/bin/activate && {setup}"])
    train = shlex.join(["rdpo-jax", a.command, a.config, "distributed.auto=true", *a.overrides])
    cmds.append([*ssh, f"cd {remote} && . .venv/bin/activate && {train}"])
    cleanup = [["gcloud", "compute", "tpus", "tpu-vm", "delete", a.name, *scope, "--quiet"]] if a.delete else []
    return cmds, cleanup


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cmds, cleanup = build_commands(a)
    if a.dry_run:
        for c in cmds + cleanup:
            print(shlex.join(c))
        return 0
    rc = 0
    try:
        for c in cmds:
            print("+ " + shlex.join(c), flush=True)
            rc = subprocess.run(c).returncode
            if rc:
                print(f"tpu_pod: command failed with exit code {rc}: {shlex.join(c)}", file=sys.stderr)
                break
    finally:
        for c in cleanup:
            print("+ " + shlex.join(c), flush=True)
            subprocess.run(c)
    return rc


if __name__ == "__main__":
    sys.exit(main())
