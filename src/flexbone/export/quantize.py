"""int8: post-training static quantization of an exported ONNX model with onnxruntime's own tools.

flexbone does not quantize anything itself: it feeds the user's images, preprocessed with the model's
evaluation transform, to ``onnxruntime.quantization.quantize_static`` after onnxruntime's recommended
pre-processing (``quant_pre_process``: shape inference and graph optimisation). What it adds is the data
path, the choice of settings and a check: the int8 model must load, run, and its top-1 agreement with the
fp32 model on the calibration images is reported.

The defaults (:class:`Int8Options`) are onnxruntime's CPU recommendation for x86 without VNNI, measured on
the quickstart digits model (``benchmarks/bench_deploy.py``): QDQ format, uint8 activations, int8
per-channel weights, MinMax calibration, and **7-bit weights** (``reduce_range``). x86 CPUs without VNNI
(AVX2 only, like the VM the benchmarks ran on) multiply uint8 by int8 with an instruction that adds pairs of
products into int16 and saturates: 2 x 255 x 127 overflows it, 2 x 255 x 64 does not. With full 8-bit
weights the digits model lost 0.8-1.4 top-1 points in onnxruntime while the same quantized graph executed in
float (``session.disable_quant_qdq``) lost none; with 7-bit weights it lost 0-0.3 (3 training seeds x 3
calibration samples). ``reduce_range=False`` is the better choice for a CPU with VNNI or for ARM.
Pre-processing matters for speed too: without it onnxruntime left 45 of MobileNetV3-Large's 63 convs in
float (the HardSwish after them blocks the fusion) and the int8 model ran at 0.4x the fp32 one.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..errors import ConfigError, ExportError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # onnxruntime's CalibrationMethod, by its name


@dataclass(frozen=True)
class Int8Options:
    """How onnxruntime quantizes; the defaults are flexbone's (see the module docstring for why).

    Args:
        calibration: how activation ranges are read from the calibration images: ``minmax`` (the observed
            range), ``entropy`` (KL-divergence threshold) or ``percentile`` (99.999th percentile).
        per_channel: one weight scale per output channel (else one per tensor).
        reduce_range: 7-bit weights, which cannot saturate the int16 sums of x86 CPUs without VNNI.
    """

    calibration: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = True

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown int8 calibration method {self.calibration!r}; choose from "
                              f"{', '.join(CALIBRATION_METHODS)}")

    def describe(self) -> dict[str, Any]:
        """The settings as the sidecar records them."""
        return {"format": "QDQ", "activations": "uint8", "weights": "int8 (7-bit range)" if self.reduce_range
                else "int8", **asdict(self)}


IMG_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def calibration_images(data: str, preprocessing: dict[str, Any], count: int) -> torch.Tensor:
    """Up to ``count`` preprocessed images ``(N, C, H, W)`` from ``data``: 'digits' (its training split), an
    image folder (class sub-folders, or ``train/`` / ``val/`` inside), a CIFAR folder, or a flat folder of images."""
    from ..config.schema import DataConfig
    from ..data.transforms import build_eval_transform

    _, h, _ = preprocessing["input_size"]
    cfg = DataConfig(img_size=h, test_img_size=h, crop_pct=preprocessing["crop_pct"],
                     interpolation=preprocessing["interpolation"], mean=tuple(preprocessing["mean"]),
                     std=tuple(preprocessing["std"]))
    transform = build_eval_transform(cfg)
    if data == "digits":
        from ..data.datasets import digits_dataset

        dataset = digits_dataset(True, cfg.digits_test_fraction, cfg.digits_split_seed, transform)
        images = [dataset[i][0] for i in _spread(len(dataset), count)]
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--calib-data {data}: not a folder (nor 'digits')")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_SUFFIXES and not p.name.startswith("."))
        if files:
            from ..data.decode import decode_image

            images = [transform(decode_image(files[i])) for i in _spread(len(files), count)]
        else:  # CIFAR batch files and other layouts the evaluation command reads
            from ..cli.validate import eval_dataset

            dataset = eval_dataset(str(root), "train", cfg, None)
            images = [dataset[i][0] for i in _spread(len(dataset), count)]
    if not images:
        raise ConfigError(f"--calib-data {data}: no images found")
    return torch.stack(images)


def _spread(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(n)`` (every class of a sorted folder gets some)."""
    if n <= count:
        return list(range(n))
    return [int(i * n / count) for i in range(count)]


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(images) - batch_size + 1, batch_size):
        yield images[i:i + batch_size].numpy()


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of batches."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self.input_name = input_name
        self.batches = list(batches)
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return {self.input_name: self.batches[self.pos - 1]}

    def rewind(self) -> None:
        self.pos = 0


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: torch.Tensor,
                  batch_size: int, options: Int8Options | None = None) -> None:
    """Write the int8 (QDQ) version of the ONNX model at ``fp32_path`` to ``out_path``, calibrated on ``images``.

    ``batch_size``: the model's fixed batch size (or the calibration batch for a dynamic one);
    ``options``: :class:`Int8Options` (default: its defaults).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx import INPUT_NAME

    options = options or Int8Options()
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.calibration]
    if len(images) < batch_size:
        raise ConfigError(f"calibration needs at least one batch of {batch_size} images, found {len(images)}")
    reader = _Reader(INPUT_NAME, _batches(images, batch_size))
    CalibrationDataReader.register(_Reader)  # an abstract base class: register, not inherit (import stays lazy)
    with tempfile.TemporaryDirectory(prefix="flexbone-int8-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre))
        except Exception:  # pre-processing is an optimisation; quantize the exported graph as it is
            pre = Path(fp32_path)
        try:
            with _quiet():  # the histogram methods print their progress
                quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ,
                                per_channel=options.per_channel, reduce_range=options.reduce_range,
                                calibrate_method=method, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8)
        except Exception as e:
            raise ExportError(f"onnxruntime could not quantize the model ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''})") from None


def _quiet() -> contextlib.AbstractContextManager:
    """Python-level stdout silenced (onnxruntime's histogram calibrators report with ``print``)."""
    return contextlib.redirect_stdout(io.StringIO())


def top1_agreement(run_a, run_b, images: torch.Tensor, batch_size: int) -> float:
    """Fraction of ``images`` on which two runners (``x -> [logits, ...]``) pick the same class."""
    same = total = 0
    for batch in _batches(images, batch_size):
        a = np.asarray(run_a(torch.from_numpy(batch))[0]).argmax(-1)
        b = np.asarray(run_b(torch.from_numpy(batch))[0]).argmax(-1)
        same += int((a == b).sum())
        total += len(a)
    return same / total if total else float("nan")
