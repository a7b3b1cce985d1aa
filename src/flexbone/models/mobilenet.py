"""The MobileNet family: MobileNetV2 and MobileNetV3 (large, small), static targets of once-for-all extraction.

Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (Table 2);
Howard et al. 2019, "Searching for MobileNetV3" (Tables 1 and 2).

How an architecture is described, from the paper down to the modules:

1. The paper's table (``MOBILENETV2``: ``t, c, n, s`` rows; ``MOBILENETV3_LARGE/SMALL``: ``k, exp, c, se, nl, s``
   rows, one per block, grouped into stages).
2. ``mobilenetv2_stages`` / ``mobilenetv3_stages`` apply a width and a depth multiplier with timm's rounding
   (``make_divisible`` to multiples of 8, never more than 10% down; depth by ceil, spread over the repeats of a
   stage as timm does) and return the resolved architecture: a tuple of stages, each a tuple of
   :class:`BlockSpec` (kind, kernel, output / expanded channels, SE, activation, stride).
3. :class:`MobileNetV2` / :class:`MobileNetV3` build modules from those stages. Any block table works here,
   not only the named ones: once-for-all sub-networks (per-block kernel 3/5/7, per-block expand ratio,
   per-stage depth, their own head widths) are built this way, e.g.::

       stages = [[BlockSpec("ds", 3, 16, act="relu")],
                 [BlockSpec("ir", 7, 24, mid_chs=96, act="relu", stride=2),
                  BlockSpec("ir", 3, 24, mid_chs=72, act="relu")],
                 ...,
                 [BlockSpec("conv", 1, 960, act="hard_swish")]]
       model = MobileNetV3(stages, stem_chs=16, head_chs=1280, head_bias=False)

Parameter names are timm's (``conv_stem``, ``bn1``, ``blocks.i.j.conv_pw`` ..., ``conv_head``, ``bn2``,
``classifier``), so timm checkpoints of every registered name load with ``strict=True``; the variants table at
the bottom lists them, and tests/test_mobilenet.py proves each against timm.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers.activations import create_act, get_act_layer
from ..layers.classifier import SelectAdaptivePool2d, create_classifier
from ..layers.helpers import make_divisible
from ..layers.inverted_residual import ConvBlock, DepthwiseSeparable, InvertedResidual, MobileSqueezeExcite
from ..layers.norm import get_norm_layer
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_model

BLOCK_KINDS = ("ds", "ir", "conv")


# ------------------------------------------------------------------------------ block description
@dataclass(frozen=True)
class BlockSpec:
    """One block of a MobileNet trunk, with its channels resolved (no multiplier left to apply).

    Attributes:
        kind: ``'ds'`` depthwise-separable (``dw kxk -> [SE] -> pw 1x1``, no expansion conv: the expand-ratio-1
            first block of MobileNetV2/V3), ``'ir'`` inverted residual (``pw 1x1 -> dw kxk -> [SE] -> pw 1x1``),
            ``'conv'`` a plain ``kxk conv -> BN -> act`` (MobileNetV3's last 1x1 conv before pooling).
        kernel: depthwise kernel size (the conv's kernel for ``'conv'``).
        out_chs: output channels.
        mid_chs: expanded channels of an ``'ir'`` block (``make_divisible(in_chs * expand_ratio)`` in the named
            models; once-for-all uses ``make_divisible(round(in_chs * e))``, the same for whole ``in_chs * e``).
            ``None`` for the other kinds.
        se: squeeze-excite on the depthwise output (MobileNetV3: reduced to ``make_divisible(chs / 4)``,
            hard-sigmoid gate).
        act: activation name (``'relu'``, ``'relu6'``, ``'hard_swish'`` ...).
        stride: 1 or 2; only the first block of a stage may stride.
        skip: residual connection where the block keeps the shape (``'ds'``, ``'ir'``).

    Plain data: ``dataclasses.asdict`` gives JSON, and ``BlockSpec(**d)`` reads it back.
    """

    kind: str
    kernel: int
    out_chs: int
    mid_chs: int | None = None
    se: bool = False
    act: str = "relu"
    stride: int = 1
    skip: bool = True


Stages = tuple[tuple[BlockSpec, ...], ...]


def _as_spec(block: BlockSpec | dict | Sequence, where: str) -> BlockSpec:
    try:
        if isinstance(block, BlockSpec):
            spec = block
        elif isinstance(block, dict):
            spec = BlockSpec(**block)
        elif isinstance(block, (tuple, list)):
            spec = BlockSpec(*block)
        else:
            raise ConfigError(f"{where}: expected a BlockSpec, dict or tuple, got {type(block).__name__}")
    except TypeError as e:
        raise ConfigError(f"{where}: {e}; fields are {', '.join(BlockSpec.__dataclass_fields__)}") from None
    if spec.kind not in BLOCK_KINDS:
        raise ConfigError(f"{where}: kind {spec.kind!r} is not one of {', '.join(BLOCK_KINDS)}")
    if spec.kernel < 1 or spec.kernel % 2 == 0:
        raise ConfigError(f"{where}: kernel must be odd and positive, not {spec.kernel}")
    if spec.stride not in (1, 2):
        raise ConfigError(f"{where}: stride must be 1 or 2, not {spec.stride}")
    if spec.out_chs < 1:
        raise ConfigError(f"{where}: out_chs must be positive, not {spec.out_chs}")
    if spec.kind == "ir" and (spec.mid_chs is None or spec.mid_chs < 1):
        raise ConfigError(f"{where}: an 'ir' block needs mid_chs (its expanded channels)")
    if spec.kind != "ir" and spec.mid_chs is not None:
        raise ConfigError(f"{where}: mid_chs applies to 'ir' blocks only (a {spec.kind!r} block has no expansion)")
    if spec.kind == "conv" and spec.se:
        raise ConfigError(f"{where}: a 'conv' block has no squeeze-excite")
    try:
        get_act_layer(spec.act)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return spec


def resolve_stages(stages: Iterable[Iterable[BlockSpec | dict | Sequence]]) -> Stages:
    """Validate a block table (``BlockSpec``s, or dicts / tuples of their fields, e.g. read from JSON)."""
    resolved = []
    for i, stage in enumerate(stages):
        blocks = tuple(_as_spec(b, f"stages[{i}][{j}]") for j, b in enumerate(stage))
        if not blocks:
            raise ConfigError(f"stages[{i}] is empty; every stage needs at least one block")
        for j, b in enumerate(blocks[1:], 1):
            if b.stride != 1:
                raise ConfigError(f"stages[{i}][{j}]: only the first block of a stage may have stride 2 "
                                  "(start a new stage there)")
        resolved.append(blocks)
    if not resolved:
        raise ConfigError("stages is empty")
    return tuple(resolved)


# ------------------------------------------------------------------------------ the papers' tables
# MobileNetV2 (Sandler et al. 2018, Table 2), after a 3x3 stride-2 stem of 32 channels; 3x3 depthwise
# kernels throughout, ReLU6; a 1x1 conv to 1280 channels before pooling.
#   t: expansion factor, c: output channels, n: repeats, s: stride of the first repeat
MOBILENETV2 = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# MobileNetV3 (Howard et al. 2019), one row per block, one inner tuple per stage (timm's stages, which fix
# the parameter names blocks.<stage>.<block>). After a 3x3 stride-2 stem of 16 channels (hard-swish).
#   k: depthwise kernel, exp: expansion size at width 1.0 (None: a plain 1x1 conv, "-" in the paper),
#   c: output channels, se: squeeze-excite, nl: RE = ReLU, HS = hard-swish, s: stride
# Under a width multiplier the expansion *ratio* exp / c_in is kept (as in timm and the TF reference).
MOBILENETV3_LARGE = (  # Table 1; head: pool, 1x1 conv to 1280 (no BN), hard-swish, classifier
    # k, exp,  c,   se,    nl,   s
    ((3, 16, 16, False, "RE", 1),),
    ((3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1)),
    ((5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1)),
    ((3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
     (3, 184, 80, False, "HS", 1)),
    ((3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1)),
    ((5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)),
    ((1, None, 960, False, "HS", 1),),
)
MOBILENETV3_SMALL = (  # Table 2; head: pool, 1x1 conv to 1024 (no BN), hard-swish, classifier
    # k, exp,  c,  se,    nl,   s
    ((3, 16, 16, True, "RE", 2),),
    ((3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1)),
    ((5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1)),
    ((5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1)),
    ((5, 288, 96, True, "HS", 2), (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)),
    # the paper marks SE on this conv; timm and the TF reference implementation have none
    ((1, None, 576, False, "HS", 1),),
)
MOBILENETV3_TABLES = {"large": (MOBILENETV3_LARGE, 16, 1280), "small": (MOBILENETV3_SMALL, 16, 1024)}


def round_channels(channels: float, width: float = 1.0) -> int:
    """Scale a channel count by ``width`` and round it to a multiple of 8 (timm's ``round_channels``)."""
    return make_divisible(channels * width, 8)


def scale_depth(repeats: Sequence[int], depth: float) -> list[int]:
    """Scale the repeats of one stage by ``depth`` (ceil of the total), spread over its rows as timm does.

    The total is rounded up; the rows receive their share from the last to the first, so that the first
    (often strided, shape-changing) row is the least likely to grow.
    """
    total, scaled_total = sum(repeats), int(math.ceil(sum(repeats) * depth))
    scaled = []
    for r in reversed(repeats):
        rs = max(1, round(r / total * scaled_total))
        scaled.append(rs)
        total -= r
        scaled_total -= rs
    return scaled[::-1]


def mobilenetv2_stages(width: float = 1.0, depth: float = 1.0, fix_first_last: bool = False,
                       stem_chs: int | None = None, act: str = "relu6", table: Sequence = MOBILENETV2) -> Stages:
    """MobileNetV2's block table at a width / depth multiplier (timm's ``_gen_mobilenet_v2`` rounding).

    ``fix_first_last`` keeps the depth of the first and last stage (timm's ``110d``/``120d`` variants).
    ``stem_chs`` is the stem width the first block reads (default: ``round_channels(32, width)``).
    """
    in_chs = stem_chs if stem_chs is not None else round_channels(32, width)
    stages = []
    for i, (t, c, n, s) in enumerate(table):
        fixed = fix_first_last and i in (0, len(table) - 1)
        n = n if fixed else scale_depth([n], depth)[0]
        out_chs = round_channels(c, width)
        blocks = []
        for j in range(n):
            stride = s if j == 0 else 1
            if t == 1:  # no expansion: depthwise-separable block
                blocks.append(BlockSpec("ds", 3, out_chs, act=act, stride=stride))
            else:
                blocks.append(BlockSpec("ir", 3, out_chs, mid_chs=make_divisible(in_chs * t), act=act, stride=stride))
            in_chs = out_chs
        stages.append(tuple(blocks))
    return tuple(stages)


def mobilenetv3_stages(size: str = "large", width: float = 1.0, depth: float = 1.0, stem_chs: int | None = None,
                       act: str = "hard_swish") -> Stages:
    """MobileNetV3's block table (``size`` ``'large'``/``'small'``) at a width / depth multiplier.

    Channels are rounded as in timm's ``_gen_mobilenet_v3``; ``act`` replaces hard-swish (the ``HS`` rows).
    ``stem_chs`` is the stem width the first block reads (default: 16, scaled when ``width >= 0.75``).
    """
    if size not in MOBILENETV3_TABLES:
        raise ConfigError(f"unknown MobileNetV3 size {size!r}; choose from {', '.join(MOBILENETV3_TABLES)}")
    table, paper_in, _ = MOBILENETV3_TABLES[size]  # paper_in: the paper's stem width, to turn exp into ratios
    in_chs = stem_chs if stem_chs is not None else mobilenetv3_stem_chs(width)
    nl = {"RE": "relu", "HS": act}
    stages = []
    for rows in table:
        # rows that differ only by the stride of the first form one repeat group (timm's "ir_r3_..." strings);
        # the depth multiplier adds blocks per group
        groups: list[list] = []  # [kind, kernel, ratio, c, se, nl, stride, count]
        for k, exp, c, se, act_name, s in rows:
            if exp is None:
                kind, ratio = "conv", None
            elif exp == paper_in:
                kind, ratio = "ds", None
            else:
                kind, ratio = "ir", exp / paper_in
            key = (kind, k, ratio, c, se, act_name)
            if groups and tuple(groups[-1][:6]) == key and s == 1:
                groups[-1][7] += 1
            else:
                groups.append([*key, s, 1])
            paper_in = c
        repeats = scale_depth([g[7] for g in groups], depth)
        blocks = []
        for (kind, k, ratio, c, se, act_name, s, _), n in zip(groups, repeats):
            out_chs = round_channels(c, width)
            for j in range(n):
                mid = make_divisible(in_chs * ratio) if kind == "ir" else None
                blocks.append(BlockSpec(kind, k, out_chs, mid_chs=mid, se=se, act=nl[act_name],
                                        stride=s if j == 0 else 1))
                in_chs = out_chs
        stages.append(tuple(blocks))
    return tuple(stages)


def mobilenetv3_stem_chs(width: float) -> int:
    """timm keeps the 16-channel stem unscaled below width 0.75."""
    return 16 if width < 0.75 else round_channels(16, width)


# ------------------------------------------------------------------------------------------ models
def _norm_layer(norm_layer: str | Callable, bn_eps: float | None, bn_momentum: float | None) -> Callable:
    norm_layer = get_norm_layer(norm_layer)
    kwargs = {k: v for k, v in (("eps", bn_eps), ("momentum", bn_momentum)) if v is not None}
    return partial(norm_layer, **kwargs) if kwargs else norm_layer


def _init_weights(model: nn.Module) -> None:
    """TF/timm initialisation of the mobile families: conv ~ N(0, 2 / fan_out), fan_out per group."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(0))
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def mobilenet_levels(stem_chs: int, stage_ends: Sequence[tuple[int, int, int]]) -> list[FeatureStage]:
    """timm's feature levels of a MobileNet: the last stage at each nominal reduction (2, 4, 8, 16, 32 for the
    named models); the stem (``act1``) is the stride-2 level when no stage ends there (MobileNetV3-Small).

    ``stage_ends``: per stage of ``blocks``, (nominal reduction, reduction after dilation, channels).
    """
    # ``stage``: timm's key, 0 for the stem, i + 1 for blocks.i
    levels: dict[int, FeatureStage] = {2: FeatureStage(stem_chs, 2, "act1", stage=0)}
    for i, (nominal, reduction, chs) in enumerate(stage_ends):
        levels[nominal] = FeatureStage(chs, reduction, f"blocks.{i}", stage=i + 1)
    return [levels[r] for r in sorted(levels)]


class _MobileNet(Backbone):
    """Stem and trunk shared by MobileNetV2 and V3 (the subclasses add their heads).

    The trunk is ``blocks``: an ``nn.Sequential`` of stages, each an ``nn.Sequential`` of blocks.
    """

    def _build_trunk(self, stages: Stages, in_chans: int, stem_chs: int, act_layer: str | Callable,
                     norm_layer: Callable, output_stride: int, drop_path_rate: float) -> int:
        """Build ``conv_stem``, ``bn1``, ``act1``, ``blocks`` and ``feature_info``; returns the trunk's width."""
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, not {output_stride}")
        self.stage_specs = stages
        self.conv_stem = nn.Conv2d(in_chans, stem_chs, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(stem_chs)
        self.act1 = create_act(act_layer, inplace=True)
        se_layer = partial(MobileSqueezeExcite, rd_ratio=0.25, act_layer="relu", gate_layer="hard_sigmoid")

        in_chs = stem_chs
        net_stride, nominal_stride, dilation = 2, 2, 1  # the stem halves the resolution
        total_blocks, block_idx = sum(len(s) for s in stages), 0
        stage_modules, stage_ends = [], []  # stage_ends: (nominal reduction, reduction, channels) per stage
        for stage in stages:
            blocks = []
            for spec in stage:
                stride, next_dilation = spec.stride, dilation
                nominal_stride *= spec.stride
                if stride > 1:
                    if net_stride * stride > output_stride:  # keep the resolution, dilate the following convs
                        next_dilation, stride = dilation * stride, 1
                    else:
                        net_stride *= stride
                # stochastic depth rises linearly with the block index (timm's EfficientNet rule: i / N)
                dpr = drop_path_rate * block_idx / total_blocks
                common = dict(stride=stride, dilation=dilation, act_layer=spec.act, norm_layer=norm_layer)
                if spec.kind == "ds":
                    block = DepthwiseSeparable(in_chs, spec.out_chs, spec.kernel, **common,
                                               se_layer=se_layer if spec.se else None, skip=spec.skip,
                                               drop_path_rate=dpr)
                elif spec.kind == "ir":
                    block = InvertedResidual(in_chs, spec.mid_chs, spec.out_chs, spec.kernel, **common,
                                             se_layer=se_layer if spec.se else None, skip=spec.skip,
                                             drop_path_rate=dpr)
                else:
                    block = ConvBlock(in_chs, spec.out_chs, spec.kernel, **common)
                blocks.append(block)
                dilation = next_dilation  # a block that gave up its stride still uses the old dilation
                in_chs = spec.out_chs
                block_idx += 1
            stage_modules.append(nn.Sequential(*blocks))
            stage_ends.append((nominal_stride, net_stride, in_chs))
        self.blocks = nn.Sequential(*stage_modules)

        self.feature_info = FeatureInfo(mobilenet_levels(stem_chs, stage_ends))
        return in_chs

    def _forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))  # (B, in_chans, H, W) -> (B, stem, H/2, W/2)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            for stage in self.blocks:
                for blk in stage:
                    x = checkpoint(blk, x, use_reentrant=False)
            return x
        return self.blocks(x)  # (B, C, H/32, W/32) at output_stride 32

    def _arch_common(self) -> dict[str, Any]:
        return dict(stages=[[asdict(b) for b in stage] for stage in self.stage_specs])


class V2Head:
    """MobileNetV2's head (conv_head + bn2 + act2 on the map, then pool and classify), shared by the static
    model and the elastic supernet so that both answer the contract the same way."""

    _features_tail = ("conv_head", "bn2", "act2")  # part of forward_features, after the last feature level

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def as_features(self, out_indices: Sequence[int] | int | None = None) -> Backbone:
        """Feature extractor (a list of stage maps); the unused head conv is dropped, as in timm."""
        self.conv_head, self.bn2, self.act2 = nn.Identity(), nn.Identity(), nn.Identity()
        return super().as_features(out_indices)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)  # (B, num_features)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)


