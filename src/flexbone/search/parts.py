"""A sub-network as a chain of standalone parts: the unit that the cost tables price.

An extracted sub-network runs its stem, then its blocks one after the other, then its head. Its MACs and
parameters are the sums over those parts, and so (nearly: the once-for-all latency table rests on it) is its
latency. A *part* is a module description (a string key: what the module is, not what it is fed) plus the
shape of one input image; the same block at the same input size costs the same in every sub-network, so a table
keyed by (key, input shape) is computed once and summed for any number of configurations.

:class:`SubnetParts` splits the sub-networks of every supernet of the zoo:

* OFA MobileNets (:mod:`flexbone.elastic.ofa_mobilenet`): the stem (3x3 conv + BN + act), every block of the
  sub-network's block table (the fixed first block, the active inverted residuals, the ProxylessNAS tail,
  MobileNetV3's final 1x1 conv), then the head (MobileNetV3: pool, 1x1 conv, classifier; MobileNetV2: 1x1 conv
  + BN + act, pool, classifier).
* OFA-ResNet50 (:mod:`flexbone.elastic.ofa_resnet`): the deep stem with its max pool, every bottleneck, then
  pool + classifier.

A part's module is built by the static model's own constructor: a small "carrier" model of the same class
(one block, the given widths) whose stem, block or head is taken. The parts are therefore the layers that
``extract()`` produces, not a copy of their construction; the tests check the sums against the whole network.

:meth:`SubnetParts.cover` lists configurations whose parts include every part any configuration of the space
can have at the given resolutions: what a latency table must time.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from ..bench.complexity import _MetaShortcuts, count_macs, count_params
from ..elastic.ofa_mobilenet import _OFAMobileNet
from ..elastic.ofa_resnet import OFAResNet
from ..elastic.space import SubnetConfig
from ..errors import ConfigError
from ..models.mobilenet import BlockSpec, MobileNetV2, MobileNetV3
from ..models.resnet import ResNet

Shape = tuple[int, int, int]  # (C, H, W) of one image


@dataclass(frozen=True)
class Part:
    """One module of an extracted sub-network (``key``) and the shape of one image it is fed (``in_shape``)."""

    key: str
    in_shape: Shape


# Sizes through a part. Every layer of these networks maps an input of size H to ceil(H / 2^j) (odd kernels padded
# by k // 2, stride 1 or 2; 3x3/2 max pool padded by 1; 2x2/2 average pool with ceil_mode) or, after global
# pooling, to 1. At input size 127 the halvings 127, 64, 32, 16, 8, 4, 2 are distinct and > 1, so one forward pass
# at 127 tells each layer's j, and the layer's MACs at any size H are (MACs per output pixel) x ceil(H / 2^j)^2.
_REF_SIZE = 127
_REF_HALVINGS = {-(-_REF_SIZE // 2 ** j): j for j in range(7)}


def _halvings(size: int) -> int | None:
    """j such that ``size == ceil(127 / 2^j)``; -1 for a pooled (1 x 1) output; None for anything else."""
    return -1 if size == 1 else _REF_HALVINGS.get(size)


def _size_after(h: int, j: int) -> int:
    return 1 if j < 0 else -(-h // 2 ** j)


@dataclass(frozen=True)
class _MacModel:
    """A part's MACs and output shape as functions of its (square) input size (see ``_REF_SIZE``)."""

    terms: tuple[tuple[int, int], ...]  # (MACs per output pixel, j) per conv / linear layer
    out_chs: int
    out_j: int

    def macs(self, h: int) -> int:
        return sum(per_pixel * _size_after(h, j) ** 2 for per_pixel, j in self.terms)

    def out_shape(self, h: int) -> Shape:
        s = _size_after(h, self.out_j)
        return (self.out_chs, s, s)


