"""What a loss takes (`SequenceLogps`) and the trace-time checks of its inputs and keywords.

Shape, name and keyword checks happen at trace time (inside `jax.jit` nothing value-dependent can raise);
value checks on data (zero-token completions) belong to data validation.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
BASE_FIELDS = ("chosen", "rejected", "chosen_tokens", "rejected_tokens")
REFERENCE_FIELDS = ("ref_chosen", "ref_rejected")
RATIONALE_FIELDS = ("rationale",)
PREFIX_FIELDS = ("chosen_prefix", "rejected_prefix")
REFERENCE_PREFIX_FIELDS = ("ref_chosen_prefix", "ref_rejected_prefix")
WEIGHTING_FIELDS = ("chosen_weighting", "rejected_weighting")


class SequenceLogps(NamedTuple):
    """Per-pair sequence log-probs: every field is an array of one common shape, [B] in a batch.

    chosen, rejected: S_w, S_l, sums of the policy's token log-probs over each completion's scored tokens.
    chosen_tokens, rejected_tokens: n_w, n_l, the scored-token counts (int or float).
    ref_chosen, ref_rejected: R_w, R_l under the frozen reference (DPO family only).
    rationale, rationale_tokens: S_r and n_r, the rationale's sum and count (rationale terms only).
    rationale_mask: optional 0/1 per pair; the rationale term is dropped where it is 0 (pairs that
        have no rationale). Without it every pair must have one.
    chosen_prefix, rejected_prefix: P_w, P_l, the sums over each completion's first min(n_w, n_l) scored
        tokens (LD-DPO, ``ld_alpha``); ref_chosen_prefix, ref_rejected_prefix: the reference's.
    chosen_weighting, rejected_weighting: sum_t (log p_t - log sum_v p_v^2) over each completion's scored
        tokens, no gradient (WPO, ``use_weighting``; ``p_v`` is the policy's next-token distribution).
    pair_mask: optional 0/1 per pair (padding 0). Only losses that couple pairs (``aot``: sorting over the
        batch) read it; `reduce.mask_pairs` sets it.
    """

    chosen: Array
    rejected: Array
    chosen_tokens: Array
    rejected_tokens: Array
    ref_chosen: Array | None = None
    ref_rejected: Array | None = None
    rationale: Array | None = None
    rationale_tokens: Array | None = None
    rationale_mask: Array | None = None
    chosen_prefix: Array | None = None
    rejected_prefix: Array | None = None
    ref_chosen_prefix: Array | None = None
    ref_rejected_prefix: Array | None = None
    chosen_weighting: Array | None = None
    rejected_weighting: Array | None = None
    pair_mask: Array | None = None


_WHY = {
    "ref_chosen": "reference sums R_w, R_l (a frozen reference forward or a reference cache)",
    "ref_rejected": "reference sums R_w, R_l (a frozen reference forward or a reference cache)",
    "rationale": "the rationale's summed log-probs S_r (use a loss without a rationale term, or a "
                 "rationale_mask, for pairs without rationales)",
    "rationale_tokens": "the rationale's scored-token counts n_r",
    "chosen_prefix": "ld_alpha needs the policy's sums over the first min(n_w, n_l) tokens",
    "rejected_prefix": "ld_alpha needs the policy's sums over the first min(n_w, n_l) tokens",
    "ref_chosen_prefix": "ld_alpha needs the reference's sums over the first min(n_w, n_l) tokens",
    "ref_rejected_prefix": "ld_alpha needs the reference's sums over the first min(n_w, n_l) tokens",
    "chosen_weighting": "use_weighting needs the per-token log sum_v p_v^2 sums (WPO)",
    "rejected_weighting": "use_weighting needs the per-token log sum_v p_v^2 sums (WPO)",
}


def check_logps(logps: SequenceLogps, loss: str, required: Iterable[str]) -> None:
    """``logps`` is a SequenceLogps holding the base fields and ``required``, all of one shape."""
    if not isinstance(logps, SequenceLogps):
        raise TypeError(f"loss {loss!r}: expected a SequenceLogps, got {type(logps).__name__}")
    missing = [f for f in dict.fromkeys([*BASE_FIELDS, *required]) if getattr(logps, f) is None]
    if missing:
        raise ValueError(f"loss {loss!r} needs SequenceLogps.{', '.join(missing)}: "
                         + "; ".join(dict.fromkeys(_WHY[m] for m in missing if m in _WHY)))
    shapes = {}
    for field in SequenceLogps._fields:
        value = getattr(logps, field)
        if value is None:
            continue
        if not hasattr(value, "shape"):
            value = jnp.asarray(value)
        shapes[field] = tuple(value.shape)
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{k}={v}" for k, v in shapes.items())
        raise ValueError(f"loss {loss!r}: SequenceLogps fields must share one shape ([B]); got {listing}")


def check_choice(loss: str, key: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"loss {loss!r}: {key}={value!r} is not supported; accepted: {', '.join(accepted)}")


def check_range(loss: str, key: str, value: Any, lo: float, hi: float, *, lo_open=False,
                hi_open=False) -> None:
    """Checks a hyperparameter's range, finite, when it is a Python number (traced values are not checked)."""
    if not isinstance(value, int | float):
        return
    if not math.isfinite(value):
        raise ValueError(f"loss {loss!r}: {key}={value} is not a finite number")
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi):
        interval = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
        raise ValueError(f"loss {loss!r}: {key}={value} is outside the accepted range {interval}")


def reward_metrics(chosen_reward: Array, rejected_reward: Array) -> dict[str, Array]:
    """TRL's reward metrics from per-pair implicit rewards [B]."""
    return {
        "rewards/chosen": chosen_reward,
        "rewards/rejected": rejected_reward,
        "rewards/margins": chosen_reward - rejected_reward,
        "rewards/accuracies": (chosen_reward > rejected_reward).astype(jnp.float32),
    }
