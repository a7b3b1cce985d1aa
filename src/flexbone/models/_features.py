"""Feature pyramids: which stage outputs a model exposes, and how ``features_only`` selects them.

``model.feature_info`` is timm's list of dicts (``{'num_chs', 'reduction', 'module'}`` per level, shallow to
deep), so ``timm.models.FeatureInfo(model.feature_info, out_indices)`` and code that reads
``info['num_chs']`` work unchanged; it also answers ``.channels()`` / ``.reduction()`` / ``.module_name()``
for the levels ``features_only`` returns, as timm's feature extractors do.

Levels follow timm's numbering: CNNs have five, the stride-2 stem level first, then strides 4 to 32.
The four-level pyramid of dense-prediction heads (strides 4..32) is ``out_indices=PYRAMID`` (the last
four levels, ``(-4, -3, -2, -1)``).
"""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import ConfigError

# The four levels at strides 4, 8, 16, 32 that dense heads (FPN, segmentation, CBNet) take.
PYRAMID = (-4, -3, -2, -1)


class FeatureStage(dict):
    """One level of a feature pyramid: timm's dict ``{'num_chs', 'reduction', 'module'}``.

    A plain ``dict`` (``'num_chs' in info``, ``info['module']``, ``dict(info)``) whose three keys can also be
    read as attributes (``info.num_chs``).
    """

    def __init__(self, num_chs: int, reduction: int, module: str, **extra: Any):
        super().__init__(num_chs=num_chs, reduction=reduction, module=module, **extra)

    @property
    def num_chs(self) -> int:  # channels of the map
        return self["num_chs"]

    @property
    def reduction(self) -> int:  # input size / map size (the network stride at this point)
        return self["reduction"]

    @property
    def module(self) -> str:  # dotted name of the module whose output this is
        return self["module"]

    def __reduce__(self):  # pickle / deepcopy through the constructor (dict subclasses otherwise lose __init__ args)
        extra = {k: v for k, v in self.items() if k not in ("num_chs", "reduction", "module")}
        return (_make_stage, (self.num_chs, self.reduction, self.module, extra))


def _make_stage(num_chs: int, reduction: int, module: str, extra: dict[str, Any]) -> FeatureStage:
    return FeatureStage(num_chs, reduction, module, **extra)


class FeatureInfo(list):
    """The pyramid of a model, a list of :class:`FeatureStage` dicts, and the levels that ``features_only``
    returns (``out_indices``, all by default).

    ``channels()`` / ``reduction()`` / ``module_name()`` / ``get()`` / ``get_dicts()`` answer for the selected
    levels (or for ``idx``), with the meaning of timm's ``FeatureInfo`` methods.
    """

    def __init__(self, stages: Sequence[dict] = (), out_indices: Sequence[int] | int | None = None):
        super().__init__(s if isinstance(s, FeatureStage) else FeatureStage(**s) for s in stages)
        self.out_indices = resolve_out_indices(out_indices, len(self))

    @property
    def stages(self) -> list[FeatureStage]:
        return list(self)

    def __repr__(self) -> str:
        levels = ", ".join(f"{s.module}: {s.num_chs}ch/{s.reduction}" for s in self)
        return f"FeatureInfo([{levels}], out_indices={self.out_indices})"

    def __reduce__(self):
        return (FeatureInfo, (list(self), self.out_indices))

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        """``key`` of the selected levels (``idx=None``), of level ``idx``, or of the levels ``idx``."""
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        """The level dicts (only ``keys``, if given) of the selected levels or of ``idx``."""
        pick = (lambda i: self[i]) if keys is None else (lambda i: {k: self[i][k] for k in keys})
        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None):
        """Channels of the selected levels (all levels unless ``out_indices`` was given)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self.get("module", idx)

    def with_out_indices(self, out_indices: Sequence[int] | int | None) -> "FeatureInfo":
        """The same levels, ``out_indices`` selected, each dict with its absolute level as ``index``: timm's
        ``FeatureInfo`` adds that key, so its feature extractors' dicts carry it (a model's own list has none)."""
        return FeatureInfo([FeatureStage(**{**s, "index": i}) for i, s in enumerate(self)], out_indices)

    def from_other(self, out_indices: Sequence[int] | int | None) -> "FeatureInfo":  # timm's name
        return self.with_out_indices(out_indices)


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


def feature_take_indices(num_levels: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: the absolute levels to take (``None`` all, an int the last ``n``,
    a sequence as given, negative from the end) and the deepest of them."""
    if indices is None:
        indices = num_levels
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise ConfigError(f"indices={indices}: take the last 1..{num_levels} levels")
        take = list(range(num_levels - indices, num_levels))
    else:
        take = []
        for i in indices:
            idx = num_levels + i if i < 0 else i
            if not 0 <= idx < num_levels:
                raise ConfigError(f"feature index {i} is out of range (0..{num_levels - 1} or -{num_levels}..-1)")
            take.append(idx)
    if not take:
        raise ConfigError("indices is empty: name at least one feature level")
    return take, max(take)
