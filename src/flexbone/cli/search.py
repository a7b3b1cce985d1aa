"""`flexbone search --checkpoint C --data D --budget macs=300M --budget latency=20ms --out DIR`: the best sub-network
of a trained supernet for each budget, checked for real.

Stages (each with a progress bar): evaluate ``--n`` sampled sub-networks (as ``flexbone subnets``: BN
recalibrated, extracted, evaluated) and fit the accuracy predictor on them (``--pretrain``: first pre-trained on
the MACs and parameters of a few thousand configurations, FBNetV3) - unless ``--predictor`` gives one; build the latency
table on this machine if a budget limits latency and ``--latency-table`` gives none; search every budget
(evolution, :mod:`flexbone.search.evolution`); then check each found sub-network: BN recalibration, evaluation on
the data, latency measured by timing the extracted network.

A supernet with elastic resolution is searched at the resolution the data is evaluated at (``--img-size``, else
the run's) or, with ``--resolutions 160,192,224`` (or ``all``: every resolution of its space), over those too:
the resolution is then one more gene of the search, the sampled and the found sub-networks are each evaluated at
their own resolution, and the latency table covers them all. Everything is validated before any work starts,
and ``DIR`` appears only when complete.

DIR/
  <budget>/config.json + model.safetensors    one per budget (load_subnet(folder))
  search.csv                                  per budget: predicted and measured top-1, costs, measured latency
  search.png                                  evaluated sub-networks, Pareto front, found ones, budgets as lines
  subnets.csv, predictor.safetensors/.json    what was built (when built here)
  latency_table.json                          (when built here)
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import ConfigError
from ..options import add_preprocessing_options, int_range

EPILOG = """examples:
  flexbone search --checkpoint runs/x/model.safetensors --data /data/imagenet --budget macs=300M --out found/
  flexbone search --checkpoint runs/x/model.safetensors --data digits --budget latency=2ms --budget macs=5M,params=1M \\
      --latency-table lut.json --predictor found/predictor.safetensors --out found2/

A budget is METRIC=VALUE (macs=300M, params=3M, latency=20ms), several metrics joined with commas limit all of
them at once; give --budget once per budget. Latency is ms per batch of --batch-size-latency images, with
--threads torch threads, timed on this machine.

