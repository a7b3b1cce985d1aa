"""Segmentation models: a head over the feature pyramid of any zoo model, or an FFNet.

``SegmentationModel(backbone='resnet18', head='ffnet_b', num_classes=11)`` asks the backbone for its 4-level
pyramid (``features_only=True, out_indices=(-4, -3, -2, -1)``: strides 4..32 in either numbering of the
levels) and puts a fresh head on it. ``pretrained=`` loads a *classification* checkpoint into the backbone
before its classifier is dropped, so ImageNet (or any flexbone / timm) weights start the backbone while the
head starts fresh, as FFNet does.

Names: ``seg_<head>_<backbone>`` (e.g. ``seg_ffnet_b_resnet18``, ``seg_fpn_mobilenetv2_100``) is a model
name of the registry (``create_model``, ``is_model``, family ``seg``), resolved by pattern for every head and
every model with ``features_only`` (:func:`seg_entrypoint`); ``list_models('seg_*')`` lists each head over the
backbones of :data:`LISTED_BACKBONES`. :func:`create_segmentation_model` takes those names or a registered
segmentation FFNet (``ffnet40S_BBB_mobile``).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, UnknownModelError, did_you_mean
from ..models import create_model, is_model, list_models, model_family
from .heads import HEADS, create_head

PYRAMID = (-4, -3, -2, -1)  # the 4 deepest levels: strides 4, 8, 16, 32 for every family


class SegmentationModel(nn.Module):
    """``backbone`` pyramid -> ``head`` -> logits at the finest level (1/4 of the input)."""

    def __init__(self, backbone: str | nn.Module, head: str = "ffnet_b", num_classes: int = 19,
                 pretrained: bool | str | os.PathLike = False, **backbone_kwargs: Any):
        super().__init__()
        if isinstance(backbone, str):
            self.backbone_name = backbone
            backbone = create_model(backbone, pretrained=pretrained, features_only=True, out_indices=PYRAMID,
                                    **backbone_kwargs)
        else:
            self.backbone_name = type(backbone).__name__
            if not getattr(backbone, "features_only", False):
                raise ConfigError("pass a backbone built with features_only=True (or a registered name)")
        self.backbone = backbone
        # Swin's features_only maps are channels-last, as timm's (output_fmt 'NHWC'); the heads take (B, C, H, W)
        self.channels_last_maps = getattr(backbone, "output_fmt", "NCHW") == "NHWC"
        self.head_name = head
        self.head = create_head(head, backbone.feature_info.channels(), num_classes)
        self.num_classes = num_classes
        self.task = "segmentation"
        cfg = dict(getattr(backbone, "default_cfg", {}))
        cfg.update(task="segmentation", output_stride=backbone.feature_info.reduction()[0])
        self.default_cfg = cfg

    @property
    def feature_info(self):
        return self.backbone.feature_info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x)
        if self.channels_last_maps:
            maps = [m.permute(0, 3, 1, 2) for m in maps]  # (B, H, W, C) -> (B, C, H, W)
        return self.head(maps)  # (B, num_classes, H/4, W/4)


def parse_seg_name(name: str) -> tuple[str, str] | None:
    """``seg_<head>_<backbone>`` -> (head, backbone), or None when ``name`` is not of that form."""
    if not name.startswith("seg_"):
        return None
    rest = name[4:]
    for head in sorted(HEADS, key=len, reverse=True):  # 'ffnet_b_mobile' before 'ffnet_b'
        if rest.startswith(head + "_"):
            return head, rest[len(head) + 1:]
    raise UnknownModelError(f"unknown model {name!r}: expected seg_<head>_<backbone> with a head from "
                            f"{', '.join(HEADS)}")


# one backbone per family the issue names (ResNet, ResNet-RS, MobileNetV2/V3, PVT v1/v2, VoVNet, CBNet): what
# list_models('seg_*') shows; every other model with features_only works by name too
LISTED_BACKBONES = ("resnet18", "resnet50", "resnetrs50", "mobilenetv2_100", "mobilenetv3_large_100", "pvt_tiny",
                    "pvt_v2_b0", "ese_vovnet19b_dw", "cb_resnet50")


def listed_seg_models() -> list[str]:
    """The ``seg_*`` names :func:`flexbone.list_models` shows: every head over :data:`LISTED_BACKBONES`."""
    return [f"seg_{head}_{backbone}" for head in HEADS for backbone in LISTED_BACKBONES]


def seg_entrypoint(name: str):
    """The registry's builder for ``seg_<head>_<backbone>`` (raises UnknownModelError for a bad name)."""
    head, backbone = parse_seg_name(name)
    if not is_model(backbone) or backbone.startswith("seg_"):
        backbones = [n for n in list_models() if not n.startswith("seg_")]
        raise UnknownModelError(f"unknown model {name!r}: {backbone!r} is not a zoo backbone."
                                f"{did_you_mean(backbone, backbones)}")

    def build(num_classes: int = 19, pretrained: bool | str | os.PathLike = False, **kwargs: Any) -> SegmentationModel:
        return SegmentationModel(backbone, head, num_classes, pretrained=pretrained, **kwargs)

    build.loads_pretrained = True  # a classification checkpoint goes into the backbone (create_model passes it)
    build.model_cls = SegmentationModel
    return build


def create_segmentation_model(name: str, num_classes: int = 19, pretrained: bool | str | os.PathLike = False,
                              **kwargs: Any) -> nn.Module:
    """A segmentation model by name: ``seg_<head>_<backbone>`` or a registered segmentation FFNet."""
    if name.startswith("seg_"):
        return create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    if is_model(name) and model_family(name) == "ffnet":
        model = create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
        if getattr(model, "task", None) != "segmentation":
            raise ConfigError(f"{name} is FFNet's classification form; use a segmentation FFNet (e.g. ffnet40S_BBB_mobile)")
        return model
    raise ConfigError(f"{name!r} is not a segmentation model: use seg_<head>_<backbone> (heads: {', '.join(HEADS)}) "
                      f"or an FFNet (`flexbone list 'ffnet*'`)")


def is_segmentation_model(name: str) -> bool:
    """Whether ``name`` names a segmentation model (``seg_*`` or a segmentation FFNet)."""
    if name.startswith("seg_"):
        return True
    return is_model(name) and model_family(name) == "ffnet" and "X" not in name.split("_")[1]


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (B, K, h, w) -> (B, K, H, W) at the label size (bilinear), as the FFNet evaluation does."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
