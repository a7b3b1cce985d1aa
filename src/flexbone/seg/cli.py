"""`flexbone validate` and `flexbone predict` for segmentation models (the commands hand over to these).

A segmentation checkpoint is recognised by its metadata (``task: segmentation``, which the engine writes into a
segmentation run's ``model.safetensors`` and ``checkpoint-*.pt``) or by a segmentation ``--model`` name
(``seg_<head>_<backbone>``, a segmentation FFNet).

* validate: mIoU / pixel accuracy / per-class IoU on ``--data seg_digits`` (the demo's validation canvases), a
  folder with ``images/<split>`` + ``masks/<split>``, or a Cityscapes root (``leftImg8bit/`` + ``gtFine/``).
* predict: for each image, ``<out>/<stem>_mask.png`` (a palette PNG: pixel value = class, with a colour per
  class) and ``<out>/<stem>_overlay.png`` (the colours blended over the image).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError


def checkpoint_metadata(path: str | None) -> dict[str, Any]:
    """The metadata of a segmentation run's weights or training checkpoint ({} for anything else)."""
    if not path or not Path(path).is_file():
        return {}
    from ..errors import FlexboneError
    from ..train.checkpoint import read_metadata

    try:
        meta = read_metadata(path)
    except FlexboneError:  # a corrupt file: the classification path reports it in one line
        return {}
    return meta if meta.get("task") == "segmentation" else {}


def is_segmentation(args: argparse.Namespace) -> bool:
    """Whether the command's ``--checkpoint`` / ``--model`` is a segmentation model."""
    from .model import is_segmentation_model

    if getattr(args, "onnx", None):
        return False
    if args.model and is_segmentation_model(args.model):
        return True
    return checkpoint_metadata(getattr(args, "checkpoint", None)).get("task") == "segmentation"


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any]]:
    from ..checkpoint import load_checkpoint
    from .model import create_segmentation_model

    meta = checkpoint_metadata(args.checkpoint)
    name = args.model or meta.get("model")
    if not name:
        raise ConfigError("give --model: the checkpoint does not say which segmentation model it holds")
    num_classes = int(meta.get("num_classes", 19))
    model = create_segmentation_model(name, num_classes=num_classes, **meta.get("model_kwargs", {}))
    report = load_checkpoint(model, args.checkpoint, strict=False)
    if not report.ok:
        raise CheckpointError(f"{args.checkpoint} does not fit {name}: {report.describe()}")
    cfg = getattr(model, "default_cfg", {})
    meta.setdefault("mean", list(cfg.get("mean", (0.485, 0.456, 0.406))))
    meta.setdefault("std", list(cfg.get("std", (0.229, 0.224, 0.225))))
    meta["classes"] = list(meta.get("class_names") or [str(i) for i in range(num_classes)])
    return model.eval(), meta


def validate(args: argparse.Namespace) -> int:
    from ..train.distributed import resolve_device
    from .data import (CITYSCAPES_CLASSES, DigitsSegmentation, SegmentationPairs, cityscapes_label_map,
                       cityscapes_pairs, eval_transform, folder_pairs)
    from .training import evaluate_segmentation

    device = resolve_device(args.device)
    model, meta = load_model(args)
    model.to(device)
    tf = eval_transform(meta["mean"], meta["std"])
    num_classes = len(meta["classes"])
    if args.data == "seg_digits":
        dataset = DigitsSegmentation("val", int(meta.get("digits_val_size", 200)), int(meta.get("digits_canvas", 64)),
                                     int(meta.get("digits_seed", 0)), tf)
    else:
        root = Path(args.data).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--data {args.data}: not a folder (nor 'seg_digits')")
        if (root / "leftImg8bit").is_dir():
            pairs, skipped = cityscapes_pairs(root, args.split)
            dataset = SegmentationPairs(pairs, len(CITYSCAPES_CLASSES), tf, cityscapes_label_map(), skipped=skipped)
        else:
            pairs, skipped = folder_pairs(root, args.split)
            dataset = SegmentationPairs(pairs, num_classes, tf, skipped=skipped)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    with torch.inference_mode():
        stats = evaluate_segmentation(model, loader, device, num_classes)
    result = {"model": args.model or meta.get("model"), "checkpoint": str(args.checkpoint), "data": args.data,
              "miou": stats["miou"], "pixel_acc": stats["pixel_acc"], "mean_acc": stats["mean_acc"],
              "loss": stats["loss"], "iou": dict(zip(meta["classes"], stats["iou"])),
              "images": len(dataset), "skipped_images": len(getattr(dataset, "skipped", []))}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on {args.data}: mIoU {stats['miou']:.2f}%  pixel acc {stats['pixel_acc']:.2f}%  "
              f"mean acc {stats['mean_acc']:.2f}%  loss {stats['loss']:.4f}  ({len(dataset)} images)")
        for name, iou in result["iou"].items():
            print(f"  {name:>16}: {iou:6.2f}")
    return 0


def palette(num_classes: int) -> np.ndarray:
    """(256, 3) uint8 colours: PASCAL VOC's bit-interleaved palette (class 0 black), 255 = white (ignore)."""
    colours = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    colours[255] = 255
    return colours


def predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..data.decode import ImageDecodeError, decode_image
    from ..outputs import atomic_write, check_writable
    from ..train.distributed import resolve_device
    from .data import apply_joint, eval_transform
    from .model import upsample_logits
    from ..cli.predict import image_paths

    out_dir = Path(args.out or "predictions")
    check_writable(out_dir, is_dir=True)
    paths, errors = image_paths(args.images)
    for e in errors:
        print(f"flexbone: error: {e}", file=sys.stderr)
    device = resolve_device(args.device)
    model, meta = load_model(args)
    model.to(device)
    tf = eval_transform(meta["mean"], meta["std"])
    colours = palette(len(meta["classes"]))
    failed = len(errors)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        try:
            image = decode_image(path)
        except ImageDecodeError as e:
            print(f"flexbone: error: {e}", file=sys.stderr)
            failed += 1
            continue
        rgb = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        x, _ = apply_joint(tf, rgb, torch.zeros(rgb.shape[1:], dtype=torch.int64))
        with torch.inference_mode():
            logits = upsample_logits(model(x[None].to(device)).float(), rgb.shape[1:])
        classes = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        mask = Image.fromarray(classes, "P")
        mask.putpalette(colours.flatten().tolist())
        overlay = Image.blend(image, Image.fromarray(colours[classes]), 0.5)
        stem = Path(path).stem
        atomic_write(out_dir / f"{stem}_mask.png", lambda tmp: mask.save(tmp, format="PNG"))
        atomic_write(out_dir / f"{stem}_overlay.png", lambda tmp: overlay.save(tmp, format="PNG"))
        found = {meta["classes"][c]: round(100 * float((classes == c).mean()), 1) for c in np.unique(classes)
                 if c < len(meta["classes"])}
        if args.json:
            print(json.dumps({"image": str(path), "mask": str(out_dir / f"{stem}_mask.png"),
                              "overlay": str(out_dir / f"{stem}_overlay.png"), "classes_pct": found}))
        else:
            print(f"{path}: {out_dir / (stem + '_mask.png')} ({', '.join(f'{k} {v}%' for k, v in found.items())})")
    return 2 if failed else 0
