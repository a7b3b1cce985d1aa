"""The model registry: name -> entry point function.

A family module registers each variant with ``@register_model``; the function builds the model from
keyword arguments. Registration happens at import time of ``flexbone.models``.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable

from ..errors import FlexboneError, UnknownModelError, did_you_mean

_model_entrypoints: dict[str, Callable] = {}
_model_family: dict[str, str] = {}


def register_model(fn: Callable | None = None, *, name: str | None = None, family: str | None = None):
    """Register a builder under its function name (or ``name``). Registering a name twice is an error.

    Used as ``@register_model`` on a function, or as ``register_model(partial(...), name=..., family=...)``
    for variants that are rows of a table.
    """
    if fn is None:
        return lambda f: register_model(f, name=name, family=family)
    name = name or fn.__name__
    if name in _model_entrypoints:
        raise FlexboneError(f"model {name!r} is already registered (by {_model_family[name]})")
    _model_entrypoints[name] = fn
    _model_family[name] = family or fn.__module__.rsplit(".", 1)[-1]
    return fn


def list_models(pattern: str | Iterable[str] = "", family: str | None = None, exclude: str | Iterable[str] = "") -> list[str]:
    """Registered model names, sorted, filtered by shell-style wildcard ``pattern`` (e.g. ``'resnet*'``)."""
    names = sorted(_model_entrypoints)
    if family:
        names = [n for n in names if _model_family[n] == family]
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    patterns = [p for p in patterns if p]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)
    for ex in (e for e in excludes if e):
        names = [n for n in names if not fnmatch.fnmatchcase(n, ex)]
    return names


def is_model(name: str) -> bool:
    return name in _model_entrypoints


def model_family(name: str) -> str:
    model_entrypoint(name)  # raises a helpful error for unknown names
    return _model_family[name]


def model_entrypoint(name: str) -> Callable:
    """The builder registered under ``name``; unknown names raise with the closest matches."""
    try:
        return _model_entrypoints[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}.{did_you_mean(name, _model_entrypoints)} "
            f"(`flexbone list` shows all {len(_model_entrypoints)} models)"
        ) from None
