"""FBNetV3: MobileNetV3-style networks found by joint architecture-recipe search.

Dai et al. 2021, "FBNetV3: Joint Architecture-Recipe Search using Predictor Pretraining".

The searched networks are MobileNetV3 trunks (inverted residuals with optional squeeze-excite, hard-swish
everywhere, the "efficient" head: pool, 1x1 conv to 1984, classify), so they are built by
:class:`flexbone.models.mobilenet.MobileNetV3` from a block table. Two details differ from MobileNetV3 and
are what this module adds: the squeeze-excite reduces from the block's *input* width (a quarter of it,
rounded to 8 never below 95%), not from the expanded width, and it uses the block's activation
(hard-swish) instead of ReLU.

Each variant is a table of rows ``(kind, repeats, kernel, stride, expand, channels, se)`` per stage, as in
timm's ``mobilenetv3.py`` (``ir_r4_k5_s1_e3_c40_se0.25``), whose parameter names and checkpoints these
models share (``strict=True``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..layers import MobileSqueezeExcite, make_divisible
from ._registry import register_variants
from .mobilenet import BlockSpec, MobileNetV3, _init_weights

Row = tuple  # (kind 'ds' / 'ir' / 'conv', repeats, kernel, stride, expand ratio, out channels, squeeze-excite)


@dataclass(frozen=True)
class FBNetV3Config:
    stem_chs: int
    stages: tuple[tuple[Row, ...], ...]
    head_chs: int = 1984


# name -> architecture (timm's _gen_fbnetv3 tables: 'a' and 'b' share one)
_B = FBNetV3Config(16, (
    # kind, repeats, kernel, stride, expand, channels, se
    (("ds", 2, 3, 1, 1, 16, False),),
    (("ir", 1, 5, 2, 4, 24, False), ("ir", 3, 5, 1, 2, 24, False)),
    (("ir", 1, 5, 2, 5, 40, True), ("ir", 4, 5, 1, 3, 40, True)),
    (("ir", 1, 5, 2, 5, 72, False), ("ir", 4, 3, 1, 3, 72, False)),
    (("ir", 1, 3, 1, 5, 120, True), ("ir", 5, 5, 1, 3, 120, True)),
    (("ir", 1, 3, 2, 6, 184, True), ("ir", 5, 5, 1, 4, 184, True), ("ir", 1, 5, 1, 6, 224, True)),
    (("conv", 1, 1, 1, 1, 1344, False),),
))
_D = FBNetV3Config(24, (
    (("ds", 2, 3, 1, 1, 16, False),),
    (("ir", 1, 3, 2, 5, 24, False), ("ir", 5, 3, 1, 2, 24, False)),
    (("ir", 1, 5, 2, 4, 40, True), ("ir", 4, 3, 1, 3, 40, True)),
    (("ir", 1, 3, 2, 5, 72, False), ("ir", 4, 3, 1, 3, 72, False)),
    (("ir", 1, 3, 1, 5, 128, True), ("ir", 6, 5, 1, 3, 128, True)),
    (("ir", 1, 3, 2, 6, 208, True), ("ir", 5, 5, 1, 5, 208, True), ("ir", 1, 5, 1, 6, 240, True)),
    (("conv", 1, 1, 1, 1, 1440, False),),
))
_G = FBNetV3Config(32, (
    (("ds", 3, 3, 1, 1, 24, False),),
    (("ir", 1, 5, 2, 4, 40, False), ("ir", 4, 5, 1, 2, 40, False)),
    (("ir", 1, 5, 2, 4, 56, True), ("ir", 4, 5, 1, 3, 56, True)),
    (("ir", 1, 5, 2, 5, 104, False), ("ir", 4, 3, 1, 3, 104, False)),
    (("ir", 1, 3, 1, 5, 160, True), ("ir", 8, 5, 1, 3, 160, True)),
    (("ir", 1, 3, 2, 6, 264, True), ("ir", 6, 5, 1, 5, 264, True), ("ir", 2, 5, 1, 6, 288, True)),
    (("conv", 1, 1, 1, 1, 1728, False),),
))
VARIANTS: dict[str, FBNetV3Config] = {"fbnetv3_b": _B, "fbnetv3_d": _D, "fbnetv3_g": _G}

# the preprocessing of timm's trained weights (timm's pretrained_cfg)
PREPROCESSING: dict[str, dict[str, Any]] = {
    "fbnetv3_b": dict(test_input_size=(3, 256, 256), crop_pct=0.95, interpolation="bilinear"),
    "fbnetv3_d": dict(test_input_size=(3, 256, 256), crop_pct=0.95, interpolation="bilinear"),
    "fbnetv3_g": dict(input_size=(3, 240, 240), test_input_size=(3, 288, 288), crop_pct=0.95, pool_size=(8, 8),
                      interpolation="bilinear"),
}

_ACT = "hard_swish"


def _expand(cfg: FBNetV3Config) -> tuple[tuple[BlockSpec, ...], tuple[tuple[int | None, ...], ...]]:
    """The block table for MobileNetV3, and per block the squeeze-excite width (None: no SE)."""
    in_chs, stages, se_widths = cfg.stem_chs, [], []
    for rows in cfg.stages:
        blocks, widths = [], []
        for kind, repeats, kernel, stride, expand, out_chs, se in rows:
            for i in range(repeats):
                mid = make_divisible(in_chs * expand) if kind == "ir" else None
                blocks.append(BlockSpec(kind, kernel, out_chs, mid_chs=mid, se=se, act=_ACT,
                                        stride=stride if i == 0 else 1))
                # SE from the block input: rd_ratio 0.25 / expand on the expanded width, rounded (limit 0.95)
                widths.append(make_divisible(mid * 0.25 / expand, 8, round_limit=0.95) if se else None)
                in_chs = out_chs
        stages.append(tuple(blocks))
        se_widths.append(tuple(widths))
    return tuple(stages), tuple(se_widths)


class FBNetV3(MobileNetV3):
    """FBNetV3 (see ``VARIANTS``): a MobileNetV3 trunk whose squeeze-excites are sized from the block input.

    Args:
        cfg: the architecture (a :class:`FBNetV3Config`).
        **kwargs: MobileNetV3's options (``num_classes``, ``in_chans``, ``output_stride``, ``drop_rate``,
            ``drop_path_rate``, ``global_pool``, ``bn_eps``, ``bn_momentum``).
    """

    def __init__(self, cfg: FBNetV3Config, **kwargs: Any):
        stages, se_widths = _expand(cfg)
        super().__init__(stages, stem_chs=cfg.stem_chs, head_chs=cfg.head_chs, head_bias=False, act_layer=_ACT,
                         **kwargs)
        for stage, widths in zip(self.blocks, se_widths):
            for block, width in zip(stage, widths):
                if width is not None:
                    block.se = MobileSqueezeExcite(block.se.conv_reduce.in_channels, rd_channels=width,
                                                   act_layer=_ACT, gate_layer="hard_sigmoid")
                    _init_weights(block.se)


register_variants(FBNetV3, VARIANTS, family="fbnetv3", preprocessing=PREPROCESSING)
