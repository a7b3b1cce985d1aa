"""`flexbone compare MODEL [MODEL ...] [--data D --epochs N] [--img-size N]`: backbones side by side.

For every model: parameters and MACs (at ``--img-size``, 1000 classes), the measured latency on this
machine at batch 1 and at ``--batch-size`` (inference, fp32, the median of ``--repeats`` timed steps after
``--warmup``), and with ``--data`` the top-1 after a short fine-tune on that data with the same recipe for every
model (``--recipe``, default ``quickstart``; ``--pretrained MODEL=PATH`` starts a model from a checkpoint). One
progress bar per model.

Latency, ``--latency-backend`` (both by default):

* eager: the PyTorch model, as ``flexbone bench`` measures it (on ``--device``).
* onnxruntime: the model as a deployment runs it: exported as ``flexbone export --fold-bn --dynamic-batch``
  writes it (BN folded, checked against PyTorch in onnxruntime) to a temporary file and timed in an onnxruntime
  CPU session (:func:`flexbone.search.latency.time_onnx_file`) with the eager measurement's thread count. One
  dynamic-batch export serves both batch sizes: half the export and check time of one file per batch size, and
  the file a deployer who batches would ship. A model that cannot be exported gets ``n/a: <reason>`` and the
  comparison goes on, unless onnxruntime is the only backend asked for.

The plot uses the onnxruntime latency whenever it is measured (the latency a deployed model gets); with
``--latency-backend eager`` the eager one.

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

from ..errors import CheckpointError, ConfigError, ExportError, FlexboneError
from ..options import int_range

LATENCY_BACKENDS = ("both", "eager", "onnxruntime")

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
                                   "batch 1 and N (eager PyTorch and the exported model in onnxruntime), and "
                                   "(with --data) top-1 after the same short fine-tune. Writes a table, a CSV and "
                                   "a PNG.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="registered model names (see `flexbone list`)")
    p.add_argument("--data", metavar="PATH|digits", default=None, help="fine-tune and evaluate on this data")
    p.add_argument("--epochs", type=int_range(1), default=3, help="fine-tune epochs with --data (default 3)")
    p.add_argument("--recipe", default="quickstart", help="fine-tune recipe, the same for every model (default "
                                                          "quickstart; a shipped name or a YAML file)")
    p.add_argument("--pretrained", action="append", default=[], metavar="MODEL=PATH",
                   help="start MODEL's fine-tune from this checkpoint (repeatable; checked against MODEL, "
                        "the classifier excepted, before anything is measured)")
    p.add_argument("--img-size", type=int_range(8), default=224, metavar="N",
                   help="input size for MACs, latency and the fine-tune (default 224)")
    p.add_argument("--batch-size", type=int_range(1), default=32, metavar="N",
                   help="the second latency batch size (default 32); batch 1 is always measured")
    p.add_argument("--latency-backend", choices=LATENCY_BACKENDS, default="both",
                   help="both (default): eager PyTorch and the exported ONNX model in onnxruntime (CPU), the plot "
                        "on onnxruntime's; eager: PyTorch only, no export; onnxruntime: the exported model only "
                        "(a model that cannot be exported then fails the command)")
    p.add_argument("--repeats", type=int_range(1), default=10, help="timed steps per latency (default 10)")
    p.add_argument("--warmup", type=int_range(0), default=3, help="untimed steps before timing (default 3)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N",
                   help="intra-op threads of torch and onnxruntime while timing (default torch's count)")
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


def check_pretrained_fits(name: str, path: str, model_kwargs: dict[str, Any]) -> None:
    """Refuse, in one line naming the file and the first key that does not fit, a checkpoint that the fine-tune of
    ``name`` could not load: keys and shapes compared as its ``create_model(name, pretrained=path)`` compares them,
    a classifier of another size excepted (the fine-tune re-initialises it for the data's classes)."""
    from ..bench.complexity import build_on_meta
    from ..checkpoint import load_state_dict, match_state_dict
    from ..models import create_model, model_entrypoint

    if getattr(model_entrypoint(name), "loads_pretrained", False):  # a composed model loads it into its backbone
        try:
            create_model(name, pretrained=path, **model_kwargs)
        except CheckpointError as e:
            raise CheckpointError(f"--pretrained {name}={path} does not fit {name}: {e}") from None
        return
    state = load_state_dict(path)  # weights_only / safetensors, as the fine-tune reads it
    try:
        model = build_on_meta(name, **model_kwargs)  # shapes only: no weights allocated
    except (NotImplementedError, RuntimeError):  # code that needs real values cannot run on meta
        model = create_model(name, **model_kwargs)
    _, report = match_state_dict(model, state, skip_mismatched_classifier=True, adapt_first_conv=True)
    if report.ok:
        return
    if report.mismatched:  # the first in the model's order (a safetensors file lists its keys sorted by name)
        order = {k: i for i, k in enumerate(model.state_dict())}
        key, have, want = min(report.mismatched, key=lambda m: order[m[0]])
        first = f"{key} has shape {tuple(have)} in the file, {tuple(want)} in the model"
    elif report.missing:
        first = f"{report.missing[0]} is not in the file"
    else:
        first = f"{report.unexpected[0]} in the file is not in the model"
    raise CheckpointError(f"--pretrained {name}={path} does not fit {name}: {first} ({len(report.missing)} missing, "
                          f"{len(report.unexpected)} unexpected, {len(report.mismatched)} mis-shaped keys)")


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def finetune_recipe(args: argparse.Namespace, model: str, pretrained: str | None, runs_dir: Path) -> Any:
    """The fine-tune recipe of one model: ``--recipe`` with the model, data, size, epochs and output folder."""
    from ..bench.complexity import sized_kwargs
    from ..config import apply_overrides, load_recipe
    from .train import data_overrides, recipe_dataset

    tokens = ["--model.name", model, "--schedule.epochs", str(args.epochs), "--data.img_size", str(args.img_size),
              "--data.test_img_size", str(args.img_size), "--train.output_dir", str(runs_dir),
              "--train.run_name", model, "--train.device", args.device]
    if pretrained:
        tokens += ["--model.pretrained", pretrained]
    for key, value in sized_kwargs(model, args.img_size).items():
        tokens += [f"--model.kwargs.{key}", str(value)]
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
def _backends(latency_backend: str) -> tuple[str, ...]:
    return ("eager", "onnxruntime") if latency_backend == "both" else (latency_backend,)


def _batches(batch_size: int) -> list[int]:
    return list(dict.fromkeys((1, batch_size)))  # batch 1 once if --batch-size is 1


def _steps(args: argparse.Namespace, backends: Sequence[str]) -> int:
    """Progress-bar steps of one model: its size, each eager batch, the export and each onnxruntime batch, the
    fine-tune."""
    n = len(_batches(args.batch_size))
    return 1 + ("eager" in backends) * n + ("onnxruntime" in backends) * (1 + n) + (1 if args.data else 0)


def onnxruntime_latency(name: str, img_size: int, batches: Sequence[int], threads: int, warmup: int, repeats: int,
                        bar: Any = None, model_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
    """``{'onnxruntime_latency_b{N}_ms', 'onnxruntime_throughput_b{N}'}`` for each batch size: ``name`` (random
    weights, 1000 classes) exported to a temporary ONNX file as ``flexbone export --fold-bn --dynamic-batch``
    writes it (checked against PyTorch in onnxruntime), then timed in an onnxruntime CPU session with ``threads``
    intra-op threads (the median of ``repeats`` runs after ``warmup``). Raises :class:`ExportError` if the model
    cannot be exported."""
    import tempfile

    from ..export import export_model, load_source
    from ..search.latency import time_onnx_file

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="flexbone-compare-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        export_model(load_source(name, **(model_kwargs or {})), path, "onnx", img_size=img_size, fold=True, dynamic_batch=True,
                     log=lambda _: None)
        if bar is not None:
            bar.update(1)
        for batch in batches:
            ms = time_onnx_file(path, (3, img_size, img_size), batch_size=batch, threads=threads, warmup=warmup,
                                repeats=repeats)
            out[f"onnxruntime_latency_b{batch}_ms"] = ms
            out[f"onnxruntime_throughput_b{batch}"] = batch / ms * 1e3
            if bar is not None:
                bar.update(1)
    return out


def _export_failure(name: str, e: Exception) -> str:
    """One line saying why ``name`` has no onnxruntime latency (the model's name, which the row shows, cut off)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if not isinstance(e, FlexboneError):
        text = f"{type(e).__name__}: {text}"
    # export's advice to try another --opset names an option compare does not have
    return text.removeprefix(f"{name}: ").split(" (try another --opset")[0]


def measure_model(name: str, args: argparse.Namespace, recipe: Any | None, bar: Any, threads: int) -> dict[str, Any]:
    """One row of the comparison (see the module doc); ``bar`` advances after each step."""
    from ..bench.complexity import model_complexity, sized_kwargs
    from ..bench.throughput import BenchSettings, benchmark
    from ..train.engine import run as run_training
    from ..train.threads import apply_thread_choice

    backends = _backends(args.latency_backend)
    batches = _batches(args.batch_size)
    sized = sized_kwargs(name, args.img_size)
    size = model_complexity(name, args.img_size)
    row: dict[str, Any] = {"model": name, "params": size.params, "macs": size.macs, "img_size": args.img_size,
                           "threads": threads}
    bar.update(1)
    if "eager" in backends:
        for batch in batches:
            settings = BenchSettings(batch_size=batch, img_size=args.img_size, device=_device(args.device),
                                     warmup=args.warmup, repeats=args.repeats, threads=threads)
            result = benchmark([name], settings, **sized)[0]
            row[f"eager_latency_b{batch}_ms"] = result.latency_p50_ms
            row[f"eager_throughput_b{batch}"] = result.throughput
            bar.update(1)
    if "onnxruntime" in backends:
        try:
            row.update(onnxruntime_latency(name, args.img_size, batches, threads, args.warmup, args.repeats, bar,
                                           sized),
                       onnxruntime_error="")
        except Exception as e:  # noqa: BLE001 - any failure of the export is the model's, and is reported as such
            reason = _export_failure(name, e)
            if backends == ("onnxruntime",):  # the user asked for nothing else: the comparison cannot go on
                raise ExportError(f"{name}: no onnxruntime latency: {reason} (--latency-backend both reports it "
                                  f"as n/a and goes on)") from None
            for batch in batches:
                row[f"onnxruntime_latency_b{batch}_ms"] = row[f"onnxruntime_throughput_b{batch}"] = None
            row["onnxruntime_error"] = reason
            bar.update(1 + len(batches))
    if recipe is not None:
        # the fine-tune takes the threads `flexbone train` would (one for small steps); the timing above set its own
        apply_thread_choice(args.threads, batch_size=recipe.data.batch_size, img_size=recipe.data.img_size,
                            in_chans=recipe.model.kwargs.get("in_chans", 3), loader_workers=recipe.data.workers)
        result = run_training(recipe, recipe_name=Path(args.recipe).stem, run_dir=Path(recipe.train.output_dir) / name,
                              progress=not args.no_progress, quiet=True)
        row.update(top1=result.top1, top5=result.top5, epochs=result.epochs,
                   pretrained=recipe.model.pretrained or "")
        bar.update(1)
    return row


# ------------------------------------------------------------------------------------------- outputs
NA_WIDTH = 60  # characters of an export failure's reason shown in the table (the CSV and a note below hold it all)


def plot_backend(rows: Sequence[dict[str, Any]]) -> str:
    """The latency the plot shows: onnxruntime's whenever it was measured (what a deployed model gets), else eager."""
    return "onnxruntime" if "onnxruntime_error" in rows[0] else "eager"


def format_rows(rows: Sequence[dict[str, Any]], batch_size: int) -> str:
    """The text table: size, the latency of each measured backend at batch 1 and ``batch_size``, top-1; a model
    without an onnxruntime latency gets ``n/a: <reason>`` (cut to fit; :func:`export_notes` has it all)."""
    from ..bench.report import format_table

    batches = _batches(batch_size)
    backends = [b for b in ("eager", "onnxruntime") if f"{b}_latency_b1_ms" in rows[0]]
    headers = ["model", "params (M)", "GMACs", *(f"{b} ms @b{n}" for b in backends for n in batches)]
    with_top1 = "top1" in rows[0]
    if with_top1:
        headers.append("top-1 (%)")
    table = []
    for r in rows:
        line = [r["model"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.3f}"]
        for b in backends:
            for i, n in enumerate(batches):
                ms = r[f"{b}_latency_b{n}_ms"]
                if ms is not None:
                    line.append(f"{ms:.2f}")
                else:
                    reason = r["onnxruntime_error"]
                    short = reason if len(reason) <= NA_WIDTH else reason[:NA_WIDTH - 3] + "..."
                    line.append(f"n/a: {short}" if i == 0 else "n/a")
        if with_top1:
            line.append(f"{r['top1']:.2f}" if r["top1"] is not None else "-")
        table.append(line)
    return format_table(headers, table, align="l" + "r" * (len(headers) - 1))


def export_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """``'<model>: no onnxruntime latency: <reason>'`` for each model that could not be exported."""
    return [f"{r['model']}: no onnxruntime latency: {r['onnxruntime_error']}"
            for r in rows if r.get("onnxruntime_error")]


def plot_rows(rows: Sequence[dict[str, Any]], path: Path, batch_size: int, title: str = "") -> Path:
    """Top-1 (or MACs without --data) against the latency at ``batch_size`` (:func:`plot_backend`'s); the Pareto
    front joined (PNG). Models without that latency are named below the plot instead of drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write
    from .subnets import pareto_front

    backend = plot_backend(rows)
    key = f"{backend}_latency_b{batch_size}_ms"
    missing = [r["model"] for r in rows if r[key] is None]
    img_size, has_top1 = rows[0]["img_size"], "top1" in rows[0]
    rows = [r for r in rows if r[key] is not None]
    latency = [r[key] for r in rows]
    with_top1 = has_top1 and all(r["top1"] is not None for r in rows)
    y = [r["top1"] if with_top1 else r["macs"] / 1e9 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.scatter(latency, y, s=24, color="tab:blue")
    for r, lx, ly in zip(rows, latency, y):
        ax.annotate(r["model"], (lx, ly), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if with_top1:  # best top-1 for the latency: lower latency and higher accuracy both win
        front = pareto_front(latency, y)
        ax.plot([latency[i] for i in front], [y[i] for i in front], "-", color="tab:red", label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    where = "this machine's CPU" if backend == "onnxruntime" else "this machine"
    ax.set_xlabel(f"{backend} latency at batch {batch_size} (ms, {where})")
    ax.set_ylabel("top-1 (%)" if with_top1 else f"GMACs at {img_size} px")
    ax.set_title(title, fontsize=9)
    if missing:
        fig.text(0.01, 0.01, f"not plotted (no {backend} latency): {', '.join(missing)}", fontsize=7)
    ax.margins(0.15)  # room for the labels of the points at the edges
    ax.grid(True, alpha=0.3)
    fig.tight_layout(rect=(0, 0.03 if missing else 0, 1, 1))
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- run
def _onnxruntime_available(latency_backend: str) -> str:
    """``latency_backend``, or ``'eager'`` when onnxruntime is missing and eager was asked for too (with a warning);
    onnxruntime alone without onnxruntime is refused."""
    if latency_backend == "eager":
        return latency_backend
    try:
        from ..export.onnx import require_onnxruntime

        require_onnxruntime()
    except ExportError as e:
        if latency_backend == "onnxruntime":
            raise ConfigError(f"--latency-backend onnxruntime: {e}") from None
        print(f"flexbone: warning: {e}; measuring eager latency only", file=sys.stderr)
        return "eager"
    return latency_backend


def run(args: argparse.Namespace) -> int:
    import torch
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
    # one thread count for both backends, fixed now: a fine-tune may change torch's between two models
    threads = args.threads or torch.get_num_threads()
    BenchSettings(batch_size=args.batch_size, img_size=args.img_size, device=_device(args.device),
                  warmup=args.warmup, repeats=args.repeats, threads=threads).validate()
    check_writable(args.out, is_dir=True)
    check_replaceable(args.out, "compare.csv")
    if args.data:
        _check_data(args.data)
        for name in models:  # recipes are validated (and their keys checked) before any work
            recipe = finetune_recipe(args, name, pretrained.get(name), args.out / "runs")
            d = recipe.data
            missing = [s for s in (d.train_split, d.val_split) if d.dataset == "imagefolder"
                       and not (Path(d.path).expanduser() / s).is_dir()]
            if missing:  # the fine-tune would find out only after the latency of every model before it
                raise ConfigError(f"--data {args.data}: no {missing[0]}/ folder (an image folder needs "
                                  f"{d.train_split}/<class>/<images> and {d.val_split}/<class>/<images>)")
            if name in pretrained:  # a file that does not fit would fail only when this model's fine-tune starts
                check_pretrained_fits(name, pretrained[name], dict(recipe.model.kwargs))
    args.latency_backend = _onnxruntime_available(args.latency_backend)
    backends = _backends(args.latency_backend)

    rows: list[dict[str, Any]] = []
    with interrupt_note(f"nothing written to {args.out} (outputs appear only when every model is done)"), \
            staged_dir(args.out) as tmp:
        for name in models:
            recipe = finetune_recipe(args, name, pretrained.get(name), tmp / "runs") if args.data else None
            with tqdm(total=_steps(args, backends), desc=name, unit="step", disable=args.no_progress,
                      file=sys.stderr, leave=True) as bar:
                rows.append(measure_model(name, args, recipe, bar, threads))
        write_csv(rows, tmp / "compare.csv")
        device = _device(args.device)
        title = (f"{'top-1 on ' + args.data + ', ' if args.data else ''}{args.img_size} px, "
                 f"{'onnxruntime (CPU)' if plot_backend(rows) == 'onnxruntime' else 'eager, ' + device}, "
                 f"{threads} thread{'s' if threads != 1 else ''}")
        plot_rows(rows, tmp / "compare.png", args.batch_size, title=title)
    print(format_rows(rows, args.batch_size))
    for note in export_notes(rows):
        print(note)
    print(f"\nwrote {args.out / 'compare.csv'} and {args.out / 'compare.png'}"
          + (f"; fine-tune runs in {args.out / 'runs'}" if args.data else ""))
    return 0
