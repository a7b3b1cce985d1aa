"""Which stitches an SN-Net offers: the configuration generators of the reference code (Pan et al. 2023).

Two rules, both reproduced from the official SN-Net code (ziplab/SN-Net; facts in the SN-Net reference notes):

* **plain ViTs** (one stage of equal depth, DeiT-Ti/S/B): a window of ``kernel`` blocks slides over the
  block ids with ``stride``; every ``(j, l)`` pair inside a window is a stitch "front block j -> end block l",
  and each window that adds new pairs gets its own stitching layer (``paired_stitching``). Anchor pairs
  are all combinations of the anchors; ``nearest`` keeps neighbours only (Ti->S, S->B, no Ti->B, no
  Ti->S->B). Depth 12, window 2, stride 1, nearest: 3 anchors + 2 x 34 stitches = 71 configurations.
* **hierarchical models** (ResNet, Swin): stitching only inside the stages ``stages`` (the reference: 1
  and 2, i.e. ``layer2`` / ``layer3``), only forward (``j < l``) and never at block 0 (so the strided
  first block is never entered mid-way). Equal stage depths use the window rule with those filters;
  unequal depths map end block ``e`` to front block ``floor(e * d_front / d_end)`` (nearest
  interpolation) and stitch ``(m(e), e)`` where ``m(e) < e``. ResNet-18 + ResNet-50: 2 + 3 + 5 = 10.

Configuration ids are dense, anchors first, in the reference's order.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class StitchConfig:
    """One executable path through the anchors.

    ``anchors``: the anchors visited, front first (one entry: that anchor alone). ``stage``: the stage in
    which the stitches sit (``None`` for an anchor). ``positions``: per stitch, ``(j, l)``: the output of
    block ``j`` of one anchor feeds block ``l`` of the next (block ids within ``stage``). ``layers``: per
    stitch, the index of the stitching layer used, among the layers of that anchor pair and stage.
    """

    anchors: tuple[int, ...]
    stage: int | None = None
    positions: tuple[tuple[int, int], ...] = ()
    layers: tuple[int, ...] = ()

    @property
    def is_anchor(self) -> bool:
        return len(self.anchors) == 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["anchors"], d["positions"], d["layers"] = list(self.anchors), [list(p) for p in self.positions], list(self.layers)
        return d

    def describe(self) -> str:
        if self.is_anchor:
            return f"anchor {self.anchors[0]}"
        hops = ", ".join(f"{a}[..{j}] -> {b}[{l}..] (layer {k})" for (a, b), (j, l), k in
                         zip(zip(self.anchors, self.anchors[1:]), self.positions, self.layers))
        return f"stage {self.stage}: {hops}"


# ------------------------------------------------------------------------------- pair generators
def paired_stitching(depth: int, kernel: int = 2, stride: int = 1, forward_only: bool = False
                     ) -> tuple[list[tuple[int, int]], list[int], int]:
    """Stitch positions of two anchors of equal depth: ``(pairs, layer id per pair, number of layers)``.

    A window of ``kernel`` block ids slides by ``stride``; each new ``(j, l)`` in the window (row-major) is a
    stitch, and a window that adds any gets a new stitching layer. ``forward_only`` is the hierarchical rule's
    filter (skip ``l == 0`` and ``j >= l``).
    """
    pairs: list[tuple[int, int]] = []
    layer_ids: list[int] = []
    layer = -1
    for start in range(0, depth, stride):
        window = range(start, min(start + kernel, depth))
        new = False
        for j in window:
            for l in window:
                if (j, l) in pairs or (forward_only and (l == 0 or j >= l)):
                    continue
                pairs.append((j, l))
                layer_ids.append(layer + 1)
                new = True
        if new:
            layer += 1
    return pairs, layer_ids, layer + 1


def unpaired_stitching(front_depth: int, end_depth: int) -> tuple[list[tuple[int, int]], list[int], int]:
    """Stitch positions of a shallower front stage into a deeper end stage (hierarchical rule).

    End block ``e`` maps to front block ``m(e) = floor(e * front_depth / end_depth)`` (nearest
    interpolation of the front ids to ``end_depth`` entries); stitches are ``(m(e), e)`` with ``m(e) < e``,
    grouped by front block. There are ``front_depth`` layers, and -- as the reference pairs its list of
    stitches with the per-end-block mapping -- the t-th stitch uses layer ``m(t)``.
    """
    mapping = [e * front_depth // end_depth for e in range(end_depth)]
    pairs = [(f, e) for f in range(front_depth) for e, m in enumerate(mapping) if m == f and f < e and e != 0]
    return pairs, mapping[:len(pairs)], front_depth


# ------------------------------------------------------------------------------- the two rules
def vit_stitch_configs(depths: Sequence[int], kernel: int = 2, stride: int = 1, nearest: bool = True
                       ) -> tuple[list[StitchConfig], int]:
    """Configurations of plain-ViT anchors (one stage of ``depths[i]`` blocks each, all equal).

    Returns ``(configs, stitching layers per anchor pair)``. Without ``nearest``, every anchor pair is
    stitched and three anchors may be chained (front -> middle -> end, the middle's run ``l1..j2`` with
    ``j2 >= l1``); the reference supports chains of at most three anchors.
    """
    n = len(depths)
    if n < 2:
        raise ConfigError(f"stitching needs at least 2 anchors, got {n}")
    if len(set(depths)) != 1:
        raise ConfigError(f"the ViT stitching rule needs anchors of equal depth, got depths {tuple(depths)}")
    if kernel < 1 or stride < 1:
        raise ConfigError(f"stitch window and stride must be >= 1, got kernel={kernel}, stride={stride}")
    if not nearest and n > 3:
        raise ConfigError(f"nearest=False chains at most 3 anchors (as the reference), got {n}")
    pairs, layer_ids, num_layers = paired_stitching(depths[0], kernel, stride)
    combos = [c for size in range(1, n + 1) for c in itertools.combinations(range(n), size)]
    if nearest:  # neighbours only: drop pairs that skip an anchor and all chains
        combos = [c for c in combos if len(c) == 1 or (len(c) == 2 and c[1] == c[0] + 1)]
    configs = []
    for combo in combos:
        if len(combo) == 1:
            configs.append(StitchConfig(combo))
        elif len(combo) == 2:
            configs += [StitchConfig(combo, 0, (p,), (k,)) for p, k in zip(pairs, layer_ids)]
        else:
            for p1, k1 in zip(pairs, layer_ids):
                configs += [StitchConfig(combo, 0, (p1, p2), (k1, k2))
                            for p2, k2 in zip(pairs, layer_ids) if p2[0] >= p1[1]]
    return configs, num_layers


def hierarchical_stitch_configs(stage_depths: Sequence[Sequence[int]], stages: Sequence[int] = (1, 2)
                                ) -> tuple[list[StitchConfig], dict[tuple[int, int, int], int]]:
    """Configurations of hierarchical anchors (``stage_depths[anchor][stage]``), stitching neighbours only.

    Returns ``(configs, {(stage, front, end): number of stitching layers})``. Anchors must be ordered so
    that each stitched stage is at least as deep in the next anchor (the reference sorts the depths and
    would otherwise pair the wrong anchors).
    """
    n = len(stage_depths)
    if n < 2:
        raise ConfigError(f"stitching needs at least 2 anchors, got {n}")
    configs = [StitchConfig((a,)) for a in range(n)]
    num_layers: dict[tuple[int, int, int], int] = {}
    for s in stages:
        if any(not 0 <= s < len(d) for d in stage_depths):
            raise ConfigError(f"stitching stage {s} does not exist in every anchor (stage counts "
                              f"{[len(d) for d in stage_depths]})")
        depths = [d[s] for d in stage_depths]
        if depths != sorted(depths):
            raise ConfigError(f"stage {s}: anchors must be ordered by stage depth (small to large), got {depths}")
        for front in range(n - 1):
            end = front + 1
            d_f, d_e = depths[front], depths[end]
            if d_f == d_e:
                pairs, layer_ids, count = paired_stitching(d_f, 2, 1, forward_only=True)
            else:
                pairs, layer_ids, count = unpaired_stitching(d_f, d_e)
            configs += [StitchConfig((front, end), s, (p,), (k,)) for p, k in zip(pairs, layer_ids)]
            num_layers[(s, front, end)] = count
    return configs, num_layers
