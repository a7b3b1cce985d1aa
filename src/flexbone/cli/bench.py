"""`flexbone bench MODEL...`: throughput, latency and memory, side by side (the work is in flexbone.bench)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # flexbone.bench imports torch: not for `flexbone --help`
    from ..bench.throughput import BenchResult, BenchSettings

MODES = ("infer", "train")  # as flexbone.bench.throughput.MODES / DTYPES (BenchSettings.validate checks them)
DTYPES = ("fp32", "bf16", "fp16")
from ..options import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="throughput, latency and memory; side by side with timm",
        description="Measure models side by side: warm-up, then interleaved timed rounds (one batch per "
                    "model per round, the order changing every round). Reports images/s (batch / median latency), "
                    "latency p50/p90 per batch and the peak memory a step adds. With --compare timm, "
                    "timm's model of the same name runs in the same process with the same weights, input "
                    "and settings, and the ratio flexbone/timm is printed (>1: flexbone is faster).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or more model names")
    p.add_argument("--mode", choices=MODES, default="infer",
                   help="infer: forward under no_grad; train: forward + backward + SGD step (default infer)")
    p.add_argument("--batch-size", type=int_range(1), default=32, metavar="B", help="images per batch (default 32)")
    p.add_argument("--img-size", type=int_range(1), default=224, metavar="N", help="square input size (default 224)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                   help="fp32, bf16 or fp16 (cuda only); low precision casts for infer, autocasts for train")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="torch.compile the models (compiled during warm-up)")
    p.add_argument("--compare", choices=["timm"], default=None,
                   help="also measure timm's model of the same name (needs timm installed)")
    p.add_argument("--warmup", type=int_range(0), default=3, metavar="N", help="untimed steps per model (default 3)")
    p.add_argument("--repeats", type=int_range(1), default=10, metavar="N", help="timed steps per model (default 10)")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N",
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the results to FILE (.json or .csv)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.report import check_results_path
    from ..bench.throughput import BenchSettings
    from ..bench.throughput import benchmark, environment
    from ..models import model_entrypoint

    settings = BenchSettings(
        mode=args.mode, batch_size=args.batch_size, img_size=args.img_size, device=args.device,
        dtype=args.dtype, channels_last=args.channels_last, compile=args.compile, warmup=args.warmup,
        repeats=args.repeats, threads=args.threads,
    ).validate()
    for name in args.models:  # every mistake is reported before anything is built or measured
        model_entrypoint(name)
    if args.out:
        from ..outputs import check_writable

        check_writable(check_results_path(args.out))  # now, not after minutes of measuring

    def progress(msg: str) -> None:  # minutes of measuring: say what is happening (stderr, the table stays clean)
        print(f"  {msg}", file=sys.stderr, flush=True)

    results = benchmark(args.models, settings, compare=args.compare, progress=progress)
    env = environment(settings.device)

    compared = print_results(results, settings, env, args.compare)
    if args.out:
        ratio_of = {c["model"]: c["ratio"] for c in compared}
        out_rows = []
        for r in results:
            row = r.to_dict()
            if args.compare:
                row[f"ratio_vs_{args.compare}"] = ratio_of.get(r.model) if r.impl == "flexbone" else None
            out_rows.append(row)
        extra = dict(environment=env, settings=asdict(settings), ratios=compared, command=env["command"])
        print(f"wrote {write_results_or_keep(args.out, out_rows, **extra)}")
    return 0


def write_results_or_keep(out: str, rows: list[dict[str, Any]], **extra: Any):
    """Write the results to ``out``; if that fails late (disk full, folder gone), write them to the temporary
    folder and raise a one-line error saying where they are."""
    import tempfile
    from pathlib import Path

    from ..bench.report import write_results
    from ..errors import FlexboneError
    from ..outputs import describe_os_error

    try:
        return write_results(out, rows, **extra)
    except OSError as e:
        reason = describe_os_error(e)
    spare = Path(tempfile.gettempdir()) / f"flexbone-bench-{Path(out).name}"
    try:
        write_results(spare, rows, **extra)
    except OSError:
        raise FlexboneError(f"cannot write {out} ({reason}), nor a copy in {spare.parent}; the table above is all "
                            f"that is left") from None
    raise FlexboneError(f"cannot write {out} ({reason}); the results are kept in {spare}")


def print_results(results: Sequence[BenchResult], settings: BenchSettings, env: dict[str, Any],
                  compare: str | None = None) -> list[dict[str, Any]]:
    """Print the settings line, the results table and the ratios; return the ratios."""
    from ..bench.report import format_table
    from ..bench.throughput import ratios

    s = settings
    print(f"{s.mode} | {env['device_name']} | torch {env['torch_version']} | {env['threads']} threads | "
          f"{s.dtype} | batch {s.batch_size} | {s.img_size}x{s.img_size} | "
          f"{'channels_last' if s.channels_last else 'NCHW'}{' | compiled' if s.compile else ''} | "
          f"warm-up {s.warmup}, {s.repeats} interleaved repeats")
    rows = [[r.model, r.impl, r.throughput, r.latency_p50_ms, r.latency_p90_ms, r.step_mem_mb, r.weights_mb]
            for r in results]
    print(format_table(["model", "impl", "img/s", "p50 ms", "p90 ms", "step mem MB", "weights MB"], rows,
                       align="llrrrrr"))
    compared = ratios(results, compare) if compare else []
    for c in compared:
        print(f"{c['model']}: flexbone / {c['reference']} throughput = {c['ratio']:.3f}x")
    if results and results[0].mem_method.startswith("cpu"):
        print("(step mem: how much one timed step raised the process's peak RSS; 0 when warm-up or an earlier model "
              "already reached that peak, as under flexbone's keep-freed-memory policy, which every model measured "
              "in this process shares, timm's included)")
    return compared
