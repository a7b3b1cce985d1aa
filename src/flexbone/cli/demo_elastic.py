"""`flexbone demo elastic`: train once, deploy at every budget, on the bundled digits, in one command.

1. train: the registered ``ofa_digits_mbv3`` supernet (the OFA-MobileNetV3 choices - depth 2/3/4, kernel 3/5/7,
   expand 3/4/6 - at digits widths) with DεpS (the ``deps_mbv3`` recipe, digits settings) at 24 px (see
   ``RESOLUTIONS``: the space's smaller resolutions are left out of this demo);
2. evaluate ``--n`` sampled sub-networks (BN recalibrated) on the *search half* of the test digits;
3. fit the accuracy predictor (FBNetV3: pre-trained on MACs and parameters of 2,000 configurations first);
4. build a latency table on this machine (batch 1, ``--threads``);
5. search three latency budgets (evolutionary search on the predictor under the table's latency);
6. check every chosen sub-network for real: BN recalibration, top-1 on the *report half* of the test digits
   (images that neither training nor the search has seen), measured latency; then export it to ONNX (BN folded,
   checked in onnxruntime against the PyTorch sub-network) and measure the exported file: its top-1 on the report
   half and its onnxruntime latency, the figures a deployment gets;
7. write a one-page report (``report.md`` + ``report.png``) and the chosen sub-networks (``load_subnet``-able,
   each with ``model.onnx`` and its sidecar JSON).

The test digits are split in two fixed halves so that the accuracies in the report are not those the search
selected on. Everything goes to a staged folder that becomes ``--output-dir/demo-elastic-<time>`` only at the end.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

NAME = "ofa_digits_mbv3"
BUDGET_FRACTIONS = (0.15, 0.4, 0.7)  # latency budgets between the smallest and the largest net's (table) latency
# The resolutions the demo trains and searches. ofa_digits_mbv3's space has 12-24 px, but on the 8x8 digits the
# small sizes cost far more accuracy than they save time (measured 2026-12-07 on the shared 2-core VM, seed 0, the
# full net alone for 4 epochs: 95.8% test top-1 trained at 24 px, 80.5% at 12 px, 67.1% with a size from 12-24 px
# drawn per step as elastic resolution does; with DεpS for 8 epochs at 24 px the max / min sub-networks reach
# 96.9 / 95.3% at 24 px after BN recalibration, and 18-75% at 12-20 px, which training never showed them; trained
# the same way at 16-24 px they reach only 89.7 / 82.5% at 24 px and 88.3 / 80.8% at 16 px). At batch 1 on a CPU these tiny networks'
# latency is mostly per-layer overhead, so the resolution buys little speed here: depth, kernel and expand are
# searched, at 24 px.
RESOLUTIONS = (24,)


def digits_recipe(args: argparse.Namespace, out_dir: Path):
    """The ``deps_mbv3`` recipe with the digits data and a CPU-sized schedule (values chosen for the demo)."""
    from ..config import load_recipe

    return load_recipe("deps_mbv3", {
        "model.name": NAME, "model.drop_rate": 0.0,
        "data.dataset": "digits", "data.img_size": 24, "data.test_img_size": 24, "data.crop_pct": 1.0,
        "data.interpolation": "bilinear", "data.mean": [0.306, 0.306, 0.306], "data.std": [0.376, 0.376, 0.376],
        "data.batch_size": 64, "data.eval_batch_size": 256, "data.workers": 0,
        "aug.scale": [0.85, 1.0], "aug.ratio": [0.85, 1.18], "aug.hflip": 0.0,
        "optim.lr": 0.1, "optim.lr_base_batch_size": 64, "optim.weight_decay": 2.0e-3,
        "schedule.epochs": args.epochs, "schedule.warmup_epochs": 1,
        "elastic.deps_start": 0.4, "elastic.deps_ramp_epochs": max(1.0, args.epochs * 0.2),
        "elastic.resolutions": list(RESOLUTIONS), "elastic.bn_batches": 4,
        "train.seed": args.seed, "train.output_dir": str(out_dir), "train.run_name": "supernet",
        "train.eval_every": 10_000, "train.log_interval": 10,
    })


def _halves(recipe, resolution: int, seed: int) -> tuple[list, list]:
    """The test digits at ``resolution`` as batches, split into two fixed halves (search, report)."""
    import torch

    from ..data.datasets import digits_dataset
    from ..data.transforms import build_eval_transform

    data = copy.deepcopy(recipe.data)
    data.test_img_size = resolution
    ds = digits_dataset(False, data.digits_test_fraction, data.digits_split_seed, build_eval_transform(data))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    halves = []
    for idx in (order[: len(order) // 2], order[len(order) // 2:]):
        items = [ds[i] for i in idx]
        images = torch.stack([x for x, _ in items])
        labels = torch.tensor([int(y) for _, y in items])
        halves.append([(images[i:i + 256], labels[i:i + 256]) for i in range(0, len(idx), 256)])
    return halves[0], halves[1]


def _calibration(recipe, resolution: int, seed: int):
    from .subnets import _calibration_loader

    data = copy.deepcopy(recipe.data)
    data.test_img_size = resolution
    return _calibration_loader("digits", "train", data, None, 4, 64, seed, 0, False)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..elastic import recalibrate_bn, save_subnet
    from ..export.artifact import export_model
    from ..export.runtime import OnnxModel
    from ..export.source import load_source
    from ..interrupt import interrupt_note
    from ..outputs import check_writable, staged_dir, write_json, write_text
    from ..search import LatencyTable, MeasuredLatency, build_costs
    from ..search.latency import time_onnx_file
    from ..search.evolution import search
    from ..search.predictor import AccuracyPredictor
    from ..train.checkpoint import model_from_checkpoint
    from ..train.engine import evaluate, run as run_training
    from .subnets import evaluate_subnets, sample_subnets

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    final = Path(args.output_dir) / f"demo-elastic-{stamp}"
    check_writable(final, is_dir=True)
    progress = not args.no_progress

    def stage(text: str) -> None:
        print(f"\n[{time.perf_counter() - start:5.0f} s] {text}", flush=True)

    device = torch.device("cpu")
    with interrupt_note(f"nothing kept: {final} is written only when the demo finishes"), staged_dir(final) as out:
        # 1. train the supernet ------------------------------------------------------------------------------
        recipe = digits_recipe(args, out)
        stage(f"1/6 training {NAME} on the digits with DεpS: {args.epochs} epochs, full net alone for the first "
              f"{recipe.elastic.deps_start:.0%}, then max + min + {recipe.elastic.num_random} random sub-networks "
              f"per step, resolutions {', '.join(map(str, recipe.elastic.resolutions))} px")
        result = run_training(recipe, recipe_name="deps_mbv3", progress=progress, quiet=not progress)
        net, _ = model_from_checkpoint(result.weights)
        space = net.space.restrict(resolution=list(RESOLUTIONS))

        # 2. evaluate sampled sub-networks on the search half -------------------------------------------------
        stage(f"2/6 evaluating {args.n} sampled sub-networks (BN recalibrated, each at its resolution) on half of "
              f"the test digits")
        sampled = sample_subnets(space, args.n, args.seed)
        data = {r: (_calibration(recipe, r, args.seed), *_halves(recipe, r, args.seed)) for r in space.resolution}
        rows: list[dict[str, Any]] = []
        by_res: dict[int, list] = {}
        for kind, cfg in sampled:
            by_res.setdefault(cfg.resolution, []).append((kind, cfg))
        for r, group in sorted(by_res.items()):
            calib, search_half, _ = data[r]
            with torch.no_grad():
                rows += evaluate_subnets(net, group, calib, search_half, device, r, progress=progress)

        # 3. the accuracy predictor ------------------------------------------------------------------------
        stage("3/6 fitting the accuracy predictor (pre-trained on MACs and params of 2,000 configurations)")
        from ..elastic.space import SubnetConfig

        cfgs = [SubnetConfig.from_json(row["config"]) for row in rows]
        top1 = [row["top1"] for row in rows]
        costs = build_costs(net, ["macs", "params"])
        proxy_rng = random.Random(args.seed + 1)
        proxy_cfgs = [space.sample(proxy_rng) for _ in range(2000)]
        predictor = AccuracyPredictor(space, seed=args.seed)
        predictor.pretrain(proxy_cfgs, {k: [costs[k](c) for c in proxy_cfgs] for k in ("macs", "params")},
                           steps=500, seed=args.seed)
        predictor.fit(cfgs, top1, steps=500, seed=args.seed)
        predictor.save(out / "predictor.safetensors")

        # 4. the latency table -------------------------------------------------------------------------------
        stage(f"4/6 building the latency table on this machine (batch 1, {args.threads} threads, eager PyTorch)")
        table = LatencyTable.build(net, backend="torch", batch_size=1, threads=args.threads, progress=progress,
                                   resolutions=RESOLUTIONS, repeats=10, warmup=3)
        table.save(out / "latency_table.json")
        costs["latency"] = build_costs(net, ["latency"], latency_table=table)["latency"]
        for row, cfg in zip(rows, cfgs):
            row["latency_ms"] = costs["latency"](cfg)

        # 5. search three latency budgets ----------------------------------------------------------------
        lo, hi = costs["latency"](space.min()), costs["latency"](space.max())
        budgets = [{"latency": lo + f * (hi - lo)} for f in BUDGET_FRACTIONS]
        stage("5/6 evolutionary search (once-for-all settings, predictor accuracy) for latency <= "
              + ", ".join(f"{b['latency']:.2f}" for b in budgets) + " ms")
        results = search(space, predictor, costs, budgets, seed=args.seed, progress=progress,
                         generations=args.generations)

        # 6. check each chosen sub-network for real ------------------------------------------------------
        stage("6/6 checking the chosen sub-networks: BN recalibration, top-1 on the other half of the test "
              "digits, measured latency; ONNX export checked in onnxruntime, its top-1 and latency")
        measure = MeasuredLatency(net, threads=args.threads, warmup=5, repeats=30)
        chosen = []

        def recalibrated(cfg):
            """``cfg``'s extracted sub-network after BN recalibration, and its top-1 on the search half."""
            net.set_active(cfg)
            recalibrate_bn(net, data[cfg.resolution][0])
            with torch.no_grad():
                sub = net.extract().eval()
                return sub, evaluate(sub, data[cfg.resolution][1], device)["top1"]

        for i, res in enumerate(results):
            cfg, score, source = res.config, float(res.score), "search"
            sub, seen = recalibrated(cfg)
            # the predictor is fitted on few sub-networks and the search seeks out its errors: when an evaluated
            # sub-network within the budget scored better on the search half, the found one is not kept
            rival = better_sampled(rows, res.budget["latency"], seen)
            if rival is not None:
                cfg, source = SubnetConfig.from_json(rival["config"]), "sampled"
                score = float(predictor.predict([cfg])[0])
                sub, seen = recalibrated(cfg)
            r = cfg.resolution
            report_half = data[r][2]
            with torch.no_grad():
                held_out = evaluate(sub, report_half, device)["top1"]
            folder = save_subnet(sub, out / "chosen" / f"budget{i + 1}")
            measured_ms = measure(cfg)
            onnx = _export_chosen(folder, recipe, r, export_model, load_source)
            runner = OnnxModel(onnx["path"], threads=args.threads)
            onnx_top1 = evaluate(runner, report_half, device)["top1"]
            del runner
            onnx_ms = time_onnx_file(onnx["path"], (net.in_chans, r, r), threads=args.threads, warmup=5, repeats=30)
            chosen.append(dict(budget_ms=res.budget["latency"], config=cfg.to_json(), resolution=r, source=source,
                               search_config=res.config.to_json(), predicted_top1=score, top1_report_half=held_out,
                               top1_search_half=seen, table_ms=costs["latency"](cfg), measured_ms=measured_ms,
                               onnx_top1_report_half=onnx_top1, onnx_ms=onnx_ms,
                               onnx_max_abs_diff=onnx["max_abs_diff"], onnx=str(onnx["path"].relative_to(out)),
                               macs=costs["macs"](cfg), params=costs["params"](cfg),
                               folder=str(folder.relative_to(out))))
            print(f"  budget {res.budget['latency']:.2f} ms: {r} px, depth {list(cfg.depth)} ({source}); predicted "
                  f"{score:.1f}%, measured {held_out:.1f}% (held-out half; ONNX {onnx_top1:.1f}%); table "
                  f"{chosen[-1]['table_ms']:.2f} ms, measured {measured_ms:.2f} ms eager, {onnx_ms:.2f} ms onnxruntime",
                  flush=True)

        # report ---------------------------------------------------------------------------------------------
        elapsed = time.perf_counter() - start
        summary = dict(supernet=NAME, epochs=args.epochs, seed=args.seed, threads=args.threads, n=args.n,
                       generations=args.generations, max_net_top1_full_test=result.top1, wall_s=elapsed,
                       table=table.info, evaluated=rows, chosen=chosen)
        write_json(out / "demo.json", summary)
        plot_report(rows, chosen, budgets, out / "report.png")
        write_text(out / "report.md", report_markdown(summary, budgets))
    print(f"\ndone in {time.perf_counter() - start:.0f} s: report {final / 'report.md'} (+ report.png); chosen "
          f"sub-networks in {final / 'chosen'} (flexbone.elastic.load_subnet), supernet run in {final / 'supernet'}")
    return 0


