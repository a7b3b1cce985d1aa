"""EvoNorm-S0 (Liu et al. 2020, "Evolving Normalization-Activation Layers"): a batch-independent norm+act."""
from __future__ import annotations

import torch
import torch.nn as nn


def group_std(x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """Per-sample standard deviation over channel groups and space, broadcast back to ``x``'s shape."""
    b, c, h, w = x.shape
    torch._assert(c % groups == 0, "the channels cannot be split into the groups")  # traceable by torch.fx
    g = x.reshape(b, groups, c // groups, h, w)
    std = g.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(eps).sqrt().to(x.dtype)
    return std.expand(g.shape).reshape(b, c, h, w)


class EvoNorm2dS0(nn.Module):
    """``x * sigmoid(v * x) / group_std(x) * weight + bias``: normalisation and activation in one layer.

    It needs no batch statistics (so no running buffers), which is why it is used with tiny batches.
    Parameter names ``weight``, ``bias``, ``v`` are those of timm's ``EvoNorm2dS0``. With
    ``apply_act=False`` it is a plain affine layer (no ``v``), as in timm.
    """

    def __init__(self, num_features: int, groups: int = 32, group_size: int | None = None,
                 apply_act: bool = True, eps: float = 1e-5):
        super().__init__()
        if group_size:
            if num_features % group_size:
                raise ValueError(f"{num_features} channels are not a multiple of group_size={group_size}")
            groups = num_features // group_size
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        if self.v is not None:
            x = x * (x * self.v.view(shape)).sigmoid() / group_std(x, self.groups, self.eps)
        return x * self.weight.view(shape) + self.bias.view(shape)
