"""The stitching layer: a learned linear map from one anchor's activations to another's.

Maps (``(B, C, H, W)``, format ``'nchw'``) go through a 1x1 conv with bias; tokens (``(B, L, C)``, ``'nlc'``,
or channels-last maps ``(B, H, W, C)``, ``'nhwc'``, as timm's Swin keeps them) through a ``Linear``. Both
compute ``y = W x + b`` per position, which is what least squares fits (``least_squares.py``). When the end
anchor keeps its activations in another layout (a CNN stitched into a transformer), the output is
rearranged after the map -- the reference's ``cnn_to_vit`` flattening.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError

FORMATS = ("nchw", "nhwc", "nlc")
# (from, to) layouts the layer can convert between without knowing the spatial size
_CONVERSIONS = {("nchw", "nhwc"), ("nchw", "nlc"), ("nhwc", "nlc"), ("nhwc", "nchw")}


def to_rows(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Activations -> one row per position: ``(N, C)`` (``'nchw'`` is moved channels-last first)."""
    if fmt == "nchw":
        x = x.permute(0, 2, 3, 1)
    return x.reshape(-1, x.shape[-1])


def convert_format(x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    if src == dst:
        return x
    if src == "nchw":
        x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        return x.flatten(1, 2) if dst == "nlc" else x
    if dst == "nlc":
        return x.flatten(1, 2)  # (B, H, W, C) -> (B, HW, C)
    return x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


class StitchingLayer(nn.Module):
    """``in_chs`` activations of the front anchor -> ``out_chs`` activations of the end anchor."""

    def __init__(self, in_chs: int, out_chs: int, in_fmt: str = "nchw", out_fmt: str | None = None):
        super().__init__()
        out_fmt = out_fmt or in_fmt
        for f in (in_fmt, out_fmt):
            if f not in FORMATS:
                raise ConfigError(f"unknown activation layout {f!r}; choose from {', '.join(FORMATS)}")
        if in_fmt != out_fmt and (in_fmt, out_fmt) not in _CONVERSIONS:
            raise ConfigError(f"cannot stitch {in_fmt!r} activations into {out_fmt!r} ones "
                              f"(a token sequence carries no spatial size)")
        self.in_fmt, self.out_fmt = in_fmt, out_fmt
        if in_fmt == "nchw":
            self.transform: nn.Module = nn.Conv2d(in_chs, out_chs, 1, 1)
        else:
            self.transform = nn.Linear(in_chs, out_chs)

    @torch.no_grad()
    def set_weight_bias(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set ``W`` (``(out_chs, in_chs)``) and ``b`` (``(out_chs,)``) of ``y = W x + b``."""
        w = self.transform.weight
        w.copy_(weight.reshape(w.shape).to(w))
        self.transform.bias.copy_(bias.to(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return convert_format(self.transform(x), self.in_fmt, self.out_fmt)

    def extra_repr(self) -> str:
        return f"{self.in_fmt} -> {self.out_fmt}"
