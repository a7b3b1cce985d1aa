"""Training throughput: flexbone's engine with flexbone's model vs timm's model in the same loop (issue 3).

What it measures, in one process:

1. **Engine + model vs timm's model** - ``flexbone.train.engine.train_one_epoch`` (forward, cross-entropy,
   backward, SGD step with momentum, schedule step) runs the same batches with flexbone's model and with
   timm's model of the same architecture (timm's weights copied into flexbone's, same optimiser settings,
   same threads, dtype and memory format). Rounds of ``--steps`` optimiser steps alternate between the two
   (A B, B A, ...) so that a busy phase of a shared machine hits both alike; throughput = images / median
   round time. Settings: resnet18 at 64 px batch 128, resnet50 at 128 px batch 32, CPU fp32.
   Target: flexbone / timm >= 0.97.
2. **Data pipeline vs training step on the quickstart** (``recipes/quickstart.yaml``): images/s of the
   training loader alone (one pass, nothing else) vs images/s of the training step alone (on batches
   taken from that loader beforehand). Target: loader >= 3x the training step (the loader is never the
   bottleneck).
3. With ``--device cuda``: resnet50 at 224 px, bf16 autocast, channels_last, with and without
   ``torch.compile``, flexbone vs timm in the same loop (batch ``--gpu-batch-size``).

    .venv/bin/python benchmarks/bench_train_cpu.py                        # the real run (several minutes)
    .venv/bin/python benchmarks/bench_train_cpu.py --tiny --out-dir /tmp/bench_check   # does it work?
    .venv/bin/python benchmarks/bench_train_cpu.py --device cuda --skip-cpu           # the GPU section

Writes ``train_cpu.json`` (every round, environment, command) and ``train_cpu.md`` (tables) to
``--out-dir`` (default ``benchmarks/results``; ``train_gpu.*`` for the GPU section). Absolute CPU numbers
depend on the machine and its load (recorded); only the side-by-side ratios are claims.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from flexbone.bench.report import format_markdown, format_table, write_report
from flexbone.bench.throughput import environment
from flexbone.config import OptimConfig, ScheduleConfig, load_recipe
from flexbone.models import create_model
from flexbone.train.engine import amp_dtype, train_one_epoch
from flexbone.train.losses import CrossEntropy
from flexbone.train.optim import create_optimizer
from flexbone.train.schedule import create_scheduler

HERE = Path(__file__).resolve().parent


@dataclass
class Setting:
    """One side-by-side measurement."""

    model: str
    img_size: int
    batch_size: int
    device: str = "cpu"
    amp: str = "none"  # autocast dtype: none / bf16
    channels_last: bool = False
    compile: bool = False
    target: float = 0.97  # flexbone / timm throughput ratio to reach


def _models(setting: Setting, device: torch.device) -> dict[str, nn.Module]:
    """flexbone's and timm's model with identical weights (timm's copied into flexbone's, strict)."""
    import timm

    torch.manual_seed(0)
    ref = timm.create_model(setting.model, num_classes=1000)
    ours = create_model(setting.model, num_classes=1000)
    ours.load_state_dict(ref.state_dict(), strict=True)
    models = {"flexbone": ours, "timm": ref}
    for m in models.values():
        m.to(device)
        if setting.channels_last:
            m.to(memory_format=torch.channels_last)
    return models


def compare_models(setting: Setting, warmup: int, steps: int, rounds: int) -> dict:
    """Interleaved rounds of ``steps`` training steps per implementation; img/s from the median round."""
    device = torch.device(setting.device)
    models = _models(setting, device)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(setting.batch_size, 3, setting.img_size, setting.img_size, generator=g)
    labels = torch.randint(0, 1000, (setting.batch_size,), generator=g)
    batches = [(images, labels)] * steps  # the same batch every step: no data loading in the timing
    cfg_opt = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)
    cfg_sched = ScheduleConfig(name="cosine", epochs=10_000, warmup_epochs=0)
    loops = {}
    for impl, model in models.items():
        train_model = torch.compile(model) if setting.compile else model
        opt = create_optimizer(model, cfg_opt)
        sched = create_scheduler(opt, cfg_sched, cfg_opt.lr, steps_per_epoch=steps)
        loops[impl] = (train_model, opt, sched)
    amp = amp_dtype(setting.amp, device)

    def one_round(impl: str, n_steps: int) -> float:
        model, opt, sched = loops[impl]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_one_epoch(model, batches[:n_steps], opt, CrossEntropy(), device, scheduler=sched, amp=amp,
                        channels_last=setting.channels_last, log_interval=10**9)
        return time.perf_counter() - start  # train_one_epoch synchronises CUDA before it returns

    for impl in loops:  # warm-up (and compilation) outside the timing
        one_round(impl, max(warmup, 1))
    times: dict[str, list[float]] = {impl: [] for impl in loops}
    order = list(loops)
    for r in range(rounds):
        for impl in (order if r % 2 == 0 else order[::-1]):
            times[impl].append(one_round(impl, steps))
    imgs = setting.batch_size * steps
    thr = {impl: imgs / statistics.median(t) for impl, t in times.items()}
    return dict(setting=asdict(setting), steps_per_round=steps, rounds=rounds, warmup_steps=warmup,
                round_seconds=times, img_per_s=thr, ratio=thr["flexbone"] / thr["timm"],
                met=thr["flexbone"] / thr["timm"] >= setting.target)


def loader_vs_step(rounds: int, max_steps: int | None) -> dict:
    """Quickstart: images/s of the training loader alone vs of the training step alone."""
    from flexbone.data.loader import build_loaders
    from flexbone.train.engine import _build_model

    recipe = load_recipe("quickstart")
    train_loader, _, num_classes, _ = build_loaders(recipe)
    loader_times, n_images = [], 0
    for epoch in range(rounds + 1):  # the first pass warms up (and is not timed)
        train_loader.set_epoch(epoch)
        start, n = time.perf_counter(), 0
        for i, (x, _) in enumerate(train_loader):
            if max_steps is not None and i >= max_steps:
                break
            n += x.shape[0]
        if epoch:
            loader_times.append(time.perf_counter() - start)
            n_images = n
    batches = []
    for i, b in enumerate(train_loader):
        if max_steps is not None and i >= max_steps:
            break
        batches.append(b)
    torch.manual_seed(0)
    model = _build_model(recipe, num_classes)
    opt = create_optimizer(model, recipe.optim)
    step_times = []
    for r in range(rounds + 1):
        start = time.perf_counter()
        train_one_epoch(model, batches, opt, CrossEntropy(), torch.device("cpu"), log_interval=10**9)
        if r:
            step_times.append(time.perf_counter() - start)
    n_step_images = sum(b[0].shape[0] for b in batches)
    loader_thr = n_images / statistics.median(loader_times)
    step_thr = n_step_images / statistics.median(step_times)
    return dict(recipe="quickstart", model=recipe.model.name, img_size=recipe.data.img_size,
                batch_size=recipe.data.batch_size, workers=recipe.data.workers, rounds=rounds,
                loader_seconds=loader_times, step_seconds=step_times, loader_img_per_s=loader_thr,
                train_step_img_per_s=step_thr, ratio=loader_thr / step_thr, target=3.0,
                met=loader_thr / step_thr >= 3.0)


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in avg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--steps", type=int, default=5, help="optimiser steps per timed round (default 5)")
    p.add_argument("--rounds", type=int, default=10, help="timed interleaved rounds per model (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first (default 3)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU section")
    p.add_argument("--gpu-batch-size", type=int, default=128, help="GPU section batch (default 128)")
    p.add_argument("--skip-cpu", action="store_true", help="only the GPU section (with --device cuda)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long check that the script works "
                                                      "(small images and batches; the numbers mean nothing)")
    p.add_argument("--out-dir", type=Path, default=HERE / "results", help="where to write the results")
    args = p.parse_args(argv)
    try:
        import timm  # noqa: F401  (the reference implementation)
    except ImportError:
        sys.exit("this benchmark compares with timm: pip install timm")
    torch.set_num_threads(args.threads)
    if args.tiny:
        args.steps, args.rounds, args.warmup = 1, 2, 1

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    sections: dict[str, list[Setting]] = {}
    if not args.skip_cpu:
        sections["cpu"] = ([Setting("resnet18", 32, 8), Setting("resnet50", 32, 4)] if args.tiny else
                           [Setting("resnet18", 64, 128), Setting("resnet50", 128, 32)])
    if args.device.startswith("cuda"):
        bs = 8 if args.tiny else args.gpu_batch_size
        size = 64 if args.tiny else 224
        sections["gpu"] = [Setting("resnet50", size, bs, device=args.device, amp="bf16", channels_last=True,
                                   compile=c, target=1.0 if c else 0.97) for c in (False, True)]

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, settings in sections.items():
        results = []
        for s in settings:
            print(f"== {s.model} {s.img_size} px batch {s.batch_size} {s.device} amp={s.amp} "
                  f"channels_last={s.channels_last} compile={s.compile}", flush=True)
            r = compare_models(s, args.warmup, args.steps, args.rounds)
            results.append(r)
            print(format_table(["impl", "img/s"], [[k, v] for k, v in r["img_per_s"].items()]) +
                  f"\nratio flexbone/timm {r['ratio']:.3f} (target >= {s.target})", flush=True)
        loader = None
        if name == "cpu":
            print("== quickstart: loader alone vs training step", flush=True)
            loader = loader_vs_step(args.rounds if not args.tiny else 1, 3 if args.tiny else None)
            print(f"loader {loader['loader_img_per_s']:.0f} img/s, train step {loader['train_step_img_per_s']:.0f} "
                  f"img/s: ratio {loader['ratio']:.1f} (target >= 3)", flush=True)
        load_after = os.getloadavg()
        env = environment(settings[0].device)
        env.update(load_avg_before=load_before, load_avg_after=load_after,
                   started_utc=started.isoformat(timespec="seconds"),
                   command=" ".join([Path(sys.executable).name, *sys.argv]), tiny=args.tiny)
        rows = [[r["setting"]["model"], r["setting"]["img_size"], r["setting"]["batch_size"], r["setting"]["amp"],
                 r["setting"]["channels_last"], r["setting"]["compile"], f"{r['img_per_s']['flexbone']:.1f}",
                 f"{r['img_per_s']['timm']:.1f}", f"{r['ratio']:.3f}", f">= {r['setting']['target']}",
                 "yes" if r["met"] else "NO"] for r in results]
        md = [f"# Training throughput ({name.upper()}): flexbone engine + model vs timm model, same loop", "",
              f"Command: `{env['command']}`  ", f"Started: {env['started_utc']}" + ("  (--tiny: a smoke check, "
              "the numbers mean nothing)" if args.tiny else ""), "",
              f"Environment: {(env['device_name'] + ', ') if name == 'gpu' else ''}{env['cpu']} "
              f"({env['cpu_count']} logical cores), torch "
              f"{env['torch_version']}, timm {env.get('timm_version', '?')}, flexbone {env['flexbone_version']}"
              f"{' (git ' + env['flexbone_revision'] + ')' if env.get('flexbone_revision') else ''}; "
              f"{env['threads']} torch threads; load average (1/5/15 min) {_load(load_before)} before, "
              f"{_load(load_after)} after.", "",
              f"Loop: `flexbone.train.engine.train_one_epoch` (forward, cross-entropy, backward, SGD momentum 0.9 "
              f"wd 1e-4 with no decay on norms/biases, cosine schedule step), the same batch every step. "
              f"{args.warmup} warm-up steps per model, then {args.rounds} interleaved rounds of {args.steps} steps "
              f"(order alternating); throughput = images per round / median round time. Same weights (timm's "
              f"copied into flexbone's), fp32 parameters.", "",
              format_markdown(["model", "px", "batch", "amp", "channels_last", "compile", "flexbone img/s",
                               "timm img/s", "ratio", "target", "met"], rows), ""]
        if loader is not None:
            md += ["## Data pipeline vs training step (quickstart)", "",
                   f"Recipe `quickstart` ({loader['model']}, digits at {loader['img_size']} px, batch "
                   f"{loader['batch_size']}, {loader['workers']} loader workers): one pass of the training loader "
                   f"alone vs the training step alone on the same batches, median of {loader['rounds']} passes.", "",
                   format_markdown(["loader img/s", "train step img/s", "ratio", "target", "met"],
                                   [[f"{loader['loader_img_per_s']:.0f}", f"{loader['train_step_img_per_s']:.0f}",
                                     f"{loader['ratio']:.1f}", ">= 3", "yes" if loader["met"] else "NO"]]), ""]
        md += ["Ratios are flexbone / timm (> 1: flexbone faster). Only side-by-side ratios are claims; absolute "
               "CPU numbers depend on the machine and its load.", ""]
        paths = write_report(args.out_dir, f"train_{name}", dict(
            environment=env, settings=dict(threads=args.threads, dtype="fp32 params", steps=args.steps,
                                           rounds=args.rounds, warmup=args.warmup),
            results=results, loader_vs_step=loader), "\n".join(md))
        print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
