"""NASNet-A large (Zoph et al. 2018, "Learning Transferable Architectures for Scalable Image Recognition").

The architecture the NAS search found, as TF released it (and Cadene / timm ported it): a 3x3/2 stem conv, two
reduction cells as a further stem, then three stages of six normal cells, a reduction cell between stages.
Every cell reads the outputs of the two cells before it (``x`` and ``x_prev``), adapts each with a 1x1
unit, and sums pairs of searched operations (separable convs, 3x3 pools, identities) into five branches whose
outputs are concatenated: normal cells keep the resolution (output ``6 x width``), reduction cells halve it
(``4 x width``). When ``x_prev`` is at twice the resolution of ``x`` (after a reduction), a factorized
reduction halves it first. The cell after a reduction cell reads the map *before* the reduction as ``x_prev``.

Parameter names are timm's (``cell_7.comb_iter_0_left.separable_1.depthwise_conv2d.weight``), so timm's
``nasnetalarge`` checkpoint loads with ``strict=True`` (``tests/test_nasnet.py``). Feature levels are
timm's: the stem conv (stride 2), then the ReLU-activated outputs of ``cell_stem_0``, ``cell_5``, ``cell_11``
(named, as timm's hooks, by the next cell's input ReLU) and the final activation.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..layers.conv_norm_act import ConvNormAct
from ..layers.classifier import create_classifier
from ..layers.nas_ops import TF_BN_EPS, BranchSeparables, CellSpec, SearchedCell
from ..layers.norm import BatchNorm2d
from ..layers.padding import pool2d_same
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage, feature_take_indices
from ._registry import register_model

# The searched cells (see layers/nas_ops.CellSpec for the table's form)
NORMAL_CELL = (("sep5", "x", "sep3", "prev"), ("sep5", "prev", "sep3", "prev"), ("avg", "x", None, "prev"),
               ("avg", "prev", "avg", "prev"), ("sep3", "x", None, "x"))
NORMAL_OUTPUT = ("prev", "c0", "c1", "c2", "c3", "c4")
REDUCTION_CELL = (("sep5", "x", "sep7", "prev"), ("max", "x", "sep7", "prev"), ("avg", "x", "sep5", "prev"),
                  (None, "c1", "avg", "c0"), ("sep3", "c0", "max", "x"))
REDUCTION_OUTPUT = ("c1", "c2", "c3", "c4")


def _operation(op: str, in_chs: int, out_chs: int, stride: int) -> nn.Module:
    if op.startswith("sep"):  # the stem cell's first separable conv maps the wider stem map straight to out_chs
        return BranchSeparables(in_chs, out_chs, int(op[3:]), stride, stem_cell=in_chs != out_chs)
    if op == "max":
        return pool2d_same("max", 3, stride)
    return pool2d_same("avg", 3, stride, count_include_pad=False)


def _cell(name: str, reduction: bool, prev: str, in_chs: int, prev_chs: int, width: int) -> CellSpec:
    # a reduction cell between stages passes its own x_prev on (the stem cells do not)
    return CellSpec(name, REDUCTION_CELL if reduction else NORMAL_CELL,
                    REDUCTION_OUTPUT if reduction else NORMAL_OUTPUT, reduction, prev, in_chs, prev_chs, width,
                    keeps_prev=reduction and prev == "conv")


def nasnet_cells(stem: int = 96, width: int = 168, cells_per_stage: int = 6) -> tuple[CellSpec, ...]:
    """NASNet-A's cell sequence: two stem reduction cells (widths ``width/4``, ``width/2``), then three stages of
    ``cells_per_stage`` normal cells at ``width * 2**s``, a reduction cell before stages 1 and 2."""
    cells = [_cell("cell_stem_0", True, "none", stem, stem, width // 4)]
    cells.append(_cell("cell_stem_1", True, "factorized", cells[0].out_chs, stem, width // 2))
    x_chs, prev_chs, n = cells[1].out_chs, cells[0].out_chs, 0
    for s in range(3):
        w = width * 2 ** s
        if s > 0:  # its output's successor reads the map before the reduction as x_prev (prev_chs unchanged)
            cells.append(_cell(f"reduction_cell_{s - 1}", True, "conv", x_chs, prev_chs, w))
            x_chs = cells[-1].out_chs
        for i in range(cells_per_stage):  # the first reads x_prev at twice its resolution: factorized reduction
            cells.append(_cell(f"cell_{n}", False, "factorized" if i == 0 else "conv", x_chs, prev_chs, w))
            x_chs, prev_chs, n = cells[-1].out_chs, x_chs, n + 1
    return tuple(cells)


# ------------------------------------------------------------------------------------------------ model
class CellNetwork(Backbone):
    """A stem conv, then cells each reading the two maps before it, a final ReLU, pool and classifier: the
    contract shared by NASNet-A and PNASNet-5 (timm's wiring, levels, pruning). A subclass registers the stem
    conv, the cells (named as ``self.cells``, specs with ``name`` and ``keeps_prev``) and ``self.act``, and sets
    ``_level_cells``: per feature level, the module whose output it is (the stem, then cells)."""

    cells: tuple
    _level_cells: tuple[str, ...]
    # TorchScript cannot call a cell's branch modules by the names its table computes: the model scripts as a
    # torch.fx graph traced through the cells (Backbone.__prepare_scriptable__), every branch op one call
    _script_traced_through = (SearchedCell,)

    def _init_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float) -> None:
        self.num_classes, self.drop_rate, self.num_features = num_classes, drop_rate, num_features
        self.act = nn.ReLU(inplace=True)
        self.global_pool, self.last_linear = create_classifier(num_features, num_classes, global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        # weights keep torch's default initialisation, as timm's ports: with He (fan-out) init of every conv the
        # logits of a 64 px input were ~2e5 (NASNet) / ~2e3 (PNASNet), with torch's default ~0.4

    def get_classifier(self) -> nn.Module:
        return self.last_linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.last_linear = create_classifier(self.num_features, num_classes, pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def _run(self, x: torch.Tensor, last_level: int, take: Sequence[int] = ()) -> tuple[torch.Tensor, list]:
        """Run the model down to feature level ``last_level`` (or its last unpruned cell); returns the features
        and the maps of the levels in ``take``."""
        final = len(self.feature_info) - 1
        x_prev = x = getattr(self, self._level_cells[0])(x)  # the stem conv; the stem cell reads it as both inputs
        maps, level, reached = ([x] if 0 in take else []), 1, 0
        for spec in self.cells:
            cell = getattr(self, spec.name)
            if reached == last_level or cell is None:  # done, or pruned (prune_intermediate_layers)
                break
            out = cell(x, x_prev)
            x_prev, x = (x_prev, out) if spec.keeps_prev else (x, out)
            if spec.name == self._level_cells[level]:
                if level == final:
                    x = self.act(x)
                if level in take:  # inner levels: the activation the next cell's 1x1 unit starts with
                    maps.append(x if level == final else F.relu(x))
                reached, level = level, level + 1
        if 0 < reached < final:  # stopped at an inner level: the features end activated, as that level
            x = F.relu(x)
        return x, maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, len(self.feature_info) - 1)[0]  # (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.last_linear(x)

    @torch.jit.unused
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's ``forward_intermediates`` (levels: stem conv, activated cell outputs, final activation)."""
        if output_fmt != "NCHW":
            raise ConfigError(f"{type(self).__name__}: output_fmt must be 'NCHW', not {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        x, maps = self._run(x, max_index if stop_early else len(self.feature_info) - 1, take)
        return maps if intermediates_only else (x, maps)

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: the cells after the deepest level of ``indices`` are removed (set to ``None``: cells take two
        inputs, an identity cannot stand in), with the classifier."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        names = [s.name for s in self.cells]
        last = self._level_cells[max_index]
        for name in names[names.index(last) + 1 if last in names else 0:]:
            setattr(self, name, None)
        if max_index < len(self.feature_info) - 1:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < len(self.feature_info) - 1:
            self.reset_classifier(0, "")
        return take


class NASNetALarge(CellNetwork):
    """NASNet-A large (6 @ 4032): the stem conv, ``nasnet_cells()``, a final ReLU, pool and classifier.

    Args:
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        stem_size, num_features: the stem width and the last cell's width (``24 x`` the first stage's width).
        output_stride: 32 only (the reductions are cells of the searched architecture).
        drop_path_rate: accepted for the common contract; not used (timm's port has no stochastic depth; the
            paper's ScheduledDropPath is a training recipe it does not carry).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 stem_size: int = 96, num_features: int = 4032, output_stride: int = 32, drop_path_rate: float = 0.0):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"NASNet supports output_stride=32 only, not {output_stride}")
        # 3x3/2 without padding (TF 'VALID'): 331 -> 165
        self.conv0 = ConvNormAct(in_chans, stem_size, 3, stride=2, padding=0,
                                 norm_layer=partial(BatchNorm2d, eps=TF_BN_EPS), apply_act=False)
        self.cells = nasnet_cells(stem_size, num_features // 24)
        for spec in self.cells:
            self.add_module(spec.name, SearchedCell(spec, _operation, flat_factorized=True))  # timm's names
        width = num_features // 24
        self.feature_info = FeatureInfo([
            FeatureStage(stem_size, 2, "conv0"), FeatureStage(width, 4, "cell_stem_1.conv_1x1.act"),
            FeatureStage(6 * width, 8, "reduction_cell_0.conv_1x1.act"),
            FeatureStage(12 * width, 16, "reduction_cell_1.conv_1x1.act"), FeatureStage(num_features, 32, "act")])
        # inner levels are the ReLU'd cell outputs (timm hooks the next cell's input ReLU)
        self._level_cells = ("conv0", "cell_stem_0", "cell_5", "cell_11", self.cells[-1].name)
        self._init_head(num_features, num_classes, global_pool, drop_rate)
        self.default_cfg = default_cfg(input_size=(3, 331, 331), pool_size=(11, 11), crop_pct=0.911,
                                       interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                       first_conv="conv0.conv", classifier="last_linear")


_entry = partial(NASNetALarge)
_entry.model_cls = NASNetALarge  # lets create_model list the accepted options on a bad keyword
register_model(_entry, name="nasnetalarge", family="nasnet")
