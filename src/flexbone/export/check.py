"""Checking an artifact against the model it came from: the same random and real inputs, max abs difference.

The real input is a photograph that ships with scikit-learn (``china.jpg``, ``flower.jpg``), preprocessed
with the model's own evaluation transform: a random tensor exercises every weight, a real image checks
the value range a deployed model sees.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..errors import ExportError

# an artifact that differs from its model by more than this (times the output's scale, at least 1) is refused
FP32_TOLERANCE = 1e-4

_PHOTOS = ("china.jpg", "flower.jpg")


def real_images(batch_size: int, preprocessing: dict[str, Any]) -> torch.Tensor:
    """``(batch_size, 3, H, W)``: scikit-learn's sample photographs (cycled), through the evaluation transform."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from ..config.schema import DataConfig
    from ..data.transforms import build_eval_transform

    _, h, _ = preprocessing["input_size"]
    data = DataConfig(img_size=h, test_img_size=h, crop_pct=preprocessing["crop_pct"],
                      interpolation=preprocessing["interpolation"], mean=tuple(preprocessing["mean"]),
                      std=tuple(preprocessing["std"]))
    transform = build_eval_transform(data)
    photos = [transform(Image.fromarray(load_sample_image(name))) for name in _PHOTOS]
    return torch.stack([photos[i % len(photos)] for i in range(batch_size)])


def check_inputs(batch_size: int, preprocessing: dict[str, Any], dynamic_batch: bool,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Named inputs to compare on: random normal values, and (3-channel models) real photographs.

    With a dynamic batch the two inputs have different batch sizes, so the check also shows that the
    artifact takes more than the batch size it was traced with.
    """
    c, h, w = preprocessing["input_size"]
    g = torch.Generator().manual_seed(seed)
    inputs = {"random": torch.randn(batch_size, c, h, w, generator=g)}
    if c == 3:
        inputs["photo"] = real_images(batch_size + 1 if dynamic_batch else batch_size, preprocessing)
    return inputs


def as_list(out: Any) -> list[torch.Tensor]:
    """A model's output (a tensor, or a list of feature maps) as a list of tensors."""
    return list(out) if isinstance(out, (list, tuple)) else [out]


def max_abs_diff(reference: Sequence[torch.Tensor], actual: Sequence[Any]) -> tuple[float, float]:
    """``(max abs difference, max abs reference value)`` over matching outputs."""
    if len(reference) != len(actual):
        raise ExportError(f"the artifact gives {len(actual)} outputs, the model {len(reference)}")
    diff, scale = 0.0, 0.0
    for r, a in zip(reference, actual):
        a = torch.as_tensor(a)
        if tuple(a.shape) != tuple(r.shape):
            raise ExportError(f"the artifact's output has shape {tuple(a.shape)}, the model's {tuple(r.shape)}")
        diff = max(diff, (r.double() - a.double()).abs().max().item())
        scale = max(scale, r.abs().max().item())
    return diff, scale


def compare(model: torch.nn.Module, run_artifact: Callable[[torch.Tensor], Sequence[Any]],
            inputs: dict[str, torch.Tensor], what: str, tolerance: float = FP32_TOLERANCE) -> dict[str, float]:
    """Run ``model`` and the artifact on each input; raise :class:`ExportError` if they differ by more than
    ``tolerance * max(1, max |model output|)``. Returns the max abs difference per input."""
    diffs = {}
    for name, x in inputs.items():
        with torch.no_grad():
            reference = as_list(model(x))
        diff, scale = max_abs_diff(reference, run_artifact(x))
        diffs[name] = diff
        limit = tolerance * max(1.0, scale)
        if not diff <= limit:  # NaN fails too
            raise ExportError(f"{what}: the exported artifact differs from the model by {diff:.3g} on the {name} "
                              f"input (allowed {limit:.3g}); nothing was written")
    return diffs
