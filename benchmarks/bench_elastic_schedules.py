"""DεpS vs progressive shrinking vs the sandwich rule on digits: sub-network accuracy and training time (issue 4).

What it measures: a toy-width OFA-MobileNetV3 supernet (the real space: kernel 3/5/7, expand 3/4/6, depth 2/3/4
per unit; widths shrunk to run on a CPU) is trained on scikit-learn's digits (16 px, the fixed 80/20 split) by
each schedule, through the shipped recipes and the ordinary engine, for the SAME number of optimiser steps:

* ``ofa_mbv3_ps``: the six phases of DESIGN.md (full -> kernel -> depth 1/2 -> expand 1/2), their epochs scaled to
  the budget in proportion to the table (each phase >= 1 epoch), their learning rates in the table's ratios;
* ``sandwich_mbv3``: max + min + N random sub-networks every step;
* ``deps_mbv3``: the full net alone for the first half, then the sandwich with a linear ramp of beta.

Every schedule then gets the same 20 sub-networks (min, max and 18 drawn with a fixed seed from the whole
space), each evaluated on the 359 test digits after BN recalibration on the same training images; the table
reports their mean top-1 (and the min / max nets'), the training time (the engine's per-epoch train time,
summed) and the wall time of the whole schedule (evaluations and, for the shrinking phases, the run set-ups
included), plus the number of sub-network forward/backward passes the schedule made.

    .venv/bin/python benchmarks/bench_elastic_schedules.py                    # the real run (a few minutes)
    .venv/bin/python benchmarks/bench_elastic_schedules.py --seeds 0 1 2      # three training seeds
    .venv/bin/python benchmarks/bench_elastic_schedules.py --epochs 6 --steps-per-epoch 2 --n-subnets 3 \\
        --out-dir /tmp/bench_check                                           # a quick check that it works

Writes ``elastic_schedules.json`` (every number, the environment, the command) and ``elastic_schedules.md``
to ``--out-dir`` (default ``benchmarks/results``). Run it on a quiet machine; the load average is recorded.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from flexbone.bench.report import format_markdown, format_table, report_header, write_report
from flexbone.bench.throughput import environment
from flexbone.cli.subnets import _calibration_loader, evaluate_subnets, sample_subnets
from flexbone.config import load_recipe
from flexbone.config.loader import elastic_phases
from flexbone.data.loader import build_loaders
from flexbone.elastic.training import deps_beta
from flexbone.train import engine
from flexbone.train.checkpoint import model_from_checkpoint

HERE = Path(__file__).resolve().parent
SCHEDULES = ("ofa_mbv3_ps", "sandwich_mbv3", "deps_mbv3")
# toy widths on the OFA-MobileNetV3 choices; at 16 px the maps go 8, 8, 4, 2, 2, 1 through stem and units
TOY = dict(stem_width=8, first_block=[8, "relu", True], final_expand_width=32, head_width=32,
           units=[[8, 1, "relu", False], [16, 2, "relu", True], [16, 2, "hard_swish", False],
                  [24, 1, "hard_swish", True], [24, 2, "hard_swish", True]])


def digits_overrides(args: argparse.Namespace, seed: int, out: Path) -> dict[str, Any]:
    """The recipes' settings replaced for digits at 16 px (the same for every schedule)."""
    return {
        "model.kwargs": TOY, "data.dataset": "digits", "data.img_size": 16, "data.test_img_size": 16,
        "data.crop_pct": 1.0, "data.mean": [0.3, 0.3, 0.3], "data.std": [0.38, 0.38, 0.38],
        "data.batch_size": args.batch_size, "data.eval_batch_size": 256, "data.workers": 0,
        "aug.no_crop": True, "aug.hflip": 0.0, "elastic.resolutions": [], "elastic.bn_batches": args.bn_batches,
        "elastic.num_random": args.num_random, "optim.lr": args.lr, "schedule.warmup_epochs": 0,
        "train.max_steps_per_epoch": args.steps_per_epoch, "train.log_interval": args.steps_per_epoch,
        "train.eval_every": 10_000, "train.seed": seed, "train.output_dir": str(out),
    }


