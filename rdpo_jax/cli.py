"""Command-line entry point: `rdpo-jax <command> ...` (also `python -m rdpo_jax`).

Commands are registered in `COMMANDS`; each takes the remaining argv and returns an exit code.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


def _cmd_info(argv: Sequence[str]) -> int:
    """Print versions, devices and the loss registry."""
    argparse.ArgumentParser(prog="rdpo-jax info", description=_cmd_info.__doc__).parse_args(argv)
    import jax

    import rdpo_jax
    from rdpo_jax.losses import LOSSES

    print(f"rdpo_jax {rdpo_jax.__version__}  jax {jax.__version__}")
    print(f"devices: {jax.devices()}")
    print(f"losses: {', '.join(sorted(LOSSES))}")
    return 0


def _load_run_config(prog: str, description: str, argv: Sequence[str]):
    """The resolved config of ``prog [CONFIG.yaml] [key=value ...]`` (argparse: ``--help`` lists both)."""
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 epilog="Keys and accepted values: docs/configuration.md, or `rdpo-jax config` "
                                        "to print the resolved config.")
    ap.add_argument("config", nargs="?", help="YAML config (omit for the built-in defaults)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.loss=dpo optim.lr=5e-7")
    args = ap.parse_args(argv)
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no file, only overrides
        config, overrides = None, [config, *overrides]
    from rdpo_jax.config_loader import load_config

    return load_config(config, overrides)


def format_eval(metrics: dict[str, float], step: int) -> str:
    """One line of the final held-out metrics: ``final eval (step N): key value, ...`` (sorted keys)."""
    shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
    return f"final eval (step {step}): {shown}" if metrics else f"final eval (step {step}): no held-out data"


def _cmd_train(argv: Sequence[str]) -> int:
    """Train with a YAML config and dotted key=value overrides (rdpo-jax train CONFIG [key=value ...])."""
    cfg = _load_run_config("rdpo-jax train", _cmd_train.__doc__, argv)
    from rdpo_jax.train.distributed import initialize_distributed

    initialize_distributed(cfg.distributed)
    from rdpo_jax.train.trainer import train

    result = train(cfg)
    print(format_eval(result.final_eval, result.steps))
    skipped = f" ({len(result.skipped_steps)} skipped: {result.skipped_steps})" if result.skipped_steps else ""
    print(f"done: {result.steps} steps{skipped}; outputs in {result.output_dir}")
    return 0


def _cmd_tiny(argv: Sequence[str]) -> int:
    """The built-in tiny default on CPU: SFT on the synthetic task, then RDPO and DPO from it.

    Prints held-out rewards/accuracies and the oracle's win rate of each against SFT."""
    ap = argparse.ArgumentParser(prog="rdpo-jax tiny", description=_cmd_tiny.__doc__)
    ap.add_argument("--root", default="runs/tiny", help="output directory (default runs/tiny)")
    ap.add_argument("--fast", action="store_true", help="smaller data and fewer steps (about a minute)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from rdpo_jax.tiny import run_tiny

    run_tiny(args.root, fast=args.fast, seed=args.seed)
    print(f"outputs in {args.root}: sft/, rdpo/, dpo/ (checkpoints, metrics.jsonl, tensorboard/, final/hf), "
          "curves.png, summary.json")
    return 0


def _cmd_analyze(argv: Sequence[str]) -> int:
    """E1-E3 from checkpoints on a held-out set: report.json and PNG plots (rdpo_jax.analysis.command)."""
    from rdpo_jax.analysis.command import main

    return main(argv)


def _cmd_judge(argv: Sequence[str]) -> int:
    """Win rate of A's responses against B's (or a dataset's chosen) with an endpoint, local or oracle judge."""
    from rdpo_jax.eval.judges.command import main

    return main(argv)


def _cmd_generate(argv: Sequence[str]) -> int:
    """Sample responses to dataset or file prompts into a resumable JSONL (rdpo_jax.eval.generate_command)."""
    from rdpo_jax.eval.generate_command import main

    return main(argv)


def _cmd_annotate(argv: Sequence[str]) -> int:
    """Rationales for a preference set from a local model or an endpoint, checked (rdpo_jax.annotate)."""
    from rdpo_jax.annotate.command import main

    return main(argv)


def _cmd_config(argv: Sequence[str]) -> int:
    """Validate a config (with overrides) and print it resolved: rdpo-jax config [CONFIG] [key=value ...]."""
    cfg = _load_run_config("rdpo-jax config", _cmd_config.__doc__, argv)
    from rdpo_jax.config_loader import dump_config

    print(dump_config(cfg), end="")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"info": _cmd_info, "train": _cmd_train, "tiny": _cmd_tiny,
                                                       "analyze": _cmd_analyze, "config": _cmd_config,
                                                       "judge": _cmd_judge, "generate": _cmd_generate,
                                                       "annotate": _cmd_annotate}


def usage() -> str:
    """``rdpo-jax --help``: every command with the first line of what it does."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {fn.__doc__.split(chr(10))[0]}" for name, fn in COMMANDS.items()]
    return "\n".join(["usage: rdpo-jax {" + ",".join(COMMANDS) + "} [args...]", "", "commands:", *lines, "",
                      "rdpo-jax <command> --help lists that command's arguments and options."])


CPU_SAFE_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def main(argv: Sequence[str] | None = None) -> int:
    # XLA:CPU's concurrency-optimised scheduler can deadlock fsdp-sharded programs on several CPU devices;
    # the flag only concerns the CPU backend. Set before JAX starts (an explicit user setting wins).
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SAFE_FLAG}".strip()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rdpo-jax: unknown command {name!r}; accepted: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from rdpo_jax.errors import ConfigError, RdpoError

    try:
        return COMMANDS[name](rest)
    except RdpoError as e:  # a message that says what to change: no traceback
        print(f"rdpo-jax {name}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
