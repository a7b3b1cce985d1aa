"""`flexbone subnets --supernet M --checkpoint C --data D [--n 50] [--out subnets.csv]`: sampled sub-networks
of a trained supernet, side by side.

Each sub-network (always the min and the max, then random ones drawn with ``--seed``) is made active, its BN
statistics are recalibrated on ``--bn-batches`` batches of *training* images (the same fixed images for every
sub-network; once-for-all semantics, see :func:`flexbone.elastic.recalibrate_bn`), it is extracted as a static
model, and that model is evaluated: its config (JSON), MACs and parameters (of the static net, at the evaluation
resolution), top-1 / top-5. The rows go to a CSV, and a scatter plot of MACs vs top-1 with the Pareto front
marked goes to a PNG beside it.
"""
from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import CheckpointError, ConfigError, FlexboneError
from ..options import add_preprocessing_options, int_range

EPILOG = """examples:
  flexbone subnets --supernet ofa_mbv3_d234_e346_k357_w1.0 --checkpoint runs/x/model.safetensors --data /data/imagenet
  flexbone subnets --checkpoint runs/x/model.safetensors --data digits --n 20 --out digits_subnets.csv
  flexbone subnets --checkpoint snnet-r18-r50/ --data /data/imagenet --out snnet.csv

--data is an image folder with train/ (BN recalibration) and val/ (evaluation) sub-folders, a folder of
CIFAR-10/100 batch files, or 'digits'. The supernet's name and options come from the checkpoint of a
flexbone run; --supernet names it for other checkpoints. An SN-Net (a `flexbone stitch` folder, or the
weights of a run that trained one) has few configurations: all of them are evaluated and timed (latency of
each extracted configuration, batch 1, --threads, median of --repeats), and the plot marks the anchors."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("subnets", help="evaluate sampled sub-networks of a supernet: MACs, params, top-1, Pareto plot",
                       description="Sample sub-networks of a trained supernet (always min and max), recalibrate "
                                   "their BN statistics on training images, extract and evaluate each; write a CSV "
                                   "and a MACs vs top-1 scatter plot with the Pareto front.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", metavar="NAME", help="registered supernet (default: the one stored in the checkpoint)")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="the supernet's weights (.safetensors, "
                                                                       "a flexbone checkpoint-*.pt ...), or an SN-Net "
                                                                       "(a `flexbone stitch` folder or a run's weights)")
    p.add_argument("--data", required=True, metavar="PATH|digits", help="image folder (train/ + val/), CIFAR batch "
                                                                         "files, or 'digits'")
    p.add_argument("--n", type=int_range(1), default=50, help="sub-networks to evaluate, min and max included (default 50)")
    p.add_argument("--out", type=Path, default=Path("subnets.csv"), help="CSV to write (default subnets.csv)")
    p.add_argument("--plot", type=Path, default=None, help="scatter plot PNG (default: --out with .png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled sub-networks and calibration images")
    p.add_argument("--bn-batches", type=int_range(1), default=10, help="training batches for each BN recalibration "
                                                              "(default 10; OFA uses ~2000 images)")
    p.add_argument("--batch-size", type=int_range(1), default=64)
    p.add_argument("--img-size", type=int_range(1), default=None, metavar="N", help="evaluation resolution (default: the "
                                                                           "run's, else the model's)")
    add_preprocessing_options(p)
    p.add_argument("--split", default="val", help="image-folder sub-folder to evaluate (default val)")
    p.add_argument("--train-split", default="train", help="image-folder sub-folder for BN recalibration (default train)")
    p.add_argument("--workers", type=int_range(0), default=2, help="data loader processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N", help="torch intra-op threads")
    p.add_argument("--repeats", type=int_range(1), default=20,
                   help="SN-Net: timed runs per configuration's latency (median; default 20)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the rows an interrupted run of the same command kept in OUT.partial.csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------- the pieces
def sample_subnets(space: Any, n: int, seed: int = 0) -> list[tuple[str, Any]]:
    """``[('min', cfg), ('max', cfg), ('random', cfg), ...]``: ``n`` distinct sub-networks (fewer if the space
    is smaller). Random ones come from ``random.Random(seed)``; two configs that run the same network
    (differing only in blocks that depth switches off) count once."""
    picks = [("min", space.min()), ("max", space.max())][:max(n, 0)]
    seen = {space.canonical(c.replace(resolution=None)) for _, c in picks}
    rng = random.Random(seed)
    for _ in range(100 * n):  # a small space runs out of distinct networks
        if len(picks) >= n:
            break
        cfg = space.sample(rng)
        key = space.canonical(cfg.replace(resolution=None))
        if key not in seen:
            seen.add(key)
            picks.append(("random", cfg))
    return picks


def pareto_front(macs: Sequence[float], top1: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (at most as many MACs and a higher top-1, or fewer MACs and
    at least the top-1), by increasing MACs."""
    order = sorted(range(len(macs)), key=lambda i: (macs[i], -top1[i]))
    front, best = [], -math.inf
    for i in order:
        if top1[i] > best:
            front.append(i)
            best = top1[i]
    return front


