"""Batch norm and activation as one layer (pre-activation networks: DenseNet, RDNet).

A pre-activation block starts ``BN -> act -> conv``; keeping BN and its activation in one module keeps the
parameter names of timm's ``BatchNormAct2d`` (``norm1.weight``, not ``norm1.bn.weight``) and of
torchvision's DenseNet (whose ReLU has no parameters), so both checkpoints load as they are.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .activations import create_act
from .norm import BatchNorm2d


class BatchNormAct2d(BatchNorm2d):
    """``act(batch_norm(x))``; state dict identical to ``nn.BatchNorm2d``.

    Args:
        num_features: channels.
        act_layer: the activation (name or class; ``None`` for none).
        fresh_input: the input is a fresh tensor that nothing reads afterwards, so inference may normalise
            it in place (see :class:`~flexbone.layers.BatchNorm2d`). Pass ``False`` where the input is also
            kept elsewhere, e.g. a feature map returned by ``forward_intermediates`` that the next block
            normalises first (DenseNet's transitions).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 act_layer: str | Callable | None = "relu", fresh_input: bool = True):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.fresh_input = fresh_input
        self.act = create_act(act_layer, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript cannot call a base-class method: torch's op written out
            return self.act(self._batch_norm_scripted(x))
        if isinstance(x, torch.fx.Proxy):
            # torch.fx tracing: one call of this module (norm and act) in the graph, a leaf as torch's BN is
            tracer = x.tracer
            return tracer.create_proxy("call_module", tracer.path_of_module(self), (x,), {})
        return self.act(super().forward(x))

    def _batch_norm_scripted(self, x: torch.Tensor) -> torch.Tensor:
        """``nn.BatchNorm2d.forward`` (training statistics included) in a form TorchScript compiles."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if keep_stats else None, self.running_var if keep_stats else None,
                            self.weight, self.bias, use_batch_stats, momentum, self.eps)

    def _normalise_in_place(self, x: torch.Tensor) -> bool:
        return self.fresh_input and super()._normalise_in_place(x)


def batchnorm_act(act_layer: str | Callable | None = "relu", **kwargs) -> Callable[[int], nn.Module]:
    """A factory ``norm_layer(num_features)`` of :class:`BatchNormAct2d` with the given activation."""
    return lambda num_features: BatchNormAct2d(num_features, act_layer=act_layer, **kwargs)
