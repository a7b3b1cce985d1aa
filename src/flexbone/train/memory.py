"""Will a training run fit in memory? An estimate made before the run starts, and a clear refusal.

Without it, a run that cannot fit (``--recipe sandwich_mbv3`` on the digits at its ImageNet batch of
2,048 at 224 px) grows until the kernel kills it: no message from flexbone, a lost terminal. The estimate:

* weights, gradients, optimiser slots (SGD momentum 1, AdamW / LAMB 2) and an EMA copy: 4 bytes each
  per parameter (fp32);
* activations: the outputs of every leaf module for one image, measured by a forward pass on the
  ``meta`` device (shapes only, no memory, no compute), times the images of a step in this process. The
  tensors autograd keeps for the backward pass are mostly these outputs; in-place activations and
  fused kernels keep less, so the figure leans high. A supernet's largest sub-network is what is measured
  (its sandwich and progressive steps run one sub-network's forward and backward at a time).

Against the peak resident memory of two training steps on a 2-core VM (batch 32, fp32, SGD), the
activation figure was 0.5x (resnet18, 112 px) to 3.7x (mobilenetv3_large_100, 128 px) the real rise, so
the run is refused only when the estimate exceeds ``MARGIN`` (2) times the memory available
(``MemAvailable``, capped by a cgroup limit): a run that clearly cannot fit, such as the example above
(about 150 GB against 10-20 GB), is stopped with the numbers and what to change, and a borderline one is
left to try. ``train.memory_check false`` skips the check. CPU only: on CUDA, torch's own
out-of-memory error already says what happened.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError

MARGIN = 2.0  # refuse above this multiple of the available memory (the estimate's error, see above)
OPTIMIZER_SLOTS = {"sgd": 1, "adamw": 2, "adam": 2, "lamb": 2}  # fp32 state tensors per parameter


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training process needs: parameters (+ grads, optimiser, EMA) and activations of one step."""

    parameter_bytes: int
    activation_bytes: int

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes


def activation_bytes_per_image(model: nn.Module, img_size: int, in_chans: int = 3) -> int:
    """Sum of the output sizes of ``model``'s leaf modules for one image, measured on the meta device."""
    import copy

    meta = copy.deepcopy(model).to("meta") if next(model.parameters()).device.type != "meta" else model
    total = 0

    def count(_module, inputs, output):
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else [output]
        # an in-place module (ReLU(inplace=True), flexbone's inference BN) returns its input: no new memory
        total += sum(t.numel() * t.element_size() for t in outputs
                     if isinstance(t, torch.Tensor) and not any(t is i for i in inputs))

    hooks = [m.register_forward_hook(count) for m in meta.modules() if not list(m.children())]
    try:
        meta.train()  # two images: a batch norm on 1x1 maps refuses a batch of one in training mode
        with torch.no_grad():
            meta(torch.zeros(2, in_chans, img_size, img_size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total // 2


def estimate_training_memory(model: nn.Module, *, batch_size: int, img_size: int, in_chans: int = 3,
                             optimizer: str = "sgd", ema: bool = False) -> MemoryEstimate:
    """The memory one training process needs (see the module docstring)."""
    params = sum(p.numel() for p in model.parameters())
    copies = 2 + OPTIMIZER_SLOTS.get(optimizer, 2) + (1 if ema else 0)  # weights, grads, optimiser, EMA
    return MemoryEstimate(params * 4 * copies, activation_bytes_per_image(model, img_size, in_chans) * batch_size)


def available_memory() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable``, capped by the cgroup's limit (None if unknown)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            room = int(limit) - usage
            available = room if available is None else min(available, room)
        break
    return available


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_training_memory(model: nn.Module, *, batch_size: int, img_size: int, in_chans: int = 3,
                          optimizer: str = "sgd", ema: bool = False, available: int | None = None) -> MemoryEstimate:
    """Raise :class:`ConfigError` if the run's estimate exceeds the available memory (see the module doc)."""
    est = estimate_training_memory(model, batch_size=batch_size, img_size=img_size, in_chans=in_chans,
                                   optimizer=optimizer, ema=ema)
    available = available_memory() if available is None else available
    if available is not None and est.total > MARGIN * available:
        raise ConfigError(
            f"this run needs about {_gib(est.total)} of memory (activations of {batch_size} images at {img_size} px: "
            f"{_gib(est.activation_bytes)}; weights, gradients and optimiser: {_gib(est.parameter_bytes)}) but "
            f"{_gib(available)} are available; lower --data.batch_size (learning rates scale with it) or "
            f"--data.img_size, or set --train.memory_check false to try anyway")
    return est
