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
        if torch.jit.is_scripting():  # TorchScript cannot call super(): BatchNorm2d's plain path
            return self.act(self._forward_plain(x))
        if isinstance(x, torch.fx.Proxy):
            # torch.fx tracing: one call of this module (norm and act) in the graph, a leaf as torch's BN is
            tracer = x.tracer
            return tracer.create_proxy("call_module", tracer.path_of_module(self), (x,), {})
        return self.act(super().forward(x))

    def _normalise_in_place(self, x: torch.Tensor) -> bool:
        return self.fresh_input and super()._normalise_in_place(x)
