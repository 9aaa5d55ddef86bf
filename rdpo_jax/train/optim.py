"""Optimisers and learning-rate schedules (optax), with torch-compatible defaults.

AdamW with decoupled weight decay (Loshchilov & Hutter 2019): with m_hat, v_hat Adam's bias-corrected
moments, ``p <- p - lr_t (m_hat / (sqrt(v_hat) + eps) + wd p)``, the same update as ``torch.optim.AdamW``
(weight_decay 0.01, betas 0.9/0.999, eps 1e-8; optax's own adamw default decay is 1e-4). Gradients are
clipped to a global norm first (the paper's 10.0).

Schedules (``t`` the optimiser step, counted from 0):
- ``paper`` (the official RDPO code's LambdaLR): ``lr * min(1, (t + 1) / (warmup + 1))``, constant after;
- ``cosine``: linear warm-up from 0 to lr over ``warmup`` steps, then cosine decay to ``lr * final_ratio``
  at ``total_steps`` (the trainer fills it with the run's length when it is null);
- ``constant``: ``lr``.

The settings are `rdpo_jax.config.OptimConfig` (the ``optim`` section of a run config).
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

from rdpo_jax.config import OPTIMIZERS, SCHEDULES, OptimConfig

__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimConfig", "make_optimizer", "make_schedule"]


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """The learning rate as a function of the optimiser step (see the module docstring)."""
    lr, warmup = cfg.lr, cfg.warmup_steps
    if cfg.schedule == "paper":
        return lambda t: lr * jnp.minimum(1.0, (t + 1.0) / (warmup + 1.0))
    if cfg.schedule == "constant":
        return optax.constant_schedule(lr)
    if cfg.total_steps is None:
        raise ValueError("optim.schedule='cosine' needs optim.total_steps")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=max(cfg.total_steps, warmup + 1),
        end_value=lr * cfg.final_lr_ratio)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Global-norm clipping (optional) then AdamW (decoupled decay) or plain SGD, on the schedule."""
    schedule = make_schedule(cfg)
    if cfg.name == "adamw":
        core = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        core = optax.sgd(schedule)
    parts = ([optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm is not None else []) + [core]
    return optax.chain(*parts)
