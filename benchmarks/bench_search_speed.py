"""Evolutionary search speed: 500 generations with the MLP predictor and a latency table (issue 15; target <= 10 s
on 2 cores), beside the `ofa` package's EvolutionFinder on the same predictor, cost and budget.

What it measures: the once-for-all settings (population 100, 25% parents, mutation ratio 0.5, gene probability
0.1, resolution 0.5, 500 generations) on the ``ofa_digits_mbv3`` space (the OFA-MobileNetV3 choices: 5 units of
2-4 blocks, kernel 3/5/7, expand 3/4/6, 5 resolutions). Accuracy: the 3 x 400 MLP predictor, fitted to a made-up
accuracy (speed does not depend on its weights). Cost: a :class:`LatencyTable` built on this machine first (its
build time is reported, not counted), and in a second case latency and MACs together. Budget: the median latency
of 200 random sub-networks (at least 1.2 x the smallest one's). Each case runs ``--repeats`` times with different seeds; the table gives the median
wall time, the predictor evaluations and the distinct sub-networks whose costs were computed. The reference runs
once per case (it is slower; ``--no-reference`` skips it).

    .venv/bin/python benchmarks/bench_search_speed.py                   # a few minutes
    .venv/bin/python benchmarks/bench_search_speed.py --generations 20 --repeats 1 --out-dir /tmp/b   # a check

Writes ``search_speed.json`` and ``search_speed.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from flexbone.bench.report import add_run_options, format_markdown, report_header, write_report
from flexbone.bench.throughput import environment
from flexbone.elastic import SubnetConfig
from flexbone.models import create_model
from flexbone.search.costs import build_costs
from flexbone.search.evolution import search
from flexbone.search.latency import LatencyTable
from flexbone.search.predictor import AccuracyPredictor

HERE = Path(__file__).resolve().parent
SUPERNET = "ofa_digits_mbv3"


def made_up_accuracy(space, cfg) -> float:
    on = space.active_blocks(cfg)
    return 60 + sum(np.log(k * e) for k, e, a in zip(cfg.kernel, cfg.expand, on) if a) / 4 + cfg.resolution / 10


def reference_run(space, pred, cost, limit, generations, seed) -> tuple[float, float, int]:
    """The `ofa` package's EvolutionFinder on the same predictor and cost: (seconds, best score, evaluations)."""
    from ofa.nas.accuracy_predictor.arch_encoder import MobileNetArchEncoder
    from ofa.nas.search_algorithm.evolution import EvolutionFinder

    def to_cfg(arch):
        return SubnetConfig(depth=arch["d"], kernel=arch["ks"], expand=arch["e"], resolution=arch["image_size"])

    calls = [0]

    class Accuracy:
        arch_encoder = MobileNetArchEncoder(image_size_list=list(space.resolution))

        def predict_acc(self, archs):
            calls[0] += len(archs)
            return torch.from_numpy(pred.predict([to_cfg(a) for a in archs]))

    class Efficiency:
        def get_efficiency(self, arch):
            return cost(to_cfg(arch))

    random.seed(seed)
    np.random.seed(seed)
    finder = EvolutionFinder(Efficiency(), Accuracy(), max_time_budget=generations)
    t = time.perf_counter()
    _, best = finder.run_evolution_search(limit, verbose=False)
    return time.perf_counter() - t, float(best[0]), calls[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser, HERE / "results", warmup=0, repeats=3, repeats_help="searches per case (seeds 0..)")
    parser.add_argument("--generations", type=int, default=500)
    parser.add_argument("--no-reference", action="store_true", help="skip the ofa EvolutionFinder runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()
    env["started_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()

    net = create_model(SUPERNET, num_classes=10).eval()
    space = net.space
    t = time.perf_counter()
    # the table's timings only need to exist here (their values do not change the search's speed): one thread, few
    # repeats, so that building it takes seconds on a busy machine
    table = LatencyTable.build(net, threads=1, warmup=1, repeats=3, progress=sys.stderr.isatty())
    table_s = time.perf_counter() - t
    costs = build_costs(net, ["latency", "macs"], latency_table=table)
    rng = random.Random(0)
    sample = [space.sample(rng) for _ in range(200)]
    # the medians of random sub-networks, but never below the smallest one's cost (noisy timings on a busy machine)
    limit_ms = max(float(np.median([costs["latency"](c) for c in sample])), 1.2 * costs["latency"](space.min()))
    limit_macs = max(float(np.median([costs["macs"](c) for c in sample])), 1.2 * costs["macs"](space.min()))
    pred = AccuracyPredictor(space)
    with torch.random.fork_rng():
        pred.fit(sample, [made_up_accuracy(space, c) for c in sample], steps=200)

    cases = [("latency", {"latency": costs["latency"]}, {"latency": limit_ms}),
             ("latency + MACs", dict(costs), {"latency": limit_ms, "macs": limit_macs})]
    rows, data_cases = [], []
    for name, case_costs, budget in cases:
        times, cpu, evals, scores = [], [], [], []
        for seed in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            r = search(space, pred, case_costs, budget, generations=args.generations, seed=seed)[0]
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            evals.append(r.evaluations)
            scores.append(r.score)
            assert all(r.costs[k] <= v for k, v in budget.items())
        ref = None
        if not args.no_reference and name == "latency":
            ref = reference_run(space, pred, costs["latency"], limit_ms, args.generations, 0)
        case = {"case": name, "budget": budget, "seconds": times, "median_s": statistics.median(times),
                "cpu_seconds": cpu, "median_cpu_s": statistics.median(cpu),
                "evaluations": evals, "best_predicted": scores,
                "reference_s": ref[0] if ref else None, "reference_best": ref[1] if ref else None,
                "reference_evaluations": ref[2] if ref else None}
        data_cases.append(case)
        rows.append([name, f"{statistics.median(times):.2f}", f"{min(times):.2f}-{max(times):.2f}",
                     f"{statistics.median(cpu):.2f}", evals[0],
                     f"{np.mean(scores):.3f}",
                     f"{ref[0]:.2f}" if ref else "-", f"{ref[1]:.3f}" if ref else "-",
                     f"{ref[0] / statistics.median(times):.2f}x" if ref else "-"])
        print(rows[-1], file=sys.stderr)

    load_after = os.getloadavg()
    md = report_header("Evolutionary search speed (issue 15)", env, args.threads, load_before, load_after,
                       packages=()) + [
        "",
        f"Space: `{SUPERNET}` (OFA-MobileNetV3 choices, {space.count():.3g} sub-networks). Predictor: MLP 3 x 400. "
        f"Latency table built here in {table_s:.1f} s ({len(table.entries)} parts; not counted). Budget: latency "
        f"<= {limit_ms:.3f} ms (and MACs <= {limit_macs / 1e6:.3f} M), the medians of 200 random sub-networks. "
        f"Settings: population 100, parents 25%, mutation ratio 0.5, gene probability 0.1, resolution 0.5, "
        f"{args.generations} generations; seeds 0..{args.repeats - 1}.",
        "",
        format_markdown(["case", "flexbone median s", "range s", "CPU s (median)", "predictor evaluations", "mean best predicted",
                         "ofa EvolutionFinder s (seed 0)", "ofa best predicted", "ofa / flexbone time"], rows),
        "",
        f"Target: <= 10 s for 500 generations on 2 cores. The machine's load average is in the header: on a shared "
        f"machine the wall times are upper bounds; the CPU seconds (this process, {args.threads} torch thread(s)) are "
        f"what the search itself costs. The first latency + MACs search includes counting every part's MACs once.",
    ]
    data = {"environment": env, "threads": args.threads, "load_before": load_before, "load_after": load_after,
            "supernet": SUPERNET, "generations": args.generations, "table_build_s": table_s,
            "table_parts": len(table.entries), "cases": data_cases}
    write_report(args.out_dir, "search_speed", data, "\n".join(md) + "\n", echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