def scale_phases(phases: list[dict[str, Any]], total: int, lr: float) -> list[dict[str, Any]]:
    """The phase table with its epochs scaled to ``total`` (largest remainder, each >= 1) and its learning rates
    scaled so that the first phase gets ``lr`` (the table's ratios kept); no warm-up."""
    weights = [p["epochs"] for p in phases]
    raw = [total * w / sum(weights) for w in weights]
    epochs = [max(1, int(r)) for r in raw]
    while sum(epochs) < total:
        i = max(range(len(raw)), key=lambda j: raw[j] - epochs[j])
        epochs[i] += 1
    while sum(epochs) > total:
        i = max((j for j in range(len(raw)) if epochs[j] > 1), key=lambda j: epochs[j] - raw[j])
        epochs[i] -= 1
    ratio = lr / phases[0]["lr"]
    return [{**p, "epochs": e, "lr": p["lr"] * ratio, "warmup_epochs": 0} for p, e in zip(phases, epochs)]


def passes(recipe: Any, steps_per_epoch: int) -> int:
    """Sub-network forward/backward passes the schedule makes (teacher forwards not counted)."""
    e = recipe.elastic
    if e.strategy == "progressive":
        return sum(p.epochs * steps_per_epoch * p.subnets_per_step for p in elastic_phases(e))
    start = e.deps_start * recipe.schedule.epochs if e.strategy == "deps" else 0.0
    ramp = e.deps_ramp_epochs if e.strategy == "deps" else 0.0
    return sum(1 + (2 + e.num_random) * (deps_beta(ep + s / steps_per_epoch, start, ramp) > 0)
               for ep in range(recipe.schedule.epochs) for s in range(steps_per_epoch))


