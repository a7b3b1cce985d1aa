"""Normalisation layers by name."""
from __future__ import annotations

from typing import Callable

import math

import torch.nn as nn


class GroupNorm(nn.GroupNorm):
    """GroupNorm constructed like BatchNorm2d, from the channel count alone: up to 32 groups (Wu & He)."""

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True):
        super().__init__(math.gcd(num_groups, num_channels), num_channels, eps=eps, affine=affine)


class GroupNorm1(nn.GroupNorm):
    """One group: LayerNorm over (C, H, W) of a channels-first map."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(1, num_channels, eps=eps, affine=affine)


# layers for (B, C, H, W) maps, each constructed as ``layer(num_channels)``
_NORM_LAYERS: dict[str, type[nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "batchnorm2d": nn.BatchNorm2d,
    "groupnorm": GroupNorm,
    "groupnorm1": GroupNorm1,
    "syncbatchnorm": nn.SyncBatchNorm,
}


def get_norm_layer(norm: str | Callable | None) -> Callable | None:
    """Resolve a norm layer given as a name (``'batchnorm'``) or a class/factory."""
    if norm is None or not isinstance(norm, str):
        return norm
    try:
        return _NORM_LAYERS[norm.lower()]
    except KeyError:
        raise ValueError(f"unknown norm layer {norm!r}; choose from {', '.join(sorted(_NORM_LAYERS))}") from None
