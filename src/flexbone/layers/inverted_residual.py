"""Mobile blocks: depthwise-separable, inverted residual (MBConv) and the MobileNetV3 squeeze-excite.

Howard et al. 2017 (MobileNet, depthwise-separable convolutions); Sandler et al. 2018 (MobileNetV2,
inverted residuals with linear bottlenecks); Howard et al. 2019 (MobileNetV3, hard-sigmoid squeeze-excite
on the expanded channels).

Parameter names follow timm's EfficientNet/MobileNet blocks (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``,
``se.conv_reduce``, ``conv_pwl``, ``bn3``) so that timm checkpoints load with ``strict=True``. timm fuses
each norm with its activation (``BatchNormAct2d``); here the norm is a plain ``nn.BatchNorm2d`` (same state
dict keys) followed by a parameter-free activation module, so BN recalibration, SyncBN conversion and BN
folding see ordinary batch norms.

The blocks take resolved channel counts (``mid_chs``, not an expansion ratio): the width multiplier
rounding and the once-for-all sub-network extraction both decide channels before a block is built.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .activations import create_act
from .conv_norm_act import get_padding
from .drop import DropPath
from .helpers import make_divisible
from .norm import get_norm_layer


class MobileSqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: ``x * hard_sigmoid(conv_expand(relu(conv_reduce(mean_hw(x)))))``.

    The reduced width is ``make_divisible(channels * rd_ratio, 8)`` of the *expanded* channels (timm's
    ``SqueezeExcite`` with ``round_channels``; the once-for-all code computes the same number).
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: str | Callable = "relu",
        gate_layer: str | Callable = "hard_sigmoid",
    ):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor)
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act1 = create_act(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = create_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)


def _dw_conv(channels: int, kernel_size: int, stride: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, stride=stride, padding=get_padding(kernel_size, stride, dilation),
                     dilation=dilation, groups=channels, bias=False)


class DepthwiseSeparable(nn.Module):
    """``dw kxk -> BN -> act -> [SE] -> pw 1x1 -> BN [-> act]`` with a residual when shapes allow.

    MobileNetV2's first block (expansion 1) and MobileNetV3's first block; timm's ``DepthwiseSeparableConv``.
    Unlike :class:`~flexbone.layers.SeparableConvNormAct` (one conv op), the depthwise conv has its own
    norm and activation, and the block may add a residual.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: str | Callable = "relu",
        norm_layer: str | Callable = "batchnorm",
        se_layer: Callable[[int], nn.Module] | None = None,
        pw_act: bool = False,
        skip: bool = True,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        norm_layer = get_norm_layer(norm_layer)
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.conv_dw = _dw_conv(in_chs, kernel_size, stride, dilation)
        self.bn1 = norm_layer(in_chs)
        self.act1 = create_act(act_layer, inplace=True)
        self.se = se_layer(in_chs) if se_layer is not None else nn.Identity()
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = norm_layer(out_chs)
        self.act2 = create_act(act_layer if pw_act else None, inplace=True)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.se(self.act1(self.bn1(self.conv_dw(x))))
        x = self.act2(self.bn2(self.conv_pw(x)))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class InvertedResidual(nn.Module):
    """MBConv: ``pw 1x1 expand -> dw kxk -> [SE] -> pw 1x1 linear`` (no activation after the projection).

    ``mid_chs`` is the expanded width (``make_divisible(in_chs * expand_ratio)`` in the named models).
    timm's ``InvertedResidual``; the once-for-all ``MBConvLayer`` with an inverted bottleneck.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: str | Callable = "relu",
        norm_layer: str | Callable = "batchnorm",
        se_layer: Callable[[int], nn.Module] | None = None,
        skip: bool = True,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        norm_layer = get_norm_layer(norm_layer)
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = norm_layer(mid_chs)
        self.act1 = create_act(act_layer, inplace=True)
        self.conv_dw = _dw_conv(mid_chs, kernel_size, stride, dilation)
        self.bn2 = norm_layer(mid_chs)
        self.act2 = create_act(act_layer, inplace=True)
        self.se = se_layer(mid_chs) if se_layer is not None else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = norm_layer(out_chs)  # linear bottleneck: no activation (Sandler et al.)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))  # (B, in, H, W) -> (B, mid, H, W)
        x = self.se(self.act2(self.bn2(self.conv_dw(x))))  # (B, mid, H/s, W/s)
        x = self.bn3(self.conv_pwl(x))  # (B, out, H/s, W/s)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class ConvBlock(nn.Module):
    """``conv kxk -> BN -> act`` as a trunk block (MobileNetV3's last 1x1 conv before pooling).

    Not :class:`~flexbone.layers.ConvNormAct` because timm's checkpoints name this norm ``bn1``
    (timm's ``ConvBnAct`` block of the EfficientNet family); otherwise the same operation.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        act_layer: str | Callable = "relu",
        norm_layer: str | Callable = "batchnorm",
    ):
        super().__init__()
        norm_layer = get_norm_layer(norm_layer)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride,
                              padding=get_padding(kernel_size, stride, dilation), dilation=dilation, bias=False)
        self.bn1 = norm_layer(out_chs)
        self.act1 = create_act(act_layer, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))
