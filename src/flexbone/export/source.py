"""What is exported: a model with its weights, and everything a deployer must know to feed it.

An :class:`ExportSource` comes from a registered model name (random weights), a checkpoint
(:func:`flexbone.train.checkpoint.model_from_checkpoint`: flexbone runs, timm / torchvision state dicts) or
a saved sub-network folder (:func:`flexbone.elastic.load_subnet`). It keeps the ``create_model`` name and
arguments that rebuild the model, the checkpoint's metadata (class names, preprocessing) and the
sub-network's configuration, so the sidecar JSON of every artifact can say how it was made.
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import ConfigError


@dataclass
class ExportSource:
    """A model to export (eval mode) and how it was made."""

    model: nn.Module
    name: str  # the registered builder: create_model(name, **kwargs) rebuilds it
    kwargs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # the checkpoint's (class names, preprocessing ...)
    subnet: dict[str, Any] | None = None  # SubnetConfig.to_dict() of an extracted sub-network
    supernet: str | None = None
    checkpoint: str | None = None

    def preprocessing(self, img_size: int | None = None) -> dict[str, Any]:
        """Input size and normalisation: ``img_size`` > the checkpoint's metadata > the model's ``default_cfg``."""
        cfg = getattr(self.model, "default_cfg", None) or {}
        meta = self.metadata
        size = img_size or meta.get("test_img_size") or meta.get("img_size") or cfg.get("input_size", (3, 224, 224))[-1]
        chans = _in_chans(self.model)
        return {
            "input_size": [chans, int(size), int(size)],
            "mean": list(meta.get("mean") or cfg.get("mean") or (0.485, 0.456, 0.406)),
            "std": list(meta.get("std") or cfg.get("std") or (0.229, 0.224, 0.225)),
            "interpolation": meta.get("interpolation") or cfg.get("interpolation", "bilinear"),
            "crop_pct": float(meta.get("crop_pct") or cfg.get("crop_pct", 0.875)),
        }


def _in_chans(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def load_source(model_name: str | None = None, checkpoint: str | os.PathLike | None = None,
                subnet: str | os.PathLike | None = None, config: int | None = None,
                **model_kwargs: Any) -> ExportSource:
    """The model named by a model name (random weights), a checkpoint, or a saved sub-network folder.

    ``model_kwargs`` go to ``create_model`` (e.g. ``features_only=True``); with a checkpoint they are
    not accepted (the checkpoint decides the architecture). An SN-Net checkpoint (a ``flexbone stitch`` folder or a
    run that trained one) holds many configurations: ``config`` picks the one to export. A folder that
    ``flexbone search`` wrote for an SN-Net budget holds one configuration's ``model.safetensors``.
    """
    from ..elastic.subnets import load_subnet, read_subnet_config
    from ..models import create_model
    from ..stitch.snnet import WEIGHTS_FILE, is_snnet_checkpoint, load_snnet_checkpoint

    if subnet is not None:
        if checkpoint is not None or model_name is not None:
            raise ConfigError("give either --subnet DIR or --model / --checkpoint, not both")
        stitched = Path(subnet) / WEIGHTS_FILE
        if Path(subnet).is_dir() and not (Path(subnet) / "config.json").exists() and stitched.is_file():
            return load_source(checkpoint=stitched, config=config, **model_kwargs)  # an SN-Net search's budget
        meta = read_subnet_config(subnet)
        model = load_subnet(subnet, **model_kwargs).eval()
        return ExportSource(model, meta["model"], {**meta["kwargs"], **model_kwargs}, subnet=meta.get("subnet"),
                            supernet=meta.get("supernet"), checkpoint=str(subnet))
    if checkpoint is not None and is_snnet_checkpoint(checkpoint):
        net, meta = load_snnet_checkpoint(checkpoint)
        if config is None:
            raise ConfigError(f"{checkpoint} is an SN-Net of {net.num_configs} configurations: pick the one to export "
                              f"with --config ID (0..{net.num_configs - 1}; `flexbone subnets` or `flexbone search` "
                              f"evaluates them)")
        if not 0 <= config < net.num_configs:
            raise ConfigError(f"--config {config}: this SN-Net has configurations 0..{net.num_configs - 1}")
        kwargs = {**net.spec, "config_id": config}
        return ExportSource(net.extract(config).eval(), "snnet", kwargs, metadata=dict(meta),
                            checkpoint=str(checkpoint))
    if config is not None:
        raise ConfigError("--config picks a configuration of an SN-Net; this checkpoint holds none")
    if checkpoint is not None:
        from ..train.checkpoint import model_from_checkpoint

        if model_kwargs:
            raise ConfigError(f"options {sorted(model_kwargs)} cannot be combined with a checkpoint")
        model, meta = model_from_checkpoint(checkpoint, model_name)
        name = model_name or meta["model"]
        kwargs = dict(meta.get("model_kwargs") or {}) if name == meta.get("model") else {}
        kwargs["num_classes"] = getattr(model, "num_classes", kwargs.get("num_classes"))
        return ExportSource(model.eval(), name, kwargs, metadata=dict(meta), checkpoint=str(checkpoint))
    if model_name is None:
        raise ConfigError("nothing to export: give --model NAME (with --checkpoint C) or --subnet DIR")
    model = create_model(model_name, **model_kwargs).eval()
    return ExportSource(model, model_name, dict(model_kwargs))
