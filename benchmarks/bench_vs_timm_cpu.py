"""flexbone vs timm on the CPU, side by side: the performance checks of issues 2, 4 and 5.

Suites (``--suite``):

* ``resnet`` (issue 2): inference, batch 32 at 224 px, resnet50 and resnet18, NCHW and channels_last
  (targets >= 0.97x and >= 1.0x timm); a training step (forward + cross-entropy + backward + SGD),
  resnet50, batch 32 at 128 px (target >= 0.97x).
* ``families`` (issues 4, 5, 21): inference of PVT v2, VoVNet, MobileNet models and one model of each
  issue-21 family vs timm's model of the same name (target >= 0.97x); PVT v1 (no timm twin) with its MACs
  beside PVT v2 models of similar size.

Each comparison runs in one process, on the same input batch, with the same weights (timm's are copied
into flexbone's model) and the same threads / dtype / memory format. Within each setting the models run
in interleaved rounds (one batch each, the order changing every round), so a busy phase of the machine hits flexbone
and timm alike; the figure of merit is the throughput ratio flexbone / timm (>1: flexbone is faster).
Absolute CPU times are recorded but are not claims.

A ratio near its target cannot be settled by one process: which allocations a process happens to make decides
whether a step reuses warm memory, and that moves a single ratio by a few per cent. ``--processes N`` measures
each model alone with its timm twin in N fresh processes (the models taking turns) and reports the median ratio
with a distribution-free 95 % interval of that median (N >= 6; fewer processes give the whole range).

    .venv/bin/python benchmarks/bench_vs_timm_cpu.py --suite resnet        # several minutes
    .venv/bin/python benchmarks/bench_vs_timm_cpu.py --suite families --batch-size 8
    .venv/bin/python benchmarks/bench_vs_timm_cpu.py --suite families --batch-size 8 --models nasnetalarge \
        --processes 6 --out-dir /tmp/recheck         # one model again, alone with timm's in 6 fresh processes
    .venv/bin/python benchmarks/bench_vs_timm_cpu.py --repeats 2 --warmup 1 --batch-size 2 --img-size 64 \
        --train-img-size 64 --out-dir /tmp/bench_check                     # a quick check that it works

Writes ``<suite>_cpu.json`` (every number, environment, command) and ``<suite>_cpu.md`` (a table) to
``--out-dir`` (default ``benchmarks/results``). Run it on a quiet machine: the load average before and
after the run is recorded so that a reader can tell.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

from flexbone.bench.report import format_markdown, format_table, median_interval, report_header, write_report
from flexbone.bench.complexity import model_complexity
from flexbone.bench.throughput import BenchResult, BenchSettings, benchmark, environment, ratios, run_in_fresh_process

HERE = Path(__file__).resolve().parent


# suite -> (title, [(label, models, settings changes, target ratio flexbone/timm)], flexbone-only extras)
SUITES = {
    "resnet": ("ResNet on the CPU: flexbone vs timm (issue 2)", [
        ("infer NCHW", ["resnet50", "resnet18"], dict(mode="infer"), 0.97),
        ("infer channels_last", ["resnet50", "resnet18"], dict(mode="infer", channels_last=True), 1.0),
        ("train NCHW", ["resnet50"], dict(mode="train", img_size="train"), 0.97),
    ], []),
    "families": ("Dense-prediction and mobile families on the CPU: flexbone vs timm (issues 4, 5)", [
        ("infer NCHW", ["pvt_v2_b0", "pvt_v2_b1", "vovnet39a", "ese_vovnet19b_dw",
                        "mobilenetv2_100", "mobilenetv3_large_100",
                        # issue 21: one model per family added there
                        "densenet121", "res2net50_26w_4s", "cspresnet50", "inception_v4", "fbnetv3_b",
                        "rdnet_tiny", "maxvit_tiny_tf_224", "nasnetalarge", "pnasnet5large"], dict(mode="infer"), 0.97),
    ], [
        # PVT v1 has no timm twin: its throughput and MACs beside PVT v2 models of similar size
        ("infer NCHW, PVT v1 beside PVT v2", ["pvt_tiny", "pvt_v2_b1", "pvt_small", "pvt_v2_b2"], dict(mode="infer")),
    ]),
}


def _settings(args: argparse.Namespace, changes: dict) -> BenchSettings:
    changes = dict(changes)
    img_size = args.train_img_size if changes.pop("img_size", None) == "train" else args.img_size
    return BenchSettings(batch_size=args.batch_size, device="cpu", dtype="fp32", warmup=args.warmup,
                         repeats=args.repeats, threads=args.threads, img_size=img_size, **changes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="resnet", help="which comparison (default resnet)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--img-size", type=int, default=224, help="inference input size (default 224)")
    p.add_argument("--train-img-size", type=int, default=128, help="training-step input size (default 128)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model (default 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed interleaved rounds (default 20)")
    p.add_argument("--models", nargs="+", metavar="NAME", default=None,
                   help="only these models of the suite's comparisons, no extras (a recheck; write it elsewhere "
                        "with --out-dir)")
    p.add_argument("--processes", type=int, default=0,
                   help="0 (default): the models of a setting interleaved in this process; N: each model alone with "
                        "timm's in N fresh processes, the median ratio and its interval reported")
    p.add_argument("--out-dir", type=Path, default=HERE / "results", help="where to write the results")
    args = p.parse_args(argv)

    try:
        import timm  # noqa: F401  (the reference; flexbone.bench imports it again where needed)
    except ImportError:
        sys.exit("this benchmark compares with timm: pip install timm")

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    all_results, rows_md, ratio_rows = [], [], []
    title, compared, extras = SUITES[args.suite]
    if args.models:
        unknown = set(args.models) - {m for _, models, *_ in compared for m in models}
        if unknown:
            sys.exit(f"not in the {args.suite} suite: {', '.join(sorted(unknown))}")
        compared = [(label, [m for m in models if m in args.models], changes, target)
                    for label, models, changes, target in compared]
        compared, extras = [c for c in compared if c[1]], []
    if args.processes < 0:
        sys.exit("--processes must be 0 (this process) or more")
    intervals = {}
    for label, models, changes, target in compared:
        settings = _settings(args, changes)
        print(f"== {label}: {', '.join(models)}, batch {settings.batch_size}, {settings.img_size} px", flush=True)
        if args.processes:
            results, intervals[label] = _in_fresh_processes(models, settings, args.processes)
        else:
            results = benchmark(models, settings, compare="timm", progress=lambda m: print("  " + m, flush=True))
        for r in results:
            all_results.append(dict(setting=label, **r.to_dict(with_latencies=True)))
        for c in ratios(results, "timm"):
            ours = next(r for r in results if r.model == c["model"] and r.impl == "flexbone")
            ref = next(r for r in results if r.model == c["model"] and r.impl == "timm")
            ratio, spread = c["ratio"], intervals.get(label, {}).get(c["model"])
            if spread:
                ratio = spread["median"]
            ratio_rows.append(dict(setting=label, model=c["model"], ratio=ratio, target=target,
                                   met=ratio >= target, **({"processes": spread} if spread else {})))
            rows_md.append([c["model"], label, settings.img_size, f"{ours.throughput:.2f}", f"{ref.throughput:.2f}",
                            f"{ours.latency_p50_ms:.0f} / {ours.latency_p90_ms:.0f}",
                            f"{ref.latency_p50_ms:.0f} / {ref.latency_p90_ms:.0f}",
                            f"{ratio:.3f}", *([_interval_text(spread)] if args.processes else []),
                            f">= {target:.2f}", "yes" if ratio >= target else "NO"])
        print(format_table(["model", "impl", "img/s", "p50 ms", "p90 ms"],
                           [[r.model, r.impl, r.throughput, r.latency_p50_ms, r.latency_p90_ms] for r in results]))
    extra_md = _cross_format(all_results)
    for label, models, changes in extras:
        settings = _settings(args, changes)
        print(f"== {label}: {', '.join(models)}, batch {settings.batch_size}, {settings.img_size} px", flush=True)
        results = benchmark(models, settings, progress=lambda m: print("  " + m, flush=True))
        macs = {m: model_complexity(m, settings.img_size).macs for m in models}
        for r in results:
            all_results.append(dict(setting=label, macs=macs[r.model], **r.to_dict(with_latencies=True)))
        extra_md += [f"### {label}", "", format_markdown(
            ["model", "GMACs", "img/s", "p50 / p90 ms"],
            [[r.model, f"{macs[r.model] / 1e9:.2f}", f"{r.throughput:.2f}",
              f"{r.latency_p50_ms:.0f} / {r.latency_p90_ms:.0f}"] for r in results]), ""]
    load_after = os.getloadavg()

    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after, started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    headers = ["model", "setting", "px", "flexbone img/s", "timm img/s", "flexbone p50/p90 ms",
               "timm p50/p90 ms", "ratio", *(["per process; interval of the median"] if args.processes else []),
               "target", "met"]
    how = (f"each model alone with timm's in {args.processes} fresh processes (the models taking turns), "
           f"{args.repeats} interleaved rounds in each (the two implementations alternating, the order changing "
           "every round); img/s and p50/p90 from the process with the median ratio, the ratio the median over "
           "the processes" if args.processes else
           f"{args.repeats} interleaved rounds (one batch per model per round, the order changing every round)")
    md = "\n".join([
        *report_header(title, env, env["threads"], load_before, load_after, packages=("timm",)),
        "",
        f"Settings: fp32, batch {args.batch_size}, warm-up {args.warmup} steps, {how}, same input and same "
        "weights for both implementations. Throughput = batch / median latency. Train = forward + cross-entropy + backward + "
        "SGD (momentum 0.9) step.",
        "",
        format_markdown(headers, rows_md),
        "",
        "Ratio = flexbone / timm throughput (>1: flexbone faster). Absolute CPU numbers depend on the machine "
        "and its load; only the side-by-side ratios are claims.",
        "",
        *extra_md,
    ])
    write_report(args.out_dir, f"{args.suite}_cpu", dict(environment=env, ratios=ratio_rows, results=all_results), md,
                 echo=True)
    missed = [f"{r['model']} {r['setting']} ({r['ratio']:.3f} < {r['target']})" for r in ratio_rows if not r["met"]]
    print("all targets met" if not missed else f"targets missed: {'; '.join(missed)}")
    return 0


def _measure_alone(name: str, settings: BenchSettings, process: int, processes: int) -> list[BenchResult]:
    """One model and timm's, alone in this (fresh) process."""
    return benchmark([name], settings, compare="timm",
                     progress=lambda m: print(f"  [{process + 1}/{processes}] {name}: {m}", flush=True))


