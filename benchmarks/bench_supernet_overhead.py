"""Supernet overhead on the CPU: a supernet running a sub-network vs that sub-network extracted as a static model
(issue 4, "Measured").

For OFA-MobileNetV3 (``ofa_mbv3_d234_e346_k357_w1.0``) and OFA-ResNet50 (``ofa_resnet50``), at the largest and the
smallest sub-network, in inference (forward under ``no_grad``) and in a training step (forward + cross-entropy +
backward + SGD), four models run side by side in one process, on the same input batch:

* flexbone's supernet with the sub-network active, and flexbone's ``extract()`` of it (a plain MobileNetV3 / ResNet);
* the reference ``ofa`` package's supernet with the same sub-network active, and its ``get_active_subnet()``.

All four have the same weights (the reference's random initialisation, loaded into flexbone's supernet through
its checkpoint converter). They run in interleaved rounds (one batch each per round, the order changing from round
to round), so a busy phase of the machine hits all alike. The figure of merit is the *overhead* = median step
latency of the supernet / median step latency of its extracted static network (1.00 = no cost for being elastic).

Each case runs in ``--processes`` fresh Python processes (default 3; the models are built in a different order in
each) and the reported overhead is the median over them, with every process's figure beside it. One process is
not enough: where the allocator places a model's tensors, and which model ran just before, moves a single
process's ratio by several percent on a small VM, even between two copies of the same network.

Targets (issue 4): flexbone <= 1.05x at both ends; the reference is reported to measure 1.01-1.14x.

    .venv/bin/python benchmarks/bench_supernet_overhead.py                         # the real run (minutes)
    .venv/bin/python benchmarks/bench_supernet_overhead.py --batch-size 2 --img-size 64 --repeats 2 --warmup 1 \
        --out-dir /tmp/bench_check                                                   # a quick check that it works
    .venv/bin/python benchmarks/bench_supernet_overhead.py --ends min --modes train --processes 9 \
        --out-dir /tmp/min_train                                # one end and mode again, with more processes
    .venv/bin/python benchmarks/bench_supernet_overhead.py --pool /tmp/min_train/supernet_overhead.json \
        benchmarks/results/supernet_overhead.json              # every run so far, pooled per machine

Writes ``supernet_overhead.json`` (every number, environment, command) and ``supernet_overhead.md`` (a table) to
``--out-dir`` (default ``benchmarks/results``). ``--pool`` adds the pooled table to those two files as a section
of its own (``pooled`` in the JSON), keeping the run they hold; a new run replaces both, pooled section included,
and the older run files live in git history. Run it on a quiet machine: the load average before and after the
run is recorded so that a reader can tell.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch

import flexbone
from flexbone.bench.report import (add_run_options, format_markdown, format_table, median_interval, report_header,
                                   write_report)
from flexbone.bench.throughput import (BenchSettings, environment, make_input, measure, prepare,
                                       run_in_fresh_process)
from flexbone.cpu_memory import POLICIES, apply_policy
from flexbone.elastic import SubnetConfig

HERE = Path(__file__).resolve().parent
SUPERNETS = ("ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50")
TARGET = 1.05  # flexbone's supernet / extracted static network, at most
POOLED_HEADING = "## Pooled per machine over several runs (--pool)"
RESNET_WIDTHS = [0.65, 0.8, 1.0]  # the reference addresses OFA-ResNet50 widths by index


def reference_supernet(name: str) -> tuple[torch.nn.Module, Callable[[torch.nn.Module, SubnetConfig], None]] | None:
    """The ``ofa`` package's supernet of ``name`` (as its model zoo builds it) and a function that activates a
    flexbone config on it; ``None`` without the ``ofa`` package. Only its network modules are imported."""
    try:
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3, OFAResNets
    except ImportError:
        return None
    if name.startswith("ofa_mbv3"):
        net = OFAMobileNetV3(dropout_rate=0, width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                             depth_list=[2, 3, 4])

        def activate(ref: torch.nn.Module, cfg: SubnetConfig) -> None:
            ref.set_active_subnet(ks=list(cfg.kernel), e=list(cfg.expand), d=list(cfg.depth))
    else:
        net = OFAResNets(dropout_rate=0, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                         width_mult_list=RESNET_WIDTHS)

        def activate(ref: torch.nn.Module, cfg: SubnetConfig) -> None:
            ref.set_active_subnet(d=list(cfg.depth), e=list(cfg.expand), w=[RESNET_WIDTHS.index(v) for v in cfg.width])
    return net, activate


def measure_case(name: str, end: str, mode: str, args: argparse.Namespace, process: int = 0) -> list[dict[str, Any]]:
    """One supernet at one end of its space in one mode: flexbone (and ofa) supernet vs extracted static net.
    ``process`` numbers the repetition: it rotates the order in which the models are prepared and run."""
    def progress(msg: str) -> None:
        print(f"  [{process + 1}/{args.processes}] {msg}", flush=True)

    policy = apply_policy(args.cpu_memory)  # before any tensor is allocated
    torch.manual_seed(0)
    settings = BenchSettings(mode=mode, batch_size=args.batch_size, img_size=args.img_size, device="cpu",
                             dtype="fp32", warmup=args.warmup, repeats=args.repeats, threads=args.threads).validate()
    torch.set_num_threads(args.threads)
    ours = flexbone.create_model(name)
    cfg = ours.space.max() if end == "max" else ours.space.min()
    ref_pair = None if args.no_reference else reference_supernet(name)
    if ref_pair is not None:
        ref, activate = ref_pair
        flexbone.load_checkpoint(ours, ref.state_dict(), strict=True)  # the same weights everywhere
    ours.set_active(cfg)
    models = [("flexbone", "supernet", ours), ("flexbone", "static", ours.extract())]
    if ref_pair is not None:
        activate(ref, cfg)
        models += [("ofa", "supernet", ref), ("ofa", "static", ref.get_active_subnet(preserve_weight=True))]
    k = process % len(models)
    models = models[k:] + models[:k]
    inputs = make_input(settings)
    runners = [prepare(copy.deepcopy(m), settings, inputs, kind, impl) for impl, kind, m in models]
    results = measure(runners, settings, progress)
    rows = []
    for (impl, kind, _), r in zip(models, results):
        rows.append({**r.to_dict(with_latencies=True), "supernet": name, "end": end, "kind": kind,
                     "config": cfg.to_dict(), "process": process, "cpu_memory": policy})
    return rows


def policies_in_force(rows: list[dict[str, Any]]) -> str:
    """The CPU memory policies the measuring processes ran under (one, unless a platform lacked glibc)."""
    return " / ".join(sorted({r["cpu_memory"] for r in rows}))


def overheads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Supernet p50 latency / static p50 latency per (supernet, end, mode, impl): each process's, and their median."""
    def case(r: dict[str, Any]) -> tuple:
        return r["supernet"], r["end"], r["mode"], r["impl"], r["process"]

    out = []
    static_of = {case(r): r for r in rows if r["kind"] == "static"}
    keys = dict.fromkeys(case(r)[:4] for r in rows if r["kind"] == "supernet")
    for key in keys:
        per_process, sup_ms, static_ms = [], [], []
        for sup in (r for r in rows if r["kind"] == "supernet" and case(r)[:4] == key):
            static = static_of[case(sup)]
            per_process.append(sup["latency_p50_ms"] / static["latency_p50_ms"])
            sup_ms.append(sup["latency_p50_ms"])
            static_ms.append(static["latency_p50_ms"])
        ratio = statistics.median(per_process)
        low, high, coverage = median_interval(per_process)
        supernet, end, mode, impl = key
        out.append(dict(supernet=supernet, end=end, mode=mode, impl=impl,
                        supernet_p50_ms=statistics.median(sup_ms), static_p50_ms=statistics.median(static_ms),
                        overhead=ratio, per_process=per_process,
                        interval_low=low, interval_high=high, interval_coverage=coverage,
                        target=TARGET if impl == "flexbone" else None,
                        met=ratio <= TARGET if impl == "flexbone" else None))
    return out


