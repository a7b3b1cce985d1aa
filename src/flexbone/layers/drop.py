"""Regularisers that drop parts of the network during training: DropPath (stochastic depth) and DropBlock."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Drop whole residual branches per sample (Huang et al., stochastic depth); survivors are rescaled."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one decision per sample, broadcast over C, H, W
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al., 2018): drop contiguous ``block_size`` x ``block_size`` regions of feature maps.

    ``gamma`` is chosen so that the expected dropped fraction is ``drop_prob``; ``gamma_scale`` scales it
    (timm's convention: 0.25 in stage 3 and 1.0 in stage 4 of ResNet).
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7, gamma_scale: float = 1.0):
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size
        self.gamma_scale = gamma_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        _, _, h, w = x.shape
        block = min(self.block_size, h, w)
        valid = max((w - block + 1) * (h - block + 1), 1)
        gamma = self.gamma_scale * self.drop_prob * (h * w) / block**2 / valid
        # seeds of dropped blocks, grown to blocks by max pooling; odd windows keep the map size
        seeds = (torch.rand_like(x) < gamma).to(x.dtype)
        pad = block // 2
        dropped = F.max_pool2d(seeds, kernel_size=block, stride=1, padding=pad)
        if block % 2 == 0:
            dropped = dropped[:, :, :h, :w]
        keep = 1.0 - dropped
        # rescale so that the expected activation is unchanged
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}, gamma_scale={self.gamma_scale}"
