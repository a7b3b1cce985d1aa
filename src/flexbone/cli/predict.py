"""`flexbone predict --model M --checkpoint C IMAGE... [--topk K]`: the top-k classes of each image."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import FlexboneError
from ..options import add_preprocessing_options, int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint (top-k labels and probabilities)",
                       description="Classify image files. Labels come from the class names stored in the "
                                   "checkpoint (flexbone runs), else class indices are shown.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads) or folders "
                                                               "(every image file in them, recursively)")
    p.add_argument("--model", metavar="NAME", help="model name (default: the one stored in the checkpoint)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="PATH", help="weights (.safetensors / .pt / .pth)")
    source.add_argument("--onnx", metavar="PATH", help="an ONNX model written by `flexbone export`, run in "
                                                       "onnxruntime (preprocessing, class names: its sidecar JSON)")
    p.add_argument("--topk", type=int_range(1), default=5, metavar="K", help="classes shown per image (default 5)")
    p.add_argument("--img-size", type=int_range(1), default=None, metavar="N", help="input resolution (pixels)")
    add_preprocessing_options(p)
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--out", metavar="DIR", default=None, help="segmentation models: folder for the colour masks "
                                                              "and overlays (default ./predictions)")
    p.set_defaults(func=run, batch_size=1, workers=0)


def read_image(path: str | Path):
    """An 8-bit RGB PIL image (:func:`flexbone.data.decode.decode_image`), or a one-line ImageDecodeError."""
    from ..data.decode import decode_image

    return decode_image(path)


def image_paths(args: list[str]) -> tuple[list[Path], list[str]]:
    """The files to classify: each IMAGE argument, or every image file under a folder argument (sorted,
    recursively; the extensions of torchvision's ImageFolder). Returns the paths and one error line per
    argument that names no image."""
    from ..data.datasets import IMG_EXTENSIONS

    paths, errors = [], []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS
                           and not f.name.startswith("."))
            if not found:
                errors.append(f"no image files ({', '.join(IMG_EXTENSIONS)}) in the folder {p}")
            paths += found
        else:
            paths.append(p)
    return paths, errors


def run(args: argparse.Namespace) -> int:
    """Classify every readable image; an unreadable one gets an error line (stderr) and does not stop the
    others. Exit status 0 if all were classified, 2 if any could not be read."""
    import sys

    import torch

    from ..data.decode import ImageDecodeError
    from ..data.transforms import build_eval_transform
    from ..train.checkpoint import model_from_checkpoint
    from ..train.distributed import resolve_device
    from .validate import eval_data_config
    from ..seg.cli import is_segmentation

    if is_segmentation(args):  # masks and overlays instead of labels (flexbone.seg.cli)
        from ..seg.cli import predict as predict_masks

        return predict_masks(args)
    paths, errors = image_paths(args.images)
    if not paths:
        raise FlexboneError(errors[0] if len(errors) == 1 else "no images to classify: " + "; ".join(errors))
    for e in errors:
        print(f"flexbone: error: {e}", file=sys.stderr)
    device = resolve_device(args.device)
    if args.onnx:  # the exported artifact, in onnxruntime (flexbone.export.runtime)
        from ..export.runtime import load_onnx_model

        model, meta = load_onnx_model(args.onnx)
    else:
        model, meta = model_from_checkpoint(args.checkpoint, args.model, use_ema=args.ema)
    model.to(device).eval()
    transform = build_eval_transform(eval_data_config(args, meta, model))
    names = meta.get("class_names")
    failed = len(errors)
    chunk = 32  # images decoded and classified at a time: a folder of thousands never sits in memory at once
    for start in range(0, len(paths), chunk):
        good, tensors = [], []
        for path in paths[start:start + chunk]:
            try:
                tensors.append(transform(read_image(path)))
            except ImageDecodeError as e:
                print(f"flexbone: error: {e}", file=sys.stderr)
                failed += 1
                continue
            good.append(path)
        if not good:
            continue
        with torch.inference_mode():
            probs = model(torch.stack(tensors).to(device)).float().softmax(dim=-1)  # (N, classes)
        k = min(args.topk, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=-1)
        for path, ps, idx in zip(good, top_p.tolist(), top_i.tolist()):
            labels = [names[i] if names and i < len(names) else str(i) for i in idx]
            if args.json:
                print(json.dumps({"image": str(path), "topk": [{"label": lab, "index": i, "prob": p}
                                                                 for lab, i, p in zip(labels, idx, ps)]}))
            else:
                print(f"{path}: " + ", ".join(f"{lab} {100 * p:.1f}%" for lab, p in zip(labels, ps)))
    return 2 if failed else 0  # each unreadable input has had its own error line
