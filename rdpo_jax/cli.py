"""Command-line entry point: `rdpo-jax <command> ...` (also `python -m rdpo_jax`).

Commands are registered in `COMMANDS`; each takes the remaining argv and returns an exit code.
"""
from __future__ import annotations

import argparse
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


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"info": _cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: rdpo-jax {" + ",".join(COMMANDS) + "} [args...]")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rdpo-jax: unknown command {name!r}; accepted: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[name](rest)
