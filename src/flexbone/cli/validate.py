"""`flexbone validate --model M --checkpoint C --data D [--crop-pct F] [--img-size N]`: top-1 / top-5."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import add_preprocessing_options, int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="top-1 / top-5 accuracy of a checkpoint on a dataset",
                       description="Evaluate a checkpoint: resize by crop ratio, centre crop, top-1 / top-5 and "
                                   "cross-entropy. Preprocessing comes from the checkpoint's metadata (flexbone "
                                   "runs) or the model's defaults, unless given here.")
    p.add_argument("--model", metavar="NAME", help="model name (default: the one stored in the checkpoint)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="PATH", help=".safetensors / .pt / .pth weights, or a flexbone "
                                                             "checkpoint-*.pt")
    source.add_argument("--onnx", metavar="PATH", help="an ONNX model written by `flexbone export`, run in "
                                                       "onnxruntime (preprocessing, class names: its sidecar JSON)")
    p.add_argument("--data", required=True, metavar="PATH|digits",
                   help="an image folder (with a val/ sub-folder, or class folders directly), a folder of "
                        "CIFAR-10/100 batch files, or 'digits' (the quickstart's test split)")
    p.add_argument("--split", default="val", help="sub-folder of an image folder to evaluate (default: val)")
    p.add_argument("--img-size", type=int_range(1), default=None, metavar="N", help="evaluation resolution (pixels)")
    add_preprocessing_options(p, crop_help="resize the short side to img_size / crop_pct, then centre-crop img_size")
    p.add_argument("--batch-size", type=int_range(1), default=64)
    p.add_argument("--workers", type=int_range(0), default=2, help="data loader processes")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a training checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def eval_data_config(args: argparse.Namespace, meta: dict[str, Any], model: Any):
    """A DataConfig for evaluation: command line > checkpoint metadata > the model's default_cfg."""
    from ..config.schema import DataConfig

    cfg = getattr(model, "default_cfg", {})
    size = args.img_size or meta.get("test_img_size") or meta.get("img_size") or cfg.get("input_size", (3, 224, 224))[-1]
    crop = args.crop_pct or meta.get("crop_pct") or cfg.get("crop_pct", 0.875)
    if not 0 < crop <= 1:
        raise ConfigError(f"--crop-pct must be in (0, 1], got {crop}")
    interpolation = args.interpolation or meta.get("interpolation") or cfg.get("interpolation", "bilinear")
    mean = tuple(meta.get("mean") or cfg.get("mean"))
    std = tuple(meta.get("std") or cfg.get("std"))
    split = {k: meta[k] for k in ("digits_test_fraction", "digits_split_seed") if k in meta}  # the run's own split
    return DataConfig(img_size=int(size), test_img_size=int(size), crop_pct=float(crop), interpolation=interpolation,
                      mean=mean, std=std, batch_size=args.batch_size, workers=args.workers, **split)


def eval_dataset(data: str, split: str, data_cfg: Any, class_names: list[str] | None):
    """The dataset ``--data`` names, with the evaluation transform."""
    from ..data.datasets import CIFAR_LAYOUT, ImageFolderDataset, cifar_dataset, digits_dataset
    from ..data.transforms import build_eval_transform

    tf = build_eval_transform(data_cfg)
    if data == "digits":
        return digits_dataset(False, data_cfg.digits_test_fraction, data_cfg.digits_split_seed, tf)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--data {data}: not a folder (nor 'digits')")
    for variant, (sub, _, test_file, *_rest) in CIFAR_LAYOUT.items():
        if (root / test_file).is_file() or (root / sub / test_file).is_file():
            return cifar_dataset(root, variant, False, tf)
    folder = root / split if (root / split).is_dir() else root  # `imagenet/` or `imagenet/val/`
    # the checkpoint's class names give each folder its index (a val folder may hold only some classes)
    return ImageFolderDataset(folder, tf, class_names=class_names)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.loader import ImageLoader
    from ..data.samplers import ShardedEvalSampler
    from ..train.checkpoint import model_from_checkpoint
    from ..train.distributed import resolve_device
    from ..train.engine import amp_dtype, evaluate
    from ..seg.cli import is_segmentation

    if is_segmentation(args):  # mIoU instead of top-1 (flexbone.seg.cli); --data seg_digits, a mask folder, Cityscapes
        from ..seg.cli import validate as validate_masks

        return validate_masks(args)
    device = resolve_device(args.device)
    if args.onnx:  # the exported artifact, in onnxruntime (flexbone.export.runtime)
        from ..export.runtime import load_onnx_model

        model, meta = load_onnx_model(args.onnx)
    else:
        model, meta = model_from_checkpoint(args.checkpoint, args.model, use_ema=args.ema)
    model.to(device)
    data_cfg = eval_data_config(args, meta, model)
    dataset = eval_dataset(args.data, args.split, data_cfg, meta.get("class_names"))
    num_classes = getattr(model, "num_classes", None)
    if num_classes and len(dataset.classes) > num_classes:
        raise ConfigError(f"the data has {len(dataset.classes)} classes but the model predicts {num_classes}")
    loader = ImageLoader(dataset, args.batch_size, ShardedEvalSampler(dataset), args.workers, False,
                         device.type == "cuda", False, 0)
    with torch.inference_mode():
        stats = evaluate(model, loader, device, amp=amp_dtype(args.amp, device))
    result = {"model": args.model or meta.get("model"), "checkpoint": str(args.checkpoint or args.onnx),
              "data": args.data,
              "img_size": data_cfg.img_size, "crop_pct": data_cfg.crop_pct, "interpolation": data_cfg.interpolation,
              **stats, "skipped_images": loader.total_skipped}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on {args.data}: top-1 {stats['top1']:.2f}%  top-5 {stats['top5']:.2f}%  "
              f"loss {stats['loss']:.4f}  ({stats['images']} images at {data_cfg.img_size} px, crop "
              f"{data_cfg.crop_pct}, {data_cfg.interpolation}"
              + (f"; {loader.total_skipped} unreadable skipped" if loader.total_skipped else "") + ")")
    return 0
