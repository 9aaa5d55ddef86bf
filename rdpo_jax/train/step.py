"""The jitted, sharded training step: policy forward -> blocked log-probs -> per-pair sums -> reference
(frozen params under stop_gradient, or cached sums) -> loss registry -> grads -> optax update -> metrics.

Batches carry a leading micro-batch axis M: every array of the row contract
(`rdpo_jax.batch`) is [M, N, ...] (rows split over data x fsdp) and every pair array is [M, P]
(replicated). With ``C`` the number of real pairs (or scored tokens, for SFT) over all M micro-batches,

    loss = sum_m sum_{real pairs p in m} l_p / C,     grads = sum_m d/dparams (sum_{p in m} l_p / C),

which equals one batch of all M micro-batches exactly (up to float summation order): gradient
accumulation with a per-pair loss needs no rescaling.

A non-finite loss, gradient, updated parameter or optimiser moment sets ``metrics["finite"] = 0``; with
``nan_policy="skip"`` the step then keeps the old state (params, optimiser state and step count), so no NaN
or inf ever reaches the params (an update can overflow although loss and gradient are finite: a huge
learning rate). ``metrics["pair_finite"]`` [M, P] flags the pairs whose loss is not finite (preference
objectives; the host names them).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rdpo_jax.batch import PAIR_KEYS
from rdpo_jax.config import NAN_POLICIES
from rdpo_jax.sharding import batch_sharding, param_shardings, replicated, under_mesh, validate_layout


class TrainState(NamedTuple):
    """Everything the optimiser updates: step counter (int32 scalar), params (nnx.State), optax state."""

    step: jax.Array
    params: Any
    opt_state: Any


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of a model whose only state is its parameters."""
    graphdef, params, *rest = nnx.split(model, nnx.Param, ...)
    leftovers = [leaf for r in rest for leaf in jax.tree.leaves(r)]
    if leftovers:
        raise ValueError(f"the model holds {len(leftovers)} non-parameter state arrays; the step expects "
                         "parameters only")
    return graphdef, params


def state_shardings(params, tx: optax.GradientTransformation, mesh: Mesh, rules=None) -> TrainState:
    """NamedShardings of a TrainState: params by the rules table, optimiser moments like their params,
    scalars (counts, step) replicated."""
    p_shard = param_shardings(params, mesh, rules)
    abstract_opt = jax.eval_shape(tx.init, params)
    opt_shard = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, p_shard,
                                      transform_non_params=lambda _: replicated(mesh),
                                      is_leaf=lambda x: isinstance(x, nnx.Variable))
    return TrainState(step=replicated(mesh), params=p_shard, opt_state=opt_shard)


def init_train_state(params, tx: optax.GradientTransformation, shardings: TrainState | None = None) -> TrainState:
    """A TrainState at step 0 that owns fresh copies of ``params`` (placed per ``shardings`` when given),
    so donating it to the step never deletes the caller's arrays."""
    copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p),
                   out_shardings=None if shardings is None else shardings.params)
    params = copy(params)
    if shardings is None:
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return TrainState(jax.device_put(jnp.zeros((), jnp.int32), shardings.step), params, opt_state)


def batch_shardings(mesh: Mesh, batch: dict[str, Any]) -> dict[str, NamedSharding]:
    """Row arrays [M, N, ...] split over data x fsdp on N; pair arrays [M, P] replicated."""
    return {k: replicated(mesh) if k in PAIR_KEYS else batch_sharding(mesh, len(v.shape), batch_dim=1)
            for k, v in batch.items()}


