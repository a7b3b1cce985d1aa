"""CPU memory policy: glibc's default (freed memory goes back to the kernel) vs flexbone's ``keep`` policy.

The ``flexbone`` command keeps freed memory in its process (:mod:`flexbone.cpu_memory`). This script shows
what that changes for one training or inference step on the CPU: each case runs in fresh processes, one per
policy, alternating (``--processes`` pairs, the first policy changing from pair to pair); each process
builds the model, warms up, then times ``--repeats`` steps and counts the minor page faults of each step
(``getrusage``) and the process's peak resident memory (``VmHWM``). Figures: medians over the steps, then
over the processes; speed-up = glibc step time / keep step time.

    .venv/bin/python benchmarks/bench_cpu_memory_policy.py                 # a few minutes
    .venv/bin/python benchmarks/bench_cpu_memory_policy.py --cases resnet18:train:8:64 --repeats 2 \\
        --processes 1 --out-dir /tmp/bench_check                           # a quick check that it works
    .venv/bin/python benchmarks/bench_cpu_memory_policy.py --cases mobilenetv3_large_100:infer:8:224 \
        timm/mobilenetv3_large_100:infer:8:224 --processes 6 --repeats 20    # flexbone's and timm's model alone

Writes ``cpu_memory_policy.json`` and ``.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import flexbone
from flexbone.bench.report import add_run_options, format_markdown, report_header, write_report
from flexbone.bench.throughput import (BenchSettings, environment, make_input, prepare, proc_status_kb,
                                       run_in_fresh_process)
from flexbone.cpu_memory import apply_policy

HERE = Path(__file__).resolve().parent
CASES = ("resnet50:train:32:160", "resnet50:infer:32:224", "mobilenetv3_large_100:train:32:160",
         "ofa_resnet50:train:32:160")  # model:mode:batch:px; a supernet runs its smallest sub-network


def measure_case(case: str, policy: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case under one policy, in this (fresh) process."""
    in_force = apply_policy(policy)  # first: before any tensor is allocated
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name, mode, batch, px = case.split(":")
    if name.startswith("timm/"):  # the same network as timm builds it (test dependency), for comparison
        import timm

        model = timm.create_model(name.removeprefix("timm/"))
    else:
        model = flexbone.create_model(name)
    if hasattr(model, "space"):
        model.set_active(model.space.min())
    settings = BenchSettings(mode=mode, batch_size=int(batch), img_size=int(px), warmup=args.warmup,
                             repeats=args.repeats, threads=args.threads).validate()
    runner = prepare(model, settings, make_input(settings))
    for _ in range(args.warmup):
        runner.step()
    times, faults = [], []
    for _ in range(args.repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        runner.step()
        times.append((time.perf_counter() - t0) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return dict(case=case, policy=in_force, step_ms=statistics.median(times), faults=statistics.median(faults),
                peak_rss_mb=(proc_status_kb("VmHWM") or 0) / 1024, times_ms=times, faults_per_step=faults)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES),
                   help="model:mode:batch:px; timm/NAME measures timm's model of that name (default: %(default)s)")
    add_run_options(p, HERE / "results", warmup=3, repeats=8, processes=3, repeats_help="timed steps per process")
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = []
    for i in range(args.processes):  # cases interleaved too: a busy phase of the machine hits all alike
        for case in args.cases:
            for policy in (("glibc", "keep") if i % 2 == 0 else ("keep", "glibc")):
                run = run_in_fresh_process(measure_case, case, policy, args)
                print(f"{case} [{i + 1}/{args.processes}] {run['policy']}: {run['step_ms']:.1f} ms, "
                      f"{run['faults']:.0f} faults per step, peak {run['peak_rss_mb']:.0f} MB", flush=True)
                runs.append(run)
    load_after = os.getloadavg()

    summary, rows = [], []
    for case in args.cases:
        med = {}
        for policy in ("glibc", "keep"):
            mine = [r for r in runs if r["case"] == case and r["policy"] == policy]
            med[policy] = {k: statistics.median(r[k] for r in mine) for k in ("step_ms", "faults", "peak_rss_mb")}
        speedup = med["glibc"]["step_ms"] / med["keep"]["step_ms"]
        summary.append(dict(case=case, median=med, speedup=speedup))
        name, mode, batch, px = case.split(":")
        rows.append([name, mode, f"{batch} x {px} px", f"{med['glibc']['step_ms']:.1f} / {med['keep']['step_ms']:.1f}",
                     f"{med['glibc']['faults']:.0f} / {med['keep']['faults']:.0f}",
                     f"{med['glibc']['peak_rss_mb']:.0f} / {med['keep']['peak_rss_mb']:.0f}", f"{speedup:.2f}x"])

    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after, started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    env.pop("cpu_memory")  # the parent's; each run records its own policy
    md = "\n".join([
        *report_header("CPU memory policy: glibc's default vs flexbone's keep-freed-memory", env, args.threads,
                       load_before, load_after),
        "",
        f"Settings: fp32, NCHW; each case in {args.processes} fresh processes per policy (policies alternating, cases "
        f"interleaved), {args.warmup} "
        f"warm-up steps, then {args.repeats} timed steps; medians over the steps, then over the processes. A step: "
        "infer = forward under no_grad; train = forward + cross-entropy + backward + `flexbone train`'s SGD step. "
        "Supernets run their smallest sub-network; timm/NAME is timm's model, alone in its process as flexbone's "
        "is. Faults = minor page faults per step (getrusage); peak = VmHWM.",
        "",
        format_markdown(["model", "mode", "batch", "step ms (glibc / keep)", "page faults per step",
                         "peak RSS MB", "keep speed-up"], rows),
        "",
        "glibc: the C library's default (large freed blocks are unmapped, the heap top trimmed). keep: "
        "`flexbone.cpu_memory.keep_freed_memory()` (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1), what the "
        "`flexbone` command applies on start-up.",
        "",
    ])
    write_report(args.out_dir, "cpu_memory_policy", dict(environment=env, summary=summary, runs=runs), md, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
