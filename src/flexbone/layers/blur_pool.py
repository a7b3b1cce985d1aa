"""Anti-aliased downsampling (Zhang, "Making Convolutional Networks Shift-Invariant Again", 2019)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv_norm_act import get_padding


class BlurPool2d(nn.Module):
    """Low-pass filter with binomial weights, then subsample by ``stride``.

    The filter is a fixed buffer (not saved in checkpoints), one copy per channel: a depthwise conv.
    """

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2, pad_mode: str = "reflect"):
        super().__init__()
        if filt_size < 2:
            raise ValueError("BlurPool2d needs filt_size >= 2")
        self.channels = channels
        self.filt_size = filt_size
        self.stride = stride
        self.pad_mode = pad_mode
        self.padding = [get_padding(filt_size, stride)] * 4
        # binomial coefficients C(n-1, k) / 2^(n-1): [0.25, 0.5, 0.25] for n = 3
        coeffs = torch.tensor([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.float32)
        coeffs = coeffs / coeffs.sum()
        filt = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)  # (C, 1, k, k)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.padding, mode=self.pad_mode)
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)