def interval_text(low: float, high: float, coverage: float) -> str:
    """An interval of the median as the tables show it: ``low-high (coverage)``."""
    return f"{low:.3f}-{high:.3f} ({coverage:.0%})"


def pool(paths: list[Path], out_dir: Path) -> int:
    """Pool the per-process overheads of earlier result files (``--pool``), per machine and case: the median and
    its interval over every process a machine ran. One run's few processes cannot settle a figure near the target;
    several runs on one machine can. The table goes into ``supernet_overhead.{json,md}`` in ``out_dir``, after the
    run they hold (a section replacing any earlier pooled one)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            env, cases, first = data["environment"], data["overheads"], data["results"][0]
            setup = (f"batch {first['batch_size']} at {first['img_size']} px, {first['dtype']}, "
                     f"{first['threads']} threads, {first['cpu_memory']}")  # only runs measured alike are pooled
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise SystemExit(f"--pool {path}: not a result file of this benchmark ({e})")
        machine = f"{env['device_name']}, {env['platform']}"
        for r in cases:
            g = groups.setdefault((machine, setup, r["supernet"], r["end"], r["mode"], r["impl"]),
                                  dict(per_process=[], files=[]))
            g["per_process"] += r["per_process"]
            g["files"].append(f"{Path(path).name} ({len(r['per_process'])})")
    rows, table = [], []
    for (machine, setup, supernet, end, mode, impl), g in groups.items():
        ratio = statistics.median(g["per_process"])
        low, high, coverage = median_interval(g["per_process"])
        if impl != "flexbone":
            verdict = ""
        elif coverage < 0.95:  # too few processes for an interval: the median alone
            verdict = "yes (median)" if ratio <= TARGET else "NO (median)"
        else:
            verdict = ("yes" if high <= TARGET else "NO" if low > TARGET
                       else "cannot tell" if ratio <= TARGET else "NO (median)")
        rows.append(dict(machine=machine, settings=setup, supernet=supernet, end=end, mode=mode, impl=impl, overhead=ratio,
                         interval_low=low, interval_high=high, interval_coverage=coverage,
                         processes=len(g["per_process"]), files=g["files"], met=verdict))
        table.append([machine, setup, supernet, end, mode, impl, len(g["per_process"]), f"{ratio:.3f}",
                      interval_text(low, high, coverage), ", ".join(g["files"]), verdict])
    command = " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    section = "\n".join([
        POOLED_HEADING, "",
        f"Command: `{command}`", "",
        "Each run's per-process overheads (supernet median latency / extracted static network median latency), "
        "pooled per machine (CPU model and kernel build), settings and case. The run above is "
        "`supernet_overhead.json`; the other files named live in git history "
        "(`git log --all -- benchmarks/results/NAME`).", "",
        format_markdown(["machine", "settings", "supernet", "sub-network", "mode", "impl", "processes", "median overhead",
                         "interval of the median", "from (processes)", f"<= {TARGET:.2f}"], table), "",
        "Interval of the median: distribution-free, from the k-th smallest to the k-th largest process, binomial "
        f"coverage in brackets. Last column (flexbone), where the interval covers at least 95 %: yes = all of it "
        f"is at most {TARGET}; NO = all of it is above; cannot tell = the median is at most the target but the "
        "interval contains it; NO (median) = the median is above and the interval contains the target. With fewer "
        "processes (less coverage) it compares the median alone: yes (median) / NO (median).", ""])
    json_path, md_path = out_dir / "supernet_overhead.json", out_dir / "supernet_overhead.md"
    try:
        data, run_md = json.loads(json_path.read_text()), md_path.read_text()
    except (OSError, ValueError) as e:
        raise SystemExit(f"--pool: the pooled table goes beside a run in {out_dir}, and there is none ({e})")
    run_md = run_md.split(POOLED_HEADING)[0].rstrip("\n") + "\n\n"
    write_report(out_dir, "supernet_overhead", dict(data, pooled=dict(command=command, rows=rows)),
                 run_md + section, echo=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernets", nargs="+", default=list(SUPERNETS), choices=SUPERNETS, help="which supernets")
    p.add_argument("--ends", nargs="+", default=["max", "min"], choices=["max", "min"],
                   help="which ends of the space: the largest and/or the smallest sub-network")
    p.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--img-size", type=int, default=160, help="input size, px (default 160, within OFA's 128-224)")
    p.add_argument("--no-reference", action="store_true", help="skip the ofa package's models")
    p.add_argument("--cpu-memory", default="keep", choices=POLICIES,
                   help="CPU memory policy of the measuring processes: keep (the flexbone command's, default) or "
                        "glibc (the C library's default)")
    add_run_options(p, HERE / "results", warmup=3, repeats=12, processes=3,
                    repeats_help="timed interleaved rounds per process")
    p.add_argument("--pool", nargs="+", type=Path, metavar="RESULT_JSON",
                   help="measure nothing: pool the per-process figures of these earlier result files per machine, "
                        "settings and case, as a section of supernet_overhead.{json,md} in --out-dir")
    args = p.parse_args(argv)
    if args.pool:
        return pool(args.pool, args.out_dir)

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows: list[dict[str, Any]] = []
    for name in args.supernets:
        for end in args.ends:
            for mode in args.modes:
                print(f"== {name} {end} {mode}: batch {args.batch_size}, {args.img_size} px", flush=True)
                for process in range(args.processes):
                    case = run_in_fresh_process(measure_case, name, end, mode, args, process)
                    print(format_table(["model", "p50 ms", "p90 ms"],
                                       [[f"{r['impl']} {r['kind']}", r["latency_p50_ms"], r["latency_p90_ms"]]
                                        for r in case]))
                    rows += case
    load_after = os.getloadavg()
    ratio_rows = overheads(rows)

    env = environment("cpu")
    env.pop("cpu_memory")  # the parent's; the measuring processes record theirs
    try:
        env["ofa_version"] = importlib.metadata.version("ofa")
    except importlib.metadata.PackageNotFoundError:  # the reference is optional
        env["ofa_version"] = None
    env.update(load_avg_before=load_before, load_avg_after=load_after,
               started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    table = []
    for r in ratio_rows:
        table.append([r["supernet"], r["end"], r["mode"], r["impl"], f"{r['supernet_p50_ms']:.1f}",
                      f"{r['static_p50_ms']:.1f}", f"{r['overhead']:.3f}",
                      interval_text(r["interval_low"], r["interval_high"], r["interval_coverage"]),
                      " / ".join(f"{v:.3f}" for v in r["per_process"]),
                      f"<= {r['target']:.2f}" if r["target"] else "(reference)",
                      {True: "yes", False: "NO", None: ""}[r["met"]]])
    headers = ["supernet", "sub-network", "mode", "impl", "supernet p50 ms", "static p50 ms", "overhead",
               "interval of the median", "per process", "target", "met"]
    md = "\n".join([
        *report_header("Supernet overhead on the CPU: supernet vs its extracted static sub-network", env,
                       args.threads, load_before, load_after, packages=("ofa",)),
        "",
        f"Settings: fp32, NCHW, batch {args.batch_size} at {args.img_size} px, warm-up {args.warmup} steps, "
        f"{args.repeats} interleaved rounds (one batch per model per round, the order changing every round) in each of "
        f"{args.processes} fresh processes per case; the four models of a row pair (flexbone and ofa, supernet and "
        "static) share one input and the same weights. Infer = forward under no_grad (eval); train = forward + "
        "cross-entropy + backward + the SGD step `flexbone train` takes by default (momentum 0.9, weight decay 1e-4 "
        "except norms and biases, torch's fused kernel) (train mode). "
        f"CPU memory policy of the measuring processes: {policies_in_force(rows)} (keep = freed memory stays in the "
        "process, what the `flexbone` command sets up, `flexbone.cpu_memory`; glibc = the C library's default, "
        "which hands large freed blocks back to the kernel so that each step faults its tensors in again).",
        "",
        format_markdown(headers, table),
        "",
        "Overhead = supernet median latency / extracted static network median latency (1.00: no cost for being "
        "elastic), per process; the column 'overhead' is the median over the processes, 'per process' lists each, "
        "and the p50 columns are medians over the processes. 'Interval of the median': a distribution-free "
        "confidence interval for the median overhead of a fresh process (from the k-th smallest to the k-th "
        "largest process, binomial coverage in brackets, 95 % where there are 6 processes or more; fewer give "
        "the whole range, with its lower coverage). 'Met' compares the median with the target; an interval "
        "that contains the target means this run cannot tell. Absolute CPU times depend on the machine and its load; "
        "only the side-by-side ratios are claims.",
        "",
    ])
    write_report(args.out_dir, "supernet_overhead", dict(environment=env, overheads=ratio_rows, results=rows), md,
                 echo=True)
    missed = [f"{r['supernet']} {r['end']} {r['mode']} ({r['overhead']:.3f} > {TARGET})"
              for r in ratio_rows if r["met"] is False]
    print("all targets met" if not missed else f"targets missed: {'; '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
