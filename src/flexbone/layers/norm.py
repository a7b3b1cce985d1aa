"""Normalisation layers by name, and a batch norm that runs inference in place."""
from __future__ import annotations

from typing import Callable

import math

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

# Below this many elements (1 MiB in fp32) an allocation is served from the heap without page faults: nothing to save.
_INPLACE_MIN_NUMEL = 1 << 18


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose inference normalises its input in place.

    Same parameters, buffers, state-dict keys and training behaviour as ``nn.BatchNorm2d``. In inference
    (eval mode, nothing to differentiate, an fp32/fp64 CPU input of at least 2^18 elements) the output is written
    into the input instead of a new activation-sized tensor. On the CPU a fresh large tensor costs page
    faults, and a BN output is one of the two activation-sized tensors of every conv + BN pair; avoiding it
    made ResNet-50 inference at batch 32 on a 2-core VM markedly faster (``benchmarks/results/resnet_cpu.md``).
    NCHW inputs go through torch's own eval kernel (``native_batch_norm.out`` with ``out=x``: the same numbers
    as ``nn.BatchNorm2d``, bit for bit); channels_last inputs through one ``addcmul`` (``x * scale + shift``,
    the same arithmetic within rounding, and several times faster than the native kernel on that layout).

    Contract, as for ``nn.ReLU(inplace=True)``: use it only where the input is a fresh tensor that nothing
    else reads afterwards, such as the output of the convolution before it. Every flexbone model builds its
    norms so (``tests/test_models.py`` checks each registered model against torch's BN). Under
    ``torch.compile`` / ``torch.export`` / ``torch.jit.trace`` (ONNX) the plain path is traced (the compiler fuses anyway).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward_plain(x)
        else:
            if isinstance(x, torch.fx.Proxy):
                # torch.fx symbolic tracing (create_feature_extractor, FX quantization): one call of this module
                # in the graph, as torch's own BatchNorm2d (a leaf module) gives; the graph then calls this
                # module eagerly, in-place inference included
                tracer = x.tracer
                return tracer.create_proxy("call_module", tracer.path_of_module(self), (x,), {})
            if self._normalise_in_place(x):
                return self._normalise_inference_(x)
            return super().forward(x)

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """``nn.BatchNorm2d.forward``, written out for TorchScript (which cannot call a base-class method)."""
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if keep_stats else None, self.running_var if keep_stats else None,
                            self.weight, self.bias, use_batch_stats, momentum, self.eps)

    def _normalise_inference_(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode BN written into ``x``, over the leading ``C = x.shape[1]`` channels of the parameters and
        statistics (all of them here; elastic subclasses run on fewer)."""
        self._check_input_dim(x)
        c = x.shape[1]
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        mean, var = self.running_mean[:c], self.running_var[:c]
        if x.is_contiguous():  # NCHW: torch's kernel, elementwise, so writing into its input is safe
            unused = x.new_empty(0)  # batch statistics: none in eval mode
            return torch.ops.aten.native_batch_norm.out(x, weight, bias, mean, var, False, 0.0, self.eps,
                                                        out=x, save_mean=unused, save_invstd=unused)[0]
        scale = torch.rsqrt(var + self.eps)  # (C,)
        if weight is not None:
            scale = scale * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        return torch.addcmul(shift.view(1, c, 1, 1), x, scale.view(1, c, 1, 1), out=x)

    def _normalise_in_place(self, x: torch.Tensor) -> bool:
        # traced programs (torch.jit.trace / torch.onnx.export, torch.export, torch.compile) record the plain op;
        # checked first, so that the size test below does not put a guard on a dynamic batch dimension
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return False
        if self.training or self.running_var is None or x.numel() < _INPLACE_MIN_NUMEL:
            return False
        if x.device.type != "cpu":  # the saving is the CPU's page faults; CUDA's caching allocator has none
            return False
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            return False
        if x.dtype not in (torch.float32, torch.float64) or x.dtype != self.running_var.dtype:
            return False  # low precision: the native kernel keeps its scale in fp32
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
