"""PNASNet-5 large (Liu et al. 2018, "Progressive Neural Architecture Search").

The cell found by the progressive search, as TF released it (and Cadene / timm ported it): one cell type of
five branches (separable convs, 3x3 max pools, one identity), all concatenated, used as a reduction cell (its
ops strided) or a normal cell. A 3x3/2 stem conv, two stem cells, then three stages of four cells, the first
of stages 1 and 2 a reduction. Each cell reads the outputs of the two cells before it; when the older one is at
twice the resolution, a factorized reduction halves it. The searched operations and the model's contract
(wiring, feature levels, pruning) are NASNet-A's (``layers/nas_ops.py``, ``models/nasnet.py``).

Parameter names are timm's (``cell_5.conv_prev_1x1.path_2.conv.weight``), so timm's ``pnasnet5large``
checkpoint loads with ``strict=True`` (``tests/test_nasnet.py``). Feature levels are timm's: the stem conv,
the ReLU-activated outputs of ``cell_stem_0``, ``cell_3``, ``cell_7``, and the final activation.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch.nn as nn

from ..errors import ConfigError
from ..layers.conv_norm_act import ConvNormAct
from ..layers.nas_ops import TF_BN_EPS, ActConvBn, BranchSeparables, CellSpec, SearchedCell
from ..layers.norm import BatchNorm2d
from ..layers.padding import pool2d_same
from ._base import default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_model
from .nasnet import CellNetwork

# The PNASNet-5 cell (see layers/nas_ops.CellSpec for the table's form); in a reduction cell the last branch's
# identity becomes a strided 1x1 unit ('conv1').
PNAS_CELL = (("sep5", "prev", "max", "prev"), ("sep7", "x", "max", "x"), ("sep5", "x", "sep3", "x"),
             ("sep3", "c2", "max", "x"), ("sep3", "prev", None, "x"))
PNAS_REDUCTION_CELL = PNAS_CELL[:4] + (("sep3", "prev", "conv1", "x"),)
PNAS_OUTPUT = ("c0", "c1", "c2", "c3", "c4")


def _operation(op: str, in_chs: int, out_chs: int, stride: int) -> nn.Module:
    if op.startswith("sep"):
        return BranchSeparables(in_chs, out_chs, int(op[3:]), stride, stem_cell=in_chs != out_chs)
    if op == "conv1":
        return ActConvBn(in_chs, out_chs, 1, stride)
    pool = pool2d_same("max", 3, stride)
    if in_chs == out_chs:
        return pool
    # the stem cell pools its wider raw input, then a 1x1 conv + BN brings it to the cell's width
    return nn.Sequential(OrderedDict([("max_pool", pool), ("conv", nn.Conv2d(in_chs, out_chs, 1, bias=False)),
                                      ("bn", BatchNorm2d(out_chs, eps=TF_BN_EPS))]))


def _cell(name: str, reduction: bool, prev: str, in_chs: int, prev_chs: int, width: int) -> CellSpec:
    return CellSpec(name, PNAS_REDUCTION_CELL if reduction else PNAS_CELL, PNAS_OUTPUT, reduction, prev, in_chs,
                    prev_chs, width)


def pnasnet_cells(stem: int = 96, width: int = 216, cells_per_stage: int = 4) -> tuple[CellSpec, ...]:
    """PNASNet-5's cell sequence: two stem cells (widths ``width/4``, ``width/2``, both reducing), then three stages
    of ``cells_per_stage`` cells at ``width * 2**s``, the first of stages 1 and 2 reducing. A cell right after a
    reducing one reads ``x_prev`` at twice its resolution (factorized reduction)."""
    cells = [_cell("cell_stem_0", True, "none", stem, stem, width // 4)]
    cells.append(_cell("cell_stem_1", True, "factorized", cells[0].out_chs, stem, width // 2))
    x_chs, prev_chs, n = cells[1].out_chs, cells[0].out_chs, 0
    for s in range(3):
        for i in range(cells_per_stage):
            reduction = s > 0 and i == 0
            prev = "factorized" if cells[-1].reduction else "conv"
            cells.append(_cell(f"cell_{n}", reduction, prev, x_chs, prev_chs, width * 2 ** s))
            x_chs, prev_chs, n = cells[-1].out_chs, x_chs, n + 1
    return tuple(cells)


class PNASNet5Large(CellNetwork):
    """PNASNet-5 large (4320 features): the stem conv, ``pnasnet_cells()``, a final ReLU, pool and classifier.

    Args:
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        output_stride: 32 only (the reductions are cells of the searched architecture).
        drop_path_rate: accepted for the common contract; not used (timm's port has no stochastic depth).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 output_stride: int = 32, drop_path_rate: float = 0.0):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"PNASNet supports output_stride=32 only, not {output_stride}")
        stem_size, width = 96, 216
        # 3x3/2 without padding (TF 'VALID'): 331 -> 165
        self.conv_0 = ConvNormAct(in_chans, stem_size, 3, stride=2, padding=0,
                                  norm_layer=partial(BatchNorm2d, eps=TF_BN_EPS), apply_act=False)
        self.cells = pnasnet_cells(stem_size, width)
        for spec in self.cells:
            self.add_module(spec.name, SearchedCell(spec, _operation))
        chs = {spec.name: spec.out_chs for spec in self.cells}
        self.feature_info = FeatureInfo([
            FeatureStage(stem_size, 2, "conv_0"), FeatureStage(chs["cell_stem_0"], 4, "cell_stem_1.conv_1x1.act"),
            FeatureStage(chs["cell_3"], 8, "cell_4.conv_1x1.act"),
            FeatureStage(chs["cell_7"], 16, "cell_8.conv_1x1.act"),
            FeatureStage(chs["cell_11"], 32, "act")])
        # inner levels are the ReLU'd cell outputs (timm hooks the next cell's input ReLU)
        self._level_cells = ("conv_0", "cell_stem_0", "cell_3", "cell_7", "cell_11")
        self._init_head(chs["cell_11"], num_classes, global_pool, drop_rate)
        self.default_cfg = default_cfg(input_size=(3, 331, 331), pool_size=(11, 11), crop_pct=0.911,
                                       interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                       first_conv="conv_0.conv", classifier="last_linear")


_entry = partial(PNASNet5Large)
_entry.model_cls = PNASNet5Large  # lets create_model list the accepted options on a bad keyword
register_model(_entry, name="pnasnet5large", family="pnasnet")
