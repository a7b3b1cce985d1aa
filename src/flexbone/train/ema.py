"""Exponential moving average of the model weights (Polyak averaging), as timm's ``ModelEmaV3``.

``ema = decay * ema + (1 - decay) * model`` after every optimizer step, for parameters and floating-point
buffers (BN running statistics); integer buffers (``num_batches_tracked``) are copied. The EMA copy is
evaluated next to the model and often generalises better at the end of long schedules (ResNet-RS uses
decay 0.9999).

Warm-up (optional): early in training the average would be dominated by the random initialisation,
so the decay is ``min(decay, (1 + k) / (10 + k))`` for the ``k``-th update (0-based), as TensorFlow's
``tf.train.ExponentialMovingAverage(decay, num_updates=k)`` (the ResNet-RS reference code). Without
warm-up the decay is constant, as timm's ``ModelEmaV3.update(model)``.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
import torch.nn as nn

from .distributed import unwrap_model


class ModelEma:
    """A weight EMA of ``model`` kept in ``self.module`` (same device and dtype as the model).

    Args:
        decay: the target decay per update.
        warmup: ramp the decay up as described in the module docstring.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0  # updates done so far (saved with the checkpoint: the warm-up depends on it)

    def get_decay(self, k: int) -> float:
        """The decay of the ``k``-th update (0-based)."""
        return min(self.decay, (1.0 + k) / (10.0 + k)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        weight = 1.0 - self.get_decay(self.num_updates)
        self.num_updates += 1
        ema_float, model_float = [], []
        for ema_v, model_v in zip(self.module.state_dict().values(), unwrap_model(model).state_dict().values()):
            if ema_v.is_floating_point():
                ema_float.append(ema_v)
                model_float.append(model_v.detach())
            else:
                ema_v.copy_(model_v)
        if ema_float:
            torch._foreach_lerp_(ema_float, model_float, weight)  # ema += weight * (model - ema)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