def make_loss_and_grads(graphdef: nnx.GraphDef, objective, *, with_grads: bool = True) -> Callable:
    """``f(params, batch, ref_params) -> (loss, grads, metrics)`` with micro-batch accumulation (pure).

    ``with_grads=False`` gives the evaluation function: the same loss and metrics, ``grads`` None.
    """

    def loss_and_grads(params, batch, ref_params=None):
        total = jnp.maximum(objective.count(batch), 1.0)
        ref_model = None if ref_params is None else nnx.merge(graphdef, jax.lax.stop_gradient(ref_params))

        def scaled_loss(p, rows):
            loss_sum, metric_sums, finite_pairs = objective(nnx.merge(graphdef, p), ref_model, rows)
            return loss_sum / total, (metric_sums, finite_pairs)

        def micro(carry, rows):
            grads_acc, loss_acc, metrics_acc = carry
            if with_grads:
                (loss, (metric_sums, finite_pairs)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(
                    params, rows)
                grads_acc = jax.tree.map(jnp.add, grads_acc, grads)
            else:
                loss, (metric_sums, finite_pairs) = scaled_loss(params, rows)
            metrics_acc = {k: metrics_acc[k] + v for k, v in metric_sums.items()}
            return (grads_acc, loss_acc + loss, metrics_acc), finite_pairs

        first = jax.tree.map(lambda x: x[0], batch)
        metric_shapes = jax.eval_shape(lambda p: scaled_loss(p, first)[1][0], params)
        init = (jax.tree.map(jnp.zeros_like, params) if with_grads else None, jnp.zeros((), jnp.float32),
                {k: jnp.zeros((), jnp.float32) for k in metric_shapes})
        (grads, loss, metric_sums), finite_pairs = jax.lax.scan(micro, init, batch)
        metrics = {k: v / total for k, v in metric_sums.items()}
        metrics["count"] = objective.count(batch)
        metrics["num_tokens"] = batch["attention_mask"].astype(jnp.float32).sum()  # the step's real input tokens
        if finite_pairs is not None:
            metrics["pair_finite"] = finite_pairs
        return loss, grads, metrics

    return loss_and_grads


def make_eval_step(graphdef: nnx.GraphDef, objective) -> Callable:
    """``f(params, batch, ref_params) -> metrics`` (loss included), no gradients; jit it."""
    fn = make_loss_and_grads(graphdef, objective, with_grads=False)

    def evaluate(params, batch, ref_params=None):
        loss, _, metrics = fn(params, batch, ref_params)
        return {**metrics, "loss": loss}

    return evaluate


def all_finite(tree) -> jax.Array:
    """Scalar bool: every floating leaf of ``tree`` is free of NaN and inf (one fused reduction per leaf)."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(flags).all() if flags else jnp.asarray(True)


def make_train_step(graphdef: nnx.GraphDef, objective, tx: optax.GradientTransformation, *,
                    schedule: Callable | None = None, nan_policy: str = "error") -> Callable:
    """``step(state, batch, ref_params) -> (state, metrics)``, pure; jit it with `jit_train_step`."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy={nan_policy!r}; accepted: {', '.join(NAN_POLICIES)}")
    loss_and_grads = make_loss_and_grads(graphdef, objective)

    def step(state: TrainState, batch: dict[str, jax.Array], ref_params=None):
        loss, grads, metrics = loss_and_grads(state.params, batch, ref_params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params) & all_finite(opt_state)
        new = TrainState(state.step + 1, params, opt_state)
        if nan_policy == "skip":
            new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, "finite": finite.astype(jnp.float32)}
        if schedule is not None:
            metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new, metrics

    return step


def jit_train_step(step: Callable, shardings: TrainState | None, mesh: Mesh | None, batch_example: dict,
                   ref_shardings=None, model_config=None, activation_sharding: bool | None = None) -> Callable:
    """``jax.jit`` with explicit in/out shardings and the state donated (no mesh: plain jit, donated),
    traced under the mesh (:func:`~rdpo_jax.sharding.under_mesh`: with ``activation_sharding``, default on
    GPU/TPU and off on CPU, each decoder layer's input and output stay split over data x fsdp).

    With a mesh, the batch rows and (given ``model_config``) the attention heads are checked against the
    mesh first, so a layout that cannot work fails here, before anything is compiled.
    """
    if mesh is None or shardings is None:
        return jax.jit(step, donate_argnums=0)
    validate_layout(dict(mesh.shape), global_rows=batch_example["input_ids"].shape[1],
                    num_heads=getattr(model_config, "num_heads", None),
                    num_kv_heads=getattr(model_config, "num_kv_heads", None),
                    global_batch_name="micro-batch")
    jitted = jax.jit(step, in_shardings=(shardings, batch_shardings(mesh, batch_example), ref_shardings),
                     out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    return under_mesh(jitted, mesh, activation_sharding)