def evaluate_subnets(supernet: Any, configs: Sequence[tuple[str, Any]], calib_loader: Iterable, eval_loader: Iterable,
                     device: Any, img_size: int, amp: Any = None, progress: bool = False,
                     on_row: Callable[[dict[str, Any]], None] | None = None,
                     done: Mapping[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per config: kind, config (JSON), img_size, MACs, params, top1, top5, loss (see the module doc).

    ``calib_loader`` must yield the same batches on every pass (all sub-networks see the same calibration
    images); the whole of it is used for each recalibration. ``on_row(row)`` is called as each row is
    finished (``flexbone subnets`` writes it out at once, so an interruption keeps it); rows in ``done``
    (keyed by config JSON, e.g. read back from such a file) are taken as they are instead of evaluated again.
    """
    from tqdm.auto import tqdm

    from ..bench.complexity import count_macs, count_params
    from ..elastic.bn import recalibrate_bn
    from ..train.engine import evaluate

    space = supernet.space
    rows = []
    for kind, cfg in tqdm(configs, desc="sub-networks", unit="net", disable=not progress, file=sys.stderr):
        # the resolution evaluated, where the space has it (else the config keeps none: see img_size)
        cfg = cfg.replace(resolution=img_size if img_size in space.resolution else None)
        if done and cfg.to_json() in done:
            rows.append({**done[cfg.to_json()], "kind": kind})
            continue
        supernet.set_active(cfg)
        recalibrate_bn(supernet, calib_loader)
        static = supernet.extract().eval()
        stats = evaluate(static, eval_loader, device, amp=amp)
        rows.append({"kind": kind, "config": cfg.to_json(), "img_size": img_size,
                     "macs": count_macs(static, img_size, getattr(supernet, "in_chans", 3)),
                     "params": count_params(static), "top1": stats["top1"], "top5": stats["top5"],
                     "loss": stats["loss"]})
        if on_row is not None:
            on_row(rows[-1])
    front = set(pareto_front([r["macs"] for r in rows], [r["top1"] for r in rows]))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return rows


def plot_subnets(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Scatter MACs (millions) vs top-1, the Pareto front joined and marked, min / max labelled (PNG, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write

    macs = [r["macs"] / 1e6 for r in rows]
    top1 = [r["top1"] for r in rows]
    front = pareto_front(macs, top1)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.scatter(macs, top1, s=18, color="tab:blue", alpha=0.6, label="sub-networks")
    ax.plot([macs[i] for i in front], [top1[i] for i in front], "-o", color="tab:red", markersize=5,
            label="Pareto front")
    for i, r in enumerate(rows):
        if r["kind"] in ("min", "max"):
            ax.annotate(r["kind"], (macs[i], top1[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("MACs (millions, at %d px)" % rows[0]["img_size"] if rows else "MACs (millions)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def partial_path(out: str | Path) -> Path:
    """Where ``flexbone subnets --out OUT`` keeps its rows while it runs: ``OUT.partial.csv`` beside OUT."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial.csv")


_ROW_TYPES = {"img_size": int, "macs": int, "params": int, "top1": float, "top5": float, "loss": float}


def read_rows(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of a subnets CSV keyed by config JSON, typed as :func:`evaluate_subnets` makes them."""
    path = Path(path)
    rows: dict[str, dict[str, Any]] = {}
    try:
        with open(path, newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                row.pop("pareto", None)
                try:
                    rows[row["config"]] = {k: _ROW_TYPES.get(k, str)(v) for k, v in row.items()}
                except (KeyError, TypeError, ValueError):
                    raise ConfigError(f"{path} line {line}: not a row written by flexbone subnets; delete the file "
                                      f"or run without --resume") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"cannot read {path} ({type(e).__name__}: {e}); delete it or run without --resume") from None
    return rows


class RowKeeper:
    """Keeps every finished row in ``partial`` at once (atomically), so an interruption or a late failure loses
    none; ``flexbone subnets`` and ``flexbone search`` pass it as ``on_row``.

    When ``partial`` cannot be written (a full disk) the rows stay in memory for the final write, and the closing
    note says they were not kept: no warning is printed on the way, so a command that then fails ends in one line.
    """

    def __init__(self, partial: Path, done: Iterable[dict[str, Any]] = (), nothing: str = "nothing kept"):
        self.partial, self.nothing = partial, nothing
        self.rows: list[dict[str, Any]] = list(done)  # a second interrupt keeps the rows of the first too
        self.unkept = 0

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        try:
            write_csv(self.rows, self.partial)
        except OSError:
            self.unkept += 1

    def note(self) -> str:
        """What an interruption or a failure leaves: for :func:`flexbone.interrupt.interrupt_note`."""
        if self.unkept:
            return f"{len(self.rows)} evaluated sub-network(s) could not be kept ({self.partial} was not writable)"
        if not self.rows:
            return self.nothing
        return (f"kept {len(self.rows)} evaluated sub-network(s) in {self.partial}; rerun the same command with "
                f"--resume to continue")


def write_rows_or_keep(rows: Sequence[dict[str, Any]], out: Path, partial: Path) -> Path:
    """Write the final CSV; if that fails late (disk full, folder gone), keep the rows elsewhere and say where."""
    import tempfile

    from ..outputs import describe_os_error

    try:
        return write_csv(rows, out)
    except OSError as e:
        reason = describe_os_error(e)
    for spare in (partial, Path(tempfile.gettempdir()) / f"flexbone-{out.name}"):
        try:
            write_csv(rows, spare)
        except OSError:
            continue
        raise FlexboneError(f"cannot write {out} ({reason}); the {len(rows)} evaluated rows are kept in {spare}")
    raise FlexboneError(f"cannot write {out} ({reason}), nor a copy in {partial.parent} or the temporary folder; "
                        f"the results are lost")


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    from ..checkpoint import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


# ------------------------------------------------------------------------------------------- loading
def _load_supernet(checkpoint: str, name: str | None) -> tuple[Any, dict[str, Any]]:
    """The supernet of ``checkpoint`` (``name`` or the checkpoint's model), weights loaded, eval mode."""
    from ..models import list_models, model_entrypoint
    from ..train.checkpoint import model_from_checkpoint, read_metadata

    meta = read_metadata(checkpoint)
    name = name or meta.get("model")
    if not name:
        raise ConfigError(f"{checkpoint} does not say which supernet it holds: pass --supernet NAME "
                          f"({', '.join(list_models('ofa_*'))})")
    cls = getattr(model_entrypoint(name), "model_cls", None)  # unknown names fail here, with suggestions
    if cls is None or not all(hasattr(cls, a) for a in ("set_active", "extract", "reorganize_channels")):
        supernets = [m for m in list_models("ofa_*") if not m.endswith("_subnet")]
        raise ConfigError(f"{name} is not an elastic supernet; `flexbone subnets` samples the sub-networks of one "
                          f"of: {', '.join(supernets)}")
    try:
        model, meta = model_from_checkpoint(checkpoint, name)
    except CheckpointError as e:
        raise CheckpointError(f"--checkpoint {checkpoint} does not fit {name}: {e}") from None
    return model, meta


def _calibration_loader(data: str, train_split: str, data_cfg: Any, class_names: list[str] | None,
                        batches: int, batch_size: int, seed: int, workers: int, pin_memory: bool):
    """A loader of the same ``batches`` x ``batch_size`` training images (drawn with ``seed``) on every pass,
    with the evaluation transform."""
    import torch
    from torch.utils.data import Subset

    from ..data.datasets import CIFAR_LAYOUT, ImageFolderDataset, cifar_dataset, digits_dataset
    from ..data.loader import ImageLoader
    from ..data.samplers import ShardedEvalSampler
    from ..data.transforms import build_eval_transform

    tf = build_eval_transform(data_cfg)
    if data == "digits":
        dataset = digits_dataset(True, data_cfg.digits_test_fraction, data_cfg.digits_split_seed, tf)
    else:
        root = Path(data).expanduser()
        cifar = next((v for v, (sub, _, test_file, *_r) in CIFAR_LAYOUT.items()
                      if (root / test_file).is_file() or (root / sub / test_file).is_file()), None)
        if cifar is not None:
            dataset = cifar_dataset(root, cifar, True, tf)
        elif (root / train_split).is_dir():
            dataset = ImageFolderDataset(root / train_split, tf, class_names=class_names)
        else:
            raise ConfigError(f"BN recalibration needs training images: {root / train_split} does not exist "
                              f"(give a folder with {train_split}/ and val/ sub-folders, or --train-split NAME)")
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(dataset), generator=g)[:batches * batch_size].tolist()
    subset = Subset(dataset, picked)
    subset.classes = getattr(dataset, "classes", None)
    return ImageLoader(subset, batch_size, ShardedEvalSampler(subset), workers, False, pin_memory, False, seed)


# ----------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    import torch

    from ..stitch.snnet import is_snnet_checkpoint

    if is_snnet_checkpoint(args.checkpoint):
        from .stitch import run_subnets as run_stitched

        return run_stitched(args)

    from ..data.loader import ImageLoader
    from ..data.samplers import ShardedEvalSampler
    from ..train.distributed import resolve_device
    from ..train.engine import amp_dtype
    from .validate import eval_data_config, eval_dataset

    from ..interrupt import interrupt_note
    from ..outputs import check_writable

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out {out}: the results are written as a .csv file")
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    partial = partial_path(out)
    for path in (out, plot, partial):  # before any evaluation: an unwritable output fails now, not in an hour
        check_writable(path)
    done = read_rows(partial) if args.resume and partial.is_file() else {}
    if args.resume and not done:
        print(f"flexbone: nothing to resume ({partial} holds no rows); evaluating all sub-networks", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    supernet, meta = _load_supernet(args.checkpoint, args.supernet)
    supernet.to(device)
    data_cfg = eval_data_config(args, meta, supernet)
    class_names = meta.get("class_names")
    eval_set = eval_dataset(args.data, args.split, data_cfg, class_names)
    num_classes = getattr(supernet, "num_classes", None)
    if num_classes and len(eval_set.classes) > num_classes:
        raise ConfigError(f"the data has {len(eval_set.classes)} classes but the supernet predicts {num_classes}")
    pin = device.type == "cuda"
    eval_loader = ImageLoader(eval_set, args.batch_size, ShardedEvalSampler(eval_set), args.workers, False, pin,
                              False, 0)
    calib_loader = _calibration_loader(args.data, args.train_split, data_cfg, class_names, args.bn_batches,
                                       args.batch_size, args.seed, args.workers, pin)

    configs = sample_subnets(supernet.space, args.n, args.seed)
    keep = RowKeeper(partial, done.values(), nothing="no sub-network was finished; nothing kept")

    with interrupt_note(keep.note), torch.no_grad():
        rows = evaluate_subnets(supernet, configs, calib_loader, eval_loader, device, data_cfg.img_size,
                                amp=amp_dtype(args.amp, device), progress=not args.no_progress, on_row=keep,
                                done=done)
    name = args.supernet or meta.get("model")
    write_rows_or_keep(rows, out, partial)
    partial.unlink(missing_ok=True)
    try:
        plot_subnets(rows, plot, title=f"{name} on {args.data}: {len(rows)} sub-networks, BN recalibrated "
                                       f"on {args.bn_batches} x {args.batch_size} images")
    except OSError as e:
        from ..outputs import describe_os_error

        raise FlexboneError(f"cannot write the plot {plot} ({describe_os_error(e)}); the rows are in {out}") from None

    from ..bench.report import format_table

    front = [r for r in rows if r["pareto"]]
    print(f"{name}: {len(rows)} sub-networks on {args.data} at {data_cfg.img_size} px "
          f"(top-1 {min(r['top1'] for r in rows):.2f}% .. {max(r['top1'] for r in rows):.2f}%); Pareto front:")
    print(format_table(["kind", "MMACs", "params", "top-1 %"],
                       [[r["kind"], r["macs"] / 1e6, r["params"], r["top1"]] for r in front], align="lrrr"))
    print(f"wrote {out} and {plot}")
    return 0
