"""Once-for-all ResNet-50: one weight-shared supernet of ~2.5 x 10^12 ResNet-D sub-networks (Cai et al., ICLR 2020).

The space (as the reference ``ofa`` package's ``OFAResNets``)::

    stem        3x3 s2 conv -> [3x3 conv + identity] -> 3x3 conv -> 3x3 s2 max pool   (ResNet-D deep stem)
    stages      base depths (2, 2, 4, 2) + {0, 1, 2} bottlenecks, widths 256/512/1024/2048 x {0.65, 0.8, 1.0}
    bottleneck  middle width = output width x {0.2, 0.25, 0.35}, rounded to a multiple of 8
    shortcut    2x2 average pool + 1x1 conv + BN (ResNet-D)

A sub-network is a :class:`~flexbone.elastic.space.SubnetConfig` with the reference's fields::

    depth   5 values: [stem, stage 1..4]. Stem: 2 (max) keeps the residual middle conv, 0 (min) drops it;
            stage i: blocks = base[i] + depth.
    expand  18 values, one per block slot (4 + 4 + 6 + 4); slots beyond a stage's depth are ignored.
    width   6 width multipliers: [stem inner conv, stem output, stage 1..4] (the reference's ``w`` holds
            indices into (0.65, 0.8, 1.0) instead).

``net.space.count()`` = 2 x (3^2 + 3^3 + 3^4)^3 x (3^4 + 3^5 + 3^6) x 3^6 = 2,458,914,796,962 configurations.

Usage::

    net = create_model("ofa_resnet50")
    net.set_active(net.space.sample(random.Random(0)))
    sub = net.extract()                 # a plain flexbone ResNet (stem_type='deep_residual')
    save_subnet(net, "out/sub")         # config.json + model.safetensors
    sub = load_subnet("out/sub")        # = create_model("ofa_resnet50_subnet", subnet=..., pretrained=...)

Checkpoints of the reference (``OFAResNets`` state dicts, in its dynamic or static layer naming) load
through :meth:`OFAResNet._convert_checkpoint`, which ``load_checkpoint`` applies.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import CheckpointError, ConfigError
from ..layers import create_classifier
from ..layers.helpers import make_divisible
from ..models._base import Backbone, default_cfg
from ..models._features import FeatureInfo, FeatureStage
from ..models._registry import register_model
from ..models.resnet import ResNet
from .ops import (CHANNEL_DIVISOR, DynamicBatchNorm2d, DynamicBottleneck, DynamicConv2d, DynamicLinear,
                  DynamicStemResidual, ElasticDepth, WeightPlan, copy_active, planned_weights)
from .space import DepthUnit, SearchSpace, SubnetConfig, check_supernet_options
from .subnets import subnet_origin


# -------------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class OFAResNetSpec:
    """The hyper-parameters of the supernet, and the channel arithmetic shared by it and its sub-networks."""

    base_depths: tuple[int, ...] = (2, 2, 4, 2)
    stage_widths: tuple[int, ...] = (256, 512, 1024, 2048)  # output channels at width multiplier 1
    stem_width: int = 64  # stem output at width multiplier 1; its inner convs have half
    depth_choices: tuple[int, ...] = (0, 1, 2)  # extra blocks per stage
    expand_choices: tuple[float, ...] = (0.2, 0.25, 0.35)  # middle width / output width of a bottleneck
    width_choices: tuple[float, ...] = (0.65, 0.8, 1.0)

    def __post_init__(self) -> None:
        for f in fields(self):  # lists from JSON become tuples; choices sorted as the reference sorts them
            v = getattr(self, f.name)
            if isinstance(v, (list, tuple)):
                v = tuple(sorted(v)) if f.name.endswith("choices") else tuple(v)
                object.__setattr__(self, f.name, v)
        if len(self.stage_widths) != len(self.base_depths):
            raise ConfigError("stage_widths and base_depths need one entry per stage")

    # channels, per width-choice index
    def stem_out(self, w: int) -> int:
        return make_divisible(self.stem_width * self.width_choices[w], CHANNEL_DIVISOR)

    def stem_inner(self, w: int) -> int:
        return make_divisible(self.stem_out(w) // 2, CHANNEL_DIVISOR)

    def stage_out(self, stage: int, w: int) -> int:
        return make_divisible(self.stage_widths[stage] * self.width_choices[w], CHANNEL_DIVISOR)

    @property
    def max_blocks(self) -> tuple[int, ...]:
        return tuple(b + max(self.depth_choices) for b in self.base_depths)

    def space(self, name: str = "ofa_resnet") -> SearchSpace:
        starts = itertools.accumulate((0,) + self.max_blocks[:-1])
        d = self.depth_choices
        return SearchSpace(
            depth=((min(d), max(d)),) + (d,) * len(self.base_depths),
            units=(None,) + tuple(DepthUnit(s, b) for s, b in zip(starts, self.base_depths)),
            expand=(self.expand_choices,) * sum(self.max_blocks),
            width=(self.width_choices,) * (2 + len(self.base_depths)),
            name=name,
        )

    def resnet_kwargs(self, cfg: SubnetConfig) -> dict[str, Any]:
        """Constructor arguments of the static :class:`~flexbone.models.resnet.ResNet` for ``cfg`` (JSON-ready)."""
        w = [self.width_choices.index(v) for v in cfg.width]
        layers = [b + d for b, d in zip(self.base_depths, cfg.depth[1:])]
        stage_widths = [self.stage_out(s, w[2 + s]) for s in range(len(layers))]
        mid_chs, start = [], 0
        for s, n in enumerate(layers):
            expands = cfg.expand[start:start + n]
            mid_chs.append([DynamicBottleneck.mid_channels(stage_widths[s], e) for e in expands])
            start += self.max_blocks[s]
        return dict(
            block="bottleneck", layers=layers, stem_type="deep_residual",
            stem_chs=[self.stem_inner(w[0]), self.stem_out(w[1])],
            stem_depth=3 if cfg.depth[0] == max(self.depth_choices) else 2,
            avg_down=True, stage_widths=stage_widths, mid_chs=mid_chs, zero_init_last=False,
        )


_SPEC_FIELDS = tuple(f.name for f in fields(OFAResNetSpec))


def _split_spec(kwargs: dict[str, Any]) -> tuple[OFAResNetSpec, dict[str, Any]]:
    spec = OFAResNetSpec(**{k: kwargs.pop(k) for k in list(kwargs) if k in _SPEC_FIELDS})
    return spec, kwargs


# -------------------------------------------------------------------------------------------- model
class OFAResNet(Backbone):
    """The once-for-all ResNet supernet. Module names are those of the static ResNet it extracts to.

    Args:
        num_classes, in_chans, global_pool, drop_rate, drop_path_rate: as every flexbone model
            (``global_pool`` one of 'avg', 'max', 'avgmax'; drop path rises linearly over the block slots).
        base_depths, stage_widths, stem_width, depth_choices, expand_choices, width_choices: the space
            (see :class:`OFAResNetSpec`; the defaults are OFA-ResNet50's).
        zero_init_last: zero the last BN of every bottleneck (blocks start as identities).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, zero_init_last: bool = True,
                 name: str = "ofa_resnet50", **space_kwargs: Any):
        super().__init__()
        check_supernet_options(name, space_kwargs, _SPEC_FIELDS, output_stride)
        if global_pool == "catavgmax":
            raise ConfigError("a supernet's classifier slices its input features: "
                              "use global_pool 'avg', 'max' or 'avgmax'")
        self.spec = spec = OFAResNetSpec(**space_kwargs)
        self.space = spec.space(name)
        self.name = name
        self.subnet_model_name = f"{name}_subnet"  # the registered builder of its static sub-networks
        self.num_classes, self.in_chans = num_classes, in_chans
        self.drop_rate, self.drop_path_rate = drop_rate, drop_path_rate
        top = len(spec.width_choices) - 1  # index of the widest choice

        # stem: names as ResNet(stem_type='deep_residual'): conv1.{0,1,3,4}, bn1
        inner, out = spec.stem_inner(top), spec.stem_out(top)
        self.conv1 = nn.Sequential(
            DynamicConv2d(in_chans, inner, 3, stride=2),
            DynamicBatchNorm2d(inner),
            nn.ReLU(inplace=True),
            DynamicStemResidual(inner),
            DynamicConv2d(inner, out, 3),
        )
        self.bn1 = DynamicBatchNorm2d(out)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        # stages: ElasticDepth of DynamicBottlenecks, names layer{i}.{j}
        in_choices = [spec.stem_out(w) for w in range(top + 1)]
        # timm's level 0 is the stem (after act1, before the pooling), as in ResNet
        n_slots, slot, reduction, feature_stages = sum(spec.max_blocks), 0, 4, [FeatureStage(out, 2, "act1")]
        for s, n in enumerate(spec.max_blocks):
            stride = 1 if s == 0 else 2
            reduction *= stride
            out_choices = [spec.stage_out(s, w) for w in range(top + 1)]
            blocks = []
            for j in range(n):
                # identity shortcut only where no width choice can change shape (as the reference)
                reshapes = (stride if j == 0 else 1) != 1 or (j == 0 and in_choices != out_choices)
                blocks.append(DynamicBottleneck(
                    in_choices[-1] if j == 0 else out_choices[-1], out_choices[-1], spec.expand_choices,
                    stride=stride if j == 0 else 1, downsample="avg" if reshapes else None,
                    drop_path_rate=drop_path_rate * slot / max(n_slots - 1, 1),
                ))
                slot += 1
            self.add_module(f"layer{s + 1}", ElasticDepth(*blocks))
            feature_stages.append(FeatureStage(out_choices[-1], reduction, f"layer{s + 1}"))
            in_choices = out_choices
        self.feature_info = FeatureInfo(feature_stages)

        self.num_features = in_choices[-1]
        self.global_pool, self.fc = self._classifier(num_classes, global_pool)
        self.default_cfg = default_cfg(first_conv="conv1.0", classifier="fc")
        self._init_weights(zero_init_last)
        self.active_config = self.space.max()

    def _classifier(self, num_classes: int, global_pool: str) -> tuple[nn.Module, nn.Module]:
        pool, fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        if isinstance(fc, nn.Linear):
            fc = DynamicLinear(self.num_features, num_classes)
        return pool, fc

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for blk in self.blocks():
                nn.init.zeros_(blk.bn3.weight)

    # ----------------------------------------------------------------------------- model contract
    @property
    def stages(self) -> list[ElasticDepth]:
        return [self.get_submodule(s.module) for s in self.feature_info[1:]]

    def blocks(self) -> list[DynamicBottleneck]:
        """All block slots, active or not."""
        return [blk for stage in self.stages for blk in stage]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = self._classifier(num_classes, pool)

    def forward(self, x: torch.Tensor):
        with planned_weights(self):  # a training step derives the sub-network's weights in one go
            return super().forward(x)

    def plan_weights(self, plan: WeightPlan) -> None:
        """Plan the weights that a forward of the active sub-network derives (see :func:`ops.planned_weights`)."""
        stem_conv, stem_bn, _, stem_residual, stem_out = self.conv1
        stem_conv.plan_weights(plan, self.in_chans)
        channels = stem_conv.active_out_channels or stem_conv.out_channels
        stem_bn.plan_weights(plan, channels)
        channels = stem_residual.plan_weights(plan, channels)
        stem_out.plan_weights(plan, channels)
        channels = stem_out.active_out_channels or stem_out.out_channels
        self.bn1.plan_weights(plan, channels)
        for stage in self.stages:
            channels = stage.plan_weights(plan, channels)
        if isinstance(self.fc, DynamicLinear):
            self.fc.plan_weights(plan, channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))  # (B, 3, H, W) -> (B, C_stem, H/4, W/4)
        for stage in self.stages:
            for blk in stage.active_blocks():
                if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x = checkpoint(blk, x, use_reentrant=False)
                else:
                    x = blk(x)
        return x  # (B, C_active, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    # ------------------------------------------------------------------------------ elastic surgery
    def set_active(self, cfg: SubnetConfig | Mapping[str, Any] | str | os.PathLike) -> SubnetConfig:
        """Make ``cfg`` the sub-network that ``forward`` runs (validated against ``self.space``)."""
        cfg = self.space.validate(cfg)
        spec = self.spec
        w = [spec.width_choices.index(v) for v in cfg.width]
        self.conv1[0].active_out_channels = spec.stem_inner(w[0])
        self.conv1[3].active = cfg.depth[0] == max(spec.depth_choices)
        self.conv1[4].active_out_channels = spec.stem_out(w[1])
        expands = iter(cfg.expand)
        for s, (stage, base, d) in enumerate(zip(self.stages, spec.base_depths, cfg.depth[1:])):
            stage.active_depth = base + d
            for blk in stage:
                blk.active_out_channels = spec.stage_out(s, w[2 + s])
                blk.active_expand_ratio = next(expands)
        self.active_config = cfg
        return cfg

    def subnet_kwargs(self, cfg: SubnetConfig | None = None) -> dict[str, Any]:
        """Constructor arguments of the static ResNet of ``cfg`` (default: the active sub-network)."""
        cfg = self.active_config if cfg is None else self.space.validate(cfg)
        return dict(self.spec.resnet_kwargs(cfg), num_classes=self.num_classes, in_chans=self.in_chans,
                    global_pool=self.global_pool.pool_type, drop_rate=self.drop_rate,
                    drop_path_rate=self.drop_path_rate)

    def subnet_create_kwargs(self, cfg: SubnetConfig | None = None) -> dict[str, Any]:
        """``create_model(self.subnet_model_name, **these)`` builds the static sub-network (JSON-ready)."""
        cfg = self.active_config if cfg is None else self.space.validate(cfg)
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.spec).items()}
        return dict(subnet=cfg.to_dict(), num_classes=self.num_classes, in_chans=self.in_chans,
                    global_pool=self.global_pool.pool_type, drop_rate=self.drop_rate,
                    drop_path_rate=self.drop_path_rate, **spec)

    @torch.no_grad()
    def extract(self, cfg: SubnetConfig | Mapping[str, Any] | None = None) -> ResNet:
        """The active sub-network (or ``cfg``'s, which becomes active) as a static, independent ResNet.

        Its weights are copies, on the supernet's device and dtype, in the supernet's train/eval mode.
        """
        if cfg is not None:
            self.set_active(cfg)
        with torch.device("meta"):  # no time spent initialising weights that are overwritten next
            static = ResNet(**self.subnet_kwargs())
        ref = self.conv1[0].weight
        static = static.to_empty(device=ref.device).to(dtype=ref.dtype)
        copy_active(static, self)  # writes every parameter and buffer (it raises on a layer it cannot fill)
        static.subnet_origin = subnet_origin(self)  # save_subnet(static, ...) works without the supernet
        return static.train(self.training)

    @torch.no_grad()
    def reorganize_channels(self, expand_stage: int = 0) -> None:
        """Sort every bottleneck's middle channels by importance (before training smaller expand ratios).

        The full network computes the same function afterwards. ``expand_stage``: see
        :meth:`DynamicBottleneck.reorganize_channels` (0 before the first expand phase, 1 before the second).
        """
        for blk in self.blocks():
            blk.reorganize_channels(expand_stage)

    # --------------------------------------------------------------------------- reference weights
    def _convert_checkpoint(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an ``ofa`` package ``OFAResNets`` state dict onto this model's names; other dicts pass unchanged.

        The reference nests each dynamic layer's static one (``blocks.0.conv1.conv.conv.weight``,
        ``...bn.bn.weight``, ``classifier.linear.linear.weight``); its static form drops one level. Both
        are accepted. Its stem ``input_stem.{0,1,2}`` becomes ``conv1.{0,1}``, ``conv1.3``, ``conv1.4``/``bn1``;
        its flat ``blocks.{i}`` become ``layer{s}.{j}`` (with ``max(depth) + base`` blocks per stage);
        ``downsample.conv``/``.bn`` become ``downsample.1``/``.2``; ``classifier.linear`` becomes ``fc``.
        """
        if not any(k.startswith(("input_stem.", "blocks.")) for k in state_dict):
            return dict(state_dict)
        nested = any(".bn.bn." in k for k in state_dict)
        slot_of = [(s, j) for s, n in enumerate(self.spec.max_blocks) for j in range(n)]
        out = {}
        for key, value in state_dict.items():
            *path, leaf = key.split(".")
            if nested and len(path) >= 2 and path[-1] == path[-2] and path[-1] in ("conv", "bn", "linear"):
                path = path[:-1]
            new = self._ofa_module_name(path, slot_of)
            if new is None:
                raise CheckpointError(f"{key!r} is not a key of a once-for-all ResNet checkpoint")
            out[f"{new}.{leaf}"] = value
        return out

    @staticmethod
    def _ofa_module_name(path: list[str], slot_of: list[tuple[int, int]]) -> str | None:
        p = ".".join(path)
        stem = {"input_stem.0.conv": "conv1.0", "input_stem.0.bn": "conv1.1",
                "input_stem.1.conv.conv": "conv1.3.conv", "input_stem.1.conv.bn": "conv1.3.bn",
                "input_stem.2.conv": "conv1.4", "input_stem.2.bn": "bn1", "classifier.linear": "fc"}
        if p in stem:
            return stem[p]
        if len(path) == 4 and path[0] == "blocks" and path[1].isdigit() and int(path[1]) < len(slot_of):
            s, j = slot_of[int(path[1])]
            layer = {("conv1", "conv"): "conv1", ("conv1", "bn"): "bn1", ("conv2", "conv"): "conv2",
                     ("conv2", "bn"): "bn2", ("conv3", "conv"): "conv3", ("conv3", "bn"): "bn3",
                     ("downsample", "conv"): "downsample.1", ("downsample", "bn"): "downsample.2",
                     }.get((path[2], path[3]))
            return f"layer{s + 1}.{j}.{layer}" if layer else None
        return None


# ---------------------------------------------------------------------------------------- variants
# name -> OFAResNet keyword arguments (the defaults are the published OFA-ResNet50 space)
VARIANTS: dict[str, dict[str, Any]] = {
    "ofa_resnet50": {},
}


def _build(name: str, variant: dict[str, Any], **kwargs: Any) -> OFAResNet:
    return OFAResNet(**{"name": name, **variant, **kwargs})


def _build_subnet(name: str, variant: dict[str, Any], subnet: SubnetConfig | Mapping[str, Any] | str | None = None,
                  **kwargs: Any) -> ResNet:
    """A static sub-network of the supernet, randomly initialised (load weights with ``pretrained=``).

    ``subnet``: a SubnetConfig, its dict, JSON text or a JSON file (default: the largest sub-network).
    Other keywords: the supernet's space options (``width_choices`` ...), then any ResNet option
    (``num_classes``, ``drop_path_rate``, ``output_stride`` ...).
    """
    spec, kwargs = _split_spec({**variant, **kwargs})
    space = spec.space(name)
    cfg = space.max() if subnet is None else space.validate(SubnetConfig.coerce(subnet))
    return ResNet(**{**spec.resnet_kwargs(cfg), **kwargs})


for _name, _variant in VARIANTS.items():
    _entry = partial(_build, _name, _variant)
    _entry.model_cls = OFAResNet
    register_model(_entry, name=_name, family="ofa_resnet")
    _sub = partial(_build_subnet, _name, _variant)
    _sub.model_cls = ResNet
    register_model(_sub, name=f"{_name}_subnet", family="ofa_resnet")
