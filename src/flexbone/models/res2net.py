"""The Res2Net family: ResNet whose bottleneck 3x3 conv is a hierarchy of smaller ones (multi-scale in a block).

Gao et al. 2019, "Res2Net: A New Multi-scale Backbone Architecture" (TPAMI 2021).

The 1x1 reduction's output is split into ``scale`` groups of ``width`` channels. Group 1 goes through a
3x3 conv; group ``i`` is added to the output of group ``i - 1`` before its own 3x3 conv, so later groups
see ever larger receptive fields (1, 2, ... stacked 3x3 convs) at the cost of one. The last group passes
unchanged (average-pooled in a block that strides). Everything else is the ResNet trunk
(:class:`flexbone.models.resnet.ResNet`: stems, ResNet-D shortcuts, stochastic depth, dilation), so a
variant is a row of ``VARIANTS``: depth, ``base_width`` ("26w"), ``scale`` ("4s"), cardinality (Res2NeXt).

Parameter names follow timm's ``res2net.py`` (``layer1.0.convs.0.weight``, ``layer1.0.bns.0``), so its
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn

from ._registry import register_variants
from .resnet import BottleneckBase, ResNet


class Bottle2neck(BottleneckBase):
    """``1x1 (width * scale) -> scale-wise hierarchical 3x3 convs -> 1x1 (4 * planes)`` + shortcut.

    Called by the ResNet trunk with the same arguments as its ``Bottleneck`` (plus ``scale``).

    Args:
        inplanes, planes: input channels and base planes (output ``4 * planes``).
        stride: stride of every 3x3 conv in the first block of a stage.
        downsample: the shortcut projection, or ``None`` for identity.
        cardinality: groups of each 3x3 conv (Res2NeXt).
        base_width: channels per group and scale at 64 planes ("26w": 26).
        scale: number of groups the bottleneck is split into ("4s": 4).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 26, scale: int = 4, reduce_first: int = 1,
                 dilation: int = 1, first_dilation: int | None = None, act_layer: Callable = nn.ReLU,
                 norm_layer: Callable = nn.BatchNorm2d, attn_layer: Callable | None = None,
                 aa_layer: str | None = None, drop_block: Callable | None = None, drop_path: nn.Module | None = None,
                 mid_chs: int | None = None, out_chs: int | None = None):
        super().__init__()
        if aa_layer or reduce_first != 1 or mid_chs is not None:
            raise ValueError("Bottle2neck has no anti-aliasing, reduce_first or explicit mid_chs")
        self.scale = scale
        self.is_first = stride > 1 or downsample is not None  # the first block of a stage: groups do not chain
        self.width = width = int(math.floor(planes * (base_width / 64.0))) * cardinality
        outplanes = out_chs or planes * self.expansion
        first_dilation = first_dilation or dilation

        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = norm_layer(width * scale)
        # scale - 1 convs: the last group is passed on unchanged (the paper's y_1 = x_1 moved to the end)
        num_convs = max(1, scale - 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=stride, padding=first_dilation, dilation=first_dilation,
                      groups=cardinality, bias=False) for _ in range(num_convs))
        self.bns = nn.ModuleList(norm_layer(width) for _ in range(num_convs))
        self.drop_block = drop_block() if drop_block is not None else nn.Identity()
        # the pass-through group must stride with the others; padding counted in the mean, as the
        # reference code (and its trained weights) do
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if self.is_first else None
        self.relu = act_layer(inplace=True)
        self._init_tail(width * scale, outplanes, act_layer, norm_layer, attn_layer, downsample, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))  # (B, width * scale, H, W)
        groups = torch.split(out, self.width, 1)  # scale x (B, width, H, W)
        outputs = []
        sp = groups[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = groups[i] if i == 0 or self.is_first else sp + groups[i]  # hierarchical: add the previous output
            sp = self.relu(bn(conv(sp)))
            outputs.append(sp)
        if self.scale > 1:
            outputs.append(self.pool(groups[-1]) if self.pool is not None else groups[-1])
        out = self.drop_block(torch.cat(outputs, 1))  # (B, width * scale, H/s, W/s)
        return self._expand_and_add(out, shortcut)  # the ResNet bottleneck's 1x1 expansion and residual sum


# ---------------------------------------------------------------------------------------- variants
_D = dict(stem_width=32, stem_type="deep", avg_down=True)  # ResNet-D stem and shortcuts
_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _res2(depth: int, base_width: int, scale: int, cardinality: int = 1, **kw: Any) -> dict[str, Any]:
    return dict(block=Bottle2neck, layers=_LAYERS[depth], base_width=base_width, cardinality=cardinality,
                block_args=dict(scale=scale), **kw)


# name -> ResNet keyword arguments; every name is checked against timm in tests/test_res2net.py
VARIANTS: dict[str, dict[str, Any]] = {
    # _res2(depth, base width "w", scale "s", cardinality)
    "res2net50_26w_4s": _res2(50, 26, 4),
    "res2net50_26w_6s": _res2(50, 26, 6),
    "res2net50_26w_8s": _res2(50, 26, 8),
    "res2net50_48w_2s": _res2(50, 48, 2),
    "res2net50_14w_8s": _res2(50, 14, 8),
    "res2net101_26w_4s": _res2(101, 26, 4),
    "res2next50": _res2(50, 4, 4, cardinality=8),
    "res2net50d": _res2(50, 26, 4, **_D),
    "res2net101d": _res2(101, 26, 4, **_D),
}


def _build(variant: dict[str, Any], **kwargs: Any) -> ResNet:
    return ResNet(**{**variant, **kwargs})


register_variants(ResNet, VARIANTS, family="res2net", build=_build)
