"""Batch norm and activation as one layer (pre-activation networks: DenseNet, RDNet).

A pre-activation block starts ``BN -> act -> conv``; keeping BN and its activation in one module keeps the
parameter names of timm's ``BatchNormAct2d`` (``norm1.weight``, not ``norm1.bn.weight``) and of
torchvision's DenseNet (whose ReLU has no parameters), so both checkpoints load as they are.
"""
from __future__ import annotations

from typing import Callable

import torch
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
        return self.act(super().forward(x))

    def _normalise_in_place(self, x: torch.Tensor) -> bool:
        return self.fresh_input and super()._normalise_in_place(x)


def batchnorm_act(act_layer: str | Callable | None = "relu", **kwargs) -> Callable[[int], nn.Module]:
    """A factory ``norm_layer(num_features)`` of :class:`BatchNormAct2d` with the given activation."""
    return lambda num_features: BatchNormAct2d(num_features, act_layer=act_layer, **kwargs)
