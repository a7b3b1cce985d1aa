"""Does once-for-all hold on real data? Searched sub-networks of the digits supernet vs the same architectures
trained alone from scratch (issue 15, item 6).

Input: a finished ``flexbone demo elastic`` folder (``--demo DIR``): its supernet (``ofa_digits_mbv3``, trained once
with DεpS) and the sub-networks its search chose for three latency budgets. For each chosen architecture:

* **once-for-all**: the supernet's sub-network, BN recalibrated on training images (as the demo does), top-1 on
  all 359 test digits;
* **scratch**: the static architecture (``create_model("ofa_digits_mbv3_subnet", subnet=cfg)``) trained alone with
  the demo's recipe (same data, augmentation, optimiser, learning rate, epochs; no elastic strategy) at the
  sub-network's resolution, ``--seeds`` training seeds, top-1 on all 359 test digits.

The supernet is trained once (by the demo, one seed): its column is one number per budget; the scratch column is
mean and standard deviation over the seeds. Same epochs for both means the supernet's sub-networks had fewer
updates each (DεpS trains the full network alone first, then a few sub-networks per step), which is the point
of once-for-all: one training for every budget.

    .venv/bin/python benchmarks/bench_ofa_vs_scratch.py --demo runs/demo-elastic-20261207-160000
    .venv/bin/python benchmarks/bench_ofa_vs_scratch.py --demo DIR --seeds 0 --epochs 2 --out-dir /tmp/check   # quick

Writes ``ofa_vs_scratch.json`` and ``ofa_vs_scratch.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import copy
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

from flexbone.bench.report import format_markdown, report_header, write_report
from flexbone.bench.throughput import environment
from flexbone.cli.demo_elastic import _calibration, digits_recipe
from flexbone.config import load_recipe
from flexbone.data.loader import build_loaders
from flexbone.elastic import recalibrate_bn
from flexbone.elastic.space import SubnetConfig
from flexbone.train import engine
from flexbone.train.checkpoint import model_from_checkpoint

HERE = Path(__file__).resolve().parent


def test_loader(recipe, resolution: int):
    r = copy.deepcopy(recipe)
    r.data.test_img_size = resolution
    return build_loaders(r)[1]


def scratch(cfg: SubnetConfig, demo_recipe, seed: int, epochs: int, out: Path, name: str) -> dict[str, Any]:
    """The architecture alone, the demo's recipe without the elastic strategy, at its resolution."""
    d = demo_recipe
    recipe = load_recipe("quickstart", {
        "model.name": "ofa_digits_mbv3_subnet", "model.kwargs": {"subnet": cfg.to_dict()}, "model.drop_rate": 0.0,
        "data.img_size": cfg.resolution, "data.test_img_size": cfg.resolution, "data.crop_pct": d.data.crop_pct,
        "data.mean": list(d.data.mean), "data.std": list(d.data.std), "data.batch_size": d.data.batch_size,
        "aug.scale": list(d.aug.scale), "aug.ratio": list(d.aug.ratio), "optim.lr": d.optim.lr,
        "optim.weight_decay": d.optim.weight_decay, "optim.name": d.optim.name, "loss.label_smoothing":
        d.loss.label_smoothing, "schedule.epochs": epochs, "schedule.warmup_epochs": d.schedule.warmup_epochs,
        "train.seed": seed, "train.output_dir": str(out), "train.run_name": f"{name}-seed{seed}",
        "train.eval_every": 10_000,
    })
    start = time.perf_counter()
    result = engine.run(recipe, recipe_name="scratch", progress=False, quiet=True)
    return dict(seed=seed, top1=result.top1, train_s=time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, required=True, help="a finished `flexbone demo elastic` folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="scratch training seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, default=None, help="scratch epochs (default: the demo's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    demo = json.loads((args.demo / "demo.json").read_text())
    epochs = args.epochs or demo["epochs"]

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        demo_recipe = digits_recipe(argparse.Namespace(epochs=demo["epochs"], seed=demo["seed"]), Path(tmp))
    net, _ = model_from_checkpoint(args.demo / "supernet" / "model.safetensors")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ofa-vs-scratch-") as tmp:
        for i, c in enumerate(demo["chosen"]):
            cfg = SubnetConfig.from_json(c["config"])
            net.set_active(cfg)
            recalibrate_bn(net, _calibration(demo_recipe, cfg.resolution, demo["seed"]))
            with torch.no_grad():
                ofa = engine.evaluate(net.extract().eval(), test_loader(demo_recipe, cfg.resolution),
                                      torch.device("cpu"))["top1"]
            runs = [scratch(cfg, demo_recipe, s, epochs, Path(tmp), f"budget{i + 1}") for s in args.seeds]
            top1 = [r["top1"] for r in runs]
            rows.append(dict(budget_ms=c["budget_ms"], config=c["config"], resolution=cfg.resolution,
                             macs=c["macs"], params=c["params"], ofa_top1=ofa, scratch=runs,
                             scratch_mean=statistics.fmean(top1),
                             scratch_std=statistics.stdev(top1) if len(top1) > 1 else None))
            print(f"budget {c['budget_ms']:.2f} ms ({cfg.resolution} px): once-for-all {ofa:.1f}%, scratch "
                  f"{rows[-1]['scratch_mean']:.1f}% ({', '.join(f'{t:.1f}' for t in top1)})", flush=True)
    load_after = os.getloadavg()

    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after, started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    table = [[f"{r['budget_ms']:.2f}", r["resolution"], f"{r['macs'] / 1e6:.2f}", f"{r['params'] / 1e3:.0f}",
              f"{r['ofa_top1']:.1f}", f"{r['scratch_mean']:.1f}",
              "-" if r["scratch_std"] is None else f"{r['scratch_std']:.1f}",
              f"{r['ofa_top1'] - r['scratch_mean']:+.1f}"] for r in rows]
    md = "\n".join([
        *report_header("Once-for-all sub-networks vs the same architectures trained from scratch (digits)", env,
                       args.threads, load_before, load_after),
        "",
        f"Supernet: `{demo['supernet']}` from `{args.demo}` (DεpS, {demo['epochs']} epochs, seed {demo['seed']}); "
        f"architectures: the sub-networks its search chose for three latency budgets. Once-for-all: the supernet's "
        f"sub-network after BN recalibration (4 x 64 training images). Scratch: the static architecture trained alone "
        f"with the same recipe for {epochs} epochs, seeds {args.seeds}. Top-1 on all 359 test digits.",
        "",
        format_markdown(["budget ms", "px", "MMACs", "K params", "once-for-all top-1 %", "scratch top-1 % (mean)",
                         "scratch std", "gap (OFA - scratch)"], table),
        "",
    ])
    write_report(args.out_dir, "ofa_vs_scratch", dict(env=env, demo=str(args.demo), epochs=epochs, seeds=args.seeds,
                                                      rows=rows), md, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
