"""Learning-rate schedules, evaluated per optimiser step.

Each schedule is a closed-form function of the step index (``cosine_lr``, ``step_lr``); the
:class:`LRScheduler` only counts steps and writes the value into the optimiser's parameter groups, so
its whole state is one integer and a resumed run continues on exactly the same curve.

* cosine (Loshchilov & Hutter 2017) with linear warm-up and a floor: from ``warmup_lr`` up to the peak
  over ``warmup_steps``, then half a cosine from the peak down to ``min_lr`` over the remaining steps
  (timm's ``CosineLRScheduler`` with ``warmup_prefix=True``, ``t_initial = total - warmup``).
* step: the same optional linear warm-up, then the peak multiplied by ``decay_rate`` every
  ``decay_steps`` steps counted from the end of the warm-up (timm's ``StepLRScheduler``, whose
  ``warmup_prefix`` defaults to True).
* poly: the same optional linear warm-up, then ``min_lr + (peak - min_lr) * (1 - progress) ** power`` over the
  remaining steps (the "poly" policy of DeepLab, Chen et al. 2017, power 0.9; FFNet trains with it); with no
  warm-up and ``min_lr`` 0 it is torch's ``PolynomialLR(total_iters=total_steps, power=power)``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..errors import ConfigError

SCHEDULES = ("cosine", "step", "poly")


def cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0, warmup_lr: float = 0.0,
              min_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step`` (0-based) of a warm-up + cosine schedule."""
    if step < warmup_steps:
        return warmup_lr + (peak_lr - warmup_lr) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def poly_lr(step: int, total_steps: int, peak_lr: float, power: float = 0.9, warmup_steps: int = 0,
            warmup_lr: float = 0.0, min_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step`` (0-based) of a warm-up + polynomial-decay schedule."""
    if step < warmup_steps:
        return warmup_lr + (peak_lr - warmup_lr) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * (1.0 - progress) ** power


def step_lr(step: int, peak_lr: float, decay_steps: int, decay_rate: float, warmup_steps: int = 0,
            warmup_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step`` of a warm-up + step-decay schedule."""
    if step < warmup_steps:
        return warmup_lr + (peak_lr - warmup_lr) * step / warmup_steps
    return peak_lr * decay_rate ** ((step - warmup_steps) // max(1, decay_steps))


class LRScheduler:
    """Sets ``lr = lr_at(step) * group.get('lr_scale', 1)`` in every parameter group.

    Call :meth:`step` once after every optimiser step. Constructing it sets the lr of step 0.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float]):
        self.optimizer = optimizer
        self.lr_at = lr_at
        self.step_count = 0  # optimiser steps taken so far
        self._apply()

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, peak_lr: float,
                     steps_per_epoch: int) -> LRScheduler:
    """The per-step scheduler a :class:`~flexbone.config.schema.ScheduleConfig` describes.

    Epoch quantities of the recipe (``epochs``, ``warmup_epochs``, ``decay_epochs``) become step counts
    with ``steps_per_epoch``; ``peak_lr`` is the (batch-scaled) lr reached after the warm-up.
    """
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "cosine":
        return LRScheduler(optimizer, lambda s: cosine_lr(s, total, peak_lr, warmup, cfg.warmup_lr, cfg.min_lr))
    if cfg.name == "poly":
        return LRScheduler(optimizer, lambda s: poly_lr(s, total, peak_lr, cfg.power, warmup, cfg.warmup_lr,
                                                        cfg.min_lr))
    if cfg.name == "step":
        decay = max(1, int(round(cfg.decay_epochs * steps_per_epoch)))
        return LRScheduler(optimizer, lambda s: step_lr(s, peak_lr, decay, cfg.decay_rate, warmup, cfg.warmup_lr))
    raise ConfigError(f"unknown schedule {cfg.name!r}; choose from {', '.join(SCHEDULES)}")
