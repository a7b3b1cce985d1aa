"""Saving an extracted sub-network, and loading it back as a plain zoo model.

A saved sub-network is a folder with two files::

    config.json          {"format": "flexbone-subnet/1",
                          "model": "ofa_resnet50_subnet",          # the registered builder
                          "kwargs": {"subnet": {...}, "num_classes": 1000, ...},   # its create_model arguments
                          "supernet": "ofa_resnet50",
                          "architecture": {"class": "flexbone.models.resnet.ResNet", "kwargs": {...}},
                          "params": 23456789}
    model.safetensors    the static model's weights (its own parameter names)

Any supernet works that offers ``name``, ``subnet_model_name``, ``active_config``, ``set_active``, ``extract``,
``subnet_kwargs`` and ``subnet_create_kwargs`` (``ofa_resnet50``, the ``ofa_mbv3_*`` / ``ofa_proxyless_*`` /
``ofa_mbv2_*`` MobileNets: their sub-networks reload as ResNet, MobileNetV3 or MobileNetV2).

``load_subnet(folder)`` is ``create_model(config["model"], pretrained=folder/"model.safetensors",
**config["kwargs"])``; either call works. ``architecture`` repeats the static model's resolved
constructor arguments, so the model can be rebuilt without the registry as well
(``ResNet(**config["architecture"]["kwargs"])``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..checkpoint import atomic_write, save_state_dict
from ..errors import ConfigError
from .space import SubnetConfig

FORMAT = "flexbone-subnet/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def subnet_origin(supernet: nn.Module) -> dict[str, Any]:
    """What :func:`save_subnet` records about the active sub-network of ``supernet`` (JSON-ready); ``extract()``
    attaches it to the static model it returns as ``subnet_origin``, so that model can be saved on its own."""
    return {"model": supernet.subnet_model_name, "kwargs": supernet.subnet_create_kwargs(), "supernet": supernet.name,
            "subnet": supernet.active_config.to_dict(), "architecture_kwargs": supernet.subnet_kwargs()}


def save_subnet(model: nn.Module, directory: str | os.PathLike,
                cfg: SubnetConfig | dict[str, Any] | None = None) -> Path:
    """Write a sub-network to ``directory``: a supernet's active sub-network (or ``cfg``'s), extracted here,
    or a static model that ``supernet.extract()`` returned, with the weights it has now (after
    :func:`~flexbone.elastic.recalibrate_bn` or fine-tuning).

    Returns the folder. Both files are written atomically; an existing sub-network there is replaced.
    """
    if hasattr(model, "extract"):  # a supernet
        if cfg is not None:
            model.set_active(cfg)
        static, origin = model.extract(), subnet_origin(model)
    else:
        origin = getattr(model, "subnet_origin", None)
        if origin is None:
            raise ConfigError(f"save_subnet takes a supernet or a sub-network extracted from one (sub = net.extract()); "
                              f"this {type(model).__name__} does not say which supernet it comes from")
        if cfg is not None:
            raise ConfigError("save_subnet: cfg selects a sub-network of a supernet; an extracted sub-network is "
                              "saved as it is")
        static = model
    directory = Path(directory)
    meta = {
        "format": FORMAT,
        "model": origin["model"],
        "kwargs": origin["kwargs"],
        "supernet": origin["supernet"],
        "subnet": origin["subnet"],
        "architecture": {"class": f"{type(static).__module__}.{type(static).__name__}",
                         "kwargs": origin["architecture_kwargs"]},
        "params": sum(p.numel() for p in static.parameters()),
    }
    save_state_dict(static.state_dict(), directory / WEIGHTS_FILE, metadata={"format": FORMAT})
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return directory


def read_subnet_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a saved sub-network (checked for the fields ``load_subnet`` needs)."""
    path = Path(directory) / CONFIG_FILE if Path(directory).is_dir() else Path(directory)
    if not path.is_file():
        raise ConfigError(f"no sub-network config at {path} (expected a folder written by save_subnet)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta or "kwargs" not in meta:
        raise ConfigError(f"{path} is not a flexbone sub-network config (format {FORMAT!r} with 'model' and 'kwargs')")
    return meta


def load_subnet(directory: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild a sub-network saved by :func:`save_subnet`, with its weights, through ``create_model``.

    ``overrides`` change create_model arguments (e.g. ``num_classes=10`` keeps all but the classifier,
    ``features_only=True`` gives a feature extractor).
    """
    from ..models import create_model

    directory = Path(directory)
    meta = read_subnet_config(directory)
    weights = directory / WEIGHTS_FILE
    return create_model(meta["model"], pretrained=weights, **{**meta["kwargs"], **overrides})
