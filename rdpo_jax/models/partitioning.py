"""Logical axis names of parameters and the one small table that maps them onto mesh axes.

Parameters carry logical names (``vocab``, ``embed``, ``mlp``, ``heads``, ``kv_heads``, ``head_dim``,
``layers``) as ``out_sharding`` metadata of their ``nnx.Param``. :func:`logical_axes` reads them back;
:func:`spec_for` turns one tuple of names into a ``PartitionSpec`` under a rules table.

Activations carry logical names too (:data:`ACTIVATION_RULES`: ``batch``, the rows of a batch, over all of
``data x fsdp``; ``heads``, attention heads, over ``tensor``): :func:`constrain_activation` pins them with
``with_sharding_constraint`` under the mesh in context (``jax.set_mesh``) and does nothing without one, so
the same model runs unsharded (tests, generation) and sharded (the training step) unchanged. Without these
constraints XLA's propagation may gather a layer's activations over fsdp (the all-gathered weights pull them
along), which multiplies the per-device activation memory by the fsdp size.

This module is the only place in ``rdpo_jax.models`` that mentions mesh axis names, and only in the two
tables.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# logical name -> candidate mesh axes, first present/unused/dividing one wins; no candidate = replicated.
DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    "embed": ("fsdp",),
    "vocab": ("tensor", "fsdp"),
    "mlp": ("tensor", "fsdp"),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "layers": (),
}

# logical activation name -> the mesh axes it is split over, all of them at once (those present with size > 1).
ACTIVATION_RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),
    "heads": ("tensor",),
}

_KEY = "out_sharding"


def make_param(value, names: tuple[str | None, ...]) -> nnx.Param:
    """An ``nnx.Param`` holding ``value`` with logical axis names as (non-eager) ``out_sharding``."""
    if hasattr(value, "ndim") and len(names) != value.ndim:
        raise ValueError(f"{len(names)} logical names {names} for an array of shape {value.shape}")
    try:
        return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False)
    except TypeError:  # flax versions without eager sharding
        return nnx.Param(value, sharding=tuple(names))


def _names_of(var) -> tuple[str | None, ...] | None:
    meta = var.get_metadata() if hasattr(var, "get_metadata") else {}
    names = meta.get(_KEY) or meta.get("sharding") or meta.get("sharding_names")
    return tuple(names) if names is not None else None


def logical_axes(model_or_state) -> nnx.State:
    """Tuples of logical axis names, one per parameter, in the structure of ``nnx.state(model, nnx.Param)``.

    Accepts an ``nnx.Module`` or an ``nnx.State`` (of Variables). Map the result with
    ``jax.tree.map(f, axes, is_leaf=lambda x: isinstance(x, tuple))``.
    """
    state = model_or_state
    if isinstance(model_or_state, nnx.Module):
        state = nnx.state(model_or_state, nnx.Param)
    flat = nnx.to_flat_state(state) if hasattr(nnx, "to_flat_state") else state.flat_state()
    out = {}
    for path, var in flat:
        names = _names_of(var)
        if names is None:
            raise ValueError(f"parameter {'.'.join(map(str, path))} has no logical axis names")
        out[tuple(path)] = names
    if hasattr(nnx, "from_flat_state"):
        return nnx.from_flat_state(out)
    return nnx.State.from_flat_path(out)


def spec_for(
    names: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, Sequence[str]] | None = None,
) -> PartitionSpec:
    """PartitionSpec for one array: dim i goes to the first mesh axis listed for ``names[i]`` in ``rules``
    that exists in ``mesh``, is not used by an earlier dim and divides ``shape[i]``; otherwise replicated.
    """
    rules = DEFAULT_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape, strict=True):
        chosen = None
        for axis in (rules.get(name, ()) if name is not None else ()):
            if axis in mesh.shape and axis not in used and size % mesh.shape[axis] == 0:
                chosen = axis
                break
        if chosen is not None:
            used.add(chosen)
        spec.append(chosen)
    return PartitionSpec(*spec)


def named_shardings(model_or_state, mesh: Mesh, rules: Mapping[str, Sequence[str]] | None = None) -> nnx.State:
    """``NamedSharding`` per parameter (same structure as :func:`logical_axes`), via :func:`spec_for`."""
    state = model_or_state
    if isinstance(model_or_state, nnx.Module):
        state = nnx.state(model_or_state, nnx.Param)
    axes = logical_axes(state)
    return jax.tree.map(
        lambda names, var: NamedSharding(mesh, spec_for(names, var.shape, mesh, rules)),
        axes, state, is_leaf=lambda x: isinstance(x, tuple | nnx.Variable),
    )


def activation_spec(names: Sequence[str | None], shape: Sequence[int], mesh) -> PartitionSpec:
    """PartitionSpec of an activation: dim i over every axis of ``ACTIVATION_RULES[names[i]]`` that ``mesh``
    has with size > 1, when their product divides ``shape[i]``; otherwise that dim is replicated."""
    spec = []
    for name, size in zip(names, shape, strict=True):
        axes = tuple(a for a in ACTIVATION_RULES.get(name, ()) if a in mesh.shape and mesh.shape[a] > 1)
        ways = 1
        for a in axes:
            ways *= mesh.shape[a]
        spec.append(axes if axes and size % ways == 0 else None)
    return PartitionSpec(*spec)


_CONSTRAIN = contextvars.ContextVar("rdpo_jax_activation_constraints", default=False)


@contextlib.contextmanager
def activation_constraints(enabled: bool) -> Iterator[None]:
    """Turn :func:`constrain_activation` on (or off) while tracing under this context."""
    token = _CONSTRAIN.set(enabled)
    try:
        yield
    finally:
        _CONSTRAIN.reset(token)


def context_mesh():
    """The mesh in context (``jax.set_mesh``) as an abstract mesh, or None outside one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not mesh.shape:
        return None
    return mesh


def constrain_activation(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``x`` pinned to :func:`activation_spec` under the mesh in context when the constraints are on
    (:func:`activation_constraints`); ``x`` itself otherwise.

    x [...] with one logical name (or None) per dim, e.g. a layer's input [B, T, d] as ("batch", None, None).
    """
    mesh = context_mesh()
    if mesh is None or not _CONSTRAIN.get():
        return x
    spec = activation_spec(names, x.shape, mesh)
    if all(s is None for s in spec):
        return x
    return jax.lax.with_sharding_constraint(x, spec)
