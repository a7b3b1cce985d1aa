"""`flexbone compare MODEL [MODEL ...] [--data D --epochs N] [--img-size N]`: backbones side by side.

For every model: parameters and MACs (at ``--img-size``, 1000 classes), the measured latency on this
machine at batch 1 and at ``--batch-size`` (eager PyTorch, inference, fp32; the p50 of ``--repeats`` timed
steps after warm-up, as ``flexbone bench`` measures), and with ``--data`` the top-1 after a short
fine-tune on that data with the same recipe for every model (``--recipe``, default ``quickstart``;
``--pretrained MODEL=PATH`` starts a model from a checkpoint). One progress bar per model.

Writes, all or nothing (a staged folder renamed into place when everything succeeded), to ``--out``:
``compare.csv`` (one row per model), ``compare.png`` (top-1 vs latency with the Pareto front when
``--data`` is given, else MACs vs latency) and, with ``--data``, ``runs/<model>/`` (each fine-tune's run
folder: checkpoint, recipe, metrics). Every option is checked before the first model is built.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from ..options import int_range

EPILOG = """examples:
  flexbone compare resnet18 mobilenetv3_large_100 densenet121
  flexbone compare resnet8s_tiny resnet10s --data digits --epochs 3 --img-size 16
  flexbone compare resnet50 cspresnet50 --data /data/flowers --epochs 5 --img-size 160 \\
      --pretrained resnet50=resnet50_timm.pth --pretrained cspresnet50=cspresnet50.safetensors

