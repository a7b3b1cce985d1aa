"""LayerScale (Touvron et al. 2021, "Going deeper with Image Transformers", CaiT): a learned per-channel scale
on a residual branch, initialised small so that a deep stack starts close to the identity."""
from __future__ import annotations

import torch
import torch.nn as nn


class LayerScale(nn.Module):
    """``x * gamma`` over the last (channel) dimension: ``(..., C) -> (..., C)``; parameter ``gamma`` as timm's."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma  # not in place: x is the attention / MLP output another module may still hold

    def extra_repr(self) -> str:
        return f"{self.gamma.shape[0]}, init_values={self.init_values}"
