"""Multi-host start-up on JAX's own runtime: ``jax.distributed.initialize`` from config or environment.

Call `initialize_distributed` before anything touches a JAX device. With no coordinator configured and
``auto`` false it does nothing (one process). On TPU pods and SLURM/Open MPI clusters ``auto=true`` lets JAX
detect the coordinator. Environment variables override the config: ``RDPO_COORDINATOR``,
``RDPO_NUM_PROCESSES``, ``RDPO_PROCESS_ID``. On CPU, several processes need ``cpu_collectives="gloo"``.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from rdpo_jax.config import DistributedConfig

_ENV = {"coordinator_address": "RDPO_COORDINATOR", "num_processes": "RDPO_NUM_PROCESSES",
        "process_id": "RDPO_PROCESS_ID"}


def initialize_distributed(cfg: DistributedConfig) -> bool:
    """Initialises jax.distributed when configured; returns whether it did."""
    args = {k: getattr(cfg, k) for k in _ENV}
    for key, var in _ENV.items():
        if os.environ.get(var):
            args[key] = os.environ[var] if key == "coordinator_address" else int(os.environ[var])
    if cfg.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    if args["coordinator_address"] is None and not cfg.auto:
        return False
    if args["coordinator_address"] is not None:
        missing = [k for k in ("num_processes", "process_id") if args[k] is None]
        if missing:
            raise ValueError(f"distributed.coordinator_address is set but distributed.{', '.join(missing)} "
                             f"is not (or set {', '.join(_ENV[m] for m in missing)})")
        jax.distributed.initialize(args["coordinator_address"], num_processes=args["num_processes"],
                                   process_id=args["process_id"], local_device_ids=cfg.local_device_ids)
    else:
        jax.distributed.initialize()
    return True


def broadcast_text(value: str | None, max_bytes: int = 4096) -> str | None:
    """Process 0's ``value`` (a string, at most ``max_bytes`` UTF-8 bytes kept, or None) on every process; a
    no-op with one process. Every process must call it (a collective)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    buf = np.zeros(max_bytes + 1, np.uint8)  # byte 0: 1 when a value is present
    if jax.process_index() == 0 and value is not None:
        raw = value.encode()[:max_bytes]
        buf[0] = 1
        buf[1:1 + len(raw)] = np.frombuffer(raw, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    if not out[0]:
        return None
    return bytes(out[1:][out[1:] > 0].astype(np.uint8)).decode(errors="replace")
