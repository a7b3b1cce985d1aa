"""Once-for-all MobileNets: OFA-MobileNetV3 and the elastic ProxylessNAS / MobileNetV2 spaces (Cai et al., ICLR 2020).

The spaces (as the reference ``ofa`` package's ``OFAMobileNetV3`` and ``OFAProxylessNASNets``)::

    stem         3x3 s2 conv + BN + act                        (16 ch, hard-swish | 32 ch, ReLU6)
    first block  3x3 depthwise-separable, stride 1, fixed       (16 ch)
    5 units      2, 3 or 4 inverted residuals each; per block: depthwise kernel {3, 5, 7}, expand ratio {3, 4, 6}
                 (middle width = make_divisible(round(C_in x e), 8), relative to the block's input)
    tail         ProxylessNAS / MobileNetV2 only: one more inverted residual (320 ch), elastic kernel and expand
    head         MobileNetV3: 1x1 conv to 960 + BN + hard-swish, pool, 1x1 conv to 1280 (no bias, no BN), classify
                 MobileNetV2: 1x1 conv to 1280 + BN + ReLU6, pool, classify
    resolution   128 .. 224 px, step 4 (part of the search space; the network itself takes any size)

All widths are those at width multiplier 1.0, scaled by the variant's multiplier and rounded to multiples of 8.

A sub-network is a :class:`~flexbone.elastic.space.SubnetConfig` with the reference's fields::

    depth       5 values in {2, 3, 4}: blocks per unit (the reference's ``d``; its ProxylessNAS ``d`` has a 6th
                entry, always 1, for the tail)
    kernel      one per block slot (5 x 4 = 20, plus 1 for the tail): the reference's ``ks``
    expand      one per block slot: the reference's ``e``; slots beyond a unit's depth are ignored
    resolution  the input size the sub-network is meant for (recorded in its ``default_cfg``)

``net.space.count()``: every unit has ``sum over d in {2,3,4} of (3 x 3)^d = 9^2 + 9^3 + 9^4 = 7371`` choices, so
OFA-MobileNetV3 has 7371^5 (about 2.2e19) block configurations, times 25 resolutions; the ProxylessNAS spaces have
9 more per configuration for the tail block.

Registered (names as the reference's model zoo; the widths of its published supernets)::

    ofa_mbv3_d234_e346_k357_w1.0          OFA-MobileNetV3, width 1.0   -> static MobileNetV3 sub-networks
    ofa_mbv3_d234_e346_k357_w1.2          OFA-MobileNetV3, width 1.2
    ofa_proxyless_d234_e346_k357_w1.3     OFA-ProxylessNAS, width 1.3  -> static MobileNetV2 sub-networks
    ofa_mbv2_d234_e346_k357_w1.0          the same space with MobileNetV2's stage widths (the reference's
                                          ``base_stage_width="google"``), width 1.0

and for each ``<name>_subnet``, the builder of its static sub-networks (``create_model(..., subnet=cfg)``).

Usage::

    net = create_model("ofa_mbv3_d234_e346_k357_w1.0")
    net.set_active(net.space.sample(random.Random(0)))
    sub = net.extract()                 # a plain flexbone MobileNetV3
    save_subnet(net, "out/sub")         # config.json + model.safetensors
    sub = load_subnet("out/sub")        # = create_model("ofa_mbv3_d234_e346_k357_w1.0_subnet", subnet=..., ...)

Checkpoints of the reference supernets (dynamic or static layer naming, ``mobile_inverted_conv`` or ``conv``)
load through :meth:`_OFAMobileNet._convert_checkpoint`, which ``load_checkpoint`` applies. Static sub-networks
that the reference extracted (``get_active_subnet()``, its ``net.config`` + weights) become flexbone models with
:func:`static_from_ofa_config` and :func:`convert_ofa_static_checkpoint`.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..errors import CheckpointError, ConfigError
from ..layers.activations import create_act
from ..layers.classifier import SelectAdaptivePool2d, create_classifier
from ..layers.helpers import make_divisible
from ..layers.inverted_residual import ConvBlock, DepthwiseSeparable
from ..layers.norm import BatchNorm2d
from ..models._base import Backbone, default_cfg
from ..models._features import FeatureInfo, FeatureStage
from ..models._registry import register_model
from ..models.mobilenet import BlockSpec, MobileNetV2, MobileNetV3, V2Head, V3Head, _init_weights, mobilenet_levels
from .ops import (CHANNEL_DIVISOR, DynamicInvertedResidual, DynamicSqueezeExcite, ElasticDepth, WeightPlan, copy_active,
                  planned_weights)
from .space import DepthUnit, SearchSpace, SubnetConfig, check_supernet_options
from .subnets import subnet_origin

# ------------------------------------------------------------------------------------------- tables
# One row per elastic unit (the reference's stages after the first block):
#   c: output channels at width 1.0, s: stride of the unit's first block, act: activation, se: squeeze-excite
MBV3_UNITS = (
    # c,  s, act,          se
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "hard_swish", False),
    (112, 1, "hard_swish", True),
    (160, 2, "hard_swish", True),
)
PROXYLESS_UNITS = (  # ProxylessNAS stage widths (the reference's default base_stage_width)
    (24, 2, "relu6", False),
    (40, 2, "relu6", False),
    (80, 2, "relu6", False),
    (96, 1, "relu6", False),
    (192, 2, "relu6", False),
)
MBV2_UNITS = (  # MobileNetV2's stage widths (the reference's base_stage_width="google")
    (24, 2, "relu6", False),
    (32, 2, "relu6", False),
    (64, 2, "relu6", False),
    (96, 1, "relu6", False),
    (160, 2, "relu6", False),
)
MOBILE_TAIL = ((320, 1, "relu6", False),)  # ProxylessNAS / MobileNetV2: one block, depth fixed at 1

RESOLUTIONS = tuple(range(128, 225, 4))  # 128, 132, ..., 224 (25 sizes)


# -------------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class OFAMobileNetSpec:
    """The hyper-parameters of a once-for-all MobileNet supernet, and the channel arithmetic of its sub-networks.

    Attributes:
        head: ``'mbv3'`` (final 1x1 expand conv in the trunk, then MobileNetV3's efficient head; extracts to
            :class:`~flexbone.models.mobilenet.MobileNetV3`) or ``'mbv2'`` (1x1 conv + BN before pooling;
            extracts to :class:`~flexbone.models.mobilenet.MobileNetV2`).
        width_mult: multiplies every width below (rounded to multiples of 8).
        stem_width, stem_act: the 3x3 stride-2 stem; ``stem_act`` is also the head's activation.
        first_block: ``(c, act, skip)`` of the fixed 3x3 depthwise-separable block (``skip``: identity
            shortcut where the shape allows; the reference's ProxylessNAS has none).
        units: rows ``(c, s, act, se)`` of the elastic units (see ``MBV3_UNITS``).
        tail: rows of single blocks after the units, with elastic kernel and expand but fixed depth 1.
        final_expand_width: the ``'mbv3'`` trunk's last 1x1 conv. head_width: the head's 1x1 conv.
        depth_choices, kernel_choices, expand_choices: the elastic choices. resolutions: input sizes searched.
        bn_eps: batch-norm epsilon (the reference: 1e-5 for MobileNetV3, 1e-3 for ProxylessNAS).
    """

    head: str = "mbv3"
    width_mult: float = 1.0
    stem_width: int = 16
    stem_act: str = "hard_swish"
    first_block: tuple = (16, "relu", True)
    units: tuple = MBV3_UNITS
    tail: tuple = ()
    final_expand_width: int = 960
    head_width: int = 1280
    depth_choices: tuple[int, ...] = (2, 3, 4)
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[float, ...] = (3, 4, 6)
    resolutions: tuple[int, ...] = RESOLUTIONS
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        def tuples(v: Any) -> Any:  # lists from JSON become (nested) tuples
            return tuple(tuples(x) for x in v) if isinstance(v, (list, tuple)) else v

        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (list, tuple)):
                v = tuple(sorted(v)) if f.name.endswith(("choices", "resolutions")) else tuples(v)
                object.__setattr__(self, f.name, v)
        if self.head not in ("mbv3", "mbv2"):
            raise ConfigError(f"head must be 'mbv3' or 'mbv2', not {self.head!r}")
        if self.head == "mbv2" and self.final_expand_width:
            raise ConfigError("a 'mbv2' head has no final expand conv: set final_expand_width=0")
        if len(self.first_block) != 3 or any(len(row) != 4 for row in self.units + self.tail):
            raise ConfigError("first_block is (c, act, skip); units and tail rows are (c, s, act, se)")

    def ch(self, channels: int) -> int:
        """A width at multiplier 1.0, scaled and rounded as the reference rounds it."""
        return make_divisible(channels * self.width_mult, CHANNEL_DIVISOR)

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def num_block_slots(self) -> int:
        return len(self.units) * self.max_depth + len(self.tail)

    def slot_stages(self) -> list[tuple[int, int]]:
        """Per block slot, its (stage index in ``blocks``, index in the stage); stage 0 is the first block."""
        out = [(1 + u, j) for u in range(len(self.units)) for j in range(self.max_depth)]
        return out + [(1 + len(self.units) + t, 0) for t in range(len(self.tail))]

    def space(self, name: str = "ofa_mobilenet") -> SearchSpace:
        n_slots = self.num_block_slots
        return SearchSpace(
            depth=(self.depth_choices,) * len(self.units),
            units=tuple(DepthUnit(u * self.max_depth) for u in range(len(self.units))),
            kernel=(self.kernel_choices,) * n_slots,
            expand=(self.expand_choices,) * n_slots,
            resolution=self.resolutions,
            name=name,
        )

    def stages(self, cfg: SubnetConfig) -> list[list[BlockSpec]]:
        """The static block table of ``cfg`` (the sub-network's trunk), as MobileNetV2/V3 take it."""
        c, act, skip = self.first_block
        stages = [[BlockSpec("ds", 3, self.ch(c), act=act, skip=skip)]]
        in_chs, slot = self.ch(c), 0
        depths = list(cfg.depth) + [1] * len(self.tail)
        for (c, s, act, se), depth, n_slots in zip(self.units + self.tail, depths,
                                                   [self.max_depth] * len(self.units) + [1] * len(self.tail)):
            blocks = []
            for j in range(depth):
                mid = DynamicInvertedResidual.mid_channels(in_chs, cfg.expand[slot + j])
                blocks.append(BlockSpec("ir", cfg.kernel[slot + j], self.ch(c), mid_chs=mid, se=se, act=act,
                                        stride=s if j == 0 else 1))
                in_chs = self.ch(c)
            stages.append(blocks)
            slot += n_slots
        if self.final_expand_width:
            stages.append([BlockSpec("conv", 1, self.ch(self.final_expand_width), act=self.stem_act)])
        return stages

    def static_kwargs(self, cfg: SubnetConfig) -> dict[str, Any]:
        """Constructor arguments of the static MobileNetV3 / MobileNetV2 of ``cfg`` (JSON-ready)."""
        kwargs = dict(stages=[[asdict(b) for b in stage] for stage in self.stages(cfg)],
                      stem_chs=self.ch(self.stem_width), head_chs=self.ch(self.head_width),
                      act_layer=self.stem_act, bn_eps=self.bn_eps)
        if self.head == "mbv3":
            kwargs["head_bias"] = False  # the reference's feature_mix_layer: 1x1 conv without bias or BN
        return kwargs

    @property
    def static_class(self) -> type[Backbone]:
        return MobileNetV3 if self.head == "mbv3" else MobileNetV2

    def to_json_dict(self) -> dict[str, Any]:
        def lists(v: Any) -> Any:
            return [lists(x) for x in v] if isinstance(v, tuple) else v

        return {k: lists(v) for k, v in asdict(self).items()}


_SPEC_FIELDS = tuple(f.name for f in fields(OFAMobileNetSpec))


def _split_spec(kwargs: dict[str, Any]) -> tuple[OFAMobileNetSpec, dict[str, Any]]:
    spec = OFAMobileNetSpec(**{k: kwargs.pop(k) for k in list(kwargs) if k in _SPEC_FIELDS})
    return spec, kwargs


def _with_resolution(model: Backbone, cfg: SubnetConfig, in_chans: int) -> Backbone:
    """Record the sub-network's resolution as the input size it expects (its ``default_cfg``)."""
    if cfg.resolution is not None:
        model.default_cfg = {**model.default_cfg, "input_size": (in_chans, cfg.resolution, cfg.resolution)}
    return model


# -------------------------------------------------------------------------------------------- model
class _OFAMobileNet(Backbone):
    """Stem, elastic trunk and elastic surgery shared by the OFA MobileNetV3 and MobileNetV2 supernets.

    Module names are those of the static model a sub-network extracts to: ``conv_stem``, ``bn1``, ``act1``,
    ``blocks.<stage>.<block>`` (stage 0: the fixed first block; 1..5: the elastic units, each an
    :class:`~flexbone.elastic.ops.ElasticDepth` of :class:`~flexbone.elastic.ops.DynamicInvertedResidual`;
    then the tail and, for MobileNetV3, the final expand conv), then the head. Only the middle widths,
    kernels and depths are elastic: the stem, the first block, the unit output widths and the head are
    plain static layers.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, name: str = "ofa_mobilenet",
                 **space_kwargs: Any):
        super().__init__()
        check_supernet_options(name, space_kwargs, _SPEC_FIELDS, output_stride)
        self.spec = spec = OFAMobileNetSpec(**space_kwargs)
        self.space = spec.space(name)
        self.name = name
        self.subnet_model_name = f"{name}_subnet"  # the registered builder of its static sub-networks
        self.num_classes, self.in_chans = num_classes, in_chans
        self.drop_rate, self.drop_path_rate = drop_rate, drop_path_rate
        norm = partial(BatchNorm2d, eps=spec.bn_eps)

        # stem and the fixed first block: static layers, names as MobileNetV2/V3
        stem = spec.ch(spec.stem_width)
        self.conv_stem = nn.Conv2d(in_chans, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm(stem)
        self.act1 = create_act(spec.stem_act, inplace=True)
        c, act, skip = spec.first_block
        stages: list[nn.Module] = [nn.Sequential(DepthwiseSeparable(stem, spec.ch(c), 3, act_layer=act, norm_layer=norm,
                                                                    skip=skip))]
        in_chs, reduction, stage_ends = spec.ch(c), 2, [(2, spec.ch(c))]  # (reduction, channels) per stage

        # elastic units (ElasticDepth) and tail blocks. Drop path rises linearly over the blocks as in MobileNetV2/V3
        # (rate x index / number of blocks, counting the first block and the final conv): the max sub-network's rates
        n_blocks_max, slot = 1 + spec.num_block_slots + (1 if spec.final_expand_width else 0), 0
        se_layer = partial(DynamicSqueezeExcite, rd_ratio=0.25, act_layer="relu", gate_layer="hard_sigmoid")
        rows = [(row, spec.max_depth) for row in spec.units] + [(row, 1) for row in spec.tail]
        for (c, s, act, se), n_blocks in rows:
            blocks = []
            for j in range(n_blocks):
                blocks.append(DynamicInvertedResidual(
                    in_chs, spec.ch(c), spec.kernel_choices, spec.expand_choices, stride=s if j == 0 else 1,
                    act_layer=act, se_layer=se_layer if se else None,
                    drop_path_rate=drop_path_rate * (1 + slot) / n_blocks_max,
                ))
                in_chs, slot = spec.ch(c), slot + 1
            stages.append(ElasticDepth(*blocks))
            reduction *= s
            stage_ends.append((reduction, in_chs))
        if spec.final_expand_width:
            stages.append(nn.Sequential(ConvBlock(in_chs, spec.ch(spec.final_expand_width), 1, act_layer=spec.stem_act,
                                                  norm_layer=norm)))
            in_chs = spec.ch(spec.final_expand_width)
            stage_ends.append((reduction, in_chs))
        self.blocks = nn.Sequential(*stages)
        for m in self.modules():  # the dynamic blocks build their BNs with PyTorch's default eps
            if isinstance(m, nn.BatchNorm2d):
                m.eps = spec.bn_eps
        self.trunk_chs = in_chs

        # feature levels: the last stage at each reduction (the stem where none ends at 2), as the static models
        self.feature_info = FeatureInfo(mobilenet_levels(stem, [(r, r, c) for r, c in stage_ends]))
        self._build_head(num_classes, global_pool, norm)
        self.default_cfg = default_cfg(first_conv="conv_stem", classifier="classifier", interpolation="bicubic")
        _init_weights(self)
        self.active_config = self.space.max()

    def _build_head(self, num_classes: int, global_pool: str, norm: Callable[[int], nn.Module]) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------------- model contract
    @property
    def elastic_stages(self) -> list[ElasticDepth]:
        """The units, then the tail blocks (each an ElasticDepth)."""
        return [stage for stage in self.blocks if isinstance(stage, ElasticDepth)]

    def elastic_blocks(self) -> list[DynamicInvertedResidual]:
        """All elastic block slots, active or not, in the order of the config's kernel / expand fields."""
        return [blk for stage in self.elastic_stages for blk in stage]

    def forward(self, x: torch.Tensor):
        with planned_weights(self):  # a training step derives the sub-network's weights in one go
            return super().forward(x)

    def plan_weights(self, plan: WeightPlan) -> None:
        """Plan the weights that a forward of the active sub-network derives (see :func:`ops.planned_weights`)."""
        channels = self.elastic_stages[0][0].in_channels  # the fixed first block's output
        for stage in self.elastic_stages:
            channels = stage.plan_weights(plan, channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))  # (B, in_chans, H, W) -> (B, stem, H/2, W/2)
        for stage in self.blocks:
            for blk in (stage.active_blocks() if isinstance(stage, ElasticDepth) else stage):
                if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x = checkpoint(blk, x, use_reentrant=False)
                else:
                    x = blk(x)
        return self._forward_trunk_end(x)  # (B, C, H/32, W/32)

    def _forward_trunk_end(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # ------------------------------------------------------------------------------ elastic surgery
    def _coerce(self, cfg: SubnetConfig | Mapping[str, Any] | str | os.PathLike) -> SubnetConfig:
        cfg = SubnetConfig.coerce(cfg)
        if cfg.resolution is None and self.space.resolution:
            cfg = cfg.replace(resolution=max(self.space.resolution))  # no resolution given: the largest
        return self.space.validate(cfg)

    def set_active(self, cfg: SubnetConfig | Mapping[str, Any] | str | os.PathLike) -> SubnetConfig:
        """Make ``cfg`` the sub-network that ``forward`` runs (validated against ``self.space``).

        A config without ``resolution`` means the largest (224); the resolution does not change what
        ``forward`` computes (feed images of that size), it is recorded in the extracted model's ``default_cfg``.
        """
        cfg = self._coerce(cfg)
        for stage, depth in zip(self.elastic_stages, cfg.depth):
            stage.active_depth = depth
        for blk, k, e in zip(self.elastic_blocks(), cfg.kernel, cfg.expand):
            blk.active_kernel_size, blk.active_expand_ratio = k, e
        self.active_config = cfg
        return cfg

    def config_from_ofa(self, arch: Mapping[str, Any]) -> SubnetConfig:
        """The config of a reference architecture dict (``{'ks': [...], 'e': [...], 'd': [...]}``, as the ``ofa``
        package's ``sample_active_subnet`` and its search return; ``'r'`` / ``'image_size'`` optional)."""
        depth = list(arch["d"])[:len(self.spec.units)]  # its ProxylessNAS adds the tail's fixed depth of 1
        r = arch.get("r", arch.get("image_size"))
        r = r[0] if isinstance(r, (list, tuple)) else r
        return self._coerce(SubnetConfig(depth=depth, kernel=arch["ks"], expand=arch["e"], resolution=r))

    def subnet_kwargs(self, cfg: SubnetConfig | None = None) -> dict[str, Any]:
        """Constructor arguments of the static MobileNetV3 / V2 of ``cfg`` (default: the active sub-network)."""
        cfg = self.active_config if cfg is None else self._coerce(cfg)
        return dict(self.spec.static_kwargs(cfg), num_classes=self.num_classes, in_chans=self.in_chans,
                    global_pool=self.global_pool.pool_type, drop_rate=self.drop_rate,
                    drop_path_rate=self.drop_path_rate)

    def subnet_create_kwargs(self, cfg: SubnetConfig | None = None) -> dict[str, Any]:
        """``create_model(self.subnet_model_name, **these)`` builds the static sub-network (JSON-ready)."""
        cfg = self.active_config if cfg is None else self._coerce(cfg)
        return dict(subnet=cfg.to_dict(), num_classes=self.num_classes, in_chans=self.in_chans,
                    global_pool=self.global_pool.pool_type, drop_rate=self.drop_rate,
                    drop_path_rate=self.drop_path_rate, **self.spec.to_json_dict())

    @torch.no_grad()
    def extract(self, cfg: SubnetConfig | Mapping[str, Any] | None = None) -> Backbone:
        """The active sub-network (or ``cfg``'s, which becomes active) as a static, independent MobileNetV3 / V2.

        Its weights are copies, on the supernet's device and dtype, in the supernet's train/eval mode; its
        ``default_cfg['input_size']`` is the config's resolution.
        """
        if cfg is not None:
            self.set_active(cfg)
        with torch.device("meta"):  # no time spent initialising weights that are overwritten next
            static = self.spec.static_class(**self.subnet_kwargs())
        ref = self.conv_stem.weight
        static = static.to_empty(device=ref.device).to(dtype=ref.dtype)
        copy_active(static, self)  # writes every parameter and buffer (it raises on a layer it cannot fill)
        static.subnet_origin = subnet_origin(self)  # save_subnet(static, ...) works without the supernet
        return _with_resolution(static, self.active_config, self.in_chans).train(self.training)

    @torch.no_grad()
    def reorganize_channels(self, expand_stage: int = 0) -> None:
        """Sort every elastic block's middle channels by importance (before training smaller expand ratios).

        The full network computes the same function afterwards. ``expand_stage``: 0 before the first expand
        phase, 1 before the second (see :meth:`DynamicInvertedResidual.reorganize_channels`).
        """
        for blk in self.elastic_blocks():
            blk.reorganize_channels(expand_stage)

    # --------------------------------------------------------------------------- reference weights
    def _convert_checkpoint(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an ``ofa`` package supernet state dict onto this model's names; other dicts pass unchanged.

        The reference nests each dynamic layer's static one (``blocks.1.conv.depth_conv.conv.conv.weight``,
        ``...bn.bn.weight``); its static form (and the max sub-network's static checkpoint) drops one level
        and has no kernel-transformation matrices (they are set to the identity); old checkpoints say
        ``mobile_inverted_conv`` for ``conv``. All are accepted. ``first_conv`` becomes
        ``conv_stem``/``bn1``; the flat ``blocks.<i>`` become ``blocks.<stage>.<j>`` (block 0 the first block,
        then 4 slots per unit, then the tail); ``final_expand_layer`` the last ``blocks`` stage;
        ``feature_mix_layer`` ``conv_head`` (+ ``bn2``); ``classifier.linear`` ``classifier``.
        """
        if not any(k.startswith("first_conv.") or _OFA_BLOCK_KEY.match(k) for k in state_dict):
            return dict(state_dict)  # flexbone's own names
        slots = self.spec.slot_stages()

        def block_name(i: int) -> tuple[str, bool] | None:  # (our prefix, is it the first, depthwise-separable block)
            if i == 0:
                return "blocks.0.0", True
            if i - 1 < len(slots):
                s, j = slots[i - 1]
                return f"blocks.{s}.{j}", False
            return None

        out = _convert_ofa_state_dict(state_dict, block_name, head=self.spec.head, last_stage=len(self.blocks) - 1)
        if not any(k.endswith("_matrix") for k in out):
            # a static network (a trained full net, before the elastic-kernel phase) has no kernel transforms:
            # they start at the identity, as in a fresh supernet
            for name, p in self.named_parameters():
                if name.endswith("_matrix"):
                    out[name] = torch.eye(p.shape[0], dtype=p.dtype)
        return out


class OFAMobileNetV3(V3Head, _OFAMobileNet):
    """The once-for-all MobileNetV3 supernet; sub-networks extract to :class:`~flexbone.models.mobilenet.MobileNetV3`.

    Args:
        num_classes, in_chans, global_pool, drop_rate, drop_path_rate: as every flexbone model (drop path
            rises linearly over the block slots, as in the max sub-network; a smaller extracted sub-network
            spreads it over its own blocks).
        width_mult, depth_choices, kernel_choices, expand_choices, resolutions, ...: the space (see
            :class:`OFAMobileNetSpec`; the defaults are OFA-MobileNetV3's).
    """

    def _build_head(self, num_classes: int, global_pool: str, norm: Callable[[int], nn.Module]) -> None:
        # MobileNetV3's efficient head (names as MobileNetV3): pool, 1x1 conv (no bias, no BN) + act, classify
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=False)
        head = self.spec.ch(self.spec.head_width)
        self.conv_head = nn.Conv2d(self.trunk_chs * self.global_pool.feat_mult(), head, 1, bias=False)
        self.act2 = create_act(self.spec.stem_act, inplace=True)
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.num_features = self.trunk_chs  # timm's meanings: the trunk width; the pre-logits width below
        self.head_hidden_size = head
        self.classifier = nn.Linear(head, num_classes) if num_classes > 0 else nn.Identity()


class OFAMobileNetV2(V2Head, _OFAMobileNet):
    """The once-for-all ProxylessNAS / MobileNetV2 supernet; sub-networks extract to
    :class:`~flexbone.models.mobilenet.MobileNetV2`. Arguments as :class:`OFAMobileNetV3`."""

    def _build_head(self, num_classes: int, global_pool: str, norm: Callable[[int], nn.Module]) -> None:
        # names as MobileNetV2: 1x1 conv + BN + act on the full map, then pool and classify
        head = self.spec.ch(self.spec.head_width)
        self.conv_head = nn.Conv2d(self.trunk_chs, head, 1, bias=False)
        self.bn2 = norm(head)
        self.act2 = create_act(self.spec.stem_act, inplace=True)
        self.num_features = head
        self.global_pool, self.classifier = create_classifier(head, num_classes, pool_type=global_pool)
        self.head_hidden_size = head * self.global_pool.feat_mult()

    def _forward_trunk_end(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv_head(x)))  # (B, num_features, H/32, W/32)


# ------------------------------------------------------------------------- reference key conversion
# the reference's layer names inside a block -> ours (MBConvLayer with expand ratio 1 / an inverted bottleneck)
_OFA_DS = {"depth_conv.conv": "conv_dw", "depth_conv.bn": "bn1", "depth_conv.se.fc.reduce": "se.conv_reduce",
           "depth_conv.se.fc.expand": "se.conv_expand", "point_linear.conv": "conv_pw", "point_linear.bn": "bn2"}
_OFA_IR = {"inverted_bottleneck.conv": "conv_pw", "inverted_bottleneck.bn": "bn1", "depth_conv.conv": "conv_dw",
           "depth_conv.bn": "bn2", "depth_conv.se.fc.reduce": "se.conv_reduce",
           "depth_conv.se.fc.expand": "se.conv_expand", "point_linear.conv": "conv_pwl", "point_linear.bn": "bn3"}


_OFA_BLOCK_KEY = re.compile(r"blocks\.\d+\.(conv|mobile_inverted_conv)\.")  # ours: blocks.<stage>.<j>.<layer>


def _convert_ofa_state_dict(state_dict: Mapping[str, torch.Tensor],
                            block_name: Callable[[int], tuple[str, bool] | None],
                            head: str, last_stage: int) -> dict[str, torch.Tensor]:
    """Rename a reference MobileNet state dict; ``block_name(i)`` places its flat block ``i``."""
    nested = any(".bn.bn." in k for k in state_dict)
    top = {"first_conv.conv": "conv_stem", "first_conv.bn": "bn1", "feature_mix_layer.conv": "conv_head",
           "classifier.linear": "classifier"}
    if head == "mbv3":
        top.update({"final_expand_layer.conv": f"blocks.{last_stage}.0.conv",
                    "final_expand_layer.bn": f"blocks.{last_stage}.0.bn1"})
    else:
        top["feature_mix_layer.bn"] = "bn2"
    out = {}
    for key, value in state_dict.items():
        *path, leaf = key.replace(".mobile_inverted_conv.", ".conv.").split(".")
        if nested and len(path) >= 2 and path[-1] == path[-2] and path[-1] in ("conv", "bn", "linear"):
            path = path[:-1]  # the dynamic layer's inner static layer
        new = top.get(".".join(path))
        if new is None and len(path) >= 4 and path[0] == "blocks" and path[1].isdigit() and path[2] == "conv":
            placed = block_name(int(path[1]))
            if placed is not None:
                prefix, first = placed
                layer = (_OFA_DS if first else _OFA_IR).get(".".join(path[3:]))
                new = f"{prefix}.{layer}" if layer else None
        if new is None:
            raise CheckpointError(f"{key!r} is not a key of a once-for-all MobileNet checkpoint")
        out[f"{new}.{leaf}"] = value
    return out


_OFA_ACT = {"relu": "relu", "relu6": "relu6", "h_swish": "hard_swish"}


def _ofa_stage_starts(net_config: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(stage, index) of each of the reference's flat blocks: a stage starts at block 0 and at every block
    without a shortcut (its strided or widening first block)."""
    places, stage, j = [], -1, 0
    for i, block in enumerate(net_config["blocks"]):
        if i == 0 or block["shortcut"] is None:
            stage, j = stage + 1, 0
        places.append((stage, j))
        j += 1
    return places


def static_from_ofa_config(net_config: Mapping[str, Any], **kwargs: Any) -> Backbone:
    """The flexbone MobileNetV3 / MobileNetV2 of a static network that the ``ofa`` package extracted.

    ``net_config`` is the reference network's ``config`` (``sub.config``, or the ``net.config`` JSON that
    comes with its specialised networks): a ``MobileNetV3`` (with ``final_expand_layer``) or a
    ``ProxylessNASNets``. ``kwargs`` override the static model's arguments. Load its weights with
    ``load_checkpoint(model, convert_ofa_static_checkpoint(net_config, state_dict))``.
    """
    places = _ofa_stage_starts(net_config)
    stages: list[list[BlockSpec]] = []
    for (s, _), block in zip(places, net_config["blocks"]):
        conv = block["conv"]
        if s == len(stages):
            stages.append([])
        common = dict(se=conv.get("use_se", False), act=_OFA_ACT[conv["act_func"]], stride=conv["stride"],
                      skip=block["shortcut"] is not None)
        if conv["expand_ratio"] == 1:
            stages[-1].append(BlockSpec("ds", conv["kernel_size"], conv["out_channels"], **common))
        else:
            # the reference's MBConvLayer: mid_channels if given, else round(in x e) (no rounding to 8)
            mid = conv.get("mid_channels") or round(conv["in_channels"] * conv["expand_ratio"])
            stages[-1].append(BlockSpec("ir", conv["kernel_size"], conv["out_channels"], mid_chs=mid, **common))
    first, mix = net_config["first_conv"], net_config["feature_mix_layer"]
    arch: dict[str, Any] = dict(
        num_classes=net_config["classifier"]["out_features"], in_chans=first["in_channels"],
        stem_chs=first["out_channels"], head_chs=mix["out_channels"], act_layer=_OFA_ACT[first["act_func"]],
        bn_eps=net_config["bn"]["eps"], bn_momentum=net_config["bn"]["momentum"],
    )
    if "final_expand_layer" in net_config:  # MobileNetV3: expand conv (+BN) in the trunk, feature mix after pooling
        final = net_config["final_expand_layer"]
        stages.append([BlockSpec("conv", 1, final["out_channels"], act=_OFA_ACT[final["act_func"]])])
        return MobileNetV3(stages, head_bias=mix["bias"], **{**arch, **kwargs})
    return MobileNetV2(stages, **{**arch, **kwargs})


def convert_ofa_static_checkpoint(net_config: Mapping[str, Any],
                                  state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of a reference static network (see :func:`static_from_ofa_config`) in flexbone's names."""
    places = _ofa_stage_starts(net_config)
    blocks = net_config["blocks"]

    def block_name(i: int) -> tuple[str, bool] | None:
        if i >= len(places):
            return None
        s, j = places[i]
        return f"blocks.{s}.{j}", blocks[i]["conv"]["expand_ratio"] == 1

    head = "mbv3" if "final_expand_layer" in net_config else "mbv2"
    return _convert_ofa_state_dict(state_dict, block_name, head=head, last_stage=places[-1][0] + 1)


# ---------------------------------------------------------------------------------------- variants
# name -> OFAMobileNetSpec fields (names and widths of the reference's model zoo)
_MBV3 = dict(head="mbv3")
_MBV2 = dict(head="mbv2", stem_width=32, stem_act="relu6", first_block=(16, "relu6", False), tail=MOBILE_TAIL,
             final_expand_width=0, bn_eps=1e-3)
VARIANTS: dict[str, dict[str, Any]] = {
    "ofa_mbv3_d234_e346_k357_w1.0": dict(_MBV3, width_mult=1.0),
    "ofa_mbv3_d234_e346_k357_w1.2": dict(_MBV3, width_mult=1.2),
    "ofa_proxyless_d234_e346_k357_w1.3": dict(_MBV2, units=PROXYLESS_UNITS, width_mult=1.3),
    "ofa_mbv2_d234_e346_k357_w1.0": dict(_MBV2, units=MBV2_UNITS, width_mult=1.0),
    # the OFA-MobileNetV3 choices at widths and resolutions for the 8x8 digits upscaled to 12-24 px, sized for a CPU
    # (`flexbone demo elastic`); unit 1 does not stride, so the maps go 8, 8, 4, 2, 2, 1 at 16 px
    "ofa_digits_mbv3": dict(_MBV3, stem_width=16, first_block=(16, "relu", True), final_expand_width=96,
                            head_width=96, resolutions=(12, 16, 20, 24),
                            units=((16, 1, "relu", False), (24, 2, "relu", True), (32, 2, "hard_swish", False),
                                   (40, 1, "hard_swish", True), (48, 2, "hard_swish", True))),
}


def _supernet_class(variant: Mapping[str, Any]) -> type[_OFAMobileNet]:
    return OFAMobileNetV3 if variant.get("head", "mbv3") == "mbv3" else OFAMobileNetV2


def _build(name: str, variant: dict[str, Any], **kwargs: Any) -> _OFAMobileNet:
    merged = {**variant, **kwargs}
    return _supernet_class(merged)(**{"name": name, **merged})


def _build_subnet(name: str, variant: dict[str, Any], subnet: SubnetConfig | Mapping[str, Any] | str | None = None,
                  **kwargs: Any) -> Backbone:
    """A static sub-network of the supernet, randomly initialised (load weights with ``pretrained=``).

    ``subnet``: a SubnetConfig, its dict, JSON text or a JSON file (default: the largest sub-network).
    Other keywords: the supernet's space options (``width_mult`` ...), then any MobileNetV3 / V2 option
    (``num_classes``, ``drop_path_rate``, ``output_stride`` ...).
    """
    spec, kwargs = _split_spec({**variant, **kwargs})
    space = spec.space(name)
    cfg = space.max() if subnet is None else SubnetConfig.coerce(subnet)
    if cfg.resolution is None and space.resolution:
        cfg = cfg.replace(resolution=max(space.resolution))
    cfg = space.validate(cfg)
    model = spec.static_class(**{**spec.static_kwargs(cfg), **kwargs})
    return _with_resolution(model, cfg, kwargs.get("in_chans", 3))


for _name, _variant in VARIANTS.items():
    _entry = partial(_build, _name, _variant)
    _entry.model_cls = _supernet_class(_variant)
    register_model(_entry, name=_name, family="ofa_mobilenet")
    _sub = partial(_build_subnet, _name, _variant)
    _sub.model_cls = MobileNetV3 if _variant["head"] == "mbv3" else MobileNetV2
    register_model(_sub, name=f"{_name}_subnet", family="ofa_mobilenet")