def _mac_model(module: nn.Module, in_chans: int) -> _MacModel | None:
    """One forward pass on ``meta`` at size 127 with hooks on the conv and linear layers (the only layers that
    count_macs counts: normalisations, activations, pooling and additions are zero). None where a layer's size
    is not one of the halvings (the caller then counts at every size instead)."""
    terms: list[tuple[int, int] | None] = []

    def hook(layer: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        if isinstance(layer, nn.Linear):
            rows = math.prod(out.shape[1:-1])  # per image; 1 after pooling
            terms.append((layer.weight.numel() * rows, -1) if rows == 1 else None)
        else:  # Conv2d: C_out x C_in / groups x kh x kw multiply-adds per output pixel (torch's conv formula)
            j = _halvings(out.shape[-1]) if out.shape[-1] == out.shape[-2] else None
            terms.append(None if j is None else (layer.weight.numel(), j))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad(), _MetaShortcuts():
            y = module(torch.zeros(1, in_chans, _REF_SIZE, _REF_SIZE, device="meta"))
    finally:
        for h in handles:
            h.remove()
    out_j = _halvings(y.shape[-1]) if y.dim() == 4 and y.shape[-1] == y.shape[-2] else (-1 if y.dim() == 2 else None)
    if out_j is None or any(t is None for t in terms):
        return None
    return _MacModel(tuple(terms), int(y.shape[1]), out_j)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ families
class _MobileNetParts:
    """Parts of OFA MobileNetV3 / MobileNetV2 / ProxylessNAS sub-networks (static MobileNetV3 / MobileNetV2)."""

    def __init__(self, net: _OFAMobileNet):
        self.net, self.spec = net, net.spec
        self.cls = self.spec.static_class
        # what every carrier shares with the extracted sub-network (its constructor arguments, less the trunk)
        kw = self.spec.static_kwargs(net.space.max())
        self.common = dict(act_layer=kw["act_layer"], bn_eps=kw["bn_eps"], in_chans=net.in_chans,
                           global_pool=net.global_pool.pool_type)
        if "head_bias" in kw:
            self.common["head_bias"] = kw["head_bias"]
        self.stem_chs, self.head_chs = kw["stem_chs"], kw["head_chs"]

        # the parts every sub-network has, and a memo of the elastic blocks: block j of unit u depends only on its
        # own (kernel, expand), so the block table of one config per (kernel, expand) gives every block
        stages = self.spec.stages(net.space.max())
        self.fixed_first = [self._block_key(b, c) for b, c in self._with_inputs(stages)[:1]]
        self.fixed_last = [self._block_key(b, c) for b, c in self._with_inputs(stages)[-1:]] \
            if self.spec.final_expand_width else []
        trunk_chs = stages[-1][-1].out_chs
        self.stem = (f"stem:{net.in_chans}>{self.stem_chs}", self._stem)
        self.head = (f"head:{trunk_chs}>{self.head_chs}>{net.num_classes}", lambda: self._head(trunk_chs))
        self.n_units, self.max_depth = len(self.spec.units), self.spec.max_depth
        self._blocks: dict[tuple[int, int, int, float], tuple[str, Callable[[], nn.Module]]] = {}

    def _with_inputs(self, stages: list[list[BlockSpec]]) -> list[tuple[BlockSpec, int]]:
        """Every block of a block table with its input channels."""
        out, in_chs = [], self.stem_chs
        for stage in stages:
            for b in stage:
                out.append((b, in_chs))
                in_chs = b.out_chs
        return out

    def _block_key(self, b: BlockSpec, in_chs: int) -> tuple[str, Callable[[], nn.Module]]:
        key = (f"{b.kind}:{in_chs}>{b.mid_chs or '-'}>{b.out_chs}:k{b.kernel}:s{b.stride}:{b.act}"
               f"{':se' if b.se else ''}{':skip' if b.skip else ''}")
        return key, lambda: self._block(b, in_chs)

    def _elastic_block(self, stage: int, j: int, k: int, e: float) -> tuple[str, Callable[[], nn.Module]]:
        hit = self._blocks.get((stage, j, k, e))
        if hit is None:
            n = self.net.space.num_block_slots
            cfg = SubnetConfig(depth=tuple(max(c) for c in self.net.space.depth), kernel=(k,) * n, expand=(e,) * n)
            stages = self.spec.stages(cfg)
            in_chs = self.stem_chs
            for s, blocks in enumerate(stages):
                for i, b in enumerate(blocks):
                    self._blocks[(s, i, k, e)] = self._block_key(b, in_chs)
                    in_chs = b.out_chs
            hit = self._blocks[(stage, j, k, e)]
        return hit

    def keys(self, cfg: SubnetConfig) -> list[tuple[str, Callable[[], nn.Module]]]:
        out = [self.stem] + self.fixed_first
        depths = tuple(cfg.depth) + (1,) * len(self.spec.tail)  # the tail blocks: depth 1, one slot each
        kernel, expand = cfg.kernel, cfg.expand
        for u, d in enumerate(depths):
            first = u * self.max_depth if u < self.n_units else self.n_units * self.max_depth + (u - self.n_units)
            for j in range(d):
                out.append(self._elastic_block(1 + u, j, kernel[first + j], expand[first + j]))
        return out + self.fixed_last + [self.head]

    def _carrier(self, stages: list[list[BlockSpec]], stem_chs: int, num_classes: int = 0, head_chs: int = 0):
        return self.cls(stages=stages, stem_chs=stem_chs, head_chs=head_chs, num_classes=num_classes, **self.common)

    def _stem(self) -> nn.Module:
        m = self._carrier([[BlockSpec("conv", 1, 8)]], self.stem_chs)
        return nn.Sequential(m.conv_stem, m.bn1, m.act1)

    def _block(self, b: BlockSpec, in_chs: int) -> nn.Module:
        return self._carrier([[b]], in_chs).blocks[0][0]  # the block sees the carrier's stem width: in_chs

    def _head(self, in_chs: int) -> nn.Module:
        m = self._carrier([[BlockSpec("conv", 1, in_chs)]], 8, self.net.num_classes, self.head_chs)
        if isinstance(m, MobileNetV3):  # pool, 1x1 conv (no BN) + act, flatten, classify (its forward_head)
            return nn.Sequential(m.global_pool, m.conv_head, m.act2, m.flatten, m.classifier)
        assert isinstance(m, MobileNetV2)  # 1x1 conv + BN + act on the map, then pool (flattening) and classify
        return nn.Sequential(m.conv_head, m.bn2, m.act2, m.global_pool, m.classifier)

    def cover(self, resolution: int | None) -> list[SubnetConfig]:
        # a block's input (channels and size) does not depend on the other slots' choices: all slots at the same
        # (kernel, expand), every unit at its full depth, covers every block at every size
        space, n = self.net.space, self.net.space.num_block_slots
        return [SubnetConfig(depth=tuple(max(c) for c in space.depth), kernel=(k,) * n, expand=(e,) * n,
                             resolution=resolution)
                for k, e in itertools.product(self.spec.kernel_choices, self.spec.expand_choices)]


class _ResNetParts:
    """Parts of OFA-ResNet sub-networks (static ResNet-D with a residual deep stem)."""

    def __init__(self, net: OFAResNet):
        self.net, self.spec = net, net.spec
        self.pool = net.global_pool.pool_type

    def keys(self, cfg: SubnetConfig) -> list[tuple[str, Callable[[], nn.Module]]]:
        kw = self.spec.resnet_kwargs(cfg)
        stem_chs, stem_depth = tuple(kw["stem_chs"]), kw["stem_depth"]
        out = [(f"stem:{self.net.in_chans}>{stem_chs[0]}>{stem_chs[1]}:d{stem_depth}",
                lambda: self._stem(stem_chs, stem_depth))]
        in_chs = stem_chs[1]
        for s, (n, width, mids) in enumerate(zip(kw["layers"], kw["stage_widths"], kw["mid_chs"])):
            for j in range(n):
                stride = 2 if s > 0 and j == 0 else 1
                out.append((f"bottleneck:{in_chs}>{mids[j]}>{width}:s{stride}",
                            lambda c=in_chs, m=mids[j], w=width, st=stride: self._block(c, m, w, st)))
                in_chs = width
        out.append((f"head:{in_chs}>{self.net.num_classes}", lambda c=in_chs: self._head(c)))
        return out

    def _carrier(self, stem_chs: tuple[int, int], stem_depth: int, widths: tuple[int, ...],
                 mids: tuple[tuple[int, ...], ...], num_classes: int = 0) -> ResNet:
        return ResNet(block="bottleneck", layers=(1,) * len(widths), stem_type="deep_residual", stem_chs=stem_chs,
                      stem_depth=stem_depth, avg_down=True, stage_widths=widths, mid_chs=mids, zero_init_last=False,
                      num_classes=num_classes, in_chans=self.net.in_chans, global_pool=self.pool)

    def _stem(self, stem_chs: tuple[int, int], stem_depth: int) -> nn.Module:
        m = self._carrier(stem_chs, stem_depth, (8,), ((8,),))
        return nn.Sequential(m.conv1, m.bn1, m.act1, m.maxpool)

    def _block(self, in_chs: int, mid: int, width: int, stride: int) -> nn.Module:
        if stride == 1:  # the first stage does not stride: its block sees the stem's width
            return self._carrier((8, in_chs), 2, (width,), ((mid,),)).layer1[0]
        return self._carrier((8, 8), 2, (in_chs, width), ((8,), (mid,))).layer2[0]

    def _head(self, in_chs: int) -> nn.Module:
        m = self._carrier((8, 8), 2, (in_chs,), ((8,),), self.net.num_classes)
        return nn.Sequential(m.global_pool, m.fc)

    def cover(self, resolution: int | None) -> list[SubnetConfig]:
        # a bottleneck depends on its stage's width and expand and, for a stage's first block, the width before
        # it: alternating widths (a, b, a, b) over all ordered pairs give every pair at every stage boundary
        space, spec = self.net.space, self.spec
        n, w = space.num_block_slots, spec.width_choices
        configs = []
        for e, (a, b), stem_depth in itertools.product(spec.expand_choices, itertools.product(w, w),
                                                       space.depth[0]):
            depth = (stem_depth,) + tuple(max(c) for c in space.depth[1:])
            width = (b, a) + tuple(b if i % 2 == 0 else a for i in range(len(space.width) - 2))
            configs.append(SubnetConfig(depth=depth, expand=(e,) * n, width=width))
        return configs


# ------------------------------------------------------------------------------------------- splitter
class SubnetParts:
    """Split a supernet's sub-networks into parts; MACs, parameters and output shapes of each part, cached.

    Args:
        supernet: an OFA MobileNet or OFA-ResNet supernet (``create_model("ofa_...")``).
        img_size: the input size of configurations that carry no resolution (OFA-ResNet50's space does not
            search it); default: the supernet's ``default_cfg`` input size.
    """

    def __init__(self, supernet: nn.Module, img_size: int | None = None):
        if isinstance(supernet, OFAResNet):
            self._family: Any = _ResNetParts(supernet)
        elif isinstance(supernet, _OFAMobileNet):
            self._family = _MobileNetParts(supernet)
        else:
            raise ConfigError(f"{type(supernet).__name__} is not a once-for-all supernet of flexbone's zoo "
                              f"(OFA MobileNets, OFA-ResNet): its sub-networks cannot be priced by parts")
        self.supernet, self.space = supernet, supernet.space
        self.in_chans = supernet.in_chans
        self.img_size = img_size or int(supernet.default_cfg["input_size"][-1])
        self._builders: dict[str, Callable[[], nn.Module]] = {}
        self._meta: dict[str, nn.Module] = {}
        self._params: dict[str, int] = {}
        self._models: dict[str, _MacModel | None] = {}
        self._counted: dict[tuple[str, Shape], tuple[int, Shape]] = {}  # -> (MACs, output shape)

    def resolution(self, cfg: SubnetConfig, img_size: int | None = None) -> int:
        """The input size of ``cfg``: its resolution; else ``img_size`` (default: the splitter's), or the space's
        largest resolution where it has them (as ``set_active`` does)."""
        if cfg.resolution is not None:
            return cfg.resolution
        if img_size is None and self.space.resolution:
            return max(self.space.resolution)
        return img_size or self.img_size

    def parts(self, cfg: SubnetConfig, img_size: int | None = None) -> list[Part]:
        """The parts of ``cfg``'s extracted sub-network, in the order they run, each with its input shape
        (``img_size``: the input size of a configuration without resolution)."""
        return [Part(key, shape) for key, shape, _ in self.chain(cfg, img_size)]

    def chain(self, cfg: SubnetConfig, img_size: int | None = None) -> list[tuple[str, Shape, int]]:
        """``(key, input shape, MACs)`` of each part of ``cfg`` in running order: :meth:`parts`, without the objects
        (what the costs sum up, thousands of times in a search)."""
        r = self.resolution(cfg, img_size)
        shape: Shape = (self.in_chans, r, r)
        out = []
        counted, builders = self._counted, self._builders
        for key, build in self._family.keys(cfg):
            hit = counted.get((key, shape))
            if hit is None:
                builders.setdefault(key, build)
                hit = self._count(key, shape)
            out.append((key, shape, hit[0]))
            shape = hit[1]
        return out

    def slot_table(self, value: Callable[[str, Shape, int], float], sizes: Iterable[int]
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """A sum over parts as a table that a whole population of genes is priced from at once (the search).

        For the OFA MobileNets a block slot's part and input shape depend only on that slot's own kernel and
        expand and on the input size (a unit strides and widens in its first block, which always runs), so
        ``sum(value(key, shape, macs) for each part of cfg)`` equals ``fixed[r] + sum over running slots s of
        blocks[s, kernel index, expand index, r]``, the indices being those of the slot's own choices and r the
        position of the input size in ``sizes``. Returns ``(fixed, blocks)``, or None for a family whose parts
        depend on their neighbours (OFA-ResNet: a block's input width is the previous stage's choice).
        ``tests/test_search_costs.py`` checks the table against the part-by-part sum on random configurations.
        """
        fam = self._family
        if not isinstance(fam, _MobileNetParts):
            return None
        sizes, space = list(sizes), self.space
        n = space.num_block_slots
        n_first, n_last = len(fam.fixed_first), len(fam.fixed_last)
        kernels = max(len(c) for c in space.kernel)
        expands = max(len(c) for c in space.expand)
        fixed = np.zeros(len(sizes))
        blocks = np.full((n, kernels, expands, len(sizes)), np.nan)
        for r, size in enumerate(sizes):
            for cfg in fam.cover(size if space.resolution else None):
                chain = self.chain(cfg, img_size=size)
                assert len(chain) == 2 + n_first + n + n_last, "one part per block slot at full depth"
                values = [value(*part) for part in chain]
                fixed[r] = sum(values[:1 + n_first]) + sum(values[1 + n_first + n:])
                for s in range(n):
                    k, e = cfg.kernel[s], cfg.expand[s]
                    if k in space.kernel[s] and e in space.expand[s]:
                        blocks[s, space.kernel[s].index(k), space.expand[s].index(e), r] = values[1 + n_first + s]
        return fixed, blocks

    def cover(self, resolutions: Iterable[int] | None = None) -> list[Part]:
        """Every distinct part that a configuration of the space can have at ``resolutions`` (default: the
        space's resolutions, or ``img_size`` for a space without), in a stable order."""
        sizes = list(resolutions) if resolutions is not None else list(self.space.resolution) or [self.img_size]
        seen: dict[Part, None] = {}
        for size in sizes:
            for cfg in self._family.cover(size if self.space.resolution else None):
                for part in self.parts(cfg, img_size=size):
                    seen.setdefault(part)
        return list(seen)

    def module(self, key: str, device: str | torch.device = "cpu") -> nn.Module:
        """A fresh module of part ``key`` (randomly initialised, eval mode); ``device='meta'`` costs nothing."""
        if key not in self._builders:
            raise ConfigError(f"unknown part {key!r}: parts come from SubnetParts.parts() or cover()")
        if torch.device(device).type == "meta":
            with torch.device("meta"), _MetaShortcuts():
                return self._builders[key]().eval()
        with torch.device(device):
            return self._builders[key]().eval()

    def _meta_module(self, key: str) -> nn.Module:
        if key not in self._meta:
            self._meta[key] = self.module(key, "meta")
        return self._meta[key]

    def _count(self, key: str, in_shape: Shape) -> tuple[int, Shape]:
        hit = self._counted.get((key, in_shape))
        if hit is None:
            c, h, w = in_shape
            assert h == w, "parts are fed square images"
            if key not in self._models:
                self._models[key] = _mac_model(self._meta_module(key), c)
            model = self._models[key]
            if model is not None:
                hit = (model.macs(h), model.out_shape(h))
            else:  # a layer the size model does not describe: count this size for real
                module = self._meta_module(key)
                macs = count_macs(module, h, in_chans=c)
                with torch.no_grad(), _MetaShortcuts():
                    out = module(torch.zeros(1, c, h, w, device="meta"))
                hit = (macs, tuple(out.shape[1:]))
            self._counted[(key, in_shape)] = hit
        return hit

    def macs(self, part: Part) -> int:
        """Multiply-accumulates of one image through ``part`` (flexbone.bench.complexity.count_macs)."""
        return self._count(part.key, part.in_shape)[0]

    def params(self, key: str) -> int:
        """Parameters of part ``key`` (flexbone.bench.complexity.count_params)."""
        if key not in self._params:
            self._params[key] = count_params(self._meta_module(key))
        return self._params[key]
