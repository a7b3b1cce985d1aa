"""`flexbone stitch --anchors A,B --checkpoints a,b --data D --out DIR`: build an SN-Net from pretrained anchors,
initialise its stitching layers by least squares on training images, save it; optionally evaluate every
configuration (MACs, parameters, top-1, the accuracy/cost plot with the anchors marked).

The folder holds ``config.json`` (the ``create_model('snnet', ...)`` arguments) and ``model.safetensors``; train
it with ``flexbone train --recipe snnet_resnet --model.pretrained DIR/model.safetensors`` (see the recipes).

With ``--evaluate --latency`` every configuration's extracted model is also timed on this machine (batch 1,
``--threads``, median of ``--repeats``); with ``--budget macs=2G`` (repeatable; ``latency=20ms``, ``params=10M``,
several joined by commas) the best evaluated configuration within each budget is picked. The configurations of
an SN-Net are few (tens), so this search is exhaustive: the pick is the exact optimum on the evaluated data.
The picks go to ``chosen.csv`` and are marked on the plot.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import int_range

EPILOG = """examples:
  flexbone stitch --anchors resnet18,resnet50 --checkpoints r18.safetensors,r50.safetensors \\
      --data /data/imagenet --out snnet-r18-r50
  flexbone stitch --anchors deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224 \\
      --checkpoints ti.pth,s.pth,b.pth --data /data/imagenet --out snnet-deit --evaluate
  flexbone stitch --from snnet-r18-r50 --weights runs/x/model.safetensors --data /data/imagenet --evaluate
  flexbone stitch --from snnet-r18-r50 --data /data/imagenet --evaluate --latency --budget latency=15ms \
      --budget macs=3G

