"""The ResNet-RS scaling strategy (Bello et al. 2021, "Revisiting ResNets: Improved Training and Scaling
Strategies", Section 7 and Table 7) as data and one function.

The paper's two findings about scaling a ResNet:

1. **Scale depth where overfitting can occur, width otherwise.** In the 350-epoch regime (where bigger
   models start to overfit) adding depth beats adding width at the same FLOPs; in short regimes (10
   epochs) width scaling is best, and at 100 epochs the two are close (depth pays off for larger models).
   The published ResNet-RS family is therefore *depth*-scaled: 50 ... 420 layers, all trained ~350 epochs.
2. **Increase the image resolution more slowly than EfficientNet's compound scaling does.** Large
   resolutions give diminishing returns; the family's resolutions grow only from 160 to 320 px while the
   FLOPs grow 28-fold.

``PAPER_TABLE`` is the paper's Table 7 (depth, training resolution, parameters, FLOPs, ImageNet top-1 at
that resolution). Its FLOPs are 2x the multiply-accumulates that :mod:`flexbone.bench.complexity` counts
for ``resnetrs<depth>`` at that resolution (``tests/test_scaling.py`` checks every row), so a budget is
given in GMACs, as everywhere in flexbone.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ResNetRSRow:
    """One published ResNet-RS configuration (Bello et al. 2021, Table 7)."""

    depth: int
    image_size: int  # training (and evaluation) resolution, px
    params_m: float  # parameters, millions
    gflops: float  # the paper's FLOPs, billions (= 2 x MACs)
    top1: float  # ImageNet top-1 (%), 350 epochs, evaluated at image_size

    @property
    def model(self) -> str:
        return f"resnetrs{self.depth}"

    @property
    def gmacs(self) -> float:
        return self.gflops / 2


PAPER_TABLE: tuple[ResNetRSRow, ...] = (
    # depth, resolution, params (M), FLOPs (B), top-1 (%)
    ResNetRSRow(50, 160, 36, 4.6, 78.8),
    ResNetRSRow(101, 160, 64, 8.4, 80.3),
    ResNetRSRow(101, 192, 64, 12, 81.2),
    ResNetRSRow(152, 192, 87, 18, 82.0),
    ResNetRSRow(152, 224, 87, 24, 82.2),
    ResNetRSRow(152, 256, 87, 31, 83.0),
    ResNetRSRow(200, 256, 93, 40, 83.4),
    ResNetRSRow(270, 256, 130, 54, 83.8),
    ResNetRSRow(350, 256, 164, 69, 84.0),
    ResNetRSRow(350, 320, 164, 107, 84.2),
    ResNetRSRow(420, 320, 192, 128, 84.4),
)

# Below this many epochs the paper's short-schedule finding applies: width scaling is the better use of
# FLOPs (its 10-epoch regime); from ~100 epochs on, models can overfit and depth scaling wins (its 100- and
# 350-epoch regimes; at 100 epochs the two are close for small models).
DEPTH_SCALING_MIN_EPOCHS = 100


@dataclass(frozen=True)
class ScalingChoice:
    """What the paper's strategy picks for a budget and a schedule."""

    model: str  # a registered ResNet-RS name
    depth: int
    image_size: int
    gmacs: float  # of ``model`` at ``image_size`` (times width_multiplier**2 when widening)
    strategy: str  # 'depth' (a published row) or 'width' (the smallest published row, widened)
    width_multiplier: float  # 1.0 for 'depth'; for 'width', the factor on every stage width the budget allows
    reason: str


def resnetrs_scaling(gmacs_budget: float, epochs: int) -> ScalingChoice:
    """The ResNet-RS configuration the paper's scaling strategy picks.

    Args:
        gmacs_budget: compute per image at training resolution, in GMACs (paper FLOPs / 2).
        epochs: the length of the training schedule.

    With ``epochs >= DEPTH_SCALING_MIN_EPOCHS`` (overfitting possible: depth scaling), the answer is the
    published depth/resolution pair with the best top-1 within the budget: the family itself encodes
    "deeper first, resolution slowly". With shorter schedules, width scaling is the paper's advice: the
    answer is the shallowest published row, widened by ``sqrt(budget / its cost)`` (MACs grow with width
    squared), at its resolution; no such model was trained in the paper, so ``strategy == 'width'`` says so.
    """
    if not (isinstance(gmacs_budget, (int, float)) and math.isfinite(gmacs_budget) and gmacs_budget > 0):
        raise ConfigError(f"the compute budget must be a positive number of GMACs, not {gmacs_budget!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, not {epochs!r}")
    fits = [r for r in PAPER_TABLE if r.gmacs <= gmacs_budget]
    if not fits:
        small = PAPER_TABLE[0]
        raise ConfigError(f"{gmacs_budget:g} GMACs is below the smallest ResNet-RS ({small.model} at "
                          f"{small.image_size} px: {small.gmacs:g} GMACs)")
    if epochs >= DEPTH_SCALING_MIN_EPOCHS:
        best = max(fits, key=lambda r: (r.top1, -r.gmacs))
        return ScalingChoice(best.model, best.depth, best.image_size, best.gmacs, "depth", 1.0,
                             f"{epochs} epochs can overfit: scale depth (Bello et al. 2021, Sec. 7); the best "
                             f"published pair within {gmacs_budget:g} GMACs is depth {best.depth} at "
                             f"{best.image_size} px ({best.top1}% top-1 in the paper)")
    base = PAPER_TABLE[0]
    width = math.sqrt(gmacs_budget / base.gmacs)
    return ScalingChoice(base.model, base.depth, base.image_size, base.gmacs * width ** 2, "width", width,
                         f"{epochs} epochs is a short schedule: scale width, not depth (Bello et al. 2021, "
                         f"Sec. 7); {base.model} at {base.image_size} px widened {width:.2f}x fills "
                         f"{gmacs_budget:g} GMACs (not a published model: its accuracy is not in the paper)")


def paper_training_resolutions(model_name: str) -> list[int]:
    """The resolutions the paper trained ``resnetrs<depth>`` at (Table 7); ``[]`` for other names."""
    m = re.fullmatch(r"resnetrs(\d+)", model_name)
    if not m:
        return []
    return [r.image_size for r in PAPER_TABLE if r.depth == int(m.group(1))]