class V3Head:
    """MobileNetV3's efficient head (pool first, then conv_head + act2 without BN, classify), shared by the
    static model and the elastic supernet."""

    _head_after_trunk = ("conv_head",)  # sized by the trunk's width: pruned with the trunk's end, as in timm

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        pool = SelectAdaptivePool2d(self.global_pool.pool_type if global_pool is None else global_pool, flatten=False)
        if isinstance(self.conv_head, nn.Conv2d):
            if pool.feat_mult() != self.global_pool.feat_mult():
                raise ConfigError(f"global_pool={pool.pool_type!r} changes the pooled width, but conv_head was "
                                  f"built for {self.conv_head.in_channels} channels; keep the pooling type")
        else:
            self.num_features = self.trunk_chs
            self.head_hidden_size = self.trunk_chs * pool.feat_mult()
        if num_classes > 0 and not pool.pool_type:
            raise ConfigError("a classifier needs global pooling: set global_pool or num_classes=0")
        self.num_classes = num_classes
        self.global_pool = pool
        self.flatten = nn.Flatten(1) if pool.pool_type else nn.Identity()
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def as_features(self, out_indices: Sequence[int] | int | None = None) -> Backbone:
        """Feature extractor (a list of stage maps); the unused head conv is dropped, as in timm."""
        self.conv_head, self.act2 = nn.Identity(), nn.Identity()
        return super().as_features(out_indices)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)  # (B, C, 1, 1)
        x = self.flatten(self.act2(self.conv_head(x)))  # (B, head_hidden_size)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)


