"""Training-state checkpoints: everything needed to continue a run exactly where it stopped.

A training checkpoint (``checkpoint-last.pt``, ``checkpoint-best.pt``) is a ``torch.save`` of a dict of
tensors and plain Python values only, so it loads with ``torch.load(weights_only=True)`` (no code runs
when reading it):

    model        model state dict (unwrapped: no ``module.`` / ``_orig_mod.`` prefixes)
    optimizer    optimizer state dict
    scheduler    {'step_count': int}
    ema          {'module': state dict, 'num_updates': int} or None
    scaler       GradScaler state dict (fp16) or None
    rng          torch / CUDA / numpy / python generator states, as tensors and lists (see :func:`get_rng_state`)
    epoch        epochs completed; the resumed run starts with this epoch index
    step         optimiser steps completed
    best_score   best value so far of the metric checkpoint-best is chosen on, named by best_metric (the
                 strategy's first metric: 'top1', segmentation 'miou'), and best_epoch; best_top1 = best_score
                 for top-1 runs (None otherwise; older checkpoints have only best_top1)
    metadata     model name, number of classes, class names, input size, normalisation, recipe

Files are written with :func:`flexbone.checkpoint.atomic_write`: a crash while saving leaves the
previous checkpoint untouched. For deployment the plain model weights go to ``.safetensors`` (with the
class names in the file's metadata) via :func:`save_model_weights`.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..checkpoint import atomic_write, read_checkpoint, save_state_dict
from ..errors import CheckpointError

LAST = "checkpoint-last.pt"
BEST = "checkpoint-best.pt"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"

REQUIRED_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step")


# ------------------------------------------------------------------------------------ RNG states
def get_rng_state() -> dict[str, Any]:
    """Every random generator a training step can touch, as tensors and plain lists (weights_only-safe)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),  # uint8 tensor
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": int(py_version), "state": [int(v) for v in py_state], "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()  # list of uint8 tensors, one per device
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------- save / load
def save_training_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write a training checkpoint atomically (temporary file, fsync, rename)."""
    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only``; no code from the file runs) and check its keys.

    ``path`` may be the checkpoint file or a run directory (then its ``checkpoint-last.pt`` is read).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / LAST).is_file():
            raise CheckpointError(f"{path} has no {LAST}: is it a flexbone run directory?"
                                  f" (found: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'})")
        path = path / LAST
    state = read_checkpoint(path)
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, Mapping) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a flexbone training checkpoint (missing: {', '.join(missing)})")
    return dict(state)


def save_model_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Model weights as ``.safetensors`` for deployment; metadata values are stored as JSON strings."""
    meta = {str(k): json.dumps(v) for k, v in (metadata or {}).items()}
    return save_state_dict(state_dict, path, metadata=meta)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata (class names, model name, input size ...) of a weights file or training checkpoint.

    ``.safetensors`` files written by :func:`save_model_weights` keep it in the header (JSON values);
    training checkpoints under ``'metadata'``. Files from elsewhere give ``{}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types for a corrupt header
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
        out = {}
        for k, v in raw.items():
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError):
                out[k] = v
        return out
    obj = read_checkpoint(path)
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def model_from_checkpoint(path: str | os.PathLike, model_name: str | None = None, use_ema: bool = False,
                          num_classes: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint holds and load its weights (strict); returns ``(model in eval mode, metadata)``.

    Works with flexbone run outputs (``model.safetensors``, ``checkpoint-*.pt``: the model name, class count
    and family options come from the metadata) and with plain state dicts from timm / torchvision (then
    ``model_name`` is needed and the class count is read from the classifier's weight).

    Args:
        path: the checkpoint file.
        model_name: the registered model name; default: the one in the checkpoint's metadata.
        use_ema: take the EMA weights of a training checkpoint (``ema.module``).
        num_classes: force the classifier size (default: metadata, else the checkpoint's classifier).
    """
    from ..checkpoint import extract_state_dict, load_checkpoint
    from ..models import create_model

    meta = read_metadata(path)
    name = model_name or meta.get("model")
    if not name:
        raise CheckpointError(f"{path} does not say which model it holds: pass --model NAME")
    kwargs = dict(meta.get("model_kwargs") or {}) if name == meta.get("model") else {}
    if use_ema:
        raw = read_checkpoint(path)
        ema = raw.get("ema") if isinstance(raw, Mapping) else None
        if not ema:
            raise CheckpointError(f"{path} holds no EMA weights (train with train.ema_decay > 0, or drop --ema)")
        state = extract_state_dict(ema["module"])
    else:
        state = extract_state_dict(read_checkpoint(path))
    if num_classes is None:
        num_classes = meta.get("num_classes")
    if num_classes is None:  # a foreign checkpoint: size the classifier from its weight
        probe = create_model(name, **kwargs)
        classifier = probe.default_cfg.get("classifier")
        classifier = classifier if isinstance(classifier, str) else (classifier or (None,))[0]  # (DeiT: 2 heads)
        weight = state.get(f"{classifier}.weight") if classifier else None
        num_classes = int(weight.shape[0]) if weight is not None else getattr(probe, "num_classes", 1000)
    model = create_model(name, num_classes=num_classes, **kwargs)
    load_checkpoint(model, state, strict=True)
    return model.eval(), meta
