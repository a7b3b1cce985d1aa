"""Does stitching hold on real data? SN-Net on scikit-learn's digits (issue 19).

Two anchors of different size (small-stem ResNets, 8 px) are trained on the digits through the engine (the
quickstart recipe, ``--anchor-epochs`` each), stitched (``flexbone.stitch``: the hierarchical rule, stages 1
and 2), their stitching layers initialised by least squares on 100 training images, and the SN-Net is
fine-tuned briefly through the engine (the ``stitching`` strategy: one configuration drawn uniformly per step,
anchors included). Every configuration's top-1 on the 359 test digits and its MACs are reported at three
points: random stitches, least-squares stitches (before any training), and after fine-tuning; and whether the
stitched configurations fall between the anchors (the paper's claim: stitches fill the accuracy/cost gap).

    .venv/bin/python benchmarks/bench_stitch_digits.py                        # seeds 0 and 1 (a few minutes)
    .venv/bin/python benchmarks/bench_stitch_digits.py --seeds 0 --anchor-epochs 1 --snnet-epochs 1 \\
        --out-dir /tmp/bench_check                                             # a quick check that it works

Writes ``stitch_digits.json`` and ``stitch_digits.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import flexbone
from flexbone.bench.report import format_markdown, format_table, report_header, write_report
from flexbone.bench.throughput import environment
from flexbone.config import load_recipe
from flexbone.data.datasets import digits_dataset
from flexbone.stitch import build_snnet, save_snnet
from flexbone.train import engine

HERE = Path(__file__).resolve().parent
# two anchors of the small-stem ResNet family: depths per stage (1, 2, 2, 1) and (1, 3, 4, 1), widths 8..16 / 32..64
ANCHORS = [dict(layers=[1, 2, 2, 1], channels=[8, 8, 8, 16]), dict(layers=[1, 3, 4, 1], channels=[64, 32, 32, 64])]
COMMON = {"data.img_size": 8, "data.test_img_size": 8, "train.log_interval": 1000}


def _recipe(out: Path, name: str, seed: int, epochs: int, **extra: Any):
    over = {**COMMON, "train.output_dir": str(out), "train.run_name": name, "train.seed": seed,
            "schedule.epochs": epochs, **extra}
    return load_recipe("quickstart", over)


def _test_set(mean: float, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    ds = digits_dataset(train=False)
    return (ds.images.float() / 255.0 - mean) / std, ds.targets


def _train_set(mean: float, std: float) -> torch.Tensor:
    ds = digits_dataset(train=True)
    return (ds.images.float() / 255.0 - mean) / std


@torch.no_grad()
def _top1s(net: Any, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    net.eval()
    out = []
    for i in range(net.num_configs):
        net.set_active(i)
        out.append(100.0 * (net(x).argmax(1) == y).float().mean().item())
    return out


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    recipe = load_recipe("quickstart")
    mean, std = recipe.data.mean[0], recipe.data.std[0]
    x_test, y_test = _test_set(mean, std)
    t0 = time.perf_counter()
    weights = []
    for i, options in enumerate(ANCHORS):  # each anchor trained alone through the engine
        r = _recipe(work, f"anchor{i}-s{seed}", seed, args.anchor_epochs, **{"model.kwargs": options})
        weights.append(engine.run(r, progress=False, quiet=True).weights)
    anchor_s = time.perf_counter() - t0
    kwargs = dict(anchors=["resnet8s_tiny", "resnet8s_tiny"], anchor_options=ANCHORS)
    net = build_snnet(anchor_checkpoints=[str(w) for w in weights], num_classes=10, **kwargs)
    macs = [r["macs"] for r in net.configs(8)]
    random_init = _top1s(net, x_test, y_test)
    torch.manual_seed(seed)
    train = _train_set(mean, std)
    net.init_stitches(train[torch.randperm(len(train))[:100]])  # one batch of 100 training images
    ls_init = _top1s(net, x_test, y_test)
    stitched = save_snnet(net, work / f"snnet-s{seed}")
    t1 = time.perf_counter()
    r = _recipe(work, f"snnet-s{seed}", seed, args.snnet_epochs, **{
        "model.name": "snnet", "model.kwargs": kwargs, "model.pretrained": str(stitched / "model.safetensors"),
        "optim.lr": args.snnet_lr, "schedule.warmup_epochs": 0})
    result = engine.run(r, progress=False, quiet=True)
    snnet_s = time.perf_counter() - t1
    tuned = flexbone.create_model("snnet", num_classes=10, pretrained=str(result.weights), **kwargs)
    finetuned = _top1s(tuned, x_test, y_test)
    return dict(seed=seed, macs=macs, configs=[c.describe() for c in net.stitch_configs], random_init=random_init,
                ls_init=ls_init, finetuned=finetuned, anchor_train_s=anchor_s, snnet_train_s=snnet_s,
                anchor_params=[net.config_params(0), net.config_params(1)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--anchor-epochs", type=int, default=3)
    p.add_argument("--snnet-epochs", type=int, default=2)
    p.add_argument("--snnet-lr", type=float, default=0.02, help="SN-Net fine-tuning lr per 64 images (anchors: 0.1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_seed(s, args, Path(tmp)) for s in args.seeds]
    load_after = os.getloadavg()

    n = len(results[0]["macs"])
    rows = []
    for i in range(n):
        def mean(key: str) -> float:
            return statistics.mean(r[key][i] for r in results)
        rows.append([i, results[0]["configs"][i], round(results[0]["macs"][i] / 1e6, 2), mean("random_init"),
                     mean("ls_init"), mean("finetuned"), " / ".join(f"{r['finetuned'][i]:.1f}" for r in results)])
    headers = ["id", "configuration", "MMACs", "top-1 random stitch %", "top-1 LS init %", "top-1 fine-tuned %",
               "fine-tuned per seed"]
    print(format_table(headers, rows))

    def between(r: dict[str, Any]) -> int:
        lo, hi = sorted(r["finetuned"][:2])
        return sum(lo - 0.5 <= t <= hi + 0.5 for t in r["finetuned"][2:])

    verdict = [f"seed {r['seed']}: {between(r)} of {n - 2} stitches within the anchors' top-1 range (+-0.5 point) "
               f"after fine-tuning; anchors {r['finetuned'][0]:.1f}% / {r['finetuned'][1]:.1f}%" for r in results]
    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after, started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    md = "\n".join([
        *report_header("SN-Net on digits: do stitches fill the gap between two anchors?", env, args.threads,
                       load_before, load_after),
        "",
        f"Anchors: small-stem ResNets at 8 px, {ANCHORS[0]} ({results[0]['anchor_params'][0]:,} params) and "
        f"{ANCHORS[1]} ({results[0]['anchor_params'][1]:,} params), each trained alone with the quickstart recipe "
        f"for {args.anchor_epochs} epochs through the engine. SN-Net: hierarchical rule (stages 1, 2) -> {n} "
        f"configurations; least squares on 100 training images; then {args.snnet_epochs} epochs of the `stitching` "
        f"strategy (one configuration per step, uniform, anchors included; lr {args.snnet_lr} per 64 images, "
        f"quickstart otherwise). Top-1 on the 359 test digits (fixed split), mean over seeds {args.seeds}.",
        "",
        format_markdown(headers, rows),
        "",
        *[f"- {v}" for v in verdict],
        "",
        "Random stitch: the stitching layers' default initialisation; LS init: least squares, before any training.",
        "",
    ])
    paths = write_report(args.out_dir, "stitch_digits", dict(environment=env, settings={
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, anchors=ANCHORS, headers=headers,
        rows=rows, results=results), md)
    print(md)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
