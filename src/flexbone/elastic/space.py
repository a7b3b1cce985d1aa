"""Search spaces of elastic supernets, and the configurations of their sub-networks.

A :class:`SubnetConfig` names one sub-network: per *depth slot* (a stage or unit) how many blocks run,
per *block slot* its expand ratio and kernel size, per *width slot* its width multiplier, and the input
resolution. A :class:`SearchSpace` lists the allowed values of every slot. Fields that a family does
not vary stay empty (``()`` / ``None``). Both round-trip through JSON::

    space = create_model("ofa_resnet50").space
    cfg = space.sample(random.Random(0))
    SubnetConfig.from_json(cfg.to_json()) == cfg            # True
    space.validate(SubnetConfig.from_dict({...}))           # names the bad field and its allowed values

Block slots and depth. Each depth slot may own a run of block slots (a :class:`DepthUnit`): with depth
``d`` the first ``base + d`` of them run; the values of the others are ignored. ``base`` is 0 where depth
counts blocks (OFA-MobileNetV3: 2, 3 or 4 blocks per unit) and the fixed minimum where depth counts
extra blocks (OFA-ResNet50: base (2, 2, 4, 2) plus 0, 1 or 2). A depth slot without a unit switches
something else (OFA-ResNet50's first slot: its stem's residual conv).
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError

BLOCK_FIELDS = ("expand", "kernel")  # per block slot, switched off by depth
SLOT_FIELDS = ("depth",) + BLOCK_FIELDS + ("width",)
ALL_FIELDS = SLOT_FIELDS + ("resolution",)


def _num(v: Any) -> Any:
    """JSON numbers as Python numbers: 2.0 stays 2.0 (a width), but a bool is refused."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"expected a number, got {v!r}")
    return v


