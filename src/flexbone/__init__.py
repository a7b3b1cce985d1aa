"""flexbone: vision backbones. Train once, deploy at every budget.

The names below are imported on first use (PEP 562), so that ``import flexbone`` and ``flexbone --help``
do not pay for importing torch; ``flexbone.create_model`` etc. work as usual.
"""
from __future__ import annotations

import importlib

from .errors import CheckpointError, ConfigError, FlexboneError, UnknownModelError

__version__ = "0.1.0"

_LAZY = {
    "create_model": "models", "list_models": "models", "is_model": "models",
    "load_checkpoint": "checkpoint", "load_state_dict": "checkpoint", "save_state_dict": "checkpoint",
}

__all__ = [
    "create_model", "list_models", "is_model", "load_checkpoint", "load_state_dict", "save_state_dict",
    "FlexboneError", "UnknownModelError", "CheckpointError", "ConfigError", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    try:  # a sub-package used as an attribute: flexbone.elastic.load_subnet, flexbone.models.resnet ...
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
