"""Running an exported ONNX model in onnxruntime as if it were the PyTorch model.

:class:`OnnxModel` is a callable ``(B, 3, H, W) tensor -> logits tensor``, so the code that evaluates or
classifies with a PyTorch model (``flexbone validate``, ``flexbone predict``, ``train.engine.evaluate``)
runs the artifact a user will ship on the same data and labels. Its preprocessing (input size, mean / std,
interpolation, crop) and class names come from the sidecar JSON that ``flexbone export`` wrote beside it.
A model exported with a fixed batch size is fed in chunks of that size (the last one padded).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .artifact import read_sidecar


class OnnxModel:
    """An ONNX artifact in an onnxruntime CPU session, called like a model: ``logits = m(images)``."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from .onnx import ort_session

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX model not found: {self.path}")
        self.sidecar = read_sidecar(self.path)
        self.session = ort_session(self.path, threads)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        dims = list(first.shape)  # ints for fixed axes, names (str) or None for dynamic ones
        self.batch_size = dims[0] if isinstance(dims[0], int) else None
        self.input_hw = tuple(d if isinstance(d, int) else None for d in dims[2:4])
        self.num_classes = self.sidecar.get("num_classes")
        self.default_cfg = {k: self.sidecar[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct")}

    def metadata(self) -> dict[str, Any]:
        """The sidecar in the keys of a checkpoint's metadata (:func:`flexbone.train.checkpoint.read_metadata`)."""
        s = self.sidecar
        return {"model": s.get("model"), "num_classes": s.get("num_classes"), "class_names": s.get("class_names"),
                "img_size": s["input_size"][-1], "test_img_size": s["input_size"][-1], "crop_pct": s["crop_pct"],
                "interpolation": s["interpolation"], "mean": s["mean"], "std": s["std"]}

    # the calls evaluation code makes on a torch model
    def eval(self) -> "OnnxModel":
        return self

    def to(self, *args: Any, **kwargs: Any) -> "OnnxModel":
        return self  # onnxruntime's CPU session; outputs come back on the input's device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` float tensor -> the first output (logits) as a float32 tensor on ``x``'s device."""
        hw = tuple(x.shape[2:4])
        if any(want is not None and want != got for want, got in zip(self.input_hw, hw)):
            raise ConfigError(f"{self.path.name} takes {self.input_hw[0]}x{self.input_hw[1]} px images, got "
                              f"{hw[0]}x{hw[1]} (drop --img-size, or export again with --img-size {hw[0]})")
        batch = x.detach().float().cpu().contiguous().numpy()
        n = batch.shape[0]
        if self.batch_size is None or n == self.batch_size:
            out = self._run(batch)
        else:  # a fixed batch: chunks of it, the last padded with zeros and cut off again
            parts = []
            for i in range(0, n, self.batch_size):
                chunk = batch[i:i + self.batch_size]
                pad = self.batch_size - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                parts.append(self._run(chunk)[:len(chunk) - pad])
            out = np.concatenate(parts)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def load_onnx_model(path: str | os.PathLike, threads: int | None = None) -> tuple[OnnxModel, dict[str, Any]]:
    """``(runner, metadata)`` for an ONNX artifact, in the shape of ``model_from_checkpoint``'s result."""
    model = OnnxModel(path, threads)
    return model, model.metadata()
