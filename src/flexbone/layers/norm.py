"""Normalisation layers by name, and a batch norm that runs inference in place."""
from __future__ import annotations

from typing import Callable

import math

import torch
import torch.nn as nn

# Below this many elements the saved allocation is worth less than the extra small ops (scale, shift).
_INPLACE_MIN_NUMEL = 1 << 18


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose inference normalises its input in place.

    Same parameters, buffers, state-dict keys and training behaviour as ``nn.BatchNorm2d``. In inference
    (eval mode, nothing to differentiate, fp32/fp64 input of at least 2^18 elements) it computes
    ``x * scale + shift`` into ``x`` itself (one ``addcmul`` with ``out=x``) instead of allocating a new
    activation-sized tensor. On the CPU a fresh large tensor costs page faults: about a quarter of a
    ResNet-50's inference time at batch 32 on a 2-core VM (``benchmarks/results/resnet_cpu.md``), and half
    of those tensors are BN outputs. The arithmetic is the one ``native_batch_norm`` does in eval mode.

    Contract, as for ``nn.ReLU(inplace=True)``: use it only where the input is a fresh tensor that nothing
    else reads afterwards, such as the output of the convolution before it. Every flexbone model builds its
    norms so. Under ``torch.compile`` / ``torch.export`` the plain path is traced (the compiler fuses anyway).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._normalise_in_place(x):
            return self._normalise_inference_(x)
        return super().forward(x)

    def _normalise_inference_(self, x: torch.Tensor) -> torch.Tensor:
        """``x * scale + shift`` written into ``x``, over the leading ``C = x.shape[1]`` channels of the
        statistics (all of them here; elastic subclasses run on fewer)."""
        self._check_input_dim(x)
        c = x.shape[1]
        scale = torch.rsqrt(self.running_var[:c] + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight[:c]
        shift = -self.running_mean[:c] * scale
        if self.bias is not None:
            shift = shift + self.bias[:c]
        return torch.addcmul(shift.view(1, c, 1, 1), x, scale.view(1, c, 1, 1), out=x)

    def _normalise_in_place(self, x: torch.Tensor) -> bool:
        if self.training or self.running_var is None or x.numel() < _INPLACE_MIN_NUMEL:
            return False
        if x.dtype not in (torch.float32, torch.float64) or x.dtype != self.running_var.dtype:
            return False  # low precision: the native kernel keeps its scale in fp32
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return False
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return False  # autograd needs the input (or the affine parameters are being fine-tuned)
        return True



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
    "batchnorm": BatchNorm2d,  # every flexbone norm follows a conv: its input is fresh (see BatchNorm2d)
    "batchnorm2d": BatchNorm2d,
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