def better_sampled(rows: Sequence[dict[str, Any]], budget_ms: float, found_top1: float) -> dict[str, Any] | None:
    """The evaluated sub-network (``rows``: search-half top-1 and table latency) with the best top-1 within
    ``budget_ms`` if it beats ``found_top1`` (the found one's search-half top-1), else None."""
    within = [row for row in rows if row["latency_ms"] <= budget_ms]
    best = max(within, key=lambda row: row["top1"], default=None)
    return best if best is not None and best["top1"] > found_top1 else None


def _export_chosen(folder: Path, recipe, resolution: int, export_model, load_source) -> dict[str, Any]:
    """``folder/model.onnx`` (+ sidecar) of a saved sub-network: BN folded, checked in onnxruntime, with the digits'
    preprocessing and class names in the sidecar (the sub-network folder does not hold them)."""
    data = recipe.data
    source = load_source(subnet=folder)
    source.metadata.update(test_img_size=resolution, mean=list(data.mean), std=list(data.std), crop_pct=1.0,
                           interpolation=data.interpolation, class_names=[str(d) for d in range(10)])
    path = folder / "model.onnx"
    meta = export_model(source, path, "onnx", img_size=resolution, fold=True, log=lambda _: None)
    return {"path": path, "max_abs_diff": max(meta["check"]["max_abs_diff"].values())}


