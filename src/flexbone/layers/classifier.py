"""Global pooling and the classifier head."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class SelectAdaptivePool2d(nn.Module):
    """Global pooling chosen by name, optionally flattened: ``(B, C, H, W) -> (B, C)`` (``2C`` for catavgmax).

    ``pool_type=''`` keeps the map unpooled (for dense heads).
    """

    def __init__(self, pool_type: str = "avg", flatten: bool = True):
        super().__init__()
        if pool_type not in _POOL_TYPES:
            raise ValueError(f"unknown global_pool {pool_type!r}; choose from {', '.join(map(repr, _POOL_TYPES))}")
        self.pool_type = pool_type
        self.flatten = nn.Flatten(1) if (flatten and pool_type) else nn.Identity()

    def is_identity(self) -> bool:
        return not self.pool_type

    def feat_mult(self) -> int:
        return 2 if self.pool_type == "catavgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean((2, 3), keepdim=True)
        elif self.pool_type == "max":
            x = F.adaptive_max_pool2d(x, 1)
        elif self.pool_type == "avgmax":
            x = 0.5 * (x.mean((2, 3), keepdim=True) + F.adaptive_max_pool2d(x, 1))
        elif self.pool_type == "catavgmax":
            x = torch.cat((x.mean((2, 3), keepdim=True), F.adaptive_max_pool2d(x, 1)), 1)
        return self.flatten(x)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


def create_classifier(num_features: int, num_classes: int, pool_type: str = "avg") -> tuple[nn.Module, nn.Module]:
    """``(global_pool, fc)``; ``num_classes=0`` gives an identity ``fc`` (a feature extractor)."""
    global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
    if num_classes <= 0:
        return global_pool, nn.Identity()
    if not pool_type:
        raise ValueError("a classifier needs global pooling: set global_pool or num_classes=0")
    return global_pool, nn.Linear(num_features * global_pool.feat_mult(), num_classes)


class ClassifierHead(nn.Module):
    """``global pool -> dropout -> fc`` as one module (timm's ``ClassifierHead``: parameters ``fc.*``).

    Families whose timm twin keeps its classifier under ``head`` use this, so ``head.fc.weight`` loads.
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.global_pool, self.fc = create_classifier(in_features, num_classes, pool_type)
        self.drop = nn.Dropout(drop_rate)
        self.num_features = in_features * self.global_pool.feat_mult()  # pooled (pre-logits) width

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """New classifier for ``num_classes`` (0 removes it); pooling unchanged unless ``pool_type`` is given."""
        pool = self.global_pool.pool_type if pool_type is None else pool_type
        self.global_pool, self.fc = create_classifier(self.in_features, num_classes, pool)
        self.num_features = self.in_features * self.global_pool.feat_mult()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.fc(x)
