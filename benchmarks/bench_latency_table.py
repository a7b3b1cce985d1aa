"""Latency lookup table vs measurement, and the speed of the exact MACs cost (issue 15, item 1).

What it measures, on this machine:

1. A latency table for OFA-MobileNetV3 w1.0 (``flexbone.search.LatencyTable.build``: every part at every input
   size of ``--resolutions``, batch 1, ``--threads`` threads, eager PyTorch; optionally onnxruntime too) and how
   long building it took.
2. ``--n`` random sub-networks (seeded, resolutions drawn from ``--resolutions``): the table's prediction and the
   measured latency of the extracted sub-network (``MeasuredLatency``: warm-up, then the median of ``--repeats``
   calls). Reported: Spearman's rho (scipy) and the mean absolute percentage error, overall and per resolution.
   Targets of the issue at batch 1 on a CPU: rho >= 0.9, error <= 10%.
3. ``MacsCost`` on 10,000 random OFA-MobileNetV3 configurations (all 25 resolutions): seconds for the first pass
   (per-part tables being filled) and for a second pass (tables filled).

    .venv/bin/python benchmarks/bench_latency_table.py                              # the real run (minutes)
    .venv/bin/python benchmarks/bench_latency_table.py --backends torch onnxruntime
    .venv/bin/python benchmarks/bench_latency_table.py --n 4 --resolutions 128 --repeats 3 --macs-configs 100 \\
        --out-dir /tmp/bench_check                                                 # a quick check that it works

Writes ``latency_table.json`` and ``latency_table.md`` to ``--out-dir`` (default ``benchmarks/results``). The
table and the measurements are taken minutes apart: on a shared machine the load average (recorded) moves both.
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
from typing import Any

import torch
from scipy.stats import spearmanr

import flexbone
from flexbone.bench.report import format_markdown, report_header, write_report
from flexbone.bench.throughput import environment
from flexbone.search import LatencyTable, MacsCost, MeasuredLatency

HERE = Path(__file__).resolve().parent
SUPERNET = "ofa_mbv3_d234_e346_k357_w1.0"


def compare(net, backend: str, statistic: str, clock: str, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    table = LatencyTable.build(net, backend=backend, batch_size=1, threads=args.threads, resolutions=args.resolutions,
                               progress=True, warmup=args.warmup, repeats=args.table_repeats, statistic=statistic,
                               clock=clock)
    build_s = time.perf_counter() - start
    measure = MeasuredLatency(net, backend=backend, batch_size=1, threads=args.threads, warmup=args.warmup,
                              repeats=args.repeats, statistic=statistic, clock=clock)
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.n):
        cfg = net.space.sample(rng).replace(resolution=args.resolutions[i % len(args.resolutions)])
        rows.append(dict(config=cfg.to_json(), resolution=cfg.resolution, predicted_ms=table.predict(cfg),
                         measured_ms=measure(cfg)))
        print(f"  {backend} {statistic} {clock} {i + 1}/{args.n}: r={cfg.resolution} predicted {rows[-1]['predicted_ms']:.2f} ms, "
              f"measured {rows[-1]['measured_ms']:.2f} ms", flush=True)

    def summary(sel: list[dict[str, Any]]) -> dict[str, Any]:
        pred, meas = [r["predicted_ms"] for r in sel], [r["measured_ms"] for r in sel]
        rho = spearmanr(pred, meas).statistic if len(sel) > 2 else None
        errors = [abs(p - m) / m * 100 for p, m in zip(pred, meas)]
        return dict(n=len(sel), spearman_rho=None if rho is None else float(rho), mape_pct=statistics.fmean(errors),
                    bias_pct=statistics.fmean((p - m) / m * 100 for p, m in zip(pred, meas)),
                    measured_ms_range=[min(meas), max(meas)])

    per_res = {r: summary([row for row in rows if row["resolution"] == r]) for r in args.resolutions}
    return dict(backend=backend, statistic=statistic, clock=clock, table_build_s=build_s, parts_timed=table.info["parts_timed"], table_info=table.info,
                overall=summary(rows), per_resolution=per_res, rows=rows)


def macs_speed(n: int, seed: int) -> dict[str, Any]:
    with torch.device("meta"):
        net = flexbone.create_model(SUPERNET)
    rng = random.Random(seed)
    configs = [net.space.sample(rng) for _ in range(n)]
    cost = MacsCost(net)
    out: dict[str, Any] = dict(configs=n, resolutions=len(net.space.resolution))
    for label in ("first_pass_s", "second_pass_s"):
        start = time.perf_counter()
        for cfg in configs:
            cost(cfg)
        out[label] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime"), default=["torch"])
    p.add_argument("--statistics", nargs="+", choices=("median", "min"), default=["median", "min"],
                   help="of the timed calls, for table and measurement alike (default: both, one run each)")
    p.add_argument("--clocks", nargs="+", choices=("wall", "cpu"), default=["wall"],
                   help="wall and/or cpu (process CPU time; --threads 1 only), for table and measurement alike")
    p.add_argument("--resolutions", type=int, nargs="+", default=[160, 192, 224])
    p.add_argument("--n", type=int, default=36, help="random sub-networks compared (default 36)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per measured sub-network (default 20)")
    p.add_argument("--table-repeats", type=int, default=10, help="timed calls per table part (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--macs-configs", type=int, default=10_000)
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    net = flexbone.create_model(SUPERNET).eval()
    results = [compare(net, b, st, c, args) for b in args.backends for c in args.clocks for st in args.statistics]
    speed = macs_speed(args.macs_configs, args.seed)
    load_after = os.getloadavg()

    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after, started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    rows = []
    for res in results:
        for label, s in [("all", res["overall"])] + [(str(r), s) for r, s in res["per_resolution"].items()]:
            rows.append([res["backend"], res["clock"], res["statistic"], label, s["n"], None if s["spearman_rho"] is None else round(s["spearman_rho"], 3),
                         round(s["mape_pct"], 1), round(s["bias_pct"], 1),
                         f"{s['measured_ms_range'][0]:.2f}-{s['measured_ms_range'][1]:.2f}"])
    builds = "; ".join(f"{r['backend']} ({r['clock']}, {r['statistic']}): {r['parts_timed']} parts in {r['table_build_s']:.0f} s"
                       for r in results)
    md = "\n".join([
        *report_header("Latency lookup table vs measured latency (OFA-MobileNetV3 w1.0, batch 1)", env, args.threads,
                       load_before, load_after, packages=()),
        "",
        f"Table: `LatencyTable.build` at resolutions {args.resolutions}, {args.warmup} warm-up and {args.table_repeats} "
        f"timed calls per part; {builds}. Measured: {args.n} random sub-networks (seed {args.seed}, resolutions in "
        f"turn), each extracted and timed with {args.warmup} warm-up and {args.repeats} timed calls. Statistic: the "
        f"median of the timed calls, or their minimum (the call least disturbed by other processes), the same for "
        f"table and measurement. Clock: wall time, or this process's CPU time (one thread only: time spent waiting "
        f"for other processes does not count). fp32, batch 1, {args.threads} threads. Targets (issue 15): rho >= 0.9, error <= 10%.",
        "",
        format_markdown(["backend", "clock", "statistic", "resolution", "n", "Spearman rho", "mean abs error %", "bias %",
                         "measured ms (min-max)"], rows),
        "",
        "Bias: mean of (predicted - measured) / measured; negative = the table predicts less than a whole network "
        "takes.",
        "",
        f"Exact MACs cost (`MacsCost`, per-part tables) on {speed['configs']:,} random OFA-MobileNetV3 configurations "
        f"over its {speed['resolutions']} resolutions: first pass {speed['first_pass_s']:.1f} s (tables filled as "
        f"parts appear), second pass {speed['second_pass_s']:.1f} s.",
        "",
    ])
    write_report(args.out_dir, "latency_table", dict(env=env, args={k: str(v) if isinstance(v, Path) else v
                                                                    for k, v in vars(args).items()},
                                                     results=results, macs_speed=speed), md, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
