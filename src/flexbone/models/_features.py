"""Feature pyramids: which stage outputs a model exposes, and how ``features_only`` selects them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class FeatureStage:
    """One level of a feature pyramid."""

    num_chs: int  # channels of the map
    reduction: int  # input size / map size (the network stride at this point)
    module: str  # dotted name of the module whose output this is

    def __getitem__(self, key: str):  # timm-style dict access: info['num_chs']
        return getattr(self, key)


class FeatureInfo:
    """The pyramid of a model (``stages``) and the levels that ``features_only`` returns (``out_indices``)."""

    def __init__(self, stages: Sequence[FeatureStage], out_indices: Sequence[int] | None = None):
        self.stages = list(stages)
        self.out_indices = resolve_out_indices(out_indices, len(self.stages))

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, i: int) -> FeatureStage:
        return self.stages[i]

    def __iter__(self) -> Iterator[FeatureStage]:
        return iter(self.stages)

    def __repr__(self) -> str:
        levels = ", ".join(f"{s.module}: {s.num_chs}ch/{s.reduction}" for s in self.stages)
        return f"FeatureInfo([{levels}], out_indices={self.out_indices})"

    def _selected(self) -> list[FeatureStage]:
        return [self.stages[i] for i in self.out_indices]

    def channels(self) -> list[int]:
        """Channels of the selected levels (all levels unless ``out_indices`` was given)."""
        return [s.num_chs for s in self._selected()]

    def reduction(self) -> list[int]:
        return [s.reduction for s in self._selected()]

    def module_name(self) -> list[str]:
        return [s.module for s in self._selected()]

    def with_out_indices(self, out_indices: Sequence[int] | None) -> "FeatureInfo":
        return FeatureInfo(self.stages, out_indices)


def resolve_out_indices(out_indices: Sequence[int] | int | None, num_levels: int) -> tuple[int, ...]:
    """Normalise ``out_indices`` (negative allowed, ``None`` = all levels, an int = the last ``n``)."""
    if out_indices is None:
        return tuple(range(num_levels))
    if isinstance(out_indices, int):
        if not 0 < out_indices <= num_levels:
            raise ConfigError(f"out_indices={out_indices}: the model has {num_levels} feature levels")
        return tuple(range(num_levels - out_indices, num_levels))
    resolved = []
    for i in out_indices:
        if not -num_levels <= i < num_levels:
            raise ConfigError(
                f"out_indices contains {i}, but the model has {num_levels} feature levels "
                f"(valid: 0..{num_levels - 1} or -{num_levels}..-1)"
            )
        resolved.append(i % num_levels)
    if len(set(resolved)) != len(resolved) or sorted(resolved) != resolved:
        raise ConfigError(f"out_indices {tuple(out_indices)} must name distinct levels in increasing order")
    return tuple(resolved)
