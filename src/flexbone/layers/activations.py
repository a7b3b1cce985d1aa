"""Activation layers by name. Functional forms match timm's so that outputs agree to float precision."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,  # slope 0.01 (torch's and timm's default): CSPNet, DarkNet
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "hard_swish": nn.Hardswish,
    "hardswish": nn.Hardswish,
    "hard_sigmoid": nn.Hardsigmoid,
    "hardsigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def get_act_layer(act: str | Callable | None) -> Callable | None:
    """Resolve an activation given as a name (``'relu'``), a class or a factory; ``None`` stays ``None``."""
    if act is None or not isinstance(act, str):
        return act
    try:
        return _ACT_LAYERS[act.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {act!r}; choose from {', '.join(sorted(_ACT_LAYERS))}") from None


def create_act(act: str | Callable | None, inplace: bool = False) -> nn.Module:
    """An activation module; ``None`` gives ``nn.Identity``. ``inplace`` is passed where the layer takes it."""
    layer = get_act_layer(act)
    if layer is None:
        return nn.Identity()
    if layer in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid):
        return layer(inplace=inplace)
    return layer()
