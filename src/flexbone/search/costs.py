"""Costs of a sub-network, one interface: a named function of a :class:`~flexbone.elastic.space.SubnetConfig`.

::

    costs = build_costs(net, ["macs", "params", "latency"], latency_table=LatencyTable.load("lut.json", net))
    costs["macs"](cfg)                      # 2.17e8  (exact: count_macs of net.extract(cfg) at cfg.resolution)
    parse_budget("latency=20ms")            # ('latency', 20.0): the cost's name and the bound in its unit

* ``macs`` / ``params`` (:class:`MacsCost`, :class:`ParamsCost`): exact - equal to
  :func:`flexbone.bench.complexity.count_macs` / ``count_params`` of the extracted sub-network - and fast: each
  part of a sub-network (stem, block, head; :mod:`.parts`) is counted once per input size and the parts are
  summed, so thousands of configurations cost seconds, not a model build each.
* ``latency`` (ms, one batch): predicted by a latency table built on this device (:mod:`.latency`), or
  measured by extracting and timing the sub-network (:class:`~flexbone.search.latency.MeasuredLatency`).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

from ..elastic.space import SubnetConfig
from ..errors import ConfigError
from .encoding import GeneLayout
from .parts import SubnetParts

if TYPE_CHECKING:
    from .latency import LatencyTable

COST_NAMES = ("macs", "params", "latency")
UNITS = {"macs": "MACs", "params": "params", "latency": "ms"}


@runtime_checkable
class Cost(Protocol):
    """A named cost of a sub-network, in ``unit``."""

    name: str
    unit: str

    def __call__(self, cfg: SubnetConfig) -> float: ...


class GenePricer:
    """A part-sum cost of whole rows of genes at once (see :meth:`SubnetParts.slot_table`): ``fixed[r]`` plus each
    running block slot's entry at its kernel, expand and input size. The search prices a population with one
    numpy expression instead of one configuration at a time.

    ``size_of_gene[i]``: the table column of the space's i-th resolution, -1 where the table has none (such rows
    raise ConfigError with ``missing``, the message of the part-by-part cost).
    """

    def __init__(self, layout: GeneLayout, fixed: np.ndarray, blocks: np.ndarray, size_of_gene: Sequence[int],
                 missing: str = ""):
        self.layout, self.fixed, self.blocks = layout, fixed, blocks
        n = blocks.shape[0]
        self.slots = np.arange(n)
        self.k_cols, self.k_has = self._columns(layout, "kernel", n)
        self.e_cols, self.e_has = self._columns(layout, "expand", n)
        self.res_col = layout.column("resolution")
        self.size_of_gene = np.asarray(size_of_gene, dtype=np.int64)
        self.missing = missing

    @staticmethod
    def _columns(layout: GeneLayout, field: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each slot's gene column of ``field`` (0 where the space has none) and whether it has one."""
        cols = [layout.column(field, s) for s in range(n)]
        return (np.array([c or 0 for c in cols], dtype=np.int64), np.array([c is not None for c in cols]))

    def __call__(self, genes: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """The cost of each row of ``genes``; ``active``: ``layout.active(genes)`` when the caller has it."""
        r = self.size_of_gene[genes[:, self.res_col]] if self.res_col is not None else \
            np.zeros(len(genes), dtype=np.int64)
        if (r < 0).any():
            raise ConfigError(self.missing)
        k = np.where(self.k_has, genes[:, self.k_cols], 0)  # a slot without the field: its only entry
        e = np.where(self.e_has, genes[:, self.e_cols], 0)
        values = self.blocks[self.slots[None, :], k, e, r[:, None]]
        if active is None:
            active = self.layout.active(genes)
        return self.fixed[r] + np.where(active, values, 0.0).sum(axis=1)


class _PartsCost:
    """A sum over a sub-network's parts of a per-part table (shared splitter, so tables are built once)."""

    name = ""
    unit = ""

    def __init__(self, supernet, *, img_size: int | None = None, parts: SubnetParts | None = None):
        self.parts = parts or SubnetParts(supernet, img_size=img_size)
        self.space = self.parts.space

    def part_value(self, key: str, shape: tuple[int, int, int], macs: int) -> float:
        raise NotImplementedError

    def __call__(self, cfg: SubnetConfig) -> float:
        return float(sum(self.part_value(*part) for part in self.parts.chain(self.space.validate(cfg))))

    def for_genes(self, layout: GeneLayout) -> GenePricer | None:
        """This cost of rows of ``layout``'s genes at once, or None where the family has no slot table."""
        if layout.space != self.space:
            return None
        sizes = list(self.space.resolution) or [self.parts.img_size]
        table = self.parts.slot_table(self.part_value, sizes)
        return None if table is None else GenePricer(layout, *table, size_of_gene=range(len(sizes)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.space.name})"


class MacsCost(_PartsCost):
    """Multiply-accumulates of one image through ``cfg``'s sub-network at ``cfg.resolution`` (``img_size`` for a
    space without resolutions), as :func:`~flexbone.bench.complexity.count_macs` counts them."""

    name, unit = "macs", UNITS["macs"]

    def part_value(self, key: str, shape: tuple[int, int, int], macs: int) -> float:
        return macs


class ParamsCost(_PartsCost):
    """Parameters of ``cfg``'s extracted sub-network (classifier included)."""

    name, unit = "params", UNITS["params"]

    def part_value(self, key: str, shape: tuple[int, int, int], macs: int) -> float:
        return self.parts.params(key)


def build_costs(supernet, names: Sequence[str], *, latency_table: "LatencyTable | None" = None,
                img_size: int | None = None) -> dict[str, Cost]:
    """The costs ``names`` of ``supernet``'s sub-networks, by name.

    ``latency`` uses ``latency_table`` when given (checked against the supernet's space), otherwise it extracts
    and times every configuration on this machine (eager PyTorch, batch 1, the current torch threads).
    ``img_size``: the input size of a space without resolutions (OFA-ResNet50; default its ``default_cfg``).
    """
    unknown = [n for n in names if n not in COST_NAMES]
    if unknown:
        raise ConfigError(f"unknown cost {unknown[0]!r}; the costs are: {', '.join(COST_NAMES)}")
    parts = SubnetParts(supernet, img_size=img_size) if {"macs", "params"} & set(names) else None
    out: dict[str, Cost] = {}
    for name in names:
        if name == "macs":
            out[name] = MacsCost(supernet, parts=parts)
        elif name == "params":
            out[name] = ParamsCost(supernet, parts=parts)
        else:
            from .latency import MeasuredLatency, TableLatency

            if latency_table is not None:
                latency_table.check_space(supernet.space)
                out[name] = TableLatency(latency_table)
            else:
                out[name] = MeasuredLatency(supernet, img_size=img_size)
    return out


# ------------------------------------------------------------------------------------------- budgets
_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_TIME = {"": 1.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}  # -> milliseconds
_BUDGET = re.compile(r"^\s*([A-Za-z_]+)\s*(<=|=)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ]*)\s*$")


def parse_budget(text: str) -> tuple[str, float]:
    """``'macs=300M'`` -> ``('macs', 3e8)``; ``'params=3M'``; ``'latency=20ms'`` -> ``('latency', 20.0)``.

    MACs and parameters take the suffixes K, M, G (or none); latency takes ms, us or s (none = ms) and is
    returned in milliseconds. ``<=`` may stand for ``=``. Anything else raises ConfigError with an example.
    """
    m = _BUDGET.match(text)
    if not m:
        raise ConfigError(f"budget {text!r} is not METRIC=VALUE, e.g. macs=300M, params=3M or latency=20ms "
                          f"(metrics: {', '.join(COST_NAMES)})")
    name, _, number, suffix = m.groups()
    name = name.lower()
    if name not in COST_NAMES:
        raise ConfigError(f"budget {text!r}: unknown metric {name!r}; the metrics are: {', '.join(COST_NAMES)}")
    units = _TIME if name == "latency" else _SCALE
    if suffix not in units:
        allowed = "ms, us or s" if name == "latency" else "K, M or G"
        raise ConfigError(f"budget {text!r}: unknown unit {suffix!r} for {name} (use {allowed}, e.g. "
                          f"{'latency=20ms' if name == 'latency' else name + '=300M'})")
    value = float(number) * units[suffix]
    if value <= 0:
        raise ConfigError(f"budget {text!r}: the bound must be positive")
    return name, value
