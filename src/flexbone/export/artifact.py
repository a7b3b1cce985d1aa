"""One call from a model to a checked deployment artifact plus its sidecar JSON.

``export_model(source, "model.onnx", "onnx")`` writes

* the artifact: ``onnx`` (onnxruntime-checked, optionally int8), ``pt2`` (torch.export, reload-checked) or
  ``safetensors`` (plain weights whose header metadata lets ``model_from_checkpoint`` rebuild the model);
* ``<artifact>.json``, the sidecar: what a deployer needs to feed the artifact (input size, mean / std,
  interpolation, crop ratio, class names), how to rebuild it (``create_model(model, **kwargs)``, the
  sub-network's configuration) and what was checked (max abs difference on a random and a real input).

Each file is written to a temporary sibling and renamed when complete; a failed check leaves nothing.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ConfigError
from .check import FP32_TOLERANCE, check_inputs, compare
from .fold import fold_bn
from .quantize import Int8Options
from .source import ExportSource

FORMATS = ("onnx", "pt2", "safetensors")
SIDECAR_FORMAT = "flexbone-export/1"
DEFAULT_CALIB_BATCHES = 16
DYNAMIC_CALIB_BATCH = 8  # calibration batch of a dynamic-batch model


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return Path(f"{artifact}.json")


def read_sidecar(artifact: str | os.PathLike) -> dict[str, Any]:
    """The sidecar JSON of an artifact written by :func:`export_model`."""
    path = sidecar_path(artifact)
    if not path.is_file():
        raise ConfigError(f"no sidecar {path} next to {artifact} (written by `flexbone export`); it holds the "
                          f"input size and normalisation")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ConfigError(f"{path} is not a flexbone export sidecar (format {SIDECAR_FORMAT!r})")
    return meta


def _versions() -> dict[str, str]:
    from .. import __version__

    out = {"flexbone": __version__, "torch": torch.__version__}
    try:
        import onnx
        import onnxruntime

        out.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    except ImportError:
        pass
    return out


def validate_request(fmt: str, *, fold: bool = False, int8: bool = False, calib_data: str | None = None,
                     batch_size: int = 1, dynamic_batch: bool = False) -> None:
    """Refuse a combination of options before any work (one-line :class:`ConfigError`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "safetensors" and fold:
        raise ConfigError("--fold-bn changes the parameters, so create_model could not load the weights: export "
                          "safetensors without it (fold after loading: flexbone.export.fold_bn)")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 quantizes an ONNX model: use --format onnx")
    if int8 and not calib_data:
        raise ConfigError("--int8 needs --calib-data (a folder of images, or 'digits') to calibrate on")
    if dynamic_batch and batch_size != 1:
        raise ConfigError("give either --batch-size N or --dynamic-batch, not both")


def export_model(source: ExportSource, out: str | os.PathLike, fmt: str, *, img_size: int | None = None,
                 batch_size: int = 1, dynamic_batch: bool = False, fold: bool = False, opset: int | None = None,
                 int8: bool = False, calib_data: str | None = None, calib_batches: int = DEFAULT_CALIB_BATCHES,
                 int8_options: Int8Options | None = None, tolerance: float = FP32_TOLERANCE,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export ``source`` as ``fmt`` to ``out`` (plus ``out.json``); returns the sidecar dict.

    Args:
        img_size: input resolution (default: the checkpoint's evaluation size, else the model's default).
        batch_size: the batch the artifact is traced with (fixed unless ``dynamic_batch``).
        fold: fold batch norms into convs first (:func:`fold_bn`); onnx and pt2 only.
        opset: ONNX opset (default :data:`flexbone.export.onnx.DEFAULT_OPSET`).
        int8: quantize the ONNX model with onnxruntime, calibrated on ``calib_batches`` batches of
            ``calib_data`` images; ``int8_options`` (:class:`~flexbone.export.quantize.Int8Options`) says how
            (default: QDQ, per-channel 7-bit weights, MinMax calibration).
    """
    from ..outputs import check_writable, write_json
    from .onnx import DEFAULT_OPSET

    validate_request(fmt, fold=fold, int8=int8, calib_data=calib_data, batch_size=batch_size,
                     dynamic_batch=dynamic_batch)
    out = Path(out)
    check_writable(out)
    check_writable(sidecar_path(out))
    opset = opset or DEFAULT_OPSET
    what = source.name
    pre = source.preprocessing(img_size)
    inputs = check_inputs(batch_size if not dynamic_batch else 2, pre, dynamic_batch)
    calib = None
    if int8:  # read the calibration images before the export: a bad folder fails fast
        from .quantize import calibration_images

        calib_bs = DYNAMIC_CALIB_BATCH if dynamic_batch else batch_size
        calib = calibration_images(calib_data, pre, calib_bs * calib_batches)

    model = source.model.eval()
    if fold:
        model = fold_bn(model, inputs["random"])
    meta: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "artifact": out.name,
        "artifact_format": fmt,
        "model": source.name,
        "kwargs": source.kwargs,
        "supernet": source.supernet,
        "subnet": source.subnet,
        "checkpoint": source.checkpoint,
        **pre,
        "batch_size": None if dynamic_batch else batch_size,
        "dynamic_batch": dynamic_batch,
        "num_classes": getattr(source.model, "num_classes", None),
        "class_names": source.metadata.get("class_names"),
        "fold_bn": fold,
        "versions": _versions(),
    }
    # the artifact and its sidecar are both written beside their final names first and renamed into place only
    # when both are complete: a failure (a full disk) leaves an earlier pair as it was, never a new artifact next
    # to an old sidecar
    staged = out.with_name(f".{out.name}.{os.getpid()}.staged")
    staged_sidecar = sidecar_path(staged)
    try:
        if fmt == "onnx":
            meta.update(_export_onnx(model, staged, inputs, what, dynamic_batch, opset, tolerance,
                                     (int8_options or Int8Options()) if int8 else None, calib))
        elif fmt == "pt2":
            from .pt2 import export_pt2

            result = export_pt2(model, staged, inputs, what=what, dynamic_batch=dynamic_batch, tolerance=tolerance)
            meta["check"] = {"max_abs_diff": result["max_abs_diff"], "tolerance": tolerance,
                             "runtime": "torch.export.load"}
        else:
            meta["check"] = _export_safetensors(source, staged, inputs, meta, tolerance)
        for name, diff in meta["check"].get("max_abs_diff", {}).items():
            log(f"flexbone: {out.name}: max abs difference to the PyTorch model on the {name} input: {diff:.3g}")
        if meta.get("int8"):  # reported here, under the name the user gave (the file written so far is staged)
            log(f"flexbone: {out.name}: int8 and fp32 agree on the top-1 class of "
                f"{100 * meta['int8']['top1_agreement_with_fp32']:.1f}% of {meta['int8']['calibration_images']} "
                "calibration images")
        write_json(staged_sidecar, meta)
        os.replace(staged, out)
        os.replace(staged_sidecar, sidecar_path(out))
    finally:
        for path in (staged, staged_sidecar):
            path.unlink(missing_ok=True)
    return meta


def _export_onnx(model, out: Path, inputs, what, dynamic_batch, opset, tolerance, int8: Int8Options | None,
                 calib) -> dict[str, Any]:
    from ..checkpoint import atomic_write
    from .onnx import INPUT_NAME, export_onnx, ort_runner, ort_session

    if int8 is None:
        result = export_onnx(model, out, inputs, what=what, dynamic_batch=dynamic_batch, opset=opset,
                             tolerance=tolerance)
        return {"opset": opset, "input_name": INPUT_NAME, "output_names": result["output_names"], "int8": None,
                "check": {"max_abs_diff": result["max_abs_diff"], "tolerance": tolerance, "runtime": "onnxruntime"}}

    from .quantize import quantize_int8, top1_agreement

    batch = DYNAMIC_CALIB_BATCH if dynamic_batch else next(iter(inputs.values())).shape[0]
    with tempfile.TemporaryDirectory(prefix="flexbone-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        result = export_onnx(model, fp32, inputs, what=what, dynamic_batch=dynamic_batch, opset=opset,
                             tolerance=tolerance)
        agreement = {}

        def quantize_and_check(tmp_out: str) -> None:
            quantize_int8(fp32, tmp_out, calib, batch, int8)
            run_int8 = ort_runner(ort_session(tmp_out))
            agreement["top1"] = top1_agreement(ort_runner(ort_session(fp32)), run_int8, calib, batch)

        if result["output_names"] != ["logits"]:
            raise ConfigError("--int8 is checked by top-1 agreement: it needs a classifier (logits), not features")
        atomic_write(out, quantize_and_check)
    return {"opset": opset, "input_name": INPUT_NAME, "output_names": result["output_names"],
            "int8": {**int8.describe(), "calibration_images": len(calib) // batch * batch,
                     "top1_agreement_with_fp32": agreement["top1"]},
            "check": {"max_abs_diff": result["max_abs_diff"], "tolerance": tolerance, "runtime": "onnxruntime",
                      "checked": "the fp32 model before quantization"}}


def _export_safetensors(source: ExportSource, out: Path, inputs, meta: dict[str, Any], tolerance) -> dict[str, Any]:
    """Weights + header metadata that :func:`flexbone.train.checkpoint.model_from_checkpoint` reads; checked by
    rebuilding the model from the written file with ``create_model`` + a strict load."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..checkpoint import atomic_write, load_checkpoint, save_state_dict
    from ..models import create_model

    kwargs = dict(source.kwargs)
    header = {
        "model": source.name, "model_kwargs": {k: v for k, v in kwargs.items() if k != "num_classes"},
        "num_classes": meta["num_classes"], "class_names": meta["class_names"],
        "img_size": meta["input_size"][-1], "test_img_size": meta["input_size"][-1], "crop_pct": meta["crop_pct"],
        "interpolation": meta["interpolation"], "mean": meta["mean"], "std": meta["std"],
        "subnet": source.subnet, "supernet": source.supernet, "format": SIDECAR_FORMAT,
    }
    header = {k: json.dumps(v) for k, v in header.items()}
    result: dict[str, Any] = {}

    def write_and_check(tmp: str) -> None:
        save_state_dict(source.model.state_dict(), Path(tmp).with_suffix(".safetensors"), metadata=header)
        os.replace(Path(tmp).with_suffix(".safetensors"), tmp)
        with safe_open(tmp, framework="pt") as f:
            stored = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        rebuilt = create_model(stored["model"], num_classes=stored["num_classes"], **stored["model_kwargs"])
        load_checkpoint(rebuilt, load_file(tmp), strict=True)
        rebuilt.eval()
        # the same weights in the same architecture: bit-identical outputs, so no tolerance
        result["max_abs_diff"] = compare(source.model, lambda x: _run(rebuilt, x), inputs, source.name, 0.0)

    atomic_write(out, write_and_check)
    return {"max_abs_diff": result["max_abs_diff"], "tolerance": 0.0,
            "runtime": "create_model + strict load of the written file"}


def _run(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]