An SN-Net (a `flexbone stitch` folder, or the weights of a run that trained one) has few configurations: each
is timed and evaluated, and the best one per budget is picked exhaustively (no predictor, no evolution); DIR
then holds <budget>/model.safetensors (export it with flexbone export --checkpoint), search.csv, configs.csv
and search.png."""

PRETRAIN_CONFIGS = 2000  # FBNetV3 proxy targets: MACs and params of this many random configurations


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="find the best sub-network of a supernet for each budget, checked for real",
                       description="Fit an accuracy predictor on evaluated sub-networks, search each budget "
                                   "(evolution), then recalibrate, evaluate and time every sub-network found.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="the supernet's weights, or an SN-Net (a "
                                                                       "`flexbone stitch` folder or a run's weights)")
    p.add_argument("--supernet", metavar="NAME", help="registered supernet (default: the one in the checkpoint)")
    p.add_argument("--data", required=True, metavar="PATH|digits", help="image folder (train/ + val/), CIFAR batch "
                                                                         "files, or 'digits'")
    p.add_argument("--budget", action="append", required=True, metavar="METRIC=VALUE[,...]",
                   help="a budget, e.g. macs=300M or latency=20ms,params=3M; repeat for several budgets")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (replaced when complete)")
    p.add_argument("--predictor", type=Path, metavar="FILE", help="a fitted accuracy predictor (.safetensors with "
                                                                   ".json beside it; default: fit one here)")
    p.add_argument("--latency-table", type=Path, metavar="FILE", help="latency table (default: built here when a "
                                                                       "budget limits latency)")
    p.add_argument("--n", type=int_range(2), default=50, help="sub-networks evaluated to fit the predictor (default 50)")
    p.add_argument("--generations", type=int_range(0), default=500, help="evolution generations (default 500)")
    p.add_argument("--population", type=int_range(2), default=100, help="evolution population (default 100)")
    p.add_argument("--seed", type=int_range(0), default=0, help="seed of sampling, calibration images and search")
    p.add_argument("--pretrain", action="store_true",
                   help="pre-train the predictor on MACs and params first (FBNetV3); off by default: on a digits "
                        "supernet it did not help (benchmarks/results/predictor_pretraining.md)")
    p.add_argument("--pretrain-configs", type=int_range(2), default=PRETRAIN_CONFIGS,
                   help=f"configurations whose MACs and params pre-train the predictor (default {PRETRAIN_CONFIGS})")
    p.add_argument("--predictor-steps", type=int_range(1), default=1000,
                   help="optimiser steps of the predictor's pre-training and of its fit, each (default 1000)")
    p.add_argument("--bn-batches", type=int_range(1), default=10, help="training batches per BN recalibration")
    p.add_argument("--batch-size", type=int_range(1), default=64, help="evaluation batch size")
    p.add_argument("--batch-size-latency", type=int_range(1), default=1, help="batch size of the latency timings")
    p.add_argument("--warmup", type=int_range(0), default=3, help="untimed runs before each latency measurement")
    p.add_argument("--repeats", type=int_range(1), default=10, help="timed runs per latency measurement (median)")
    p.add_argument("--img-size", type=int_range(1), default=None, metavar="N", help="evaluation (and search) "
                                                                                   "resolution")
    p.add_argument("--resolutions", default=None, metavar="R1,R2,...|all",
                   help="search these input resolutions of a supernet with elastic resolution (all: every one of "
                        "its space; default: only the evaluation resolution)")
    add_preprocessing_options(p)
    p.add_argument("--split", default="val", help="image-folder sub-folder to evaluate (default val)")
    p.add_argument("--train-split", default="train", help="image-folder sub-folder for BN recalibration")
    p.add_argument("--workers", type=int_range(0), default=2, help="data loader processes")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N", help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--resume", action="store_true", help="reuse the sub-networks an interrupted run of the same "
                                                         "command evaluated (kept in DIR.partial.csv)")
    p.set_defaults(func=run, device="cpu", amp="none")


# ----------------------------------------------------------------------------------------- budgets
def parse_budgets(texts: Sequence[str]) -> list[dict[str, float]]:
    """``['macs=300M', 'latency=20ms,params=3M']`` -> ``[{'macs': 3e8}, {'latency': 20.0, 'params': 3e6}]``."""
    from ..search.costs import parse_budget

    budgets = []
    for text in texts:
        budget: dict[str, float] = {}
        for part in text.split(","):
            name, value = parse_budget(part)
            if name in budget:
                raise ConfigError(f"--budget {text}: {name} is limited twice")
            budget[name] = value
        budgets.append(budget)
    return budgets


def budget_label(budget: dict[str, float]) -> str:
    """A folder name for a budget: ``macs-300M_latency-20ms``."""
    def fmt(name: str, v: float) -> str:
        if name == "latency":
            return f"latency-{v:g}ms"
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
            if v >= scale:
                return f"{name}-{v / scale:g}{suffix}"
        return f"{name}-{v:g}"

    return "_".join(fmt(k, v) for k, v in budget.items())


# ------------------------------------------------------------------------------------------------ run
def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ..data.loader import ImageLoader
    from ..data.samplers import ShardedEvalSampler
    from ..outputs import check_replaceable, check_writable, staged_dir
    from ..search.costs import build_costs
    from ..search.latency import LatencyTable, MeasuredLatency
    from ..elastic.space import SubnetConfig
    from ..search.predictor import AccuracyPredictor
    from ..interrupt import interrupt_note
    from .subnets import RowKeeper, _calibration_loader, _load_supernet, read_rows
    from .validate import eval_data_config, eval_dataset

    from ..stitch.snnet import is_snnet_checkpoint

    if is_snnet_checkpoint(args.checkpoint):
        from .stitch import run_search as run_stitched

        return run_stitched(args)
    # ---- everything checked before any work
    budgets = parse_budgets(args.budget)
    labels = [budget_label(b) for b in budgets]
    if len(set(labels)) < len(labels):
        raise ConfigError("the same budget is given twice")
    out = Path(args.out)
    check_writable(out, is_dir=True)
    check_replaceable(out, "search.csv")
    partial = out.with_name(f"{out.name}.partial.csv")  # the evaluated rows as they come (Ctrl-C keeps them)
    check_writable(partial)
    done = read_rows(partial) if args.resume and partial.is_file() else {}
    if args.threads:
        torch.set_num_threads(args.threads)
    supernet, meta = _load_supernet(args.checkpoint, args.supernet)
    data_cfg = eval_data_config(args, meta, supernet)
    img_size = data_cfg.img_size
    space = supernet.space
    resolutions = search_resolutions(args.resolutions, space, img_size)
    space = space.restrict(resolution=resolutions) if space.resolution else dataclasses.replace(space)
    uses_latency = any("latency" in b for b in budgets)
    table = LatencyTable.load(args.latency_table, supernet) if args.latency_table else None
    missing = [r for r in resolutions if table is not None and r not in table.resolutions]
    if missing:
        raise ConfigError(f"--latency-table {args.latency_table} has no timings at {missing[0]} px (it has "
                          f"{', '.join(map(str, table.resolutions))})")
    predictor = AccuracyPredictor.load(args.predictor, space) if args.predictor else None
    timing = dict(batch_size=args.batch_size_latency, threads=args.threads, warmup=args.warmup, repeats=args.repeats)
    measured = MeasuredLatency(supernet, img_size=None if supernet.space.resolution else img_size, **timing)
    costs = build_costs(supernet, ["macs", "params"], img_size=None if supernet.space.resolution else img_size)
    smallest = space.min()
    for b in budgets:  # an impossible budget fails here, naming the smallest achievable cost
        for name, limit in b.items():
            cost = (table.predict(smallest) if table is not None else measured(smallest)) if name == "latency" \
                else costs[name](smallest)
            if cost > limit:
                unit = " ms" if name == "latency" else ""
                raise ConfigError(f"budget {name}<={limit:g}{unit} cannot be met: the smallest sub-network of "
                                  f"{space.name} costs {name} = {cost:g}{unit}")
    def loaders_at(size: int) -> tuple[Any, Any]:
        """(calibration, evaluation) loaders of the data at ``size`` px."""
        cfg = dataclasses.replace(data_cfg, img_size=size, test_img_size=size)
        eval_set = eval_dataset(args.data, args.split, cfg, meta.get("class_names"))
        eval_loader = ImageLoader(eval_set, args.batch_size, ShardedEvalSampler(eval_set), args.workers, False, False,
                                  False, 0)
        calib_loader = _calibration_loader(args.data, args.train_split, cfg, meta.get("class_names"),
                                           args.bn_batches, args.batch_size, args.seed, args.workers, False)
        return calib_loader, eval_loader

    loaders = {r: loaders_at(r) for r in resolutions}  # every data error shows here, before any work
    progress = not args.no_progress
    name = args.supernet or meta.get("model")

    keep = RowKeeper(partial, done.values(), nothing=f"nothing kept: {out} is written only when the search finishes")

    with interrupt_note(keep.note), _kept_on_write_failure(out, keep.note), staged_dir(out) as tmp, torch.no_grad():
        # ---- the predictor
        rows: list[dict[str, Any]] = []
        if predictor is None:
            predictor = _fit_predictor(args, supernet, space, costs, loaders, img_size, progress, tmp, rows,
                                       on_row=keep, done=done)
        # ---- the latency table
        if uses_latency and table is None:
            table = LatencyTable.build(supernet, resolutions=resolutions if supernet.space.resolution else None,
                                       progress=progress, **timing)
            table.save(tmp / "latency_table.json")
        if table is not None:
            costs = build_costs(supernet, ["macs", "params", "latency"], latency_table=table,
                                img_size=None if supernet.space.resolution else img_size)
            for r in rows:  # the evaluated ones on the plot's latency axis: as the table predicts them
                r["latency_ms"] = costs["latency"](_with_resolution(SubnetConfig.from_json(r["config"]), space))
        # ---- the search
        from ..search.evolution import search

        results = search(space, predictor, costs, budgets, generations=args.generations, population=args.population,
                         seed=args.seed, progress=progress)
        # ---- every found sub-network checked for real
        found = _check_found(supernet, results, labels, loaders, img_size, measured, progress, tmp)
        _write_found_csv(found, tmp / "search.csv")
        plot_search(rows, found, budgets, tmp / "search.png",
                    title=f"{name} on {args.data} at {', '.join(map(str, resolutions))} px")

    from ..bench.report import format_table

    print(format_table(["budget", "px", "MMACs", "params", "latency ms", "predicted top-1", "measured top-1"],
                       [[f["budget"], f["img_size"], f["macs"] / 1e6, int(f["params"]), f["latency_measured_ms"],
                         f["top1_predicted"], f["top1_measured"]] for f in found], align="lrrrrrr"))
    partial.unlink(missing_ok=True)
    print(f"wrote {out}/ (one folder per budget, search.csv, search.png)")
    return 0


@contextlib.contextmanager
def _kept_on_write_failure(out: Path, kept) -> Iterator[None]:
    """A late OSError (a full disk) becomes one line that says what is kept and how to continue."""
    from ..errors import FlexboneError
    from ..outputs import describe_os_error, is_disk_full

    try:
        yield
    except OSError as e:
        what = "the disk is full" if is_disk_full(e) else describe_os_error(e)
        raise FlexboneError(f"cannot write {out}: {what}; {kept()}") from None


def search_resolutions(text: str | None, space: Any, img_size: int) -> list[int]:
    """The resolutions ``--resolutions`` names (default: ``img_size`` alone), checked against ``space``."""
    if not space.resolution:
        if text is not None:
            raise ConfigError(f"--resolutions: {space.name} does not search the input resolution (evaluate at one "
                              f"size with --img-size)")
        return [img_size]
    allowed = ", ".join(map(str, space.resolution))
    if text is None:
        if img_size not in space.resolution:
            raise ConfigError(f"the data is evaluated at {img_size} px, which is not a resolution of {space.name} "
                              f"({allowed}): pass --img-size with one of them, or --resolutions")
        return [img_size]
    if text.strip() == "all":
        return list(space.resolution)
    try:
        sizes = sorted({int(t) for t in text.split(",")})
    except ValueError:
        raise ConfigError(f"--resolutions {text!r}: give sizes joined by commas (e.g. 160,192,224) or 'all'") from None
    stray = [r for r in sizes if r not in space.resolution]
    if stray:
        raise ConfigError(f"--resolutions: {stray[0]} is not a resolution of {space.name} ({allowed})")
    return sizes


def _by_resolution(configs, img_size: int) -> dict[int, list]:
    """``(kind, cfg)`` pairs grouped by the size each is evaluated at."""
    groups: dict[int, list] = {}
    for kind, cfg in configs:
        groups.setdefault(cfg.resolution or img_size, []).append((kind, cfg))
    return groups


def _fit_predictor(args, supernet, space, costs, loaders, img_size, progress, tmp, rows, on_row=None, done=None):
    """Evaluate ``--n`` sampled sub-networks (rows appended to ``rows``, each passed to ``on_row`` as it is done;
    those in ``done`` reused), fit the predictor, save both to ``tmp``."""
    import random

    from ..elastic.space import SubnetConfig
    from ..search.predictor import AccuracyPredictor
    from .subnets import evaluate_subnets, sample_subnets, write_csv

    configs = sample_subnets(space, args.n, args.seed)
    with _torch_grad(False):
        for size, group in sorted(_by_resolution(configs, img_size).items()):
            calib_loader, eval_loader = loaders[size]
            rows.extend(evaluate_subnets(supernet, group, calib_loader, eval_loader, _cpu(), size, progress=progress,
                                         on_row=on_row, done=done))
    write_csv(rows, tmp / "subnets.csv")
    cfgs = [_with_resolution(SubnetConfig.from_json(r["config"]), space) for r in rows]
    predictor = AccuracyPredictor(space, seed=args.seed)
    with _torch_grad(True):
        if args.pretrain:
            rng = random.Random(args.seed)
            many = [space.sample(rng) for _ in range(args.pretrain_configs)]
            predictor.pretrain(many, {k: [costs[k](c) for c in many] for k in ("macs", "params")},
                               steps=args.predictor_steps, seed=args.seed, progress=progress)
        predictor.fit(cfgs, [r["top1"] for r in rows], steps=args.predictor_steps, seed=args.seed, progress=progress)
    predictor.save(tmp / "predictor.safetensors")
    return predictor


def _with_resolution(cfg, space):
    return cfg.replace(resolution=space.resolution[0]) if space.resolution and cfg.resolution is None else cfg


def _cpu():
    import torch

    return torch.device("cpu")


def _torch_grad(enabled: bool):
    import torch

    return torch.enable_grad() if enabled else torch.no_grad()


def _check_found(supernet, results, labels, loaders, img_size, measured, progress, tmp):
    """Per result: recalibrate, evaluate, time, save the sub-network to ``tmp/<label>``; returns the CSV rows."""
    from tqdm.auto import tqdm

    from ..elastic.subnets import save_subnet
    from .subnets import evaluate_subnets

    found = []
    for label, r in tqdm(list(zip(labels, results)), desc="checking found sub-networks", unit="net",
                         disable=not progress, file=sys.stderr):
        cfg = r.config if supernet.space.resolution else r.config.replace(resolution=None)
        size = cfg.resolution or img_size
        calib_loader, eval_loader = loaders[size]
        row = evaluate_subnets(supernet, [("found", cfg)], calib_loader, eval_loader, _cpu(), size)[0]
        save_subnet(supernet, tmp / label)  # the active sub-network, with the BN statistics just recalibrated
        found.append({"budget": label, "config": cfg.to_json(), "img_size": size, "top1_predicted": r.score,
                      "top1_measured": row["top1"],
                      "macs": row["macs"], "params": row["params"],
                      "latency_predicted_ms": r.costs.get("latency", math.nan),
                      "latency_measured_ms": measured(cfg), "folder": label,
                      **{f"limit_{k}": v for k, v in r.budget.items()}})
    return found


def _write_found_csv(found: list[dict[str, Any]], path: Path) -> None:
    fields = list(dict.fromkeys(k for f in found for k in f))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(found)


# ----------------------------------------------------------------------------------------------- plot
def plot_search(rows: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]], budgets: Sequence[dict[str, float]],
                path: Path, title: str = "") -> Path:
    """One panel per budgeted metric (MACs, params or latency on x, top-1 on y): the evaluated sub-networks and
    their Pareto front, each found one predicted (hollow) and measured (filled), and the budgets as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .subnets import pareto_front

    metrics = list(dict.fromkeys(k for b in budgets for k in b))
    scale = {"macs": 1e6, "params": 1e6, "latency": 1.0}
    label = {"macs": "MACs (millions)", "params": "parameters (millions)", "latency": "latency (ms, measured)"}
    key = {"macs": "macs", "params": "params", "latency": "latency_measured_ms"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.4), dpi=110, squeeze=False)
    for ax, m in zip(axes[0], metrics):
        if m != "latency" and rows:
            x = [r[m] / scale[m] for r in rows]
            y = [r["top1"] for r in rows]
            ax.scatter(x, y, s=14, color="tab:blue", alpha=0.5, label="evaluated sub-networks")
            front = pareto_front(x, y)
            ax.plot([x[i] for i in front], [y[i] for i in front], "-", color="tab:blue", alpha=0.8,
                    label="Pareto front")
        elif rows and all("latency_ms" in r for r in rows):  # latency of the evaluated ones: the table's
            x = [r["latency_ms"] for r in rows]
            y = [r["top1"] for r in rows]
            ax.scatter(x, y, s=14, color="tab:blue", alpha=0.5, label="evaluated (table latency)")
            front = pareto_front(x, y)
            ax.plot([x[i] for i in front], [y[i] for i in front], "-", color="tab:blue", alpha=0.8,
                    label="Pareto front")
        for i, f in enumerate(found):
            fx = f[key[m]] / scale[m]
            ax.plot([fx, fx], [f["top1_predicted"], f["top1_measured"]], ":", color="grey")
            ax.scatter([fx], [f["top1_predicted"]], s=50, facecolors="none", edgecolors="tab:red",
                       label="found: predicted" if i == 0 else None)
            ax.scatter([fx], [f["top1_measured"]], s=50, color="tab:red", label="found: measured" if i == 0 else None)
        for b in budgets:
            if m in b:
                ax.axvline(b[m] / scale[m], color="tab:green", linestyle="--", linewidth=1)
        ax.set_xlabel(label[m] + ("  (dashed: budgets)" if any(m in b for b in budgets) else ""))
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
