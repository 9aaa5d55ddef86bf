"""The command-line options of an OpenAI-compatible endpoint, shared by ``rdpo-jax judge`` and ``rdpo-jax
annotate``: the URL, the model name, where the API key is read from, and the client's concurrency, timeout
and retries (:class:`rdpo_jax.eval.chat_client.ChatClient`)."""
from __future__ import annotations

import argparse
import os
from typing import Any

from rdpo_jax.errors import RdpoError

__all__ = ["add_endpoint_options", "client_settings"]


def add_endpoint_options(group: argparse._ArgumentGroup, *, model_flag: str, timeout: float) -> None:
    """``--endpoint``, ``model_flag`` (the model name sent), ``--api-key-env``, ``--concurrency``,
    ``--timeout`` (default ``timeout`` seconds), ``--max-retries`` and ``--backoff-base``."""
    group.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    group.add_argument(model_flag, help="model name sent to --endpoint")
    group.add_argument("--api-key-env", help="environment variable holding the API key (never printed)")
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    group.add_argument("--timeout", type=float, default=timeout, help=f"seconds per request (default {timeout:g})")
    group.add_argument("--max-retries", type=int, default=6, help="retries per request (default 6)")
    group.add_argument("--backoff-base", type=float, default=1.0, help="first backoff in seconds (default 1)")


def client_settings(args: argparse.Namespace, error: type[RdpoError]) -> dict[str, Any]:
    """The client keywords from parsed options: ``api_key`` (read from the variable ``--api-key-env`` names;
    an unset variable raises ``error``), ``concurrency``, ``timeout``, ``max_retries``, ``backoff_base``,
    ``seed``."""
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise error(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    if args.concurrency < 1:
        raise error(f"--concurrency {args.concurrency}: accepted: >= 1")
    return {"api_key": key, "concurrency": args.concurrency, "timeout": args.timeout,
            "max_retries": args.max_retries, "backoff_base": args.backoff_base, "seed": args.seed}
