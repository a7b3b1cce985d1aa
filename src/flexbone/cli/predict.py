"""`flexbone predict --model M --checkpoint C IMAGE... [--topk K]`: the top-k classes of each image."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import FlexboneError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint (top-k labels and probabilities)",
                       description="Classify image files. Labels come from the class names stored in the "
                                   "checkpoint (flexbone runs), else class indices are shown.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)")
    p.add_argument("--model", metavar="NAME", help="model name (default: the one stored in the checkpoint)")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="weights (.safetensors / .pt / .pth)")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="classes shown per image (default 5)")
    p.add_argument("--img-size", type=int, default=None, metavar="N", help="input resolution (pixels)")
    p.add_argument("--crop-pct", type=float, default=None, metavar="F", help="centre-crop ratio")
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=run, interpolation=None, batch_size=1, workers=0)


def read_image(path: str | Path):
    """An 8-bit RGB PIL image (:func:`flexbone.data.decode.decode_image`), or a one-line ImageDecodeError."""
    from ..data.decode import decode_image

    return decode_image(path)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.transforms import build_eval_transform
    from ..train.checkpoint import model_from_checkpoint
    from ..train.distributed import resolve_device
    from .validate import eval_data_config

    if args.topk < 1:
        raise FlexboneError(f"--topk must be >= 1, got {args.topk}")
    images = [read_image(p) for p in args.images]  # all files checked before the model is built
    device = resolve_device(args.device)
    model, meta = model_from_checkpoint(args.checkpoint, args.model, use_ema=args.ema)
    model.to(device)
    transform = build_eval_transform(eval_data_config(args, meta, model))
    names = meta.get("class_names")
    batch = torch.stack([transform(im) for im in images]).to(device)  # (N, 3, H, W)
    with torch.inference_mode():
        probs = model(batch).float().softmax(dim=-1)
    k = min(args.topk, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=-1)
    for path, ps, idx in zip(args.images, top_p.tolist(), top_i.tolist()):
        labels = [names[i] if names and i < len(names) else str(i) for i in idx]
        if args.json:
            print(json.dumps({"image": str(path), "topk": [{"label": lab, "index": i, "prob": p}
                                                             for lab, i, p in zip(labels, idx, ps)]}))
        else:
            print(f"{path}: " + ", ".join(f"{lab} {100 * p:.1f}%" for lab, p in zip(labels, ps)))
    return 0
