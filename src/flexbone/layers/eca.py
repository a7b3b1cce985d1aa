"""Efficient Channel Attention (Wang et al. 2020, "ECA-Net"): a 1-D conv across the pooled channels."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from .activations import create_act


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """The paper's adaptive kernel size: nearest odd number to ``(log2(C) + beta) / gamma``, at least 3."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EcaModule(nn.Module):
    """``x * gate(conv1d(mean_hw(x)))``: channel attention without dimensionality reduction.

    Args:
        channels: input channels; sets the kernel size by the paper's rule (``kernel_size`` is used if None).
        kernel_size: the 1-D kernel when ``channels`` is not given (odd).
        gate_layer: the gating non-linearity.

    The parameter is named ``conv`` as in timm's ``EcaModule`` and the reference ECA-Net code.
    """

    def __init__(self, channels: int | None = None, kernel_size: int = 3, gamma: float = 2, beta: float = 1,
                 gate_layer: str | Callable = "sigmoid"):
        super().__init__()
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if kernel_size % 2 != 1:
            raise ValueError(f"EcaModule needs an odd kernel_size, not {kernel_size}")
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = create_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).unsqueeze(1)  # (B, C, H, W) -> (B, 1, C): channels are the 1-D sequence
        y = self.gate(self.conv(y))
        return x * y.view(x.shape[0], -1, 1, 1)