--data is an image folder with train/ and val/ sub-folders, a folder of CIFAR-10/100 batch files, or
'digits' (scikit-learn's 1,797 8x8 scans; use a small --img-size such as 16 or 32)."""

# ImageNet statistics for natural images (the quickstart recipe carries the digits' own statistics)
_NATURAL_IMAGES = {"data.mean": (0.485, 0.456, 0.406), "data.std": (0.229, 0.224, 0.225), "data.crop_pct": 0.875}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="models side by side: params, MACs, latency here, top-1 after a fine-tune",
                       description="Compare backbones on this machine: parameters, MACs, measured latency at "
                                   "batch 1 and N, and (with --data) top-1 after the same short fine-tune. "
                                   "Writes a table, a CSV and a PNG.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="registered model names (see `flexbone list`)")
    p.add_argument("--data", metavar="PATH|digits", default=None, help="fine-tune and evaluate on this data")
    p.add_argument("--epochs", type=int_range(1), default=3, help="fine-tune epochs with --data (default 3)")
    p.add_argument("--recipe", default="quickstart", help="fine-tune recipe, the same for every model (default "
                                                          "quickstart; a shipped name or a YAML file)")
    p.add_argument("--pretrained", action="append", default=[], metavar="MODEL=PATH",
                   help="start MODEL's fine-tune from this checkpoint (repeatable)")
    p.add_argument("--img-size", type=int_range(8), default=224, metavar="N",
                   help="input size for MACs, latency and the fine-tune (default 224)")
    p.add_argument("--batch-size", type=int_range(1), default=32, metavar="N",
                   help="the second latency batch size (default 32); batch 1 is always measured")
    p.add_argument("--repeats", type=int_range(1), default=10, help="timed steps per latency (default 10)")
    p.add_argument("--warmup", type=int_range(0), default=3, help="untimed steps before timing (default 3)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N", help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=Path("compare"), help="output folder (default ./compare)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------- validation
def parse_pretrained(items: Sequence[str], models: Sequence[str]) -> dict[str, str]:
    """``['resnet50=w.pth']`` -> ``{'resnet50': 'w.pth'}``; each model named once, among ``models``, file present."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--pretrained {item!r}: expected MODEL=PATH")
        if name not in models:
            raise ConfigError(f"--pretrained {item!r}: {name} is not one of the compared models ({', '.join(models)})")
        if name in out:
            raise ConfigError(f"--pretrained names {name} twice")
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"--pretrained {item!r}: no file {path}")
        out[name] = str(Path(path).expanduser())
    return out


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def finetune_recipe(args: argparse.Namespace, model: str, pretrained: str | None, runs_dir: Path) -> Any:
    """The fine-tune recipe of one model: ``--recipe`` with the model, data, size, epochs and output folder."""
    from ..config import apply_overrides, load_recipe
    from .train import data_overrides, recipe_dataset

    tokens = ["--model.name", model, "--schedule.epochs", str(args.epochs), "--data.img_size", str(args.img_size),
              "--data.test_img_size", str(args.img_size), "--train.output_dir", str(runs_dir),
              "--train.run_name", model, "--train.device", args.device]
    if pretrained:
        tokens += ["--model.pretrained", pretrained]
    recipe = load_recipe(args.recipe, data_overrides(args.data, recipe_dataset(args.recipe)) + tokens)
    if recipe.data.dataset != "digits" and args.recipe == "quickstart":
        recipe = apply_overrides(recipe, _NATURAL_IMAGES)
    if recipe.schedule.warmup_epochs >= args.epochs:  # a 1-epoch comparison must not be all warm-up
        recipe = apply_overrides(recipe, {"schedule.warmup_epochs": 0})
    return recipe


def _check_data(data: str) -> None:
    if data != "digits" and not Path(data).expanduser().is_dir():
        raise ConfigError(f"--data {data}: no such folder (an image folder with train/ and val/, CIFAR batch files, "
                          "or 'digits')")


# --------------------------------------------------------------------------------------- measurement
def measure_model(name: str, args: argparse.Namespace, recipe: Any | None, bar: Any) -> dict[str, Any]:
    """One row of the comparison (see the module doc); ``bar`` advances after each step."""
    from ..bench.complexity import model_complexity
    from ..bench.throughput import BenchSettings, benchmark
    from ..train.engine import run as run_training

    size = model_complexity(name, args.img_size)
    row: dict[str, Any] = {"model": name, "params": size.params, "macs": size.macs, "img_size": args.img_size}
    bar.update(1)
    for batch in dict.fromkeys((1, args.batch_size)):  # batch 1 once if --batch-size is 1
        settings = BenchSettings(batch_size=batch, img_size=args.img_size, device=_device(args.device),
                                 warmup=args.warmup, repeats=args.repeats, threads=args.threads)
        result = benchmark([name], settings)[0]
        row[f"latency_b{batch}_ms"] = result.latency_p50_ms
        row[f"throughput_b{batch}"] = result.throughput
        bar.update(1)
    if args.batch_size == 1:
        bar.update(1)
    if recipe is not None:
        result = run_training(recipe, recipe_name=Path(args.recipe).stem, run_dir=Path(recipe.train.output_dir) / name,
                              progress=not args.no_progress, quiet=True)
        row.update(top1=result.top1, top5=result.top5, epochs=result.epochs,
                   pretrained=recipe.model.pretrained or "")
        bar.update(1)
    return row


# ------------------------------------------------------------------------------------------- outputs
def format_rows(rows: Sequence[dict[str, Any]], batch_size: int) -> str:
    from ..bench.report import format_table

    headers = ["model", "params (M)", "GMACs", "ms @b1", f"ms @b{batch_size}", f"img/s @b{batch_size}"]
    with_top1 = "top1" in rows[0]
    if with_top1:
        headers.append("top-1 (%)")
    table = []
    for r in rows:
        line = [r["model"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.3f}", f"{r['latency_b1_ms']:.2f}",
                f"{r[f'latency_b{batch_size}_ms']:.2f}", f"{r[f'throughput_b{batch_size}']:.1f}"]
        if with_top1:
            line.append(f"{r['top1']:.2f}" if r["top1"] is not None else "-")
        table.append(line)
    return format_table(headers, table, align="l" + "r" * (len(headers) - 1))


def plot_rows(rows: Sequence[dict[str, Any]], path: Path, batch_size: int, title: str = "") -> Path:
    """Top-1 (or MACs without --data) against the latency at ``batch_size``; the Pareto front joined (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write
    from .subnets import pareto_front

    latency = [r[f"latency_b{batch_size}_ms"] for r in rows]
    with_top1 = "top1" in rows[0] and all(r["top1"] is not None for r in rows)
    y = [r["top1"] if with_top1 else r["macs"] / 1e9 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.scatter(latency, y, s=24, color="tab:blue")
    for r, lx, ly in zip(rows, latency, y):
        ax.annotate(r["model"], (lx, ly), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if with_top1:  # best top-1 for the latency: lower latency and higher accuracy both win
        front = pareto_front(latency, y)
        ax.plot([latency[i] for i in front], [y[i] for i in front], "-", color="tab:red", label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(f"latency at batch {batch_size} (ms, this machine)")
    ax.set_ylabel("top-1 (%)" if with_top1 else f"GMACs at {rows[0]['img_size']} px")
    ax.set_title(title, fontsize=9)
    ax.margins(0.15)  # room for the labels of the points at the edges
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..bench.throughput import BenchSettings
    from ..interrupt import interrupt_note
    from ..models import model_entrypoint
    from ..outputs import check_replaceable, check_writable, staged_dir
    from .subnets import write_csv

    # every option first: a typo fails now, not after the first model's fine-tune
    models = list(dict.fromkeys(args.models))
    for name in models:
        model_entrypoint(name)  # unknown names fail with the closest matches
    pretrained = parse_pretrained(args.pretrained, models)
    if pretrained and not args.data:
        raise ConfigError("--pretrained applies to the fine-tune: give --data as well")
    from ..checkpoint import load_state_dict

    for path in pretrained.values():  # unreadable or unsafe: refused now, not after the latency of every model
        load_state_dict(path)
    BenchSettings(batch_size=args.batch_size, img_size=args.img_size, device=_device(args.device),
                  warmup=args.warmup, repeats=args.repeats, threads=args.threads).validate()
    check_writable(args.out, is_dir=True)
    check_replaceable(args.out, "compare.csv")
    if args.data:
        _check_data(args.data)
        for name in models:  # recipes are validated (and their keys checked) before any work
            d = finetune_recipe(args, name, pretrained.get(name), args.out / "runs").data
            missing = [s for s in (d.train_split, d.val_split) if d.dataset == "imagefolder"
                       and not (Path(d.path).expanduser() / s).is_dir()]
            if missing:  # the fine-tune would find out only after the latency of every model before it
                raise ConfigError(f"--data {args.data}: no {missing[0]}/ folder (an image folder needs "
                                  f"{d.train_split}/<class>/<images> and {d.val_split}/<class>/<images>)")

    rows: list[dict[str, Any]] = []
    steps = 3 + (1 if args.data else 0)  # size, latency at batch 1, at batch N, fine-tune
    with interrupt_note(f"nothing written to {args.out} (outputs appear only when every model is done)"), \
            staged_dir(args.out) as tmp:
        for name in models:
            recipe = finetune_recipe(args, name, pretrained.get(name), tmp / "runs") if args.data else None
            with tqdm(total=steps, desc=name, unit="step", disable=args.no_progress, file=sys.stderr,
                      leave=True) as bar:
                rows.append(measure_model(name, args, recipe, bar))
        write_csv(rows, tmp / "compare.csv")
        title = f"{'top-1 on ' + args.data + ', ' if args.data else ''}{args.img_size} px, {_device(args.device)}"
        plot_rows(rows, tmp / "compare.png", args.batch_size, title=title)
    print(format_rows(rows, args.batch_size))
    print(f"\nwrote {args.out / 'compare.csv'} and {args.out / 'compare.png'}"
          + (f"; fine-tune runs in {args.out / 'runs'}" if args.data else ""))
    return 0
