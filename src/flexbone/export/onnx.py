"""ONNX export through ``torch.onnx.export``, checked in onnxruntime before the file is kept.

torch 2.14's default exporter (``dynamo=True``) needs the ``onnxscript`` package; flexbone uses the
TorchScript-based exporter (``dynamo=False``), which needs only ``onnx``, exports every zoo family and is
what most deployment guides still describe. The file is written to a temporary sibling, loaded into an
onnxruntime CPU session and compared with the PyTorch model on a random and a real input
(:mod:`flexbone.export.check`); only then is it renamed onto the requested path.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..checkpoint import atomic_write
from ..errors import ExportError
from .check import FP32_TOLERANCE, compare

DEFAULT_OPSET = 17  # LayerNormalization (PVT) is a single op from 17 on; onnxruntime 1.16+ runs it
MIN_OPSET = 13
INPUT_NAME = "image"


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """``['logits']`` for a classifier, ``['features.0', ...]`` for a model that returns a pyramid."""
    with torch.no_grad():
        out = model(example)
    if isinstance(out, (list, tuple)):
        return [f"features.{i}" for i in range(len(out))]
    return ["logits" if getattr(model, "num_classes", 0) else "features"]


def max_opset() -> int:
    """The newest opset the TorchScript exporter of this torch writes."""
    from torch.onnx import _constants

    return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)


def _unsupported(e: Exception, what: str, opset: int) -> ExportError:
    """The one-line error for a model torch.onnx cannot export: the model and the op, when torch names it."""
    text = str(e)
    op = re.search(r"operator '([^']+)'", text) or re.search(r"(aten::\w+|prim::\w+)", text)
    if op:
        return ExportError(f"{what}: torch.onnx cannot export the operator {op.group(1)} at opset {opset}"
                           f" (try another --opset, or report the model)")
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return ExportError(f"{what}: torch.onnx cannot export this model ({type(e).__name__}: {first[:300]})")


@contextlib.contextmanager
def _native_output_silenced():
    """Send the C++ side's stdout and stderr to a scratch file for the block.

    torch 2.14's TorchScript exporter turns its ONNX log on for every export (``setup_onnx_logging`` tests the
    function ``_jit_is_onnx_log_enabled`` instead of calling it), so a failed export dumps the whole TorchScript
    graph on the console; the user gets one line from :func:`_unsupported` instead.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def write_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, what: str,
               dynamic_batch: bool = False, opset: int = DEFAULT_OPSET) -> list[str]:
    """``torch.onnx.export`` of ``model`` on ``example`` to ``path`` (not checked; see :func:`export_onnx`).

    Returns the output names. Raises :class:`ExportError` naming ``what`` and the operator if torch cannot
    export the model.
    """
    names = output_names(model, example)
    dynamic_axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]} if dynamic_batch else None
    try:
        with torch.no_grad(), warnings.catch_warnings(), _native_output_silenced():
            # the TorchScript exporter announces its own deprecation and traces shape arithmetic: noise here
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
    except ExportError:
        raise
    except Exception as e:  # torch.onnx raises several types (UnsupportedOperatorError, SymbolicValueError ...)
        raise _unsupported(e, what, opset) from None
    return names


def require_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line :class:`ExportError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("ONNX export and its check need onnxruntime: pip install 'flexbone[export]' "
                          "(onnx and onnxruntime)") from None
    return onnxruntime


def ort_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU session (``threads``: intra-op threads; default onnxruntime's choice)."""
    ort = require_onnxruntime()

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no per-node warnings on the console
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types; one line for the user
        raise ExportError(f"onnxruntime cannot load {path}: {str(e).strip().splitlines()[0][:300]}") from None


def ort_runner(session: Any):
    """A function ``(B, C, H, W) tensor -> list of numpy outputs`` over an onnxruntime session."""
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> list:
        return session.run(None, {input_name: x.detach().cpu().float().contiguous().numpy()})

    return run


def export_onnx(model: nn.Module, path: str | os.PathLike, inputs: dict[str, torch.Tensor], *, what: str,
                dynamic_batch: bool = False, opset: int = DEFAULT_OPSET,
                tolerance: float = FP32_TOLERANCE) -> dict[str, Any]:
    """Export ``model`` (eval mode) to ONNX at ``path``, checked in onnxruntime on each of ``inputs``.

    The first input is the trace example (its batch size is the file's, unless ``dynamic_batch``). The file
    appears at ``path`` only if every check passes (max abs difference <= ``tolerance`` times the output's
    scale); otherwise :class:`ExportError` and nothing is written. Returns ``{'output_names', 'max_abs_diff'}``.
    """
    from ..errors import ConfigError

    if not MIN_OPSET <= opset <= max_opset():
        raise ConfigError(f"--opset must be in [{MIN_OPSET}, {max_opset()}] for torch {torch.__version__}, got {opset}")
    require_onnxruntime()  # before the export: without it nothing could be checked
    model = model.eval()
    example = next(iter(inputs.values()))
    result: dict[str, Any] = {}

    def write_and_check(tmp: str) -> None:
        names = write_onnx(model, tmp, example, what=what, dynamic_batch=dynamic_batch, opset=opset)
        run = ort_runner(ort_session(tmp))
        result["output_names"] = names
        result["max_abs_diff"] = compare(model, run, inputs, what, tolerance)

    atomic_write(Path(path), write_and_check)
    return result


__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "export_onnx", "write_onnx", "ort_session", "ort_runner", "max_opset"]