class MobileNetV2(V2Head, _MobileNet):
    """MobileNetV2: inverted residuals with linear bottlenecks, then ``conv_head`` + BN + act before pooling.

    Also the static target of an elastic MobileNetV2 space: ``stages`` may be any block table (per-block
    kernel and expansion, per-stage depth); the named variants come from :func:`mobilenetv2_stages`.

    Feature levels (``features_only``), timm's: 5 levels at reductions 2, 4, 8, 16, 32, each the output of the
    last stage at that resolution (``blocks.0``, ``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6``: 16, 24,
    32, 96, 320 channels for mobilenetv2_100; ``out_indices=PYRAMID`` takes the last four). ``conv_head``
    (1x1 to 1280) is part of ``forward_features`` as in timm, not a level; a feature extractor drops it.

    Args:
        stages: the block table (default: MobileNetV2 1.0); ``BlockSpec``s or dicts / tuples of their fields.
        stem_chs: width of the 3x3 stride-2 stem. head_chs: width of the 1x1 conv before pooling (0 = none).
        act_layer: activation of the stem and the head (the blocks carry their own).
        output_stride: 32, or 16 / 8 by turning the last strides into dilated depthwise convs.
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, ``rate * i / num_blocks``
            for block ``i`` (timm's rule for this family).
        bn_eps, bn_momentum: batch-norm settings (``None`` = PyTorch's defaults).
    """

    def __init__(
        self,
        stages: Iterable[Iterable[BlockSpec | dict | Sequence]] | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_chs: int = 32,
        head_chs: int = 1280,
        act_layer: str = "relu6",
        output_stride: int = 32,
        global_pool: str = "avg",
        norm_layer: str | Callable = "batchnorm",
        bn_eps: float | None = None,
        bn_momentum: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        stages = resolve_stages(stages if stages is not None else mobilenetv2_stages())
        norm = _norm_layer(norm_layer, bn_eps, bn_momentum)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self._arch = dict(stem_chs=stem_chs, head_chs=head_chs, act_layer=act_layer, bn_eps=bn_eps,
                          bn_momentum=bn_momentum)
        trunk_chs = self._build_trunk(stages, in_chans, stem_chs, act_layer, norm, output_stride, drop_path_rate)

        # head: 1x1 conv + BN + act on the full map, then pool and classify
        if head_chs > 0:
            self.conv_head = nn.Conv2d(trunk_chs, head_chs, 1, bias=False)
            self.bn2 = norm(head_chs)
            self.act2 = create_act(act_layer, inplace=True)
            self.num_features = head_chs
        else:
            self.conv_head, self.bn2, self.act2 = nn.Identity(), nn.Identity(), nn.Identity()
            self.num_features = trunk_chs
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.default_cfg = default_cfg(first_conv="conv_stem", classifier="classifier", interpolation="bicubic")
        _init_weights(self)

    def arch_config(self) -> dict[str, Any]:
        """The architecture as JSON-ready constructor arguments: ``MobileNetV2(**model.arch_config())``."""
        return {**self._arch_common(), **self._arch}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._forward_trunk(x)
        return self.act2(self.bn2(self.conv_head(x)))  # (B, num_features, H/32, W/32)

class MobileNetV3(V3Head, _MobileNet):
    """MobileNetV3 with its "efficient head": pool first, then a 1x1 conv (no BN) and act, then classify.

    The trunk ends with a ``'conv'`` block (1x1 conv + BN + act, e.g. to 960 channels), which is part of
    ``blocks``; ``forward_features`` returns its output (``trunk_chs`` channels) and ``forward_head``
    pools it, applies ``conv_head`` and the classifier. As in timm, ``num_features`` is the trunk width
    (``trunk_chs``, e.g. 960) and ``head_hidden_size`` the pre-logits width (``head_chs``, e.g. 1280).

    Built from any block table, so once-for-all MobileNetV3 sub-networks extract into it: their
    ``final_expand_layer`` is the last ``'conv'`` stage, their ``feature_mix_layer`` (1x1 conv without bias
    or BN) is ``conv_head`` with ``head_bias=False``. The named variants come from :func:`mobilenetv3_stages`.

    Feature levels (``features_only``), timm's: 5 levels at reductions 2, 4, 8, 16, 32, each the output of the
    last stage at that resolution (large: ``blocks.0``, ``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6``,
    with 16, 24, 40, 112, 960 channels at width 1.0; small: the stem ``act1`` (timm's ``bn1``, which holds
    the activation there), ``blocks.0``, ``blocks.1``, ``blocks.3``, ``blocks.5``). A feature extractor drops
    ``conv_head``.

    Args:
        stages: the block table (default: MobileNetV3-Large 1.0); ``BlockSpec``s or dicts / tuples of fields.
        stem_chs: width of the 3x3 stride-2 stem. head_chs: width of ``conv_head`` after pooling (0 = none).
        head_bias: ``conv_head`` has a bias (timm's MobileNetV3) or not (once-for-all's feature_mix_layer).
        act_layer: activation of the stem and the head (the blocks carry their own).
        output_stride: 32, or 16 / 8 by turning the last strides into dilated depthwise convs.
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, ``rate * i / num_blocks``.
        bn_eps, bn_momentum: batch-norm settings (``None`` = PyTorch's defaults).
    """

    def __init__(
        self,
        stages: Iterable[Iterable[BlockSpec | dict | Sequence]] | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_chs: int = 16,
        head_chs: int = 1280,
        head_bias: bool = True,
        act_layer: str = "hard_swish",
        output_stride: int = 32,
        global_pool: str = "avg",
        norm_layer: str | Callable = "batchnorm",
        bn_eps: float | None = None,
        bn_momentum: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        stages = resolve_stages(stages if stages is not None else mobilenetv3_stages("large"))
        norm = _norm_layer(norm_layer, bn_eps, bn_momentum)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self._arch = dict(stem_chs=stem_chs, head_chs=head_chs, head_bias=head_bias, act_layer=act_layer,
                          bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.trunk_chs = self._build_trunk(stages, in_chans, stem_chs, act_layer, norm, output_stride,
                                           drop_path_rate)

        # efficient head: pool (keep dims), 1x1 conv (no BN) + act, flatten, classify
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=False)
        pooled_chs = self.trunk_chs * self.global_pool.feat_mult()
        if head_chs > 0:
            self.conv_head = nn.Conv2d(pooled_chs, head_chs, 1, bias=head_bias)
            self.act2 = create_act(act_layer, inplace=True)
            self.head_hidden_size = head_chs
        else:
            self.conv_head, self.act2 = nn.Identity(), nn.Identity()
            self.head_hidden_size = pooled_chs
        self.num_features = self.trunk_chs  # timm's meaning: the width of forward_features' map
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = default_cfg(first_conv="conv_stem", classifier="classifier", interpolation="bicubic")
        _init_weights(self)

    def arch_config(self) -> dict[str, Any]:
        """The architecture as JSON-ready constructor arguments: ``MobileNetV3(**model.arch_config())``."""
        return {**self._arch_common(), **self._arch}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_trunk(x)  # (B, trunk_chs, H/32, W/32)


# ---------------------------------------------------------------------------------------- builders
def _build_mobilenetv2(width: float = 1.0, depth: float = 1.0, fix_stem_head: bool = False,
                       act_layer: str = "relu6", **kwargs: Any) -> MobileNetV2:
    """timm's ``_gen_mobilenet_v2``: ``fix_stem_head`` keeps the stem (32), head (1280) and the depth of the
    first and last stage at their width-1.0 values (the ``d`` variants)."""
    stem_chs = 32 if fix_stem_head else round_channels(32, width)
    arch = dict(
        stages=mobilenetv2_stages(width, depth, fix_first_last=fix_stem_head, stem_chs=stem_chs, act=act_layer),
        stem_chs=stem_chs,
        head_chs=1280 if fix_stem_head else max(1280, round_channels(1280, width)),
        act_layer=act_layer,
    )
    return MobileNetV2(**{**arch, **kwargs})


def _build_mobilenetv3(size: str = "large", width: float = 1.0, depth: float = 1.0,
                       act_layer: str = "hard_swish", **kwargs: Any) -> MobileNetV3:
    """timm's ``_gen_mobilenet_v3``: the head width (1280 / 1024) is not scaled."""
    stem_chs = mobilenetv3_stem_chs(width)
    arch = dict(
        stages=mobilenetv3_stages(size, width, depth, stem_chs=stem_chs, act=act_layer),
        stem_chs=stem_chs,
        head_chs=MOBILENETV3_TABLES[size][2],
        act_layer=act_layer,
    )
    return MobileNetV3(**{**arch, **kwargs})


# ---------------------------------------------------------------------------------------- variants
# name -> (builder, its arguments). Every name is also a timm model; tests/test_mobilenet.py checks each
# against timm (strict state-dict load, equal outputs, equal parameter count).
VARIANTS: dict[str, tuple[Callable[..., Backbone], dict[str, Any]]] = {
    "mobilenetv2_035": (_build_mobilenetv2, dict(width=0.35)),
    "mobilenetv2_050": (_build_mobilenetv2, dict(width=0.5)),
    "mobilenetv2_075": (_build_mobilenetv2, dict(width=0.75)),
    "mobilenetv2_100": (_build_mobilenetv2, dict(width=1.0)),
    "mobilenetv2_140": (_build_mobilenetv2, dict(width=1.4)),
    "mobilenetv2_110d": (_build_mobilenetv2, dict(width=1.1, depth=1.2, fix_stem_head=True)),
    "mobilenetv2_120d": (_build_mobilenetv2, dict(width=1.2, depth=1.4, fix_stem_head=True)),
    "mobilenetv3_large_075": (_build_mobilenetv3, dict(size="large", width=0.75)),
    "mobilenetv3_large_100": (_build_mobilenetv3, dict(size="large", width=1.0)),
    "mobilenetv3_large_150d": (_build_mobilenetv3, dict(size="large", width=1.5, depth=1.2)),
    "mobilenetv3_small_050": (_build_mobilenetv3, dict(size="small", width=0.5)),
    "mobilenetv3_small_075": (_build_mobilenetv3, dict(size="small", width=0.75)),
    "mobilenetv3_small_100": (_build_mobilenetv3, dict(size="small", width=1.0)),
}


# The preprocessing of timm's default weights where it differs from the family's (224, bicubic, crop 0.875):
# timm's pretrained_cfg, checked against timm in tests/test_contract.py.
PREPROCESSING: dict[str, dict[str, Any]] = {
    "mobilenetv3_large_075": dict(interpolation="bilinear"),
    "mobilenetv3_large_150d": dict(input_size=(3, 256, 256), pool_size=(8, 8), test_input_size=(3, 320, 320),
                                   interpolation="bilinear", crop_pct=0.95, test_crop_pct=1.0, mean=(0.5, 0.5, 0.5),
                                   std=(0.5, 0.5, 0.5)),
}


def _build(builder: Callable[..., Backbone], variant: dict[str, Any], preprocessing: dict[str, Any],
           **kwargs: Any) -> Backbone:
    model = builder(**{**variant, **kwargs})
    model.default_cfg.update(preprocessing)
    return model


for _name, (_builder, _variant) in VARIANTS.items():
    _entry = partial(_build, _builder, _variant, PREPROCESSING.get(_name, {}))
    _entry.model_cls = MobileNetV2 if _builder is _build_mobilenetv2 else MobileNetV3  # lists options on a typo
    register_model(_entry, name=_name, family="mobilenet")
