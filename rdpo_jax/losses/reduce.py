"""From per-pair losses to the batch loss: masking padded pairs, finite flags, and sums/means over real pairs."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rdpo_jax.losses.inputs import SequenceLogps
from rdpo_jax.losses.numerics import f32
from rdpo_jax.losses.registry import LOSSES

Array = jax.Array


def mask_pairs(logps: SequenceLogps, pair_mask: Array | None) -> SequenceLogps:
    """``logps`` with every field of a padded pair (``pair_mask`` False) replaced by 0 via ``where``, and
    ``pair_mask`` recorded in it (for the losses that couple pairs, such as ``aot``'s sort).

    This is the first of the two selections that keep a padded pair out of the loss (spec: "select with
    where, never multiply"): the per-pair loss is then computed on finite zeros, so whatever the padded
    pair held (NaN, inf) reaches neither the loss nor the gradient; `masked_pair_sums` then selects the
    real pairs' losses. Shapes: every field [B], ``pair_mask`` [B] bool.
    """
    if pair_mask is None:
        return logps
    keep = jnp.asarray(pair_mask).astype(bool)
    zeroed = SequenceLogps(*(None if v is None else jnp.where(keep, v, jnp.zeros((), jnp.asarray(v).dtype))
                             for v in logps))
    return zeroed._replace(pair_mask=keep)


def pair_finite(per_pair_loss: Array, pair_mask: Array | None = None) -> Array:
    """Per pair: the loss is finite, or the pair is padding. [B] bool.

    A real pair whose log-probs make the loss infinite or NaN (``S_w = -inf`` under DPO, say; where the
    limit is finite the losses return it) cannot raise inside ``jax.jit``: this flag goes to the host,
    which names the pair."""
    ok = jnp.isfinite(f32(per_pair_loss))
    return ok if pair_mask is None else ok | ~jnp.asarray(pair_mask).astype(bool)


def masked_pair_sums(per_pair_loss: Array, metrics: Mapping[str, Array] | None = None,
                     pair_mask: Array | None = None) -> tuple[Array, dict[str, Array], Array]:
    """Sums over real pairs, sum_b where(m_b, x_b, 0), for the loss and each metric, and the count sum_b m_b.

    `where` comes before the sum, so a non-finite value in a padded pair never reaches the result. Use
    these with gradient accumulation: the mean over all micro-batches is sum(sums) / sum(counts), which
    equals one large batch exactly (except for ``aot``/``aot_unpaired``, which sort within a micro-batch).
    Returns float32 scalars.
    """
    loss = f32(per_pair_loss)
    mask = jnp.ones(loss.shape, bool) if pair_mask is None else jnp.asarray(pair_mask).astype(bool)
    if mask.shape != loss.shape:
        raise ValueError(f"pair_mask shape {mask.shape} does not match per-pair loss shape {loss.shape}")

    def total(x: Array) -> Array:
        return jnp.where(mask, f32(x), 0.0).sum()

    return total(loss), {k: total(v) for k, v in (metrics or {}).items()}, mask.sum().astype(jnp.float32)


def reduce_pairs(per_pair_loss: Array, metrics: Mapping[str, Array] | None = None,
                 pair_mask: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """Mean over real pairs: sum_b where(m_b, x_b, 0) / max(sum_b m_b, 1), for the loss and each metric.

    Shapes: per_pair_loss, pair_mask and each metric [B]; returns float32 scalars. A batch with no real
    pair gives 0 (not NaN).
    """
    loss_sum, metric_sums, count = masked_pair_sums(per_pair_loss, metrics, pair_mask)
    denom = jnp.maximum(count, 1.0)
    return loss_sum / denom, {k: v / denom for k, v in metric_sums.items()}


def compute_loss(name: str, logps: SequenceLogps, pair_mask: Array | None = None,
                 **hparams: Any) -> tuple[Array, dict[str, Array]]:
    """`mask_pairs`, `LOSSES[name]`, then `reduce_pairs`: the batch loss (scalar) and averaged metrics.
    Padded pairs reach neither the loss nor its gradient, whatever values they hold."""
    per_pair, metrics = LOSSES[name](mask_pairs(logps, pair_mask), **hparams)
    return reduce_pairs(per_pair, metrics, pair_mask)
