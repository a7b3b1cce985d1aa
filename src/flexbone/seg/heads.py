"""Segmentation heads over any feature pyramid (a list of maps, finest first).

* ``ffnet_a`` / ``ffnet_b`` / ``ffnet_c`` (+ ``_mobile``): FFNet's adapter convs, up-branch (A/B/C) and the
  segmentation head of the same letter, all four scales upsampled to the finest and concatenated
  (Mehta et al. 2022; the modules of :mod:`flexbone.models.ffnet`).
* ``fpn``: semantic FPN (Kirillov et al. 2019, "Panoptic Feature Pyramid Networks"), reduced to one 3x3 conv per
  level: 1x1 laterals, a nearest top-down path, each level upsampled to the finest, summed, 1x1 classifier.

Every head returns logits at the resolution of the finest map (1/4 of the input for the usual pyramid).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.ffnet import (GPU_UPSAMPLE, MOBILE_UPSAMPLE, SEG_HEADS, UP_HEADS, AdapterConv, ConvBNReLU,
                            SegmentationHead, UpBranch, UpsampleCat, _init_weights)

HEADS = ("ffnet_a", "ffnet_b", "ffnet_c", "ffnet_a_mobile", "ffnet_b_mobile", "ffnet_c_mobile", "fpn")


class FFNetSegHead(nn.Module):
    """FFNet's up-head + segmentation head (letters ``up`` and ``seg``) over a 4-level pyramid."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, up: str = "B", seg: str | None = None,
                 mobile: bool = False):
        super().__init__()
        if len(in_channels) != 4:
            raise ConfigError(f"the FFNet head needs a 4-level pyramid, got {len(in_channels)} levels")
        seg = seg or up
        base, out = UP_HEADS[up]
        upsample = MOBILE_UPSAMPLE if mobile else GPU_UPSAMPLE
        mid, k = SEG_HEADS[seg]
        self.adapter = AdapterConv(in_channels, base)
        self.up = UpBranch(base, out, upsample)
        self.cat = UpsampleCat(upsample)
        self.seg = SegmentationHead(sum(out), mid, num_classes, k)
        self.apply(_init_weights)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.seg(self.cat(self.up(self.adapter(feats))))


class FPNSegHead(nn.Module):
    """Semantic FPN with one 3x3 conv per level, summed at the finest level."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 128):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):  # top-down: coarse to fine
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        size = lat[0].shape[-2:]
        fused = sum(F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) if i else s(x)
                    for i, (s, x) in enumerate(zip(self.smooth, lat)))
        return self.classifier(fused)


def create_head(name: str, in_channels: Sequence[int], num_classes: int) -> nn.Module:
    """A head from :data:`HEADS` over a pyramid with ``in_channels`` (finest first)."""
    if name == "fpn":
        return FPNSegHead(in_channels, num_classes)
    if name in HEADS:
        letter = name.split("_")[1].upper()
        return FFNetSegHead(in_channels, num_classes, up=letter, mobile=name.endswith("_mobile"))
    raise ConfigError(f"unknown segmentation head {name!r}; choose from {', '.join(HEADS)}")
