"""An anchor seen as a stitchable chain: stem -> stages of blocks -> head.

SN-Net needs to run an anchor up to block ``j`` of a stage and another from block ``l`` onward. A
:class:`AnchorView` lists the anchor's own modules (shared, not copied) in execution order, so that
``stem``, every stage's ``entry`` and blocks, and ``head`` applied one after the other equal the anchor's
``forward``. A family becomes stitchable by giving its model a ``stitch_view()`` method; ResNet's view is
defined here because the ResNet family module predates stitching.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass
class StitchStage:
    """Blocks of one stage; ``entry`` (e.g. Swin's patch merging) runs before block 0 only."""

    blocks: list[nn.Module]
    channels: int  # width of every block output in this stage
    entry: nn.Module | None = None


@dataclass
class AnchorView:
    """An anchor's modules in execution order (see the module doc)."""

    stem: nn.Module  # image -> input of stage 0
    stages: list[StitchStage]
    head: nn.Module  # output of the last block -> logits
    fmt: str  # layout of the block activations: 'nchw', 'nhwc' or 'nlc' (see layer.py)
    plain: bool = False  # one stage of identical blocks (a plain ViT): stitched by the window rule
    meta: dict = field(default_factory=dict)

    @property
    def depths(self) -> list[int]:
        return [len(s.blocks) for s in self.stages]

    def run_from(self, stage: int, block: int) -> list[nn.Module]:
        """Modules from block ``block`` of ``stage`` to the logits (no entry when resuming mid-stage)."""
        mods: list[nn.Module] = list(self.stages[stage].blocks[block:])
        for s in self.stages[stage + 1:]:
            mods += ([s.entry] if s.entry is not None else []) + list(s.blocks)
        return mods + [self.head]

    def run_until(self, stage: int, block: int) -> list[nn.Module]:
        """Modules from the image to the output of block ``block`` of ``stage`` (inclusive)."""
        mods: list[nn.Module] = [self.stem]
        for i, s in enumerate(self.stages[:stage + 1]):
            mods += [s.entry] if s.entry is not None else []
            mods += list(s.blocks if i < stage else s.blocks[:block + 1])
        return mods

    def run_between(self, stage: int, start: int, stop: int) -> list[nn.Module]:
        """Blocks ``start..stop`` (inclusive) of ``stage``: the middle anchor of a chained stitch."""
        return list(self.stages[stage].blocks[start:stop + 1])

    @torch.no_grad()
    def block_inputs(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per stage, the input of every block and the output of the last: ``out[s][b]`` enters block ``b``,
        ``out[s][b + 1]`` leaves it (the stage's ``entry`` already applied)."""
        x = self.stem(x)
        out = []
        for s in self.stages:
            if s.entry is not None:
                x = s.entry(x)
            acts = [x]
            for blk in s.blocks:
                x = blk(x)
                acts.append(x)
            out.append(acts)
        return out


class _ResNetHead(nn.Module):
    """ResNet's ``forward_head`` as a module of its own (pool -> dropout -> fc)."""

    def __init__(self, global_pool: nn.Module, fc: nn.Module, drop_rate: float):
        super().__init__()
        self.global_pool, self.fc, self.drop_rate = global_pool, fc, drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.fc(x)


def _resnet_view(model: nn.Module) -> AnchorView:
    stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
    widths = {info["module"]: info["num_chs"] for info in model.feature_info}
    stages = [StitchStage(list(getattr(model, f"layer{i}")), widths[f"layer{i}"]) for i in range(1, 5)]
    return AnchorView(stem, stages, _ResNetHead(model.global_pool, model.fc, model.drop_rate), "nchw")


def anchor_view(model: nn.Module) -> AnchorView:
    """The stitchable view of a zoo classifier (its ``stitch_view()``, or the ResNet family's)."""
    from ..models.resnet import ResNet

    if getattr(model, "features_only", False):
        raise ConfigError(f"{type(model).__name__}: SN-Net anchors must be classifiers, not features_only models")
    if hasattr(model, "stitch_view"):
        return model.stitch_view()
    if isinstance(model, ResNet):
        return _resnet_view(model)
    raise ConfigError(f"{type(model).__name__} cannot be an SN-Net anchor (stitchable: ResNet, ViT/DeiT, Swin)")