# ------------------------------------------------------------------------------------------------ report
def plot_report(rows: Sequence[dict[str, Any]], chosen: Sequence[dict[str, Any]], budgets: Sequence[dict[str, float]],
                path: Path) -> Path:
    """Evaluated sub-networks (table latency vs top-1, Pareto front), budgets, chosen ones predicted vs measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write
    from .subnets import pareto_front

    lat = [r["latency_ms"] for r in rows]
    top1 = [r["top1"] for r in rows]
    front = pareto_front(lat, top1)
    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=120)
    ax.scatter(lat, top1, s=16, color="tab:blue", alpha=0.5, label="evaluated sub-networks (search half)")
    ax.plot([lat[i] for i in front], [top1[i] for i in front], "-", color="tab:blue", alpha=0.6, label="Pareto front")
    for i, b in enumerate(budgets):
        ax.axvline(b["latency"], color="tab:gray", ls="--", lw=1, label="budgets" if i == 0 else None)
    for i, c in enumerate(chosen):
        ax.scatter([c["table_ms"]], [c["predicted_top1"]], s=60, facecolors="none", edgecolors="tab:red",
                   label="chosen: predicted" if i == 0 else None)
        ax.scatter([c["measured_ms"]], [c["top1_report_half"]], s=60, color="tab:red", marker="*",
                   label="chosen: measured (held-out half, timed eager)" if i == 0 else None)
        ax.plot([c["table_ms"], c["measured_ms"]], [c["predicted_top1"], c["top1_report_half"]], color="tab:red",
                lw=0.8, alpha=0.6)
        ax.scatter([c["onnx_ms"]], [c["onnx_top1_report_half"]], s=50, color="tab:green", marker="D",
                   label="chosen: exported ONNX in onnxruntime" if i == 0 else None)
    ax.set_xlabel("latency on this machine (ms, batch 1): table for the sampled, measured for the chosen")
    ax.set_xscale("log")
    ax.set_ylabel("top-1 on the test digits (%)")
    ax.set_title("ofa_digits_mbv3 trained once with DεpS: the best sub-network per latency budget", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def report_markdown(s: dict[str, Any], budgets: Sequence[dict[str, float]]) -> str:
    from ..bench.report import format_markdown

    t = s["table"]
    rows = [[f"{c['budget_ms']:.2f}", c["resolution"], json.loads(c["config"])["depth"], c.get("source", "search"),
             f"{c['predicted_top1']:.1f}",
             f"{c['top1_report_half']:.1f}", f"{c['top1_search_half']:.1f}", f"{c['table_ms']:.2f}",
             f"{c['measured_ms']:.2f}", f"{c['onnx_top1_report_half']:.1f}", f"{c['onnx_ms']:.3f}",
             f"{c['onnx_max_abs_diff']:.1e}", f"{c['macs'] / 1e6:.2f}", f"{c['params'] / 1e3:.0f}", c["onnx"]]
            for c in s["chosen"]]
    evaluated = s["evaluated"]
    return "\n".join([
        "# flexbone demo elastic: train once, deploy at every budget (digits)",
        "",
        f"Supernet `{s['supernet']}` trained once with DεpS for {s['epochs']} epochs (seed {s['seed']}) on the "
        f"1,438 training digits; its full network scores {s['max_net_top1_full_test']:.1f}% on the 359 test digits. "
        f"{len(evaluated)} sampled sub-networks were evaluated on one half of the test digits (the *search half*) "
        f"to fit the accuracy predictor; the latency table was built on this machine ({t['device']}, {t['threads']} "
        f"threads, batch {t['batch_size']}, torch {t['torch_version']}, {t['parts_timed']} parts). The search "
        f"({s['generations']} generations) then picked one sub-network per latency budget; each was recalibrated and "
        f"evaluated on the search half, and where an evaluated sample within the budget had scored better there, that "
        f"one was kept instead ('chosen by: sampled'; the predictor is fitted on few sub-networks and the search "
        f"finds its errors). Each chosen one was extracted and measured: top-1 on the *report half* (digits neither training nor the search saw) and its "
        f"latency timed whole (median of 30 calls). Each was then exported to ONNX (batch norms folded; the export "
        f"fails unless onnxruntime's outputs match PyTorch's within 1e-4), and the exported file was measured again "
        f"in onnxruntime: its top-1 on the report half and its latency (batch 1, {s['threads']} threads) are what a "
        f"deployment gets. The budgets are eager PyTorch latencies (the table was timed in eager PyTorch).",
        "",
        format_markdown(["budget ms", "px", "depth", "chosen by", "predicted top-1 %", "top-1 % report half",
                         "top-1 % search half", "table ms", "measured ms eager", "ONNX top-1 % report half",
                         "onnxruntime ms", "ONNX max abs diff", "MMACs", "K params", "exported to"], rows),
        "",
        f"Evaluated sub-networks (search half): top-1 {min(r['top1'] for r in evaluated):.1f}-"
        f"{max(r['top1'] for r in evaluated):.1f}%, table latency {min(r['latency_ms'] for r in evaluated):.2f}-"
        f"{max(r['latency_ms'] for r in evaluated):.2f} ms.",
        "",
        "![report](report.png)",
        "",
        f"Wall time {s['wall_s']:.0f} s with {s['threads']} threads. Latencies depend on this machine and its load at "
        f"the time (the table sums blocks timed alone; a whole network on a busy machine also waits for other "
        f"processes). An accuracy on ~180 test digits has a standard error of 2-4 points, and the search half's "
        f"accuracies are optimistic: the search selected on them.",
        "",
    ])
