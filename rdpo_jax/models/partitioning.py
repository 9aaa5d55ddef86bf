"""Logical axis names of parameters and the one small table that maps them onto mesh axes.

Parameters carry logical names (``vocab``, ``embed``, ``mlp``, ``heads``, ``kv_heads``, ``head_dim``,
``layers``) as ``out_sharding`` metadata of their ``nnx.Param``. :func:`logical_axes` reads them back;
:func:`spec_for` turns one tuple of names into a ``PartitionSpec`` under a rules table. This module is
the only place in ``rdpo_jax.models`` that mentions mesh axis names, and only in the default table.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

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
