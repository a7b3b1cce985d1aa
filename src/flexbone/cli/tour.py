"""`flexbone tour`: a one-minute look at what flexbone offers, on the CPU, with nothing to download."""
from __future__ import annotations

import argparse
import textwrap

from ..options import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tour", help="a short tour: the ResNet family, a model up close, a benchmark",
                       description="List the ResNet family, show resnet50's size, cost and feature pyramid, "
                                   "and benchmark resnet18 against resnet50 on the CPU (a few seconds).")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N", help="torch threads for the benchmark")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.throughput import BenchSettings, benchmark, environment
    from ..models import list_models
    from .bench import print_results
    from .info import model_info, print_info

    names = list_models(family="resnet")
    _section(f"1. The ResNet family: {len(names)} models   (flexbone list 'resnet*' adds params and MACs)")
    print(textwrap.fill("  ".join(names), width=100, initial_indent="  ", subsequent_indent="  "))

    _section("2. One model up close   (flexbone info resnet50)")
    print_info(model_info("resnet50"))

    # small on purpose: a tour, not a measurement to quote (batch 8 at 128 px takes a few seconds on 2 cores)
    settings = BenchSettings(batch_size=8, img_size=128, warmup=1, repeats=5, threads=getattr(args, "threads", None))
    _section("3. Side by side on the CPU   (flexbone bench resnet18 resnet50 --batch-size 8 --img-size 128 "
             "--warmup 1 --repeats 5)")
    results = benchmark(["resnet18", "resnet50"], settings)
    print_results(results, settings, environment(settings.device))
    speed = results[0].throughput / results[1].throughput
    print(f"resnet18 runs {speed:.1f}x as many images per second as resnet50 here.")

    _section("Next")
    print("  flexbone list --help | flexbone info MODEL | flexbone bench MODEL --compare timm")
    return 0


def _section(title: str) -> None:
    print(f"\n== {title}")