def train_time(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return sum(r["train_time_s"] for r in rows)


def run_schedule(name: str, args: argparse.Namespace, seed: int, out: Path) -> dict[str, Any]:
    recipe = load_recipe(name, {**digits_overrides(args, seed, out), "schedule.epochs": args.epochs,
                                "train.run_name": f"{name}-seed{seed}"})
    if recipe.elastic.strategy == "progressive":
        recipe.elastic.phases = tuple(scale_phases(list(recipe.elastic.phases), args.epochs, args.lr))
    if recipe.elastic.strategy == "deps":
        recipe.elastic.deps_ramp_epochs = args.deps_ramp_epochs
    print(f"== {name}, seed {seed}: {args.epochs} epochs x {args.steps_per_epoch} steps of {args.batch_size} images",
          flush=True)
    t0 = time.perf_counter()
    result = engine.run(recipe, recipe_name=name, progress=False, quiet=True)
    wall = time.perf_counter() - t0
    run_dirs = sorted(result.run_dir.parent.glob("phase*")) if recipe.elastic.strategy == "progressive" \
        else [result.run_dir]

    # the same fixed sub-networks, after BN recalibration on the same training images
    supernet, _ = model_from_checkpoint(result.weights)
    _, eval_loader, _, _ = build_loaders(recipe)
    calib = _calibration_loader("digits", "train", recipe.data, None, args.bn_batches, 64, args.subnet_seed, 0, False)
    configs = sample_subnets(supernet.space, args.n_subnets, args.subnet_seed)
    with torch.no_grad():
        rows = evaluate_subnets(supernet, configs, calib, eval_loader, torch.device("cpu"), recipe.data.test_img_size)
    top1 = [r["top1"] for r in rows]
    return {
        "schedule": name, "strategy": recipe.elastic.strategy, "seed": seed,
        "steps": args.epochs * args.steps_per_epoch, "subnet_passes": passes(recipe, args.steps_per_epoch),
        "train_time_s": sum(train_time(d) for d in run_dirs), "wall_s": wall,
        "mean_top1": statistics.fmean(top1), "min_net_top1": rows[0]["top1"], "max_net_top1": rows[1]["top1"],
        "subnets": [{k: r[k] for k in ("kind", "config", "macs", "params", "top1")} for r in rows],
        "phases": [dict(p) for p in recipe.elastic.phases],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="epochs of every schedule (default 20; >= 6 phases)")
    p.add_argument("--steps-per-epoch", type=int, default=10, help="optimiser steps per epoch (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--lr", type=float, default=0.1, help="peak lr per 64 images: sandwich, DεpS and the full-net "
                                                         "phase (the other phases keep the table's ratios)")
    p.add_argument("--num-random", type=int, default=2, help="sandwich / DεpS: random sub-networks per step")
    p.add_argument("--deps-ramp-epochs", type=float, default=2.0, help="DεpS: epochs of the beta ramp (default 2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    p.add_argument("--subnet-seed", type=int, default=0, help="seed of the evaluated sub-networks and calibration")
    p.add_argument("--n-subnets", type=int, default=20, help="sub-networks evaluated per schedule (default 20)")
    p.add_argument("--bn-batches", type=int, default=5, help="batches of 64 training images per BN recalibration")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--out-dir", type=Path, default=HERE / "results", help="where to write the results")
    args = p.parse_args(argv)
    if args.epochs < 6:
        p.error("--epochs must be at least 6: progressive shrinking has six phases of at least one epoch")
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    with tempfile.TemporaryDirectory(prefix="flexbone-elastic-bench-") as tmp:
        for seed in args.seeds:
            for name in SCHEDULES:
                results.append(run_schedule(name, args, seed, Path(tmp)))
                r = results[-1]
                print(f"   mean top-1 of {args.n_subnets} sub-networks {r['mean_top1']:.2f}%, train {r['train_time_s']:.1f} s,"
                      f" wall {r['wall_s']:.1f} s", flush=True)
    load_after = os.getloadavg()

    summary = []
    for name in SCHEDULES:
        rs = [r for r in results if r["schedule"] == name]
        mean = lambda k: statistics.fmean(r[k] for r in rs)  # noqa: E731
        spread = statistics.stdev([r["mean_top1"] for r in rs]) if len(rs) > 1 else None
        summary.append([name, rs[0]["strategy"], rs[0]["steps"], rs[0]["subnet_passes"], mean("mean_top1"), spread,
                        mean("min_net_top1"), mean("max_net_top1"), mean("train_time_s"), mean("wall_s")])
    headers = ["recipe", "strategy", "steps", "sub-net passes", f"mean top-1 ({args.n_subnets} nets) %",
               "std over seeds", "min net %", "max net %", "train s", "wall s"]
    print()
    print(format_table(headers, summary))

    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after, started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    md = "\n".join([
        *report_header("Elastic training schedules on digits: DεpS vs progressive shrinking vs sandwich", env,
                       args.threads, load_before, load_after),
        "",
        f"Data: scikit-learn digits (1,797 real 8x8 scans), fixed stratified 80/20 split (seed 0), at 16 px. Model: "
        f"OFA-MobileNetV3 space (kernel 3/5/7, expand 3/4/6, depth 2/3/4) at toy widths {json.dumps(TOY)}. "
        f"Every schedule: {args.epochs} epochs x {args.steps_per_epoch} steps x {args.batch_size} images = "
        f"{args.epochs * args.steps_per_epoch} optimiser steps, fp32, CPU; recipes `ofa_mbv3_ps`, `sandwich_mbv3`, "
        f"`deps_mbv3` with digits overrides (lr {args.lr} per 64 images for the full net / sandwich / DεpS, the "
        f"shrinking phases in the table's ratios; N = {args.num_random} random sub-networks per sandwich step; "
        f"DεpS from 50% with a {args.deps_ramp_epochs}-epoch ramp). Training seeds: {args.seeds}.",
        "",
        f"Evaluation: the same {args.n_subnets} sub-networks for every schedule (min, max and "
        f"{max(args.n_subnets - 2, 0)} drawn with seed {args.subnet_seed} from the whole space), each after BN "
        f"recalibration on the same {args.bn_batches} x 64 training images, top-1 on the 359 test digits.",
        "",
        format_markdown(headers, summary),
        "",
        "Train s: the engine's training time (sum over epochs, and over phases for progressive shrinking). Wall s: "
        "the whole schedule, evaluations and (progressive) six run set-ups included. Sub-net passes: forward + "
        "backward passes of sub-networks (the frozen teacher's forwards of progressive shrinking not counted). "
        "Absolute times are CPU times on this machine under the load shown; compare them within this table only.",
        "",
    ])
    paths = write_report(args.out_dir, "elastic_schedules", dict(
        environment=env, settings=settings, toy_model_kwargs=TOY, summary_headers=headers, summary=summary,
        results=results), md)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
