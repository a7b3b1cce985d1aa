"""`flexbone info MODEL`: size, cost, feature pyramid and input configuration of one model."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import FlexboneError
from ..options import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters, MACs, feature pyramid and input config of a model",
                       description="Parameters, MACs (batch 1), the feature pyramid (channels, reduction, "
                                   "module and map size per level) and the default input configuration "
                                   "of one model. Nothing is allocated: the model is built on the meta device.")
    p.add_argument("model", help="model name, e.g. resnet50 (see `flexbone list`)")
    p.add_argument("--img-size", type=int_range(1), default=None, metavar="N",
                   help="input size for MACs and map sizes (default: the model's input size)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def model_info(name: str, img_size: int | None = None) -> dict[str, Any]:
    """Everything ``flexbone info`` shows, as a JSON-ready dict."""
    from ..bench.complexity import build_on_meta, sized_kwargs
    from ..models import model_family

    family = model_family(name)  # unknown names fail here, with suggestions
    kwargs = sized_kwargs(name, img_size) if img_size is not None else {}  # a ViT is built for --img-size
    try:
        model = build_on_meta(name, **kwargs)
        return _describe(name, family, model, img_size)
    except (NotImplementedError, RuntimeError):  # code that needs real values: build it on the CPU
        from ..models import create_model

        return _describe(name, family, create_model(name, **kwargs), img_size)


def _describe(name: str, family: str, model: torch.nn.Module, img_size: int | None) -> dict[str, Any]:
    import torch

    from ..bench.complexity import count_macs, count_params
    from ..models.scaling import paper_training_resolutions

    cfg = dict(model.default_cfg)
    in_chans, h, w = cfg["input_size"]
    if img_size is not None:
        h = w = img_size
    macs = count_macs(model, (h, w), in_chans)
    # the real map sizes at this input (on a meta model: shapes only, no compute)
    device = next(model.parameters()).device
    with torch.no_grad():
        x = torch.zeros(1, in_chans, h, w, device=device)
        maps = model.eval().forward_intermediates(x, intermediates_only=True)
    pyramid = [
        dict(level=i, module=s.module, channels=s.num_chs, reduction=s.reduction, map_size=list(m.shape[-2:]))
        for i, (s, m) in enumerate(zip(model.feature_info, maps))
    ]
    return dict(
        model=name, family=family, params=count_params(model), macs=macs, img_size=[h, w],
        num_features=getattr(model, "num_features", None), head_hidden_size=getattr(model, "head_hidden_size", None),
        feature_pyramid=pyramid,
        default_cfg={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        paper_train_img_sizes=paper_training_resolutions(name),  # ResNet-RS: Bello et al. 2021, Table 7
    )


def run(args: argparse.Namespace) -> int:
    if args.img_size is not None and args.img_size < 1:
        raise FlexboneError(f"--img-size must be at least 1, not {args.img_size}")
    info = model_info(args.model, args.img_size)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_info(info)
    return 0


def print_info(info: dict[str, Any]) -> None:
    """The text form of :func:`model_info`."""
    from ..bench.report import format_table

    h, w = info["img_size"]
    print(f"{info['model']}  (family: {info['family']})")
    print(f"  parameters    {info['params']:,} ({info['params'] / 1e6:.2f} M)")
    print(f"  MACs          {info['macs'] / 1e9:.3f} G at {h}x{w} (batch 1)")
    if info["num_features"]:
        print(f"  num_features  {info['num_features']} (channels of the last feature map)")
    if info.get("head_hidden_size"):
        print(f"  head_hidden_size  {info['head_hidden_size']} (pooled features before the classifier)")
    if info.get("paper_train_img_sizes"):
        sizes = ", ".join(map(str, info["paper_train_img_sizes"]))
        print(f"  trained at    {sizes} px in the paper (Bello et al. 2021, Table 7; see flexbone.models.scaling)")
    print("\nfeature pyramid (features_only=True, out_indices):")
    rows = [[p["level"], p["module"], p["channels"], p["reduction"], "x".join(map(str, p["map_size"]))]
            for p in info["feature_pyramid"]]
    table = format_table(["level", "module", "channels", "reduction", f"map @{h}x{w}"], rows, align="llrrr")
    print("\n".join("  " + line for line in table.splitlines()))
    print("\ndefault input config:")
    for key, value in info["default_cfg"].items():
        print(f"  {key:<18}{_fmt(value)}")


def _fmt(v: Any) -> str:
    if isinstance(v, list) and v and isinstance(v[0], float):
        return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
    if isinstance(v, list):
        return "(" + ", ".join(map(str, v)) + ")"
    return "-" if v is None else str(v)
