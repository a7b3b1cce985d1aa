"""Convolution + normalisation + activation, the most repeated triple in vision backbones."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .activations import create_act
from .norm import BatchNorm2d, get_norm_layer


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric 'same'-style padding of a (possibly strided, dilated) convolution."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class ConvNormAct(nn.Module):
    """``conv -> bn -> act``; parameter names ``conv.*`` and ``bn.*`` as in timm's ConvNormAct."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm_layer: str | Callable | None = BatchNorm2d,
        act_layer: str | Callable | None = nn.ReLU,
        apply_act: bool = True,
    ):
        super().__init__()
        if padding is None:
            padding = get_padding(kernel_size, stride, dilation)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias)
        norm_layer = get_norm_layer(norm_layer)
        self.bn = norm_layer(out_channels) if norm_layer is not None else nn.Identity()
        self.act = create_act(act_layer if apply_act else None, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