def _fmt(values: Sequence[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


# ------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SubnetConfig:
    """One sub-network of a supernet. Immutable and hashable; lists given to it become tuples.

    Attributes:
        depth: per depth slot, the depth choice (see the supernet's space for its meaning).
        expand: per block slot, the expand ratio (ignored for blocks that depth switches off).
        kernel: per block slot, the depthwise kernel size.
        width: per width slot, the width multiplier.
        resolution: input image size (``None`` where the space does not vary it).
    """

    depth: tuple[int, ...] = ()
    expand: tuple[float, ...] = ()
    kernel: tuple[int, ...] = ()
    width: tuple[float, ...] = ()
    resolution: int | None = None

    def __post_init__(self) -> None:
        for name in SLOT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ConfigError(f"SubnetConfig.{name} must be a list of numbers, got {value!r}")
            try:
                object.__setattr__(self, name, tuple(_num(v) for v in value))
            except ConfigError as e:
                raise ConfigError(f"SubnetConfig.{name}: {e}") from None
        if self.resolution is not None and (isinstance(self.resolution, bool) or not isinstance(self.resolution, int)):
            raise ConfigError(f"SubnetConfig.resolution must be an integer or null, got {self.resolution!r}")

    # JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain lists, the fields this configuration sets (empty fields are left out)."""
        d = {k: list(v) for k, v in asdict(self).items() if k in SLOT_FIELDS and v}
        if self.resolution is not None:
            d["resolution"] = self.resolution
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SubnetConfig":
        unknown = sorted(set(d) - set(ALL_FIELDS))
        if unknown:
            raise ConfigError(f"unknown SubnetConfig field(s) {', '.join(map(repr, unknown))}; "
                              f"the fields are: {', '.join(ALL_FIELDS)}")
        return cls(**dict(d))

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The configuration as JSON text; also written to ``path`` if given."""
        text = json.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "SubnetConfig":
        """From JSON text or a ``.json`` file (a saved sub-network's config file, with a ``subnet`` key, works too)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            if not path.is_file():
                raise ConfigError(f"sub-network config not found: {path}")
            text = path.read_text()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"sub-network config is not valid JSON ({e})") from None
        if isinstance(d, dict) and isinstance(d.get("subnet"), dict):
            d = d["subnet"]
        if not isinstance(d, dict):
            raise ConfigError("a sub-network config is a JSON object such as {\"depth\": [...], \"expand\": [...]}")
        return cls.from_dict(d)

    @classmethod
    def coerce(cls, cfg: "SubnetConfig | Mapping[str, Any] | str | os.PathLike") -> "SubnetConfig":
        """Accept a config, a dict, JSON text or a JSON file."""
        if isinstance(cfg, SubnetConfig):
            return cfg
        if isinstance(cfg, Mapping):
            return cls.from_dict(cfg)
        return cls.from_json(cfg)

    def replace(self, **changes: Any) -> "SubnetConfig":
        return replace(self, **changes)


# -------------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class DepthUnit:
    """The block slots ``start .. start + base + max(depth) - 1`` of one depth slot; depth ``d`` runs ``base + d``."""

    start: int
    base: int = 0


def _choices(values: Sequence[Any]) -> tuple:
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class SearchSpace:
    """The allowed values of each slot of a supernet's sub-networks.

    Attributes:
        depth: per depth slot, its choices. ``units`` (aligned with ``depth``) says which block slots
            each one switches (``None`` = none).
        expand, kernel: per block slot, its choices (empty = not elastic).
        width: per width slot, its choices (width multipliers).
        resolution: input sizes (empty = not searched).
        name: shown in error messages (the supernet's model name).
    """

    depth: tuple[tuple[int, ...], ...] = ()
    expand: tuple[tuple[float, ...], ...] = ()
    kernel: tuple[tuple[int, ...], ...] = ()
    width: tuple[tuple[float, ...], ...] = ()
    resolution: tuple[int, ...] = ()
    units: tuple[DepthUnit | None, ...] = ()
    name: str = "search space"

    def __post_init__(self) -> None:
        for f in SLOT_FIELDS:
            slots = tuple(_choices(c) for c in getattr(self, f))
            if any(not c for c in slots):
                raise ConfigError(f"{self.name}: every {f} slot needs at least one choice")
            object.__setattr__(self, f, slots)
        object.__setattr__(self, "resolution", _choices(self.resolution))
        units = tuple(self.units) if self.units else (None,) * len(self.depth)
        if len(units) != len(self.depth):
            raise ConfigError(f"{self.name}: {len(units)} depth units for {len(self.depth)} depth slots")
        object.__setattr__(self, "units", units)
        n_blocks = self.num_block_slots
        lengths = {len(getattr(self, f)) for f in BLOCK_FIELDS if getattr(self, f)}
        if len(lengths) > 1:
            raise ConfigError(f"{self.name}: expand and kernel need the same number of block slots")
        for i, (choices, unit) in enumerate(zip(self.depth, units)):
            if unit is not None and (unit.start + unit.base + max(choices) > n_blocks or unit.base + min(choices) < 0):
                raise ConfigError(f"{self.name}: depth slot {i} reaches past the {n_blocks} block slots")

    # structure ----------------------------------------------------------------------------------
    @property
    def num_block_slots(self) -> int:
        return max((len(getattr(self, f)) for f in BLOCK_FIELDS), default=0)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this space varies."""
        return tuple(f for f in ALL_FIELDS if getattr(self, f))

    def _block_choices(self, slot: int) -> int:
        return math.prod(len(getattr(self, f)[slot]) for f in BLOCK_FIELDS if getattr(self, f))

    def active_blocks(self, cfg: SubnetConfig) -> tuple[bool, ...]:
        """Per block slot: does it run in ``cfg``?"""
        active = [True] * self.num_block_slots
        for d, unit, choices in zip(cfg.depth, self.units, self.depth):
            if unit is not None:
                for j in range(unit.start + unit.base + d, unit.start + unit.base + max(choices)):
                    active[j] = False
        return tuple(active)

    # counting and sampling -----------------------------------------------------------------------
    def count(self) -> int:
        """The number of distinct configurations, in closed form.

        A depth slot with a unit contributes ``sum over its depths d of prod over the base + d running
        block slots of (their expand choices x kernel choices)``: block slots that do not run are not
        counted. Other slots contribute their number of choices. (Two configurations can still share
        channel counts after rounding to multiples of 8; they count as two, as in the reference.)
        """
        total = 1
        covered: set[int] = set()
        for choices, unit in zip(self.depth, self.units):
            if unit is None:
                total *= len(choices)
                continue
            start = unit.start + unit.base
            total *= sum(math.prod(self._block_choices(j) for j in range(unit.start, start + d)) for d in choices)
            covered.update(range(unit.start, start + max(choices)))
        for j in range(self.num_block_slots):
            if j not in covered:
                total *= self._block_choices(j)
        for choices in self.width:
            total *= len(choices)
        return total * max(len(self.resolution), 1)

    def sample(self, rng: random.Random | int | None = None) -> SubnetConfig:
        """A configuration with every slot drawn uniformly from its choices (the reference's sampling).

        ``rng`` is a ``random.Random`` (or a seed): with the same seed, every DDP rank draws the same.
        """
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        pick = {f: tuple(rng.choice(c) for c in getattr(self, f)) for f in SLOT_FIELDS}
        return SubnetConfig(**pick, resolution=rng.choice(self.resolution) if self.resolution else None)

    def _extreme(self, which: int) -> SubnetConfig:
        pick = {f: tuple(c[which] for c in getattr(self, f)) for f in SLOT_FIELDS}
        return SubnetConfig(**pick, resolution=self.resolution[which] if self.resolution else None)

    def min(self) -> SubnetConfig:
        """The smallest sub-network: every slot at its smallest choice."""
        return self._extreme(0)

    def max(self) -> SubnetConfig:
        """The largest sub-network: every slot at its largest choice."""
        return self._extreme(-1)

    def canonical(self, cfg: SubnetConfig) -> SubnetConfig:
        """``cfg`` with the block slots that do not run set to their largest choice (equal networks, equal configs)."""
        active = self.active_blocks(cfg)
        changes = {}
        for f in BLOCK_FIELDS:
            if getattr(self, f):
                changes[f] = tuple(v if a else c[-1] for v, a, c in zip(getattr(cfg, f), active, getattr(self, f)))
        return cfg.replace(**changes)

    # checking -----------------------------------------------------------------------------------
    def validate(self, cfg: SubnetConfig | Mapping[str, Any]) -> SubnetConfig:
        """Return ``cfg`` as a :class:`SubnetConfig` if it belongs to this space; otherwise raise
        :class:`~flexbone.errors.ConfigError` naming the field, the slot and the allowed values."""
        cfg = SubnetConfig.coerce(cfg)
        for f in SLOT_FIELDS:
            values, slots = getattr(cfg, f), getattr(self, f)
            if not slots:
                if values:
                    raise ConfigError(f"SubnetConfig.{f} is set, but {self.name} has no elastic {f} "
                                      f"(it varies: {', '.join(self.fields)})")
                continue
            if len(values) != len(slots):
                allowed = _fmt(slots[0]) if all(s == slots[0] for s in slots) else "per slot, see the space"
                raise ConfigError(f"SubnetConfig.{f} has {len(values)} values; {self.name} needs {len(slots)} "
                                  f"(allowed: {allowed})")
            for i, (v, choices) in enumerate(zip(values, slots)):
                if v not in choices:
                    raise ConfigError(f"SubnetConfig.{f}[{i}] = {v!r} is not allowed in {self.name}; "
                                      f"allowed: {_fmt(choices)}")
        if self.resolution:
            if cfg.resolution not in self.resolution:
                raise ConfigError(f"SubnetConfig.resolution = {cfg.resolution!r} is not allowed in {self.name}; "
                                  f"allowed: {_fmt(self.resolution)}")
        elif cfg.resolution is not None:
            raise ConfigError(f"SubnetConfig.resolution is set, but {self.name} does not vary the resolution")
        return cfg

    def __contains__(self, cfg: object) -> bool:
        try:
            self.validate(cfg)  # type: ignore[arg-type]
        except ConfigError:
            return False
        return True

    def restrict(self, **allowed: Sequence[Any]) -> "SearchSpace":
        """A sub-space (a training phase's constraint), e.g. ``space.restrict(expand=(0.25, 0.35))``.

        Each keyword is a field and the values it may take: one list for all slots (intersected with each
        slot's choices), or one list per slot. A value that no slot allows, or a slot left without any
        choice, raises ``ConfigError``.
        """
        changes: dict[str, Any] = {}
        for f, values in allowed.items():
            if f not in ALL_FIELDS:
                raise ConfigError(f"unknown field {f!r}; the fields are: {', '.join(ALL_FIELDS)}")
            if f == "resolution":
                keep = tuple(r for r in self.resolution if r in set(values))
                if not keep:
                    raise ConfigError(f"{self.name}: resolution {tuple(values)} leaves no choice; "
                                      f"allowed: {_fmt(self.resolution)}")
                changes[f] = keep
                continue
            slots = getattr(self, f)
            if not slots:
                raise ConfigError(f"{self.name} has no elastic {f} (it varies: {', '.join(self.fields)})")
            values = list(values)
            per_slot = bool(values) and all(isinstance(v, (list, tuple)) for v in values)
            if per_slot and len(values) != len(slots):
                raise ConfigError(f"{f}: {len(values)} per-slot lists for {len(slots)} slots")
            wanted = [set(v) for v in values] if per_slot else [set(values)] * len(slots)
            everything = set().union(*slots)
            stray = sorted(set().union(*wanted) - everything)
            if stray:
                raise ConfigError(f"{f} = {_fmt(stray)} is not in {self.name}; allowed: {_fmt(sorted(everything))}")
            new = []
            for i, (choices, want) in enumerate(zip(slots, wanted)):
                keep = tuple(c for c in choices if c in want)
                if not keep:
                    raise ConfigError(f"{f}[{i}]: the constraint {_fmt(sorted(want))} leaves no choice; "
                                      f"allowed: {_fmt(choices)}")
                new.append(keep)
            changes[f] = tuple(new)
        return replace(self, **changes)

    # JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        for f in SLOT_FIELDS:
            if getattr(self, f):
                d[f] = [list(c) for c in getattr(self, f)]
        if self.resolution:
            d["resolution"] = list(self.resolution)
        d["units"] = [None if u is None else asdict(u) for u in self.units]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchSpace":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown SearchSpace field(s) {', '.join(map(repr, unknown))}; "
                              f"the fields are: {', '.join(sorted(known))}")
        kw = dict(d)
        kw["units"] = tuple(None if u is None else DepthUnit(**u) for u in kw.get("units", ()))
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        return cls.from_dict(json.loads(text))


def check_supernet_options(name: str, space_kwargs: Mapping[str, Any], spec_fields: Iterable[str],
                           output_stride: int) -> None:
    """Refuse options a supernet does not have (as a TypeError, like any constructor) and dilation."""
    unknown = sorted(set(space_kwargs) - set(spec_fields))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    if output_stride != 32:
        raise ConfigError(f"{name} supports output_stride=32 only (extracted sub-networks support 8 and 16)")
