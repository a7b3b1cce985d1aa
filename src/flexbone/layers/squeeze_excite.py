"""Channel attention: Squeeze-and-Excitation (Hu et al.) and effective SE (Lee & Park, CenterMask/VoVNetV2)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .activations import create_act
from .helpers import make_divisible


class SEModule(nn.Module):
    """``x * gate(fc2(act(fc1(mean_hw(x)))))`` with 1x1 convs; names ``fc1``/``fc2`` as in timm."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: str | Callable = "relu",
        gate_layer: str | Callable = "sigmoid",
    ):
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.act = create_act(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)
        self.gate = create_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.fc2(self.act(self.fc1(s)))
        return x * self.gate(s)


class EffectiveSEModule(nn.Module):
    """eSE: one 1x1 conv (no reduction, so no channel information is lost) and a hard-sigmoid gate."""

    def __init__(self, channels: int, gate_layer: str | Callable = "hard_sigmoid"):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, padding=0)
        self.gate = create_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc(s))
