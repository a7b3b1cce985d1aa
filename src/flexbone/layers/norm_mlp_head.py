"""Classifier head that normalises after pooling: ``pool -> norm -> [fc -> act] -> dropout -> fc``.

timm's ``NormMlpClassifierHead`` (ConvNeXt, RDNet, MaxViT): the trunk ends without a norm, the head
normalises the pooled vector, optionally passes it through a hidden layer (MaxViT: tanh), then classifies.
Parameter names ``norm``, ``pre_logits.fc``, ``fc`` are timm's.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn

from .activations import create_act
from .classifier import SelectAdaptivePool2d
from .layer_norm import LayerNorm2d


class NormMlpClassifierHead(nn.Module):
    """``(B, C, H, W) -> (B, num_classes)``; ``pre_logits=True`` stops before the last ``fc``.

    Args:
        in_features: channels of the map. num_classes: 0 for none.
        hidden_size: width of the hidden layer (``None``: no hidden layer).
        pool_type: global pooling ('avg', 'max', 'avgmax'; widths that double are not supported).
        drop_rate: dropout before the classifier. norm_layer: the norm (channels-first). act_layer: hidden act.
    """

    def __init__(self, in_features: int, num_classes: int, hidden_size: int | None = None, pool_type: str = "avg",
                 drop_rate: float = 0.0, norm_layer: Callable[[int], nn.Module] = LayerNorm2d,
                 act_layer: str | Callable = "tanh"):
        super().__init__()
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.global_pool = self._pool(pool_type, num_classes)
        self.norm = norm_layer(in_features)  # on the (B, C, 1, 1) pooled map
        self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        if hidden_size:
            self.pre_logits = nn.Sequential(OrderedDict([("fc", nn.Linear(in_features, hidden_size)),
                                                         ("act", create_act(act_layer))]))
        else:
            self.pre_logits = nn.Identity()
        self.num_features = hidden_size or in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _pool(pool_type: str, num_classes: int) -> SelectAdaptivePool2d:
        pool = SelectAdaptivePool2d(pool_type, flatten=False)
        if pool.feat_mult() != 1:
            raise ValueError(f"global_pool={pool_type!r}: this head normalises a pooled vector of the map's width; "
                             "use 'avg', 'max' or 'avgmax'")
        if num_classes > 0 and not pool_type:
            raise ValueError("a classifier needs global pooling: set global_pool or num_classes=0")
        return pool

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """New classifier for ``num_classes`` (0 removes it); pooling unchanged unless ``pool_type`` is given."""
        if pool_type is not None:
            self.global_pool = self._pool(pool_type, num_classes)
            self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.norm(self.global_pool(x)))  # (B, C, H, W) -> (B, C)
        x = self.drop(self.pre_logits(x))
        return x if pre_logits else self.fc(x)
