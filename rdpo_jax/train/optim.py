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
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

SCHEDULES = ("paper", "cosine", "constant")
OPTIMIZERS = ("adamw", "sgd")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser settings (the paper's: adamw, lr 5e-7, warmup 150, schedule "paper", clip 10)."""

    name: str = "adamw"
    lr: float = 5e-7
    schedule: str = "paper"
    warmup_steps: int = 150
    total_steps: int | None = None
    final_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 10.0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name={self.name!r}; accepted: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r}; accepted: {', '.join(SCHEDULES)}")
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ValueError(f"optim.total_steps={self.total_steps} must exceed optim.warmup_steps="
                             f"{self.warmup_steps}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr={self.lr} must be positive")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps={self.warmup_steps} must be >= 0")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ValueError(f"optim.clip_norm={self.clip_norm} must be positive (or null to disable)")


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
