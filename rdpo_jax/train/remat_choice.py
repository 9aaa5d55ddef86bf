"""``model.remat: auto``: the fastest activation-checkpointing policy whose compiled step fits the memory.

The policies, fastest first (:data:`AUTO_ORDER`): ``none`` (keep every activation), ``save_dots`` (keep the
projections' outputs, recompute attention, norms and activations) and ``full`` (keep only each layer's
input, recompute the layer). For each in turn the train step is compiled for the first batch and its
per-device peak estimated from XLA's memory analysis,

    peak = arguments + temporaries + outputs - aliased (donated) buffers,

and the first policy with ``peak <= margin x limit`` is kept (``limit``: ``model.remat_memory_gib``, else the
device's own ``bytes_limit``; ``margin`` :data:`MARGIN` leaves room for fragmentation and other shapes).
Without any known limit (CPU) ``none`` is kept and the log says so. If even ``full`` does not fit, the run
stops before its first step with the numbers and what to change. The executable compiled for the chosen
policy is the one the first shape runs (:class:`CompiledFirst`), so the choice costs one compile per policy
tried, not one more.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from rdpo_jax.errors import RdpoError

AUTO_ORDER = ("none", "save_dots", "full")
MARGIN = 0.9
GIB = 2.0**30


class RematDoesNotFit(RdpoError, RuntimeError):
    """Even the most memory-saving policy's compiled step exceeds the memory limit."""


def compiled_peak_bytes(analysis) -> int:
    """Per-device peak estimate of a compiled program: arguments + temporaries + outputs - aliased."""
    return int(analysis.argument_size_in_bytes + analysis.temp_size_in_bytes + analysis.output_size_in_bytes
               - analysis.alias_size_in_bytes)


def device_memory_limit() -> int | None:
    """Bytes one local device may allocate, as JAX reports it (None where it reports nothing: CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return None if limit is None else int(limit)


def batch_signature(batch: dict[str, Any]) -> tuple:
    """(key, shape, dtype) of every array of a batch: what decides which executable runs it."""
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(batch.items()))


class CompiledFirst:
    """A jitted step whose executable for one batch signature was compiled ahead (by the choice); other
    shapes go through the jitted function as usual. Called as ``step(state, batch, ref_params)``."""

    def __init__(self, jitted: Callable, compiled: Any, signature: tuple):
        self.jitted, self.compiled, self.signature = jitted, compiled, signature

    def __call__(self, state, batch, ref_params=None):
        if batch_signature(batch) == self.signature:
            return self.compiled(state, batch, ref_params)
        return self.jitted(state, batch, ref_params)


def choose_remat(make_step: Callable[[str], Any], state, batch, ref_params, *, limit_bytes: int | None,
                 candidates: tuple[str, ...] = AUTO_ORDER, margin: float = MARGIN
                 ) -> tuple[str, CompiledFirst, list[str]]:
    """(policy, step, log lines): the first of ``candidates`` whose step compiled for ``batch`` fits.

    ``make_step(policy)`` returns the jitted step (with ``.lower``) of the model under that policy.
    """
    tried = []
    for policy in candidates:
        jitted = make_step(policy)
        compiled = jitted.lower(state, batch, ref_params).compile()
        peak = compiled_peak_bytes(compiled.memory_analysis())
        tried.append(f"{policy} {peak / GIB:.2f} GiB")
        if limit_bytes is None or peak <= margin * limit_bytes:
            if limit_bytes is None:
                why = "no device memory limit is known here (set model.remat_memory_gib to choose by it)"
            else:
                why = f"fits {margin:.0%} of the {limit_bytes / GIB:.2f} GiB limit"
            line = (f"model.remat=auto: {policy} (compiled step {peak / GIB:.2f} GiB per device; {why}; tried: "
                    f"{', '.join(tried)})")
            return policy, CompiledFirst(jitted, compiled, batch_signature(batch)), [line]
    raise RematDoesNotFit(
        f"model.remat=auto: no policy fits {margin:.0%} of the {limit_bytes / GIB:.2f} GiB per-device limit "
        f"(compiled step: {', '.join(tried)}); use more devices (mesh.fsdp), more micro-batches "
        "(train.micro_batches), shorter sequences (data.max_length) or a larger model.remat_memory_gib")