--data is an image folder with train/ (least-squares images) and val/ (--evaluate) sub-folders, a folder of
CIFAR-10/100 batch files, or 'digits'. Anchors go small to large; each anchor's checkpoint is loaded as
create_model(name, pretrained=PATH) does (a classifier of another size is re-initialised)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stitch", help="SN-Net: stitch pretrained anchors, least-squares init, save (and evaluate)",
                       description="Build a stitchable network (SN-Net) from pretrained anchors, initialise its "
                                   "stitching layers by least squares on training images and save it; with "
                                   "--evaluate, evaluate every configuration and plot accuracy against MACs.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchors", metavar="A,B[,C]", help="registered models, small to large (e.g. resnet18,resnet50)")
    p.add_argument("--checkpoints", metavar="a,b[,c]", help="one pretrained file per anchor (default: random init)")
    p.add_argument("--from", dest="from_dir", type=Path, metavar="DIR", help="a saved SN-Net instead of --anchors")
    p.add_argument("--weights", type=Path, metavar="PATH", help="with --from: trained weights (a flexbone run's "
                                                                 "model.safetensors) to load instead of DIR's")
    p.add_argument("--data", required=True, metavar="PATH|digits", help="image folder (train/ + val/), CIFAR batch "
                                                                         "files, or 'digits'")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder to write (config.json, model.safetensors, and "
                                                           "with --evaluate configs.csv / configs.png)")
    p.add_argument("--num-classes", type=int_range(1), default=None, metavar="N",
                   help="classes of the anchors (default: the data's)")
    p.add_argument("--init-images", type=int_range(1), default=100, metavar="N",
                   help="training images for the least-squares init (default 100, as the reference)")
    p.add_argument("--no-init", action="store_true", help="keep the stitching layers' default initialisation")
    p.add_argument("--kernel", type=int_range(1), default=2, help="ViT anchors: stitching window (default 2)")
    p.add_argument("--stride", type=int_range(1), default=1, help="ViT anchors: window stride (default 1)")
    p.add_argument("--all-pairs", action="store_true", help="ViT anchors: stitch every anchor pair and chains of "
                                                            "three, not only neighbours")
    p.add_argument("--stages", default="1,2", metavar="S,S", help="hierarchical anchors: stages that may hold a "
                                                                  "stitch, 0-indexed (default 1,2: layer2, layer3)")
    p.add_argument("--evaluate", action="store_true", help="evaluate every configuration on the val split")
    p.add_argument("--latency", action="store_true", help="with --evaluate: time every configuration's extracted "
                                                          "model on this machine (batch 1, --threads)")
    p.add_argument("--repeats", type=int_range(1), default=20, help="timed runs per latency (median; default 20)")
    p.add_argument("--budget", action="append", default=[], metavar="METRIC=VALUE[,...]",
                   help="with --evaluate: pick the best configuration within this budget (macs=2G, params=10M, "
                        "latency=15ms needs --latency); repeat for several budgets")
    p.add_argument("--img-size", type=int_range(1), default=None, metavar="N",
                   help="image size (default: the largest anchor's)")
    p.add_argument("--split", default="val", help="image-folder sub-folder to evaluate (default val)")
    p.add_argument("--train-split", default="train", help="image-folder sub-folder of the init images (default train)")
    p.add_argument("--seed", type=int, default=0, help="which training images initialise the stitches")
    p.add_argument("--batch-size", type=int_range(1), default=64)
    p.add_argument("--workers", type=int_range(0), default=2, help="data loader processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N", help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def _num_classes(data: str, train_split: str) -> int:
    """Classes of ``--data``: 10 for digits, else the class folders of its training split."""
    if data == "digits":
        return 10
    if not Path(data).expanduser().is_dir():
        raise ConfigError(f"--data {data}: no such folder (an image folder with {train_split}/ and val/, CIFAR batch "
                          f"files, or 'digits')")
    folder = Path(data).expanduser() / train_split
    classes = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")] if folder.is_dir() else []
    if not classes:
        raise ConfigError(f"cannot tell the number of classes of --data {data} (no class folders in {folder}): "
                          f"pass --num-classes N")
    return len(classes)


def _build(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from ..checkpoint import load_checkpoint
    from ..stitch.snnet import build_snnet, load_snnet

    if args.from_dir is not None:
        if args.anchors or args.checkpoints:
            raise ConfigError("--from loads a saved SN-Net: leave out --anchors / --checkpoints")
        net = load_snnet(args.from_dir)
        if args.weights is not None:
            load_checkpoint(net, args.weights, strict=True)
        return net, {}
    anchors = _split(args.anchors)
    if len(anchors) < 2:
        raise ConfigError("--anchors needs at least two registered models, small to large (e.g. resnet18,resnet50)")
    if args.weights is not None:
        raise ConfigError("--weights goes with --from DIR")
    checkpoints = _split(args.checkpoints) or None
    for path in checkpoints or []:
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"--checkpoints: {path} is not a file")
    try:
        stages = [int(s) for s in _split(args.stages)]
    except ValueError:
        raise ConfigError(f"--stages {args.stages!r}: comma-separated stage numbers, e.g. 1,2") from None
    num_classes = args.num_classes or _num_classes(args.data, args.train_split)
    extra = {"img_size": args.img_size} if args.img_size and any(a.startswith(("vit", "deit", "swin")) for a in anchors) else {}
    net = build_snnet(anchors, checkpoints, num_classes, kernel=args.kernel, stride=args.stride,
                      nearest=not args.all_pairs, stages=stages, **extra)
    return net, {"anchor_checkpoints": [str(c) for c in checkpoints] if checkpoints else None}


def run(args: argparse.Namespace) -> int:
    import torch

    from ..interrupt import interrupt_note
    from ..outputs import check_replaceable, check_writable
    from ..stitch.snnet import save_snnet
    from ..train.distributed import resolve_device
    from .subnets import _calibration_loader, write_csv
    from .validate import eval_data_config

    if args.out is None and not (args.evaluate and args.from_dir is not None):
        raise ConfigError("--out DIR is needed (where the SN-Net is written)")
    budgets = _budgets(args)
    out = Path(args.out) if args.out else Path(args.from_dir)
    check_writable(out, is_dir=True)  # before any work
    check_replaceable(out, "config.json")  # save_snnet replaces the folder: never a folder of the user's own files
    if args.threads:
        torch.set_num_threads(args.threads)
    say = (lambda *a: None) if args.no_progress else (lambda *a: print(*a, file=sys.stderr))
    device = resolve_device(args.device)
    net, extra = _build(args)
    net.to(device).eval()
    data_cfg = eval_data_config(argparse.Namespace(img_size=args.img_size, crop_pct=None, interpolation=None,
                                                   batch_size=args.batch_size, workers=args.workers), {}, net)
    say(f"flexbone: SN-Net over {', '.join(type(a).__name__ for a in net.anchors)}: {net.num_configs} configurations, "
        f"{sum(p.numel() for p in net.stitch_layers.parameters()) / 1e6:.2f}M stitching parameters")
    pin = device.type == "cuda"
    if args.from_dir is None and not args.no_init:
        loader = _calibration_loader(args.data, args.train_split, data_cfg, None, 1, args.init_images, args.seed,
                                     args.workers, pin)
        images = torch.cat([x for x, _ in loader])[:args.init_images].to(device)
        with interrupt_note("nothing was written"):
            net.init_stitches(images)
        say(f"flexbone: stitching layers initialised by least squares on {len(images)} training images")
    if args.out is not None and (args.from_dir is None or args.weights is not None):
        save_snnet(net.cpu(), out, {"init_images": 0 if args.no_init else args.init_images, "seed": args.seed, **extra})
        net.to(device)
        # the result line is not progress: printed with --no-progress too
        print(f"flexbone: wrote {out / 'config.json'} and {out / 'model.safetensors'}", file=sys.stderr)
    if args.evaluate:
        latency = time_configs(net, data_cfg.img_size, threads=args.threads, repeats=args.repeats,
                               progress=not args.no_progress) if args.latency else None
        rows = evaluate_configs(net, args, data_cfg, device, latency)
        csv_path = write_csv(rows, out / "configs.csv")
        chosen = choose_configs(rows, budgets)
        if chosen:
            write_csv(chosen, out / "chosen.csv")
        plot = plot_configs(rows, out / "configs.png", title=f"SN-Net: {net.num_configs} configurations",
                            chosen=chosen)
        say(f"flexbone: {csv_path} and {plot}" + (f" ({out / 'chosen.csv'})" if chosen else ""))
        for r in rows:
            ms = f" {r['latency_ms']:8.2f} ms" if "latency_ms" in r else ""
            print(f"{r['id']:3d}  {r['path']:<40s} {r['macs'] / 1e6:10.1f}M MACs {r['params'] / 1e6:8.2f}M params"
                  f"{ms} top-1 {r['top1']:6.2f}%{'  (pareto)' if r['pareto'] else ''}")
        for c in chosen:
            print(f"budget {c['budget']}: configuration {c['id']} ({c['path']}), top-1 {c['top1']:.2f}%"
                  if c["id"] is not None else f"budget {c['budget']}: no configuration fits")
    return 0


def _budgets(args: argparse.Namespace) -> list[dict[str, float]]:
    """``--budget`` values parsed and checked against the other options, before any work."""
    from .search import parse_budgets

    budgets = parse_budgets(args.budget)
    if budgets and not args.evaluate:
        raise ConfigError("--budget picks among evaluated configurations: add --evaluate")
    if any("latency" in b for b in budgets) and not args.latency:
        raise ConfigError("a latency budget needs --latency (every configuration timed on this machine)")
    return budgets


def choose_configs(rows: list[dict[str, Any]], budgets: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Per budget, the evaluated configuration with the best top-1 among those within every limit (ties: the
    cheaper in MACs); ``id`` None where none fits. Exhaustive over the configurations: the exact optimum."""
    from .search import budget_label

    key = {"macs": "macs", "params": "params", "latency": "latency_ms"}
    chosen = []
    for budget in budgets:
        fits = [r for r in rows if all(r[key[k]] <= v for k, v in budget.items())]
        best = max(fits, key=lambda r: (r["top1"], -r["macs"]), default=None)
        pick = {k: best[k] for k in ("id", "kind", "path", "macs", "params", "latency_ms", "top1") if k in best} \
            if best else {"id": None}
        chosen.append({"budget": budget_label(budget), **{f"limit_{k}": v for k, v in budget.items()}, **pick})
    columns = list(dict.fromkeys(k for c in chosen for k in c))  # one header for budgets of different metrics
    return [{k: c.get(k, "") for k in columns} for c in chosen]


def time_configs(net: Any, img_size: int, *, threads: int | None = None, batch_size: int = 1, warmup: int = 3,
                 repeats: int = 20, progress: bool = False) -> dict[int, float]:
    """Latency (ms, median of ``repeats``) of every configuration's extracted model on this machine, as it would be
    deployed: ``{config id: ms}``."""
    import torch.nn as nn
    from tqdm.auto import tqdm

    from ..search.latency import time_module

    in_chans = next((m.in_channels for m in net.modules() if isinstance(m, nn.Conv2d)), 3)
    timings = {}
    for i in tqdm(range(net.num_configs), desc="timing configurations", unit="cfg", disable=not progress,
                  file=sys.stderr):
        extracted = net.extract(i).cpu().eval()
        timings[i] = time_module(extracted, (in_chans, img_size, img_size), batch_size=batch_size, threads=threads,
                                 warmup=warmup, repeats=repeats)
    return timings


def evaluate_configs(net: Any, args: argparse.Namespace, data_cfg: Any, device: Any,
                     latency: dict[int, float] | None = None, class_names: list[str] | None = None,
                     ) -> list[dict[str, Any]]:
    """One row per configuration: id, kind (anchor / stitch), path, MACs, params, latency (where ``latency``, from
    :func:`time_configs`, gives it), top-1, top-5, loss, pareto."""
    from tqdm.auto import tqdm

    from ..data.loader import ImageLoader
    from ..data.samplers import ShardedEvalSampler
    from ..train.engine import evaluate
    from .subnets import pareto_front
    from .validate import eval_dataset

    eval_set = eval_dataset(args.data, args.split, data_cfg, class_names)
    loader = ImageLoader(eval_set, args.batch_size, ShardedEvalSampler(eval_set), args.workers, False,
                         device.type == "cuda", False, 0)
    costs = net.configs(data_cfg.img_size)
    names = getattr(net, "spec", {}).get("anchors") or [type(a).__name__ for a in net.anchors]
    rows = []
    for cost in tqdm(costs, desc="configurations", unit="cfg", disable=args.no_progress, file=sys.stderr):
        net.set_active(cost["id"])
        stats = evaluate(net, loader, device)
        cfg = net.stitch_config(cost["id"])
        path = names[cfg.anchors[0]] if cfg.is_anchor else f"{' -> '.join(names[a] for a in cfg.anchors)}: {cfg.describe()}"
        timing = {"latency_ms": latency[cost["id"]]} if latency else {}
        rows.append({"id": cost["id"], "kind": "anchor" if cfg.is_anchor else "stitch", "path": path,
                     "img_size": data_cfg.img_size, "macs": cost["macs"], "params": cost["params"],
                     **timing, "top1": stats["top1"], "top5": stats["top5"], "loss": stats["loss"]})
    net.set_active(len(net.anchors) - 1)
    front = set(pareto_front([r["macs"] for r in rows], [r["top1"] for r in rows]))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return rows


def plot_configs(rows: list[dict[str, Any]], path: Path, title: str = "",
                 chosen: list[dict[str, Any]] | None = None) -> Path:
    """MACs (millions) vs top-1 of every configuration: stitches as dots, anchors as labelled stars, the Pareto
    front joined, the configurations ``chosen`` for budgets ringed (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    stitches = [r for r in rows if r["kind"] == "stitch"]
    ax.scatter([r["macs"] / 1e6 for r in stitches], [r["top1"] for r in stitches], s=18, alpha=0.6, label="stitches")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["macs"])
    ax.plot([r["macs"] / 1e6 for r in front], [r["top1"] for r in front], "-", color="tab:red", label="Pareto front")
    for r in rows:
        if r["kind"] == "anchor":
            ax.scatter([r["macs"] / 1e6], [r["top1"]], marker="*", s=160, color="tab:orange", zorder=3)
            ax.annotate(r["path"], (r["macs"] / 1e6, r["top1"]), textcoords="offset points", xytext=(6, -10), fontsize=8)
    picked = [c for c in chosen or [] if c["id"] is not None]
    for i, c in enumerate(picked):
        ax.scatter([c["macs"] / 1e6], [c["top1"]], s=140, facecolors="none", edgecolors="tab:green", linewidths=1.5,
                   zorder=4, label="chosen for a budget" if i == 0 else None)
        ax.annotate(c["budget"], (c["macs"] / 1e6, c["top1"]), textcoords="offset points", xytext=(6, 6), fontsize=7,
                    color="tab:green")
    ax.set_xlabel(f"MACs (millions, at {rows[0]['img_size']} px)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# ------------------------------------------------------------- an SN-Net under `flexbone subnets` / `flexbone search`
def _load_for_evaluation(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, Any]:
    """``(SN-Net in eval mode on its device, metadata, evaluation data config, device)`` for ``--checkpoint``."""
    import torch

    from ..stitch.snnet import load_snnet_checkpoint
    from ..train.distributed import resolve_device
    from .validate import eval_data_config

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(getattr(args, "device", "cpu"))
    net, meta = load_snnet_checkpoint(args.checkpoint)
    net.to(device).eval()
    data_cfg = eval_data_config(args, meta, net)
    return net, meta, data_cfg, device


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.no_progress:
        print(f"flexbone: {text}", file=sys.stderr)


def run_subnets(args: argparse.Namespace) -> int:
    """``flexbone subnets --checkpoint SNNET``: every configuration of an SN-Net (they are few, so all of them
    rather than a sample): MACs, params, latency of the extracted model on this machine, top-1; the CSV and the
    accuracy/MACs plot with the anchors marked."""
    from ..bench.report import format_table
    from ..interrupt import interrupt_note
    from ..outputs import check_writable
    from .subnets import write_csv

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out {out}: the results are written as a .csv file")
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    for path in (out, plot):
        check_writable(path)
    if args.resume:
        raise ConfigError("--resume continues a sampled once-for-all evaluation; an SN-Net's configurations are "
                          "evaluated in one pass: drop --resume")
    net, meta, data_cfg, device = _load_for_evaluation(args)
    _say(args, f"{args.checkpoint} holds an SN-Net: all {net.num_configs} configurations are evaluated and timed "
               f"(--n and --bn-batches apply to once-for-all supernets)")
    with interrupt_note("nothing was written"):
        latency = time_configs(net, data_cfg.img_size, threads=args.threads, repeats=args.repeats,
                               progress=not args.no_progress)
        rows = evaluate_configs(net, args, data_cfg, device, latency, meta.get("class_names"))
    write_csv(rows, out)
    plot_configs(rows, plot, title=f"SN-Net on {args.data}: {net.num_configs} configurations")
    print(format_table(["id", "kind", "configuration", "MMACs", "params", "latency ms", "top-1 %", "Pareto"],
                       [[r["id"], r["kind"], r["path"], r["macs"] / 1e6, r["params"], r["latency_ms"], r["top1"],
                         "*" if r["pareto"] else ""] for r in rows], align="rllrrrrl"))
    print(f"wrote {out} and {plot}")
    return 0


def _check_budgets(budgets: list[dict[str, float]], costs: list[dict[str, Any]],
                   latency: dict[int, float] | None) -> None:
    """Fail on a budget that no configuration meets, naming the cheapest configuration's costs. Without
    ``latency`` (before timing) only the MACs and params limits are checked."""
    for b in budgets:
        limits = {k: v for k, v in b.items() if latency is not None or k != "latency"}
        cost = [{"macs": c["macs"], "params": c["params"], **({"latency": latency[c["id"]]} if latency else {})}
                for c in costs]
        if limits and not any(all(c[k] <= v for k, v in limits.items()) for c in cost):
            from .search import budget_label

            cheapest = ", ".join(f"{k} = {min(c[k] for c in cost):.4g}{' ms' if k == 'latency' else ''}"
                                 for k in limits)
            raise ConfigError(f"budget {budget_label(b)} cannot be met by any configuration of this SN-Net "
                              f"(the cheapest each: {cheapest})")


def run_search(args: argparse.Namespace) -> int:
    """``flexbone search --checkpoint SNNET``: per budget, the best configuration of an SN-Net. Its configurations
    are few, so each is evaluated and timed and the pick is exhaustive (the exact optimum on the data, no predictor
    or evolution). ``DIR/<budget>/model.safetensors`` holds the chosen configuration as a static model that
    ``flexbone export --checkpoint`` (or ``--subnet DIR/<budget>``) exports."""
    from ..bench.report import format_table
    from ..interrupt import interrupt_note
    from ..outputs import check_replaceable, check_writable, staged_dir
    from ..stitch.snnet import save_configuration
    from .search import budget_label, parse_budgets
    from .subnets import write_csv

    budgets = parse_budgets(args.budget)
    labels = [budget_label(b) for b in budgets]
    if len(set(labels)) < len(labels):
        raise ConfigError("the same budget is given twice")
    for option, value in (("--predictor", args.predictor), ("--latency-table", args.latency_table),
                          ("--resolutions", args.resolutions), ("--pretrain", args.pretrain),
                          ("--resume", args.resume)):
        if value:
            raise ConfigError(f"{option} applies to once-for-all supernets; an SN-Net's configurations are all "
                              f"evaluated and timed: drop {option}")
    out = Path(args.out)
    check_writable(out, is_dir=True)
    check_replaceable(out, "search.csv")
    net, meta, data_cfg, device = _load_for_evaluation(args)
    img_size = data_cfg.img_size
    costs = net.configs(img_size)
    _check_budgets(budgets, costs, None)  # an impossible MACs / params budget fails before any timing
    _say(args, f"{args.checkpoint} holds an SN-Net: all {net.num_configs} configurations are timed and evaluated, "
               f"the pick per budget is exhaustive (--n, --generations and --population apply to once-for-all "
               f"supernets)")
    with interrupt_note("nothing was written"):
        latency = time_configs(net, img_size, threads=args.threads, batch_size=args.batch_size_latency,
                               warmup=args.warmup, repeats=args.repeats, progress=not args.no_progress)
        _check_budgets(budgets, costs, latency)  # and an impossible latency budget before the evaluation
        rows = evaluate_configs(net, args, data_cfg, device, latency, meta.get("class_names"))
    chosen = choose_configs(rows, budgets)  # every budget has a configuration that fits (checked above)
    preprocessing = {"img_size": img_size, "test_img_size": img_size, "crop_pct": data_cfg.crop_pct,
                     "interpolation": data_cfg.interpolation, "mean": list(data_cfg.mean), "std": list(data_cfg.std),
                     **{k: meta[k] for k in ("class_names", "digits_test_fraction", "digits_split_seed") if k in meta}}
    found = [{**c, "folder": label} for label, c in zip(labels, chosen)]
    with staged_dir(out) as tmp:
        for f in found:
            save_configuration(net.cpu(), int(f["id"]), tmp / f["folder"] / "model.safetensors", preprocessing)
        write_csv(rows, tmp / "configs.csv")
        write_csv(found, tmp / "search.csv")
        plot_configs(rows, tmp / "search.png", title=f"SN-Net on {args.data}: best configuration per budget",
                     chosen=chosen)
    print(format_table(["budget", "id", "configuration", "MMACs", "params", "latency ms", "top-1 %"],
                       [[f["budget"], f["id"], f["path"], f["macs"] / 1e6, f["params"], f["latency_ms"], f["top1"]]
                        for f in found], align="lrlrrrr"))
    print(f"wrote {out}/ (one folder per budget with the configuration's model.safetensors, search.csv, configs.csv, "
          f"search.png); export one with: flexbone export --checkpoint {out / found[0]['folder'] / 'model.safetensors'}"
          f" --format onnx --out model.onnx")
    return 0
