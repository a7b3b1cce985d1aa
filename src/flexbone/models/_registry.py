"""The model registry: name -> entry point function.

A family module registers each variant with ``@register_model``; the function builds the model from
keyword arguments. Registration happens at import time of ``flexbone.models``.

Names that compose registered models (``seg_<head>_<backbone>``: a segmentation head over any model with
``features_only``) are a *pattern*: ``register_model_pattern(prefix, resolver)`` resolves each such name on
demand, so every combination works in :func:`create_model` / :func:`is_model` without registering thousands
of names. :func:`list_models` shows a pattern's listed examples only when asked for by a pattern or a family
(``list_models('seg_*')``, ``family='seg'``): ``list_models()`` alone stays the zoo of backbones that the
registry-wide tests walk.
"""
from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping

from ..errors import FlexboneError, UnknownModelError, did_you_mean

_model_entrypoints: dict[str, Callable] = {}
_model_family: dict[str, str] = {}


@dataclass(frozen=True)
class ModelPattern:
    """Names ``<prefix>...`` resolved on demand; the callables are ``'module:function'`` strings, imported on
    first use (the composing package may import ``flexbone.models`` itself)."""

    prefix: str
    resolver: str  # resolver(name) -> builder; raises UnknownModelError (or ConfigError) for a bad name
    listed: str  # listed() -> the example names list_models shows
    family: str

    def resolve(self, name: str) -> Callable:
        return _import(self.resolver)(name)

    def examples(self) -> list[str]:
        return list(_import(self.listed)())


_model_patterns: dict[str, ModelPattern] = {}


def _import(target: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_model_pattern(prefix: str, resolver: str, *, listed: str, family: str) -> None:
    """Resolve every name starting with ``prefix`` with ``resolver`` (``'module:function'``, name -> builder)."""
    if prefix in _model_patterns:
        raise FlexboneError(f"model pattern {prefix!r}* is already registered")
    _model_patterns[prefix] = ModelPattern(prefix, resolver, listed, family)


def _pattern_of(name: str) -> ModelPattern | None:
    if name in _model_entrypoints:
        return None
    return next((p for prefix, p in _model_patterns.items() if name.startswith(prefix)), None)


def register_model(fn: Callable | None = None, *, name: str | None = None, family: str | None = None):
    """Register a builder under its function name (or ``name``). Registering a name twice is an error.

    Used as ``@register_model`` on a function, or as ``register_model(partial(...), name=..., family=...)``;
    variants that are rows of a table use :func:`register_variants`.
    """
    if fn is None:
        return lambda f: register_model(f, name=name, family=family)
    name = name or fn.__name__
    if name in _model_entrypoints:
        raise FlexboneError(f"model {name!r} is already registered (by {_model_family[name]})")
    _model_entrypoints[name] = fn
    _model_family[name] = family or fn.__module__.rsplit(".", 1)[-1]
    return fn


def register_variants(
    model_cls: type,
    variants: Mapping[str, Any],
    *,
    family: str,
    preprocessing: Mapping[str, dict[str, Any]] | None = None,
    build: Callable[..., Any] | None = None,
) -> None:
    """Register each row of a family's variant table: ``name -> row``, in the table's order.

    ``create_model(name, **kwargs)`` then builds ``build(row, **kwargs)`` (default ``model_cls(row, **kwargs)``)
    and updates its ``default_cfg`` with ``preprocessing[name]`` where the name has one (weights trained at
    another resolution or crop). ``model_cls`` is the class built: a misspelt option is answered with its list.
    """
    for name, row in variants.items():
        entry = partial(_build_variant, build or model_cls, row, (preprocessing or {}).get(name, {}))
        entry.model_cls = model_cls  # lets create_model list the accepted options on a bad keyword
        register_model(entry, name=name, family=family)


def _build_variant(build: Callable[..., Any], row: Any, preprocessing: dict[str, Any], **kwargs: Any) -> Any:
    model = build(row, **kwargs)
    if preprocessing:
        model.default_cfg.update(preprocessing)
    return model


def list_models(pattern: str | Iterable[str] = "", family: str | None = None, exclude: str | Iterable[str] = "") -> list[str]:
    """Registered model names, sorted, filtered by shell-style wildcard ``pattern`` (e.g. ``'resnet*'``)."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    patterns = [p for p in patterns if p]
    names = list(_model_entrypoints)
    if patterns or family:  # composed names (seg_*) only when asked for: see the module doc
        names += [n for p in _model_patterns.values() for n in p.examples()]
    names = sorted(set(names))
    if family:
        names = [n for n in names if model_family(n) == family]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)
    for ex in (e for e in excludes if e):
        names = [n for n in names if not fnmatch.fnmatchcase(n, ex)]
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model or a valid name of a registered pattern."""
    if name in _model_entrypoints:
        return True
    pattern = _pattern_of(name)
    if pattern is None:
        return False
    try:
        pattern.resolve(name)
    except FlexboneError:
        return False
    return True


def model_family(name: str) -> str:
    pattern = _pattern_of(name)
    model_entrypoint(name)  # raises a helpful error for unknown names
    return pattern.family if pattern is not None else _model_family[name]


def model_entrypoint(name: str) -> Callable:
    """The builder registered under ``name`` (or resolved by its pattern); unknown names raise with the closest
    matches."""
    pattern = _pattern_of(name)
    if pattern is not None:
        return pattern.resolve(name)
    try:
        return _model_entrypoints[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}.{did_you_mean(name, _model_entrypoints)} "
            f"(`flexbone list` shows all {len(_model_entrypoints)} models)"
        ) from None
