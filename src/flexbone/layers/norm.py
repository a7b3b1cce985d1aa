"""Normalisation layers by name."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_NORM_LAYERS: dict[str, type[nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "batchnorm2d": nn.BatchNorm2d,
    "groupnorm": nn.GroupNorm,
    "layernorm": nn.LayerNorm,
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