def _in_fresh_processes(models: list[str], settings: BenchSettings,
                        processes: int) -> tuple[list[BenchResult], dict[str, dict]]:
    """Every model with timm's in ``processes`` fresh processes, the models taking turns. Returns the results of
    each model's median process and, per model, the ratios of all processes with the median's interval."""
    runs: dict[str, list[list[BenchResult]]] = {m: [] for m in models}
    for process in range(processes):
        for name in models:
            runs[name].append(run_in_fresh_process(_measure_alone, name, settings, process, processes))
    results, spreads = [], {}
    for name, per_process in runs.items():
        pairs = sorted((ratios(r, "timm")[0]["ratio"], i) for i, r in enumerate(per_process))
        values = [v for v, _ in pairs]
        low, high, coverage = median_interval(values)
        median = statistics.median(values)
        results += per_process[pairs[(len(pairs) - 1) // 2][1]]
        spreads[name] = dict(median=median, low=low, high=high, coverage=coverage, ratios=values)
    return results, spreads


def _interval_text(spread: dict | None) -> str:
    if not spread:
        return ""
    each = " ".join(f"{v:.3f}" for v in spread["ratios"])
    return f"{each}; {spread['low']:.3f}-{spread['high']:.3f} ({spread['coverage']:.0%})"


def _cross_format(results: list[dict]) -> list[str]:
    """flexbone in channels_last vs timm as it comes (NCHW): what a user gains by switching flexbone's
    memory format, beside the same-format ratios above (which compare identical computations)."""
    def tput(setting: str, model: str, impl: str) -> float | None:
        hits = [r["throughput"] for r in results if (r["setting"], r["model"], r["impl"]) == (setting, model, impl)]
        return hits[0] if hits else None

    rows = []
    for model in dict.fromkeys(r["model"] for r in results):
        ours, ref = tput("infer channels_last", model, "flexbone"), tput("infer NCHW", model, "timm")
        if ours and ref:
            rows.append([model, f"{ours:.2f}", f"{ref:.2f}", f"{ours / ref:.3f}"])
    if not rows:
        return []
    return ["### flexbone channels_last vs timm NCHW (same run)", "",
            format_markdown(["model", "flexbone channels_last img/s", "timm NCHW img/s", "ratio"], rows), ""]


if __name__ == "__main__":
    sys.exit(main())
