"""Where a supernet's training-step overhead goes: forward, backward and optimiser step, supernet vs extracted net.

A companion to ``bench_supernet_overhead.py`` (issue 4). For each supernet at its smallest (and largest)
sub-network, flexbone's supernet and its ``extract()`` train side by side on the same batch with the same
weights; each step is timed in three parts:

* forward + cross-entropy,
* backward (from ``zero_grad(set_to_none=True)`` to the end of ``loss.backward()``),
* the optimiser step (the SGD step ``flexbone train`` takes by default: momentum 0.9, weight decay 1e-4
  except on norms and biases, torch's fused kernel).

It also counts the parameters the optimiser updates. A weight-shared supernet keeps *full-size* parameters:
a sub-network uses a leading slice of a weight, but its gradient (zero outside the slice) and the momentum
update cover the whole tensor. That is the definition of weight-shared training (the momentum of every
shared weight keeps running), so the reference implementation pays it too; this script shows how much of
the overhead it is. With several ``--batch-size`` values it also shows how much of the overhead is a fixed
cost per step (weights, gradients, optimiser, per-layer work) that a larger batch spreads over more images.

    .venv/bin/python benchmarks/bench_supernet_train_breakdown.py                    # a few minutes
    .venv/bin/python benchmarks/bench_supernet_train_breakdown.py --ends min --batch-size 16 64
    .venv/bin/python benchmarks/bench_supernet_train_breakdown.py --batch-size 2 --img-size 64 --repeats 2 \\
        --warmup 1 --processes 1 --out-dir /tmp/bench_check                          # a quick check that it works

Writes ``supernet_train_breakdown.json`` and ``.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import flexbone
from flexbone.bench.report import add_run_options, format_markdown, report_header, write_report
from flexbone.bench.throughput import environment, round_order, run_in_fresh_process
from flexbone.config import OptimConfig
from flexbone.cpu_memory import POLICIES, apply_policy
from flexbone.train.optim import create_optimizer

HERE = Path(__file__).resolve().parent
SUPERNETS = ("ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50")
PARTS = ("forward", "backward", "optimizer")


def measure_case(name: str, end: str, batch_size: int, policy: str, args: argparse.Namespace,
                 process: int) -> dict[str, Any]:
    """Median time of each part for the supernet and its extracted net (one process)."""
    policy = apply_policy(policy)  # before any tensor is allocated
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    supernet = flexbone.create_model(name)
    supernet.set_active(supernet.space.min() if end == "min" else supernet.space.max())
    models = {"supernet": supernet.train(), "static": supernet.extract().train()}
    optimizers = {k: create_optimizer(m, OptimConfig(name="sgd", lr=1e-3, momentum=0.9)) for k, m in models.items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, args.img_size, args.img_size, generator=g)
    y = torch.randint(0, 1000, (batch_size,), generator=g)
    times: dict[str, dict[str, list[float]]] = {k: {p: [] for p in PARTS} for k in models}
    order = list(models)[process % 2:] + list(models)[:process % 2]
    for i in range(args.warmup + args.repeats):
        for kind in round_order(order, i):
            model, opt = models[kind], optimizers[kind]
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if i >= args.warmup:
                for part, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2)):
                    times[kind][part].append(dt * 1e3)
    updated = {k: sum(p.numel() for p in m.parameters() if p.grad is not None) for k, m in models.items()}
    return dict(supernet=name, end=end, batch_size=batch_size, cpu_memory=policy, process=process,
                updated_params=updated,
                median_ms={k: {p: statistics.median(v) for p, v in parts.items()} for k, parts in times.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernets", nargs="+", default=list(SUPERNETS), choices=SUPERNETS)
    p.add_argument("--ends", nargs="+", default=["min", "max"], choices=["min", "max"])
    p.add_argument("--batch-size", type=int, nargs="+", default=[16],
                   help="images per batch; several sizes show which part of the overhead is per step (default 16)")
    p.add_argument("--img-size", type=int, default=160, help="input size, px (default 160)")
    p.add_argument("--cpu-memory", nargs="+", default=["keep"], choices=POLICIES,
                   help="CPU memory policy of the measuring processes: keep (the flexbone command's) or glibc "
                        "(the C library's default); several to compare (default keep)")
    add_run_options(p, HERE / "results", warmup=3, repeats=10, processes=3,
                    repeats_help="timed interleaved rounds per process")
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    cases = []
    keys = [(name, end, batch, policy) for name in args.supernets for end in args.ends for batch in args.batch_size
            for policy in args.cpu_memory]
    for name, end, batch, policy in keys:
        for process in range(args.processes):
            print(f"== {name} {end} batch {batch}, CPU memory {policy} [{process + 1}/{args.processes}]", flush=True)
            cases.append(run_in_fresh_process(measure_case, name, end, batch, policy, args, process))
    load_after = os.getloadavg()

    rows, summary = [], []
    for name, end, batch, policy in keys:
        runs = [c for c in cases if (c["supernet"], c["end"], c["batch_size"], c["cpu_memory"]) == (name, end, batch, policy)]
        med = {k: {part: statistics.median(r["median_ms"][k][part] for r in runs) for part in PARTS}
               for k in ("supernet", "static")}
        total = {k: sum(med[k].values()) for k in med}
        no_step = {k: med[k]["forward"] + med[k]["backward"] for k in med}
        updated = runs[0]["updated_params"]
        entry = dict(supernet=name, end=end, batch_size=batch, cpu_memory=runs[0]["cpu_memory"], median_ms=med,
                     overhead_step=total["supernet"] / total["static"],
                     overhead_forward_backward=no_step["supernet"] / no_step["static"],
                     extra_ms_step=total["supernet"] - total["static"], updated_params=updated)
        summary.append(entry)
        rows.append([name, end, batch, entry["cpu_memory"]] + [f"{med['supernet'][part]:.1f} / {med['static'][part]:.1f}" for part in PARTS]
                    + [f"{entry['overhead_forward_backward']:.3f}", f"{entry['overhead_step']:.3f}",
                       f"{entry['extra_ms_step']:.1f}",
                       f"{updated['supernet'] / 1e6:.1f}M / {updated['static'] / 1e6:.1f}M"])
        print(f"{name} {end} batch {batch} {entry['cpu_memory']}: forward+backward {entry['overhead_forward_backward']:.3f}, "
              f"whole step {entry['overhead_step']:.3f} (+{entry['extra_ms_step']:.1f} ms)", flush=True)

    env = environment("cpu")
    env.pop("cpu_memory")  # the parent's; the measuring processes record theirs
    env.update(load_avg_before=load_before, load_avg_after=load_after,
               started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    headers = ["supernet", "sub-network", "batch", "CPU memory", "forward ms (supernet / static)", "backward ms",
               "optimizer step ms", "overhead fwd+bwd", "overhead whole step", "extra ms per step",
               "params updated (supernet / static)"]
    md = "\n".join([
        *report_header("Supernet training step, part by part: supernet vs its extracted static sub-network", env,
                       args.threads, load_before, load_after),
        "",
        f"Settings: fp32, NCHW, batch {' / '.join(map(str, args.batch_size))} at {args.img_size} px, train mode, `flexbone train`'s default SGD step (momentum 0.9, "
        "weight decay 1e-4, fused), "
        f"warm-up {args.warmup} steps, {args.repeats} interleaved rounds in each of {args.processes} fresh processes; "
        "times are medians over the rounds, then over the processes.",
        "",
        format_markdown(headers, rows),
        "",
        "The optimiser updates every parameter that received a gradient. In the supernet that is the full-size "
        "tensor of every weight the active sub-network slices (zero gradient outside the slice, but momentum and "
        "the update still cover it): weight-shared training, as the once-for-all reference does it. The extracted "
        "network owns only its slices. 'extra ms per step' = supernet step - static step (all three parts). "
        "CPU memory: keep = freed memory stays in the process (what the `flexbone` command sets up, "
        "`flexbone.cpu_memory`); glibc = the C library's default, which hands large freed blocks back to the kernel, "
        "so that each step faults its fresh tensors in again.",
        "",
    ])
    write_report(args.out_dir, "supernet_train_breakdown", dict(environment=env, summary=summary, processes=cases), md,
                 echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
