"""Device mesh, the logical-axis rules table, and placement of params, optimiser state and batches.

Mesh axes: ``data`` (pure data parallelism: parameters replicated), ``fsdp`` (data parallelism with
parameters, gradients and optimiser state sharded: ZeRO-3 style) and ``tensor`` (Megatron-style model
parallelism of heads and the MLP). The global batch is split over ``data x fsdp``. Parameters carry
logical axis names (``rdpo_jax.models.partitioning``); the one rules table `DEFAULT_RULES` maps them onto
mesh axes, and `ACTIVATION_RULES` the activations' names (the batch rows). Apart from those two tables in
the models' partitioning module, this is the only module that names a mesh axis.

A sharded step is traced under its mesh (:func:`under_mesh`), which turns the models' activation
constraints on.

All checks run before anything is compiled and name the offending value.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rdpo_jax.config_fields import Range, setting
from rdpo_jax.errors import RdpoError
from rdpo_jax.models.partitioning import ACTIVATION_RULES, DEFAULT_RULES, activation_constraints, named_shardings

MESH_AXES = ("data", "fsdp", "tensor")  # also the fields of MeshConfig, in this order
BATCH_AXES = ACTIVATION_RULES["batch"]  # ("data", "fsdp"): the rows of every batch
AXIS_SIZE = Range("a positive integer, or -1 for the remaining devices", lambda v: v > 0 or v == -1)

__all__ = ["BATCH_AXES", "DEFAULT_RULES", "MESH_AXES", "MeshConfig", "ShardingError", "batch_sharding",
           "make_mesh", "param_shardings", "replicated", "resolve_mesh_shape", "under_mesh", "validate_layout"]


class ShardingError(RdpoError, ValueError):
    """A mesh or batch layout that cannot work (raised before compilation; the message names the value)."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the mesh axes; at most one may be -1 to take the remaining devices."""

    data: int = setting(1, within=AXIS_SIZE, doc="pure data-parallel axis (params replicated)")
    fsdp: int = setting(-1, within=AXIS_SIZE, doc="FSDP axis (params, grads, optimiser state sharded); -1: the "
                                                  "remaining devices")
    tensor: int = setting(1, within=AXIS_SIZE, doc="tensor-parallel axis (heads, MLP)")

    def sizes(self) -> dict[str, int]:
        return {axis: getattr(self, axis) for axis in MESH_AXES}


def resolve_mesh_shape(cfg: MeshConfig, n_devices: int) -> dict[str, int]:
    """Axis sizes with -1 resolved so that their product is ``n_devices``; errors name the axis."""
    sizes = cfg.sizes()
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ShardingError(f"mesh.{axis}={size}: axis sizes are positive integers, or -1 for 'the rest'")
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ShardingError(f"mesh axes {', '.join(free)} are all -1; at most one axis may take the rest")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if fixed > n_devices:
        raise ShardingError(f"mesh {sizes} needs {fixed} devices but only {n_devices} are available")
    if free:
        if n_devices % fixed:
            raise ShardingError(f"mesh {sizes}: {n_devices} devices are not divisible by the fixed axes' product "
                                f"{fixed}")
        sizes[free[0]] = n_devices // fixed
    elif fixed != n_devices:
        raise ShardingError(f"mesh {sizes} uses {fixed} devices but {n_devices} are available; set one axis "
                            f"to -1 or make the product {n_devices}")
    return sizes


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: Sequence[Any] | None = None) -> Mesh:
    """A ``Mesh`` over ``devices`` (default: all) with axes (data, fsdp, tensor), auto axis types.

    jax >= 0.10's ``jax.make_mesh`` defaults to explicit axis types; this pjit-style design (sharding from
    in/out shardings and propagation) uses ``AxisType.Auto`` on every axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(cfg, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def validate_layout(mesh_shape: Mapping[str, int], *, global_rows: int | None = None,
                    num_heads: int | None = None, num_kv_heads: int | None = None,
                    global_batch_name: str = "global batch") -> None:
    """Checks, before compiling, that the batch and the heads divide over the mesh.

    global_rows: the leading (row) dimension of each micro-batch, split over data x fsdp.
    num_heads / num_kv_heads: split over tensor.
    """
    batch_ways = mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1)
    if global_rows is not None and global_rows % batch_ways:
        raise ShardingError(
            f"{global_batch_name} of {global_rows} rows is not divisible by data x fsdp = "
            f"{mesh_shape.get('data', 1)} x {mesh_shape.get('fsdp', 1)} = {batch_ways}; use a multiple of "
            f"{batch_ways} (or pad the batch with masked pairs)")
    tensor = mesh_shape.get("tensor", 1)
    for name, value in (("num_attention_heads", num_heads), ("num_key_value_heads", num_kv_heads)):
        if value is not None and value % tensor:
            raise ShardingError(f"model {name}={value} is not divisible by mesh.tensor={tensor}; accepted: a "
                                f"tensor size that divides {value}")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int, *, batch_dim: int = 0) -> NamedSharding:
    """Rows split over data x fsdp along ``batch_dim``; other dims replicated."""
    spec = [None] * ndim
    spec[batch_dim] = BATCH_AXES
    return NamedSharding(mesh, PartitionSpec(*spec))


def param_shardings(model_or_state, mesh: Mesh, rules: Mapping[str, Sequence[str]] | None = None):
    """``NamedSharding`` per parameter from its logical axis names and the rules table."""
    return named_shardings(model_or_state, mesh, DEFAULT_RULES if rules is None else rules)


def activation_sharding_default() -> bool:
    """Whether sharded steps pin activations by default: on GPU and TPU, off on CPU, where XLA's CPU runtime
    can run a program's independent collectives in different orders on different simulated devices and
    deadlock (seen with the constraints on 8 CPU devices, jax 0.10.2); CPU meshes are for tests, and the
    compile-time memory checks turn them on explicitly."""
    return jax.default_backend() != "cpu"


class under_mesh:  # noqa: N801 (used like a decorator: under_mesh(jax.jit(f, ...), mesh))
    """A jitted function that is traced, lowered and called under ``jax.set_mesh(mesh)``, so the models'
    activation sharding constraints (:func:`rdpo_jax.models.partitioning.constrain_activation`) apply when
    ``activation_sharding`` is on (default :func:`activation_sharding_default`) and splash runs per device.

    ``under_mesh(jitted, mesh)(*args)`` and ``.lower(*args)`` behave as ``jitted``'s own.
    """

    def __init__(self, jitted: Any, mesh: Mesh, activation_sharding: bool | None = None):
        self.jitted = jitted
        self.mesh = mesh
        self.activation_sharding = (activation_sharding_default() if activation_sharding is None
                                    else activation_sharding)

    def _context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(activation_constraints(self.activation_sharding))
        return stack

    def __call__(self, *args, **kwargs):
        with self._context():
            return self.jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with self._context():
            return self.jitted.lower(*args, **kwargs)
