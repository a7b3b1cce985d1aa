"""The model contract every flexbone backbone honours (see DESIGN.md, "The model contract").

A family subclasses :class:`Backbone`, registers its modules in execution order, and implements
``forward_features``, ``forward_head`` and ``reset_classifier``. The base class supplies the rest:
``forward``, ``features_only`` mode, ``forward_intermediates``, gradient checkpointing switches.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ._features import FeatureInfo, FeatureStage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_cfg(**overrides: Any) -> dict[str, Any]:
    """The preprocessing a model expects (timm's ``pretrained_cfg`` keys) plus where its stem and head are."""
    cfg = dict(
        input_size=(3, 224, 224),
        test_input_size=None,
        crop_pct=0.875,
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        first_conv="conv1",
        classifier="fc",
    )
    cfg.update(overrides)
    return cfg


class Backbone(nn.Module):
    """Base class of all registered models."""

    default_cfg: dict[str, Any] = default_cfg()
    feature_info: FeatureInfo

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.features_only = False
        self.out_indices: tuple[int, ...] = ()

    # ----------------------------------------------------------------------- family-specific parts
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> unpooled last feature map."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (and classify, unless ``pre_logits``) the output of ``forward_features``."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.default_cfg["classifier"])

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------- shared behaviour
    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices)
        return self.forward_head(self.forward_features(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in the backward pass: less memory, ~30% more compute."""
        self.grad_checkpointing = enable

    def _feature_plan(self) -> list[tuple[str, nn.Module]]:
        """Modules in execution order, down to the last feature level.

        Top-level children run in registration order; a container named by a dotted feature module
        (``stages`` for ``stages.0``) is entered so that its children become individual steps.
        """
        feature_modules = [s.module for s in self.feature_info]
        containers = {m.rsplit(".", 1)[0] for m in feature_modules if "." in m}
        plan: list[tuple[str, nn.Module]] = []
        last = feature_modules[-1]
        for name, module in self.named_children():
            if name in containers:
                for child_name, child in module.named_children():
                    plan.append((f"{name}.{child_name}", child))
                    if plan[-1][0] == last:
                        return plan
            else:
                plan.append((name, module))
                if name == last:
                    return plan
        raise RuntimeError(f"{type(self).__name__}: feature module {last!r} not found among its children")

    @torch.jit.unused
    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Feature maps of the levels ``indices`` (all levels by default), shallow to deep."""
        indices = self.feature_info.with_out_indices(indices).out_indices
        wanted = {self.feature_info[i].module for i in indices}
        outputs = []
        for name, module in self._feature_plan():
            x = module(x)
            if name in wanted:
                outputs.append(x)
                if len(outputs) == len(wanted):
                    break
        return outputs

    def as_features(self, out_indices: Sequence[int] | int | None = None) -> "Backbone":
        """Turn this model into a feature extractor: drop the head, return a list of stage maps.

        Parameter names stay those of the classification model, so the same checkpoints load.
        """
        self.feature_info = self.feature_info.with_out_indices(out_indices)
        self.out_indices = self.feature_info.out_indices
        self.reset_classifier(0, "")
        self.features_only = True
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def stage_info(channels: Sequence[int], reductions: Sequence[int], modules: Sequence[str]) -> FeatureInfo:
    return FeatureInfo([FeatureStage(c, r, m) for c, r, m in zip(channels, reductions, modules)])
