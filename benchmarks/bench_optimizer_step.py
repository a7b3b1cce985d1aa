"""The optimiser step on the CPU: torch's default for-loop step vs its fused step, as ``flexbone train`` builds them.

``flexbone.train.optim.create_optimizer`` asks torch for the fused SGD / AdamW step wherever torch has one
(``optim.fused``, default ``null`` = auto). This script shows what that buys: for each model, the same
parameters and gradients are stepped by two optimisers built from the same ``OptimConfig``, one with
``fused: false`` (torch's for-loop step, its CPU default) and one with the default, in interleaved rounds
(the order changing every round); the figure is the median step time and the ratio for-loop / fused.

Models: ResNet-50 and MobileNetV3-Large (static), and OFA-ResNet50 at its smallest sub-network, whose
gradients come from a real backward pass: full-size tensors, zero outside the active slices, as in
weight-shared supernet training (the optimiser step of ``bench_supernet_train_breakdown.py``).

    .venv/bin/python benchmarks/bench_optimizer_step.py                      # about a minute
    .venv/bin/python benchmarks/bench_optimizer_step.py --models resnet18 --repeats 3 --out-dir /tmp/bench_check

Writes ``optimizer_step_cpu.json`` and ``.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import flexbone
from flexbone.bench.report import add_run_options, format_markdown, report_header, write_report
from flexbone.bench.throughput import environment, round_order
from flexbone.config import OptimConfig
from flexbone.train.optim import create_optimizer

HERE = Path(__file__).resolve().parent
MODELS = ("resnet50", "mobilenetv3_large_100", "ofa_resnet50:min")
OPTIMIZERS = {
    "sgd": dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-5),  # the OFA recipes' SGD
    "adamw": dict(name="adamw", lr=1e-3, weight_decay=0.05),
}


def model_with_grads(spec: str) -> torch.nn.Module:
    """The model ``spec`` names (``name`` or ``supernet:min``) with gradients on the parameters a step updates."""
    torch.manual_seed(0)
    name, _, end = spec.partition(":")
    model = flexbone.create_model(name).train()
    if end:
        model.set_active(model.space.min() if end == "min" else model.space.max())
        x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 1000, (2,))
        F.cross_entropy(model(x), y).backward()  # full-size gradients, zero outside the active slices
    else:
        for p in model.parameters():
            p.grad = torch.randn_like(p)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), help="zoo names, or supernet:min / supernet:max")
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    add_run_options(p, HERE / "results", warmup=3, repeats=20, repeats_help="timed interleaved rounds")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    summary, rows = [], []
    for spec in args.models:
        model = model_with_grads(spec)
        updated = sum(q.numel() for q in model.parameters() if q.grad is not None)
        for opt_name in args.optimizers:
            cfg = OPTIMIZERS[opt_name]
            steps = {"for-loop": create_optimizer(model, OptimConfig(**cfg, fused=False)).step,
                     "fused": create_optimizer(model, OptimConfig(**cfg)).step}
            times: dict[str, list[float]] = {k: [] for k in steps}
            for i in range(args.warmup + args.repeats):
                for kind in round_order(list(steps), i):
                    t0 = time.perf_counter()
                    steps[kind]()
                    if i >= args.warmup:
                        times[kind].append((time.perf_counter() - t0) * 1e3)
            med = {k: statistics.median(v) for k, v in times.items()}
            entry = dict(model=spec, optimizer=opt_name, config=cfg, params_updated=updated, median_ms=med,
                         speedup=med["for-loop"] / med["fused"], times_ms=times)
            summary.append(entry)
            rows.append([spec, opt_name, f"{updated / 1e6:.1f}M", f"{med['for-loop']:.2f}", f"{med['fused']:.2f}",
                         f"{entry['speedup']:.2f}x"])
            print(f"{spec} {opt_name}: for-loop {med['for-loop']:.2f} ms, fused {med['fused']:.2f} ms "
                  f"({entry['speedup']:.2f}x)", flush=True)
    load_after = os.getloadavg()

    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after,
               started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    md = "\n".join([
        *report_header("Optimiser step on the CPU: torch's for-loop step vs its fused step", env, args.threads,
                       load_before, load_after),
        "",
        f"Both optimisers come from `create_optimizer` with the same config (sgd: momentum 0.9, Nesterov, weight "
        f"decay 3e-5; adamw: weight decay 0.05; no decay on norms and biases), `fused: false` vs the default; "
        f"fp32; {args.warmup} warm-up steps, then the median of {args.repeats} interleaved steps each.",
        "",
        format_markdown(["model", "optimizer", "params updated", "for-loop ms", "fused ms", "fused speed-up"], rows),
        "",
        "`ofa_resnet50:min`: the supernet at its smallest sub-network after a backward pass; the step covers the "
        "full-size tensors of every weight the sub-network slices (weight-shared training).",
        "",
    ])
    write_report(args.out_dir, "optimizer_step_cpu", dict(environment=env, summary=summary), md, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
