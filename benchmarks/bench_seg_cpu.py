"""Segmentation models on the CPU: FFNet-40S-BBB-mobile and FFNet-54S-dBBB-mobile vs torchvision's DeepLabV3 and
FCN with a ResNet-50 backbone, at the same input, in one run.

Each model (19 classes, random weights: speed and size do not depend on them) runs inference (eval, fp32,
``torch.inference_mode``) on one image of ``--size`` in interleaved rounds, the order changing every round; the
figure is the median time per image and the ratio to DeepLabV3-ResNet50 in the same run. Parameters and MACs
(flexbone.bench.complexity.count_macs: convolutions and matrix products, 1 MAC = 2 FLOPs) are counted at the
benchmark size and at each FFNet's official input, beside the official figures (the FFNet README's model,
computed from its definitions; /work/shared/reference/ffnet.md, B.2). torchvision's models output logits at the
input size (they upsample inside); the FFNets output 1/4 (1/8 for ``d``) of it, as published.

    .venv/bin/python benchmarks/bench_seg_cpu.py                        # a few minutes on 2 cores
    .venv/bin/python benchmarks/bench_seg_cpu.py --size 128 256 --repeats 3 --out-dir /tmp/bench_check

Writes ``seg_cpu.json`` and ``.md`` to ``--out-dir`` (default ``benchmarks/results``).
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
import torchvision

import flexbone
from flexbone.bench.complexity import count_macs, count_params
from flexbone.bench.report import add_run_options, format_markdown, report_header, write_report
from flexbone.bench.throughput import environment, round_order

HERE = Path(__file__).resolve().parent
# official figures: params, GMACs at the official input (FFNet README models, computed from the definitions)
OFFICIAL = {
    "ffnet40S_BBB_mobile": dict(params=13_907_059, gmacs=60.1, input=(512, 1024)),
    "ffnet54S_dBBB_mobile": dict(params=18_044_659, gmacs=75.7, input=(1024, 2048)),
}
REFERENCE = "deeplabv3_resnet50"


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in OFFICIAL:
        return flexbone.create_model(name, num_classes=19).eval()
    return getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, num_classes=19,
                                                          aux_loss=False).eval()


def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", nargs=2, type=int, default=(256, 512), metavar=("H", "W"),
                   help="input height and width (default 256 512)")
    p.add_argument("--models", nargs="+", default=[*OFFICIAL, REFERENCE, "fcn_resnet50"])
    add_run_options(p, HERE / "results", warmup=2, repeats=7, repeats_help="timed interleaved rounds")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    h, w = args.size

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    models = {name: build(name) for name in args.models}
    x = torch.randn(1, 3, h, w)
    times: dict[str, list[float]] = {n: [] for n in models}
    shapes = {}
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            for name in round_order(list(models), i):
                t0 = time.perf_counter()
                out = forward(models[name], x)
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
                shapes[name] = tuple(out.shape[-2:])
    load_after = os.getloadavg()

    class Wrapped(torch.nn.Module):  # count_macs wants a tensor out
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return forward(self.m, x)

    med = {n: statistics.median(t) for n, t in times.items()}
    summary, rows = [], []
    for name, model in models.items():
        macs = count_macs(Wrapped(model), (h, w))
        off = OFFICIAL.get(name)
        macs_official_input = count_macs(model, off["input"]) if off else None
        entry = dict(model=name, params=count_params(model), gmacs=macs / 1e9, output_hw=shapes[name],
                     median_ms=med[name], ratio_to_reference=med[name] / med.get(REFERENCE, float("nan")),
                     times_ms=times[name], official=off,
                     gmacs_at_official_input=None if macs_official_input is None else macs_official_input / 1e9)
        summary.append(entry)
        rows.append([name, f"{entry['params']:,}", f"{off['params']:,}" if off else "-", f"{entry['gmacs']:.2f}",
                     f"{entry['gmacs_at_official_input']:.1f} @ {off['input'][0]}x{off['input'][1]}" if off else "-",
                     f"{off['gmacs']:.1f}" if off else "-", "x".join(map(str, shapes[name])),
                     f"{med[name]:.0f}", f"{entry['ratio_to_reference']:.3f}"])
        print(f"{name}: {med[name]:.1f} ms ({entry['ratio_to_reference']:.3f}x {REFERENCE})", flush=True)

    env = environment("cpu")
    env.update(load_avg_before=load_before, load_avg_after=load_after, torchvision_version=torchvision.__version__,
               started_utc=started.isoformat(timespec="seconds"),
               command=" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]))
    md = "\n".join([
        *report_header("Segmentation on the CPU: FFNet mobile models vs torchvision DeepLabV3 / FCN (ResNet-50)", env,
                       args.threads, load_before, load_after, packages=("torchvision",)),
        "",
        f"Inference, batch 1, {h}x{w} input, fp32, eval, random weights, 19 classes; {args.warmup} warm-up rounds, then "
        f"the median of {args.repeats} interleaved rounds. Ratio: time / {REFERENCE} time in the same run "
        f"(lower is faster). MACs counted at {h}x{w} and, for the FFNets, at their official input, beside the "
        f"official figures.",
        "",
        format_markdown(["model", "params", "official params", f"GMACs @{h}x{w}", "GMACs at official input",
                         "official GMACs", "output HxW", "median ms", f"ratio to {REFERENCE}"], rows),
        "",
        "torchvision's DeepLabV3/FCN (output stride 8, dilated ResNet-50) upsample their logits to the input size "
        "inside the model; the FFNets return logits at 1/4 (40S_BBB) or 1/8 (54S_dBBB) of the input, as published.",
        "",
    ])
    write_report(args.out_dir, "seg_cpu", dict(environment=env, summary=summary), md, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
