"""Layer norm over the channels of a channels-first ``(B, C, H, W)`` map (ConvNeXt, RDNet, MaxViT)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm(C)`` applied at every position of a ``(B, C, H, W)`` map; state dict of ``nn.LayerNorm``.

    Unlike :class:`~flexbone.layers.norm.GroupNorm1` (one group: statistics over C, H and W together),
    each pixel is normalised over its own C values. eps 1e-6, as timm's ``LayerNorm2d``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True):
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C): normalise the last dimension
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
