"""Depthwise-separable convolution + normalisation + activation (VoVNetV2-DW, Xception-style stems)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .activations import create_act
from .conv_norm_act import get_padding
from .norm import BatchNorm2d, get_norm_layer


class SeparableConvNormAct(nn.Module):
    """``depthwise kxk conv -> pointwise 1x1 conv -> norm -> act``, no norm between the two convs.

    Parameter names ``conv_dw``, ``conv_pw``, ``bn`` are those of timm's ``SeparableConvNormAct``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        channel_multiplier: float = 1.0,
        pw_kernel_size: int = 1,
        norm_layer: str | Callable | None = BatchNorm2d,
        act_layer: str | Callable | None = nn.ReLU,
        apply_act: bool = True,
    ):
        super().__init__()
        dw_channels = int(in_channels * channel_multiplier)
        self.conv_dw = nn.Conv2d(in_channels, dw_channels, kernel_size, stride=stride,
                                 padding=get_padding(kernel_size, stride, dilation), dilation=dilation,
                                 groups=in_channels, bias=False)
        self.conv_pw = nn.Conv2d(dw_channels, out_channels, pw_kernel_size,
                                 padding=get_padding(pw_kernel_size), bias=bias)
        norm_layer = get_norm_layer(norm_layer)
        self.bn = norm_layer(out_channels) if norm_layer is not None else nn.Identity()
        self.act = create_act(act_layer if apply_act else None, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_pw(self.conv_dw(x))))
