"""FBNetV3's predictor pre-training on real data: does pre-training on MACs and params help rank sub-networks when
only 30 or 100 accuracies are measured? (issue 15)

What it measures: a toy-width OFA-MobileNetV3 supernet (the real choices: kernel 3/5/7, expand 3/4/6, depth 2/3/4
per unit) is trained briefly on scikit-learn's digits at 16 px with the sandwich rule (the shipped recipe, the
ordinary engine). Then ``--pool + --held-out`` distinct sub-networks are each BN-recalibrated on the same training
images and evaluated on the 359 test digits (as ``flexbone subnets`` does, through the active supernet rather than
the extracted network: the same outputs, less time). For n in ``--sizes`` and each seed,
n of the pool's sub-networks (drawn with the seed) fit the 3 x 400 predictor twice: from scratch, and after
pre-training its trunk on the MACs and params of ``--proxy-configs`` random configurations (FBNetV3). Reported:
Kendall tau (scipy) between predicted and measured top-1 on the held-out sub-networks, and, for context, the
tau of MACs alone.

    .venv/bin/python benchmarks/bench_predictor_pretraining.py                 # a few minutes
    .venv/bin/python benchmarks/bench_predictor_pretraining.py --epochs 1 --pool 20 --held-out 10 --sizes 10 \\
        --seeds 0 --out-dir /tmp/b                                             # a quick check that it works

Writes ``predictor_pretraining.json`` and ``.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from flexbone.bench.report import format_markdown, report_header, write_report
from flexbone.bench.throughput import environment
from flexbone.cli.subnets import _calibration_loader, sample_subnets
from flexbone.config import load_recipe
from flexbone.data.loader import build_loaders
from flexbone.elastic import recalibrate_bn
from flexbone.search.costs import build_costs
from flexbone.search.predictor import AccuracyPredictor
from flexbone.train import engine
from flexbone.train.engine import evaluate
from flexbone.train.checkpoint import model_from_checkpoint

HERE = Path(__file__).resolve().parent
# toy widths on the OFA-MobileNetV3 choices (as benchmarks/bench_elastic_schedules.py); 16 px is the one resolution
TOY = dict(stem_width=8, first_block=[8, "relu", True], final_expand_width=32, head_width=32, resolutions=[16],
           units=[[8, 1, "relu", False], [16, 2, "relu", True], [16, 2, "hard_swish", False],
                  [24, 1, "hard_swish", True], [24, 2, "hard_swish", True]])


def train_supernet(args: argparse.Namespace, out: Path):
    recipe = load_recipe("sandwich_mbv3", {
        "model.kwargs": TOY, "data.dataset": "digits", "data.img_size": 16, "data.test_img_size": 16,
        "data.crop_pct": 1.0, "data.mean": [0.3, 0.3, 0.3], "data.std": [0.38, 0.38, 0.38], "data.batch_size": 32,
        "data.eval_batch_size": 256, "data.workers": 0, "aug.no_crop": True, "aug.hflip": 0.0,
        "elastic.resolutions": [], "elastic.bn_batches": 2, "optim.lr": 0.05, "schedule.warmup_epochs": 0,
        "schedule.epochs": args.epochs, "train.max_steps_per_epoch": args.steps_per_epoch,
        "train.log_interval": args.steps_per_epoch, "train.eval_every": 10_000, "train.seed": 0,
        "train.memory_check": False,  # its one-image train-mode estimate trips BN on the toy net's 1x1 maps
        "train.output_dir": str(out), "train.run_name": "supernet"})
    result = engine.run(recipe, progress=False, quiet=True)
    return recipe, result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6, help="supernet training epochs (default 6)")
    p.add_argument("--steps-per-epoch", type=int, default=20, help="steps of batch 32 per epoch (default 20)")
    p.add_argument("--pool", type=int, default=100, help="measured sub-networks to fit from (default 100)")
    p.add_argument("--held-out", type=int, default=60, help="measured sub-networks to rank (default 60)")
    p.add_argument("--sizes", type=int, nargs="+", default=[30, 100], help="measured sub-networks per fit")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--proxy-configs", type=int, default=2000, help="configurations of the pre-training (FBNetV3)")
    p.add_argument("--steps", type=int, default=500, help="optimiser steps of each pre-training and each fit")
    p.add_argument("--bn-batches", type=int, default=4, help="batches of 64 training images per BN recalibration")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared 2-core machine "
                                                          "two threads wait for each other)")
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args()
    if max(args.sizes) > args.pool:
        p.error(f"--sizes must be at most --pool ({args.pool})")
    torch.set_num_threads(args.threads)
    env = environment()
    env["started_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()
    t0 = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        recipe, result = train_supernet(args, Path(tmp))
        supernet, _ = model_from_checkpoint(result.weights)
    train_s = time.perf_counter() - t0
    space = supernet.space
    _, eval_loader, _, _ = build_loaders(recipe)
    calib = _calibration_loader("digits", "train", recipe.data, None, args.bn_batches, 64, 0, 0, False)
    configs = sample_subnets(space, args.pool + args.held_out, seed=1)
    calib, eval_loader = list(calib), list(eval_loader)  # decoded once: the same tensors for every sub-network
    t = time.perf_counter()
    cfgs, top1 = [], []
    with torch.no_grad():  # as `flexbone subnets` does, less the extraction: the active supernet computes the same
        for _, cfg in configs:
            supernet.set_active(cfg)
            recalibrate_bn(supernet, calib)
            cfgs.append(cfg)
            top1.append(evaluate(supernet, eval_loader, torch.device("cpu"))["top1"])
    eval_s = time.perf_counter() - t
    top1 = np.array(top1)
    rows = top1
    order = list(range(len(rows)))
    random.Random(2).shuffle(order)  # min and max (rows 0, 1) land anywhere
    pool, held = order[:args.pool], order[args.pool:]
    held_cfgs, held_top1 = [cfgs[i] for i in held], top1[held]

    costs = build_costs(supernet, ["macs", "params"])
    macs_tau = kendalltau([costs["macs"](c) for c in held_cfgs], held_top1).statistic
    results = []
    t = time.perf_counter()
    for seed in args.seeds:
        rng = random.Random(100 + seed)
        proxy_cfgs = [space.sample(rng) for _ in range(args.proxy_configs)]
        proxies = {k: [costs[k](c) for c in proxy_cfgs] for k in ("macs", "params")}
        pretrained = AccuracyPredictor(space, seed=seed)
        pretrained.pretrain(proxy_cfgs, proxies, steps=args.steps, seed=seed)
        trunk = {k: v.clone() for k, v in pretrained.trunk.state_dict().items()}
        for n in args.sizes:
            fit = random.Random(seed).sample(pool, n)
            taus = {}
            for label in ("scratch", "pretrained"):
                pred = AccuracyPredictor(space, seed=seed)
                if label == "pretrained":
                    pred.trunk.load_state_dict(trunk)
                pred.fit([cfgs[i] for i in fit], top1[fit], steps=args.steps, seed=seed)
                taus[label] = float(kendalltau(pred.predict(held_cfgs), held_top1).statistic)
            results.append({"seed": seed, "n": n, **taus})
            print(results[-1], file=sys.stderr)
    fit_s = time.perf_counter() - t
    load_after = os.getloadavg()

    table = []
    for n in args.sizes:
        mine = [r for r in results if r["n"] == n]
        s, pt = [r["scratch"] for r in mine], [r["pretrained"] for r in mine]
        table.append([n, len(mine), f"{statistics.mean(s):.3f}", f"{min(s):.3f}-{max(s):.3f}",
                      f"{statistics.mean(pt):.3f}", f"{min(pt):.3f}-{max(pt):.3f}",
                      f"{statistics.mean(b - a for a, b in zip(s, pt)):+.3f}"])
    md = report_header("Accuracy predictor: FBNetV3 proxy pre-training on real data (issue 15)", env, args.threads,
                       load_before, load_after) + [
        "",
        f"Supernet: toy-width OFA-MobileNetV3 (`ofa_mbv3_d234_e346_k357_w1.0` with the widths of "
        f"`benchmarks/bench_elastic_schedules.py`, resolution 16), trained with `sandwich_mbv3` on the digits for "
        f"{args.epochs} x {args.steps_per_epoch} steps of batch 32 ({train_s:.0f} s). {len(rows)} distinct "
        f"sub-networks evaluated on the 359 test digits after BN recalibration on {args.bn_batches} x 64 training "
        f"images ({eval_s:.0f} s): top-1 {top1.min():.1f}-{top1.max():.1f}% (mean {top1.mean():.1f}%). "
        f"{args.pool} of them to fit from, {len(held)} held out.",
        "",
        f"Predictor: MLP 3 x 400, {args.steps} Adam steps per fit; pre-training: {args.steps} steps on the "
        f"normalised MACs and params of {args.proxy_configs} random configurations. Seeds {args.seeds} (the "
        f"sub-networks fitted, initialisation, pre-training configurations). Kendall tau (scipy) of predicted vs "
        f"measured top-1 on the held-out sub-networks; MACs alone rank them with tau {macs_tau:.3f}.",
        "",
        format_markdown(["measured", "seeds", "tau from scratch", "range", "tau pre-trained", "range",
                         "mean gain"], table),
        "",
        f"Fits and pre-trainings took {fit_s:.0f} s in all.",
        "",
        f"Reading: pre-training teaches the trunk what MACs and params are; it can only help as far as they say "
        f"something about accuracy. Here MACs alone rank the held-out sub-networks with tau {macs_tau:.3f}.",
    ]
    data = {"environment": env, "load_before": load_before, "load_after": load_after, "args": vars(args) | {
        "out_dir": str(args.out_dir)}, "train_s": train_s, "eval_s": eval_s, "top1": top1.tolist(),
        "configs": [c.to_dict() for c in cfgs], "pool": pool, "held_out": held, "macs_tau": macs_tau,
        "results": results}
    write_report(args.out_dir, "predictor_pretraining", data, "\n".join(md) + "\n", echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
