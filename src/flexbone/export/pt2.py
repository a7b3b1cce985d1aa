"""``torch.export`` artifact: an ExportedProgram saved with ``torch.export.save``, reloaded and checked.

The program is exported in eval mode (batch norms use their running statistics), saved to a temporary
sibling, loaded back with ``torch.export.load`` and compared with the model on the same inputs as the
ONNX path before it is renamed onto the requested path. Load it with
``torch.export.load(path).module()(x)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..checkpoint import atomic_write
from ..errors import ExportError
from .check import FP32_TOLERANCE, as_list, compare

MAX_DYNAMIC_BATCH = 4096


def export_program(model: nn.Module, example: torch.Tensor, *, what: str,
                   dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` on ``example``; a dynamic batch dimension when asked."""
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic_batch else None
    try:
        with torch.no_grad():
            return torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as e:  # torch.export raises many types (UserError, Unsupported, GuardOnDataDependent ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(f"{what}: torch.export cannot export this model ({type(e).__name__}: {first[:300]})"
                          ) from None


def export_pt2(model: nn.Module, path: str | os.PathLike, inputs: dict[str, torch.Tensor], *, what: str,
               dynamic_batch: bool = False, tolerance: float = FP32_TOLERANCE) -> dict[str, Any]:
    """Export ``model`` with torch.export to ``path`` (``.pt2``), checked after reloading; returns the max diffs.

    Nothing is written at ``path`` unless the reloaded program matches the model on every input.
    """
    example = next(iter(inputs.values()))
    program = export_program(model, example, what=what, dynamic_batch=dynamic_batch)
    result: dict[str, Any] = {}

    def write_and_check(tmp: str) -> None:
        staged = f"{tmp}.pt2"  # torch.export.save / load want the .pt2 suffix
        try:
            torch.export.save(program, staged)
            loaded = torch.export.load(staged).module()
        finally:
            if os.path.exists(staged):
                os.replace(staged, tmp)

        def run(x: torch.Tensor) -> list:
            with torch.no_grad():
                return as_list(loaded(x))

        result["max_abs_diff"] = compare(model, run, inputs, what, tolerance)

    atomic_write(Path(path), write_and_check)
    return result
