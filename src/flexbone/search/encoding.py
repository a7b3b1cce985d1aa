"""Sub-networks as genes and as once-for-all feature vectors, derived from a :class:`SearchSpace` alone.

A configuration is a row of integer *genes*, one per slot of the space, each the index of its value among
that slot's choices. The genes are laid out in the order of the once-for-all accuracy predictor's features
(``ofa/nas/accuracy_predictor/arch_encoder.py``): resolution, the depth slots that switch no blocks (OFA-ResNet50's
stem), width slots, then per block slot its kernel, then per block slot its expand ratio. The features are the
one-hot of every gene, except that a block slot which depth switches off is all zeros: that is how the
reference encodes depth (OFA-MobileNetV3 and OFA-ResNet50 features equal the reference's, tested).

Only the space is read, so any :class:`SearchSpace` works, e.g. a discrete space of stitched networks
(``SearchSpace(depth=(tuple(range(71)),), name="snnet_deit")``: one gene, a one-hot of the configuration id).

Rows of genes let the search mutate, cross and encode a whole population with numpy at once::

    layout = GeneLayout(space)
    genes = layout.to_genes([cfg1, cfg2])        # (2, layout.num_genes) int64
    x = layout.encode(genes)                     # (2, layout.num_features) float32
    layout.to_config(genes[0]) == cfg1            # True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..elastic.space import SearchSpace, SubnetConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class Gene:
    """One slot of the space: ``field`` (``resolution``, ``depth``, ``width``, ``kernel``, ``expand``), its slot
    index (0 for the resolution), its choices, and, for a block slot, the first feature of its one-hot."""

    field: str
    slot: int
    choices: tuple
    offset: int


class GeneLayout:
    """The genes and features of ``space`` (see the module doc)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        genes: list[Gene] = []
        offset = 0

        def add(field: str, slot: int, choices: Sequence) -> None:
            nonlocal offset
            genes.append(Gene(field, slot, tuple(choices), offset))
            offset += len(choices)

        if space.resolution:
            add("resolution", 0, space.resolution)
        for i, (choices, unit) in enumerate(zip(space.depth, space.units)):
            if unit is None:  # switches something other than block slots: its own one-hot
                add("depth", i, choices)
        for i, choices in enumerate(space.width):
            add("width", i, choices)
        for field in ("kernel", "expand"):
            for i, choices in enumerate(getattr(space, field)):
                add(field, i, choices)
        # depth slots with a unit are genes too (they are mutated), but their one-hot is implied by the zeros
        # of the block slots they switch off, as in the reference; they get no features of their own
        self._unit_depths = [i for i, u in enumerate(space.units) if u is not None]
        for i in self._unit_depths:
            genes.append(Gene("depth", i, space.depth[i], -1))
        self.genes: tuple[Gene, ...] = tuple(genes)
        self.num_genes = len(genes)
        self.num_features = offset
        self.num_choices = np.array([len(g.choices) for g in genes], dtype=np.int64)
        self._offsets = np.array([g.offset for g in genes], dtype=np.int64)
        self._encoded = np.array([g.offset >= 0 for g in genes])
        self._index = {(g.field, g.slot): j for j, g in enumerate(genes)}
        self._lookup = [{v: k for k, v in enumerate(g.choices)} for g in genes]
        # block slot -> the columns of its kernel / expand genes, and the depth gene and threshold that switch it
        n_blocks = space.num_block_slots
        self._block_genes = [[self._index[(f, b)] for f in ("kernel", "expand") if (f, b) in self._index]
                             for b in range(n_blocks)]
        self._switch = []  # (block columns, depth gene column, depth values, base + position in unit)
        for i in self._unit_depths:
            unit, choices = space.units[i], space.depth[i]
            blocks = list(range(unit.start, unit.start + unit.base + max(choices)))
            pos = np.array([b - unit.start - unit.base for b in blocks])  # block runs if depth > pos
            self._switch.append((blocks, self._index[("depth", i)], np.array(choices), pos))
        # the same, flat: every switched block slot, its depth gene column, the unit's depth values by gene index
        # (padded) and its position, so that active() is one gather and one comparison
        switched = [(b, col, p) for blocks, col, _, pos in self._switch for b, p in zip(blocks, pos)]
        widest = max((len(v) for _, _, v, _ in self._switch), default=0)
        self._sw_blocks = np.array([b for b, _, _ in switched], dtype=np.int64)
        self._sw_cols = np.array([c for _, c, _ in switched], dtype=np.int64)
        self._sw_pos = np.array([p for _, _, p in switched], dtype=np.int64)
        self._sw_values = np.zeros((len(switched), widest), dtype=np.int64)
        for k, (b, col, _) in enumerate(switched):
            values = next(v for blocks, c, v, _ in self._switch if c == col and b in blocks)
            self._sw_values[k, :len(values)] = values
        self._block_cols = np.array([c for cols in self._block_genes for c in cols], dtype=np.int64)
        self._block_of_col = np.array([b for b, cols in enumerate(self._block_genes) for _ in cols], dtype=np.int64)
        encoded = np.flatnonzero(self._encoded).tolist()
        self._block_pos = np.array([encoded.index(c) for c in self._block_cols], dtype=np.int64)
        self._field_tables = {}  # field -> (gene columns of its slots, (slots, choices) table of values)
        for f in ("depth", "width", "kernel", "expand"):
            slots = getattr(space, f)
            table = np.empty((len(slots), max((len(c) for c in slots), default=0)), dtype=object)
            for i, choices in enumerate(slots):
                table[i, :len(choices)] = choices
            self._field_tables[f] = (np.array([self._index[(f, i)] for i in range(len(slots))], dtype=np.int64), table)
        self._res_col = self._index.get(("resolution", 0))

    def column(self, field: str, slot: int = 0) -> int | None:
        """The gene column of ``field``'s slot (``("resolution", 0)``, ``("kernel", 3)`` ...); None if the space
        has no such slot."""
        return self._index.get((field, slot))

    # ------------------------------------------------------------------------------------- genes
    def to_genes(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        """``(len(cfgs), num_genes)`` indices (block slots that do not run keep their values; see
        :meth:`canonical`). A value outside the space raises ``ConfigError``."""
        out = np.empty((len(cfgs), self.num_genes), dtype=np.int64)
        for r, cfg in enumerate(cfgs):
            for j, g in enumerate(self.genes):
                value = cfg.resolution if g.field == "resolution" else getattr(cfg, g.field)[g.slot] \
                    if g.slot < len(getattr(cfg, g.field)) else None
                try:
                    out[r, j] = self._lookup[j][value]
                except (KeyError, TypeError):
                    self.space.validate(cfg)  # names the field, the slot and the allowed values
                    raise ConfigError(f"{cfg.to_json()} is not in {self.space.name}") from None
        return out

    def to_config(self, genes: np.ndarray) -> SubnetConfig:
        """The :class:`SubnetConfig` of one row of genes."""
        return self.to_configs(np.asarray(genes)[None])[0]

    def to_configs(self, genes: np.ndarray) -> list[SubnetConfig]:
        """One :class:`SubnetConfig` per row of genes."""
        columns = {f: table[np.arange(len(cols))[None, :], genes[:, cols]].tolist()
                   for f, (cols, table) in self._field_tables.items()}
        res = [None] * len(genes) if self._res_col is None else \
            np.array(self.genes[self._res_col].choices, dtype=object)[genes[:, self._res_col]].tolist()
        out = []
        for r in range(len(genes)):
            # the search builds hundreds of thousands of these: skip SubnetConfig's checks, every value is a
            # choice of the space (equal and hashable as any other)
            cfg = object.__new__(SubnetConfig)
            for f, values in columns.items():
                object.__setattr__(cfg, f, tuple(values[r]))
            object.__setattr__(cfg, "resolution", res[r])
            out.append(cfg)
        return out

    def active(self, genes: np.ndarray) -> np.ndarray:
        """``(N, num_block_slots)`` bool: does each block slot run?"""
        active = np.ones((genes.shape[0], self.space.num_block_slots), dtype=bool)
        if len(self._sw_blocks):
            k = np.arange(len(self._sw_blocks))
            depth = self._sw_values[k[None, :], genes[:, self._sw_cols]]  # (N, switched slots)
            active[:, self._sw_blocks] = depth > self._sw_pos[None, :]
        return active

    def canonical(self, genes: np.ndarray) -> np.ndarray:
        """Block slots that do not run set to their largest choice (as :meth:`SearchSpace.canonical`), in place."""
        if self._switch and len(self._block_cols):
            off = ~self.active(genes)[:, self._block_of_col]  # (N, block gene columns)
            cols = self._block_cols
            genes[:, cols] = np.where(off, self.num_choices[cols] - 1, genes[:, cols])
        return genes

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows drawn uniformly per gene (the reference's sampling)."""
        return (rng.random((n, self.num_genes)) * self.num_choices).astype(np.int64)

    # ---------------------------------------------------------------------------------- features
    def encode(self, genes: np.ndarray) -> np.ndarray:
        """``(N, num_features)`` float32 one-hots; block slots that do not run are zeros."""
        genes = np.asarray(genes)
        n = genes.shape[0]
        x = np.zeros((n, self.num_features), dtype=np.float32)
        cols = np.flatnonzero(self._encoded)
        hot = self._offsets[cols][None, :] + genes[:, cols]  # (N, encoded genes)
        keep = np.ones_like(hot, dtype=bool)
        if self._switch and len(self._block_cols):
            keep[:, self._block_pos] = self.active(genes)[:, self._block_of_col]
        rows = np.broadcast_to(np.arange(n)[:, None], hot.shape)
        x[rows[keep], hot[keep]] = 1.0
        return x

    def encode_configs(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        """:meth:`encode` of configurations."""
        return self.encode(self.to_genes(cfgs))
