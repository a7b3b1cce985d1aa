"""Data-loader throughput (images/s): the quickstart's loaders, and the ImageNet-style augmentation per worker.

What it measures (the loader alone: batches are produced and dropped, no model):

1. **quickstart** (``recipes/quickstart.yaml``, scikit-learn digits): the training loader (mild
   RandomResizedCrop on 8x8 uint8 tensors, per image, in the main process as the recipe says: workers 0)
   and the evaluation loader (transformed once and cached). Issue 3 asks the loader to be >= 3x the
   training step throughput; ``bench_train_cpu.py`` measures both side by side, this script gives the
   loader figure alone, with its spread.
2. **rsb_a1 augmentation on synthetic images** (``--rsb``): RandomResizedCrop 224 + flip + RandAugment
   'rand-m7-mstd0.5-inc1' + normalise, on random 256x256 uint8 images, per loader worker count. This says
   how many CPU workers an A1 run needs per GPU (a GPU trains ResNet-50 at ~1-3k img/s).

Each setting runs ``--warmup`` passes, then ``--repeats`` timed passes (each a full pass of the loader, or
``--max-batches`` batches); throughput = images / median pass time.

    .venv/bin/python benchmarks/bench_data_loader.py                       # quickstart (seconds)
    .venv/bin/python benchmarks/bench_data_loader.py --rsb --workers 0 2   # + the A1 pipeline (a minute)
    .venv/bin/python benchmarks/bench_data_loader.py --repeats 1 --warmup 0 --out-dir /tmp/bench_check

Writes ``data_loader.json`` (every pass, environment, command) and ``data_loader.md`` to ``--out-dir``
(default ``benchmarks/results``). Absolute numbers depend on the machine and its load (recorded).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from flexbone.bench.report import format_markdown, format_table, write_report
from flexbone.bench.throughput import environment
from flexbone.config import load_recipe
from flexbone.data import build_loaders

HERE = Path(__file__).resolve().parent


def time_passes(loader, warmup: int, repeats: int, max_batches: int | None) -> dict:
    """Images/s of ``loader`` over ``repeats`` timed passes (after ``warmup`` untimed ones)."""
    times, counts = [], []
    for i in range(warmup + repeats):
        n, start = 0, time.perf_counter()
        for b, (images, _) in enumerate(loader):
            n += images.shape[0]
            if max_batches and b + 1 >= max_batches:
                break
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
            counts.append(n)
    median = statistics.median(times)
    images = counts[0]  # every pass yields the same number of images (drop_last, fixed sampler length)
    return {"images_per_pass": images, "pass_seconds": times, "median_seconds": median,
            "images_per_second": images / median, "batch_size": loader.batch_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2: the demo's CPU)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-batches", type=int, default=None, help="cut each pass after this many batches")
    parser.add_argument("--rsb", action="store_true", help="also time the rsb_a1 augmentation on synthetic images")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts for --rsb")
    parser.add_argument("--rsb-images", type=int, default=512, help="synthetic images per pass for --rsb")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    results = []
    recipe = load_recipe("quickstart")
    start = time.perf_counter()
    train, val, _, _ = build_loaders(recipe)
    build_seconds = time.perf_counter() - start
    for split, loader in (("train", train), ("eval", val)):
        r = time_passes(loader, args.warmup, args.repeats, args.max_batches)
        results.append({"setting": f"quickstart {split}", "workers": recipe.data.workers,
                        "img_size": recipe.data.img_size, **r})

    if args.rsb:
        for workers in args.workers:
            rsb = load_recipe("rsb_a1", ["data.dataset=synthetic", f"data.synthetic_train_size={args.rsb_images}",
                                         "data.synthetic_eval_size=64", "data.img_size=224", "data.batch_size=64",
                                         f"data.workers={workers}", "aug.repeated_aug=0"])
            # raw synthetic images at 256 px, so that RandomResizedCrop resamples as on real photos
            rsb_train, _, _, _ = build_loaders(rsb)
            rsb_train.dataset.img_size = 256
            r = time_passes(rsb_train, args.warmup, args.repeats, args.max_batches)
            results.append({"setting": "rsb_a1 train aug, synthetic 256->224", "workers": workers,
                            "img_size": 224, **r})

    report = {
        "benchmark": "data_loader",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "environment": environment("cpu"),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "quickstart_build_seconds": build_seconds,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": results,
    }
    headers = ["setting", "workers", "batch", "images/pass", "median s", "img/s"]
    rows = [[r["setting"], r["workers"], r["batch_size"], r["images_per_pass"], round(r["median_seconds"], 4),
             round(r["images_per_second"])] for r in results]
    print(format_table(headers, rows))
    print(f"quickstart loaders built in {build_seconds:.2f} s; load average {load_before} -> {os.getloadavg()}")
    env = report["environment"]
    md = [f"# Data-loader throughput ({report['date']})", "",
          f"{env['cpu']}, {env['threads']} threads, torch {env['torch_version']}; load average before "
          f"{load_before[0]:.2f}. Command: `{env['command']}`. Median of {args.repeats} passes after "
          f"{args.warmup} warm-up.", "", format_markdown(headers, rows), ""]
    paths = write_report(args.out_dir, "data_loader", report, "\n".join(md))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
