"""`flexbone latency-table --supernet NAME --out lut.json`: a latency lookup table built on this machine.

Every part that a sub-network of the supernet's space can have (stem, each block variant in each slot, head)
is timed once at every input size it meets, per resolution (see :class:`flexbone.search.latency.LatencyTable`);
``flexbone search --latency-table lut.json`` then predicts a sub-network's latency as the sum of its parts.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..options import int_range

EPILOG = """examples:
  flexbone latency-table --supernet ofa_mbv3_d234_e346_k357_w1.0 --out lut.json
  flexbone latency-table --supernet ofa_mbv3_d234_e346_k357_w1.0 --resolutions 160,192,224 --threads 4 --out lut.json
  flexbone latency-table --supernet ofa_resnet50 --backend onnxruntime --resolutions 224 --out lut_ort.json

Time it on the machine (and with the threads and batch size) you deploy on; the file records where and how it
was measured. Default resolutions: every resolution of the space (25 for OFA-MobileNetV3: ~2,400 parts, a few
minutes on 2 threads); for a space without resolutions (OFA-ResNet50), 224."""


def _resolutions(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes such as 160,192,224, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes such as 160,192,224, got {text!r}")
    return sizes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency-table", help="time every block variant of a supernet on this machine: a latency "
                                             "lookup table for search",
                       description="Build a once-for-all latency lookup table on this machine: every part a "
                                   "sub-network can have is timed once per input size; a sub-network's latency is "
                                   "then predicted as the sum of its parts.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, metavar="NAME", help="registered supernet (flexbone list 'ofa_*')")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="eager PyTorch or onnxruntime (the runtime you deploy with; default torch)")
    p.add_argument("--batch-size", type=int_range(1), default=1, help="images per timed call (default 1)")
    p.add_argument("--threads", type=int_range(1), default=2, help="intra-op threads (default 2)")
    p.add_argument("--resolutions", type=_resolutions, default=None, metavar="R1,R2,...",
                   help="input sizes to time (default: every resolution of the space)")
    p.add_argument("--num-classes", type=int_range(0), default=1000, help="classifier width (default 1000)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="torch backend only")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (torch backend only)")
    p.add_argument("--warmup", type=int_range(0), default=3, help="untimed calls per part (default 3)")
    p.add_argument("--repeats", type=int_range(1), default=10, help="timed calls per part; the median is kept "
                                                                    "(default 10)")
    p.add_argument("--statistic", choices=("median", "min"), default="median",
                   help="of the timed calls per part: median (default) or min (the least disturbed call, for a "
                        "machine busy with other work)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (default) or cpu: this process's CPU time, which other processes cannot inflate "
                        "(--threads 1 only)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..interrupt import interrupt_note
    from ..models import create_model
    from ..outputs import check_writable
    from ..search.latency import LatencyTable, check_resolutions, check_timing_options

    check_timing_options(args.backend, args.batch_size, args.threads, args.dtype, args.warmup, args.repeats,
                         args.channels_last, args.statistic, args.clock)
    check_writable(args.out)
    net = create_model(args.supernet, num_classes=args.num_classes)
    if not hasattr(net, "space"):
        from ..errors import ConfigError

        raise ConfigError(f"{args.supernet} is not a supernet (no search space); see `flexbone list 'ofa_*'`")
    resolutions = check_resolutions(net.space, args.resolutions)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"flexbone latency-table: {args.supernet}, {args.backend}, batch {args.batch_size}, {args.threads} threads, "
          f"resolutions {', '.join(map(str, resolutions))}")
    with interrupt_note(f"nothing written: {args.out} is written when every part is timed"):
        table = LatencyTable.build(net, backend=args.backend, batch_size=args.batch_size, threads=args.threads,
                                   resolutions=resolutions, progress=not args.no_progress, dtype=args.dtype,
                                   channels_last=args.channels_last, warmup=args.warmup, repeats=args.repeats,
                                   statistic=args.statistic, clock=args.clock)
    table.save(args.out)
    lo, hi = (resolutions[0], resolutions[-1]) if net.space.resolution else (None, None)
    print(f"timed {table.info['parts_timed']} parts in {time.perf_counter() - start:.0f} s on {table.info['device']}; "
          f"wrote {args.out}\n"
          f"predicted: max net {table.predict(net.space.max().replace(resolution=hi)):.2f} ms"
          f"{f' at {hi} px' if hi else ''}, min net {table.predict(net.space.min().replace(resolution=lo)):.2f} ms"
          f"{f' at {lo} px' if lo else ''}")
    return 0
