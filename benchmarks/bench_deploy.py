"""Deployment on this CPU: flexbone's exported artifacts vs timm eager and timm exported by hand.

For each model and batch size, in one process, interleaved rounds (the order changes every round) of:

* ``timm eager``: timm's model in PyTorch (``inference_mode``), the same weights as flexbone's;
* ``timm hand-onnx``: timm's model exported the way a user would without flexbone (``torch.onnx.export``,
  its defaults, ``dynamo=False`` because torch 2.14's default exporter needs ``onnxscript``), run in
  onnxruntime;
* ``flexbone folded``: ``flexbone.export.fold_bn(model)`` in PyTorch;
* ``flexbone onnx``: ``flexbone export --fold-bn`` (checked in onnxruntime), run in onnxruntime;
* ``flexbone onnx-int8``: the same, quantized by ``--int8`` with its defaults (onnxruntime static QDQ, uint8
  activations, per-channel 7-bit int8 weights, MinMax), calibrated on crops of scikit-learn's two sample
  photographs (latency only: these weights are random).

The onnxruntime sessions run with ``session.intra_op.allow_spinning = 0``: all cases share one process, and
onnxruntime's default spinning threads made the torch steps that followed them about 15x slower. Even so, the
eager steps measured here on the shared VM were 10-25x slower than such models usually run on 2 cores (cause
not found): read the eager rows with care; the onnxruntime rows compare with each other.

timm has no OFA-MobileNetV3 sub-network; for it the two baselines are the same flexbone network in
PyTorch (unfolded) and exported by hand. Every runtime uses the same number of threads (``--threads``,
default 2: torch intra-op threads, onnxruntime intra-op threads with one inter-op thread).

A second part measures what int8 costs in accuracy: ``resnet8s_tiny`` trained with the quickstart recipe on
scikit-learn's digits (``flexbone train``, one model per ``--digits-seeds`` seed; or ``--digits-checkpoint``),
exported in fp32 and in int8 (calibrated on the digits training split: 16 and 64 batches of 8, two different
calibration samples, and 16 batches with ``--int8-full-range``, the 8-bit weights of flexbone's earlier
default), evaluated on the 359 held-out scans in onnxruntime with ``flexbone validate --onnx`` (one scan is
0.28 points). Each int8 model is also run with ``session.disable_quant_qdq``, which makes onnxruntime execute
the same quantize / dequantize graph in float instead of its integer kernels: a loss that appears only with the
integer kernels comes from them (int16 saturation on x86 without VNNI), not from the quantization parameters.

A third part (``--int8-variants``, default mobilenetv3_large_100 at batch 1) looks for a faster int8
MobileNetV3: onnxruntime's other settings (per-tensor weights, QOperator format, no ``quant_pre_process``,
pre-processing without its graph optimisation, which keeps HardSwish whole) timed side by side with the fp32
and default int8 models, with each model's op counts after onnxruntime's graph optimisation.

    .venv/bin/python benchmarks/bench_deploy.py                   # 10-30 minutes on 2 shared cores
    .venv/bin/python benchmarks/bench_deploy.py --models mobilenetv3_large_100 --batch-sizes 1 --repeats 3 \\
        --out-dir /tmp/bench_check

Writes ``deploy_cpu.json`` and ``.md`` to ``--out-dir`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import flexbone
from flexbone.bench.report import add_run_options, format_markdown, report_header, write_report
from flexbone.bench.throughput import environment, round_order
from flexbone.export import fold_bn
from flexbone.export.artifact import export_model
from flexbone.export.source import ExportSource

HERE = Path(__file__).resolve().parent
MODELS = ("mobilenetv3_large_100", "ofa_mbv3_subnet", "resnet50")
OFA_SUPERNET = "ofa_mbv3_d234_e346_k357_w1.0"
OFA_SEED = 0  # space.sample(seed): the sub-network measured
CASES = ("timm eager", "timm hand-onnx", "flexbone folded", "flexbone onnx", "flexbone onnx-int8")


def build(name: str) -> tuple[torch.nn.Module, torch.nn.Module | None, str, dict]:
    """``(flexbone model, timm model with the same weights or None, display name, subnet config or {})``."""
    torch.manual_seed(0)
    if name == "ofa_mbv3_subnet":
        net = flexbone.create_model(OFA_SUPERNET)
        cfg = net.space.sample(OFA_SEED)
        net.set_active(cfg)
        return net.extract().eval(), None, f"{OFA_SUPERNET} sub-network (sample {OFA_SEED})", cfg.to_dict()
    import timm

    ours = flexbone.create_model(name).eval()
    theirs = timm.create_model(name).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # flexbone's names are timm's
    return ours, theirs, name, {}


def calibration_folder(root: Path, size: int, count: int = 16) -> Path:
    """``count`` crops of scikit-learn's sample photographs as PNG files (int8 calibration for the latency rows)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    folder = root / "calib"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photos = [load_sample_image(n) for n in ("china.jpg", "flower.jpg")]
    for i in range(count):
        img = photos[i % 2]
        h, w = img.shape[:2]
        s = int(rng.integers(size, min(h, w)))
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        Image.fromarray(img[y:y + s, x:x + s]).save(folder / f"{i}.png")
    return folder


def hand_export(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """What a user does without flexbone: ``torch.onnx.export`` with its defaults (TorchScript exporter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False)


def ort_step(path: Path, x: torch.Tensor, threads: int, optimised: Path | None = None):
    """onnxruntime with its intra-op threads told not to spin after a run: torch's threads run next in this process
    (with spinning sessions, timm's MobileNetV3 at batch 1 took 3.1 s a step; without, 0.21 s, minutes later).
    ``optimised``: where to save the graph onnxruntime runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if optimised is not None:  # where onnxruntime writes the graph it runs (after its optimisations)
        options.optimized_model_filepath = str(optimised)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: x.numpy()}
    return lambda: session.run(None, feed)


def torch_step(model: torch.nn.Module, x: torch.Tensor):
    def step():
        with torch.inference_mode():
            model(x)
    return step


def measure_model(name: str, batch_sizes: list[int], img_size: int, threads: int, warmup: int, repeats: int,
                  work: Path, say) -> list[dict]:
    ours, timm_model, display, subnet = build(name)
    baseline = timm_model if timm_model is not None else ours
    folded = fold_bn(ours, torch.randn(1, 3, img_size, img_size))
    calib = calibration_folder(work / name, img_size, count=max(16, *batch_sizes))
    rows = []
    for bs in batch_sizes:
        x = torch.randn(bs, 3, img_size, img_size)
        say(f"{display}, batch {bs}: exporting")
        hand = work / name / f"hand-{bs}.onnx"
        hand_export(baseline, x, hand)
        source = ExportSource(ours, name, subnet=subnet or None)
        fp32, int8 = work / name / f"fp32-{bs}.onnx", work / name / f"int8-{bs}.onnx"
        quiet = lambda s: None  # noqa: E731
        side = export_model(source, fp32, "onnx", img_size=img_size, batch_size=bs, fold=True, log=quiet)
        side8 = export_model(source, int8, "onnx", img_size=img_size, batch_size=bs, fold=True, int8=True,
                             calib_data=str(calib), calib_batches=max(1, 16 // bs), log=quiet)
        steps = {
            "timm eager": torch_step(baseline, x),
            "timm hand-onnx": ort_step(hand, x, threads),
            "flexbone folded": torch_step(folded, x),
            "flexbone onnx": ort_step(fp32, x, threads),
            "flexbone onnx-int8": ort_step(int8, x, threads),
        }
        n_warm, n_rep = (warmup, repeats) if bs == 1 else (1, max(3, repeats // 4))
        say(f"{display}, batch {bs}: {n_warm} warm-up and {n_rep} interleaved rounds of {len(steps)} cases")
        for step in steps.values():
            for _ in range(n_warm):
                step()
        times = {k: [] for k in steps}
        for i in range(n_rep):
            for k in round_order(list(steps), i):
                t0 = time.perf_counter()
                steps[k]()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        for k in CASES:
            label = k if timm_model is not None else k.replace("timm ", "no timm model: flexbone ")
            rows.append({"model": display, "batch_size": bs, "img_size": img_size, "case": label,
                         "median_ms": med[k], "ms": [t * 1e3 for t in times[k]],
                         "vs_timm_eager": med["timm eager"] / med[k],
                         "vs_hand_onnx": med["timm hand-onnx"] / med[k],
                         "vs_flexbone_onnx": med["flexbone onnx"] / med[k],
                         "max_abs_diff": side["check"]["max_abs_diff"] if k == "flexbone onnx" else None,
                         "int8_top1_agreement_calib": (side8["int8"]["top1_agreement_with_fp32"]
                                                       if k == "flexbone onnx-int8" else None)})
        say("  " + ", ".join(f"{k} {med[k]:.1f} ms" for k in CASES))
    return rows


DIGITS_INT8 = {  # label -> extra `flexbone export` arguments
    "int8": ["--int8", "--calib-data", "digits", "--calib-batches", "16"],
    "int8, 64 calib batches": ["--int8", "--calib-data", "digits", "--calib-batches", "64"],
    "int8 --int8-full-range": ["--int8", "--calib-data", "digits", "--calib-batches", "16", "--int8-full-range"],
}


def digits_int8(checkpoint: Path | None, seeds: list[int], work: Path, say) -> dict:
    """Top-1 of quickstart digits models in PyTorch, ONNX fp32 and ONNX int8 (several settings) on the held-out
    split; per seed (or for ``checkpoint`` alone)."""
    import contextlib
    import io
    import json

    from flexbone.cli import main as cli

    models = {"checkpoint": checkpoint} if checkpoint else {}
    for seed in ([] if checkpoint else seeds):
        say(f"digits: training resnet8s_tiny with the quickstart recipe, seed {seed} (flexbone train)")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli(["train", "--recipe", "quickstart", "--no-progress", "--train.output_dir", str(work / "runs"),
                      "--train.run_name", f"digits-{seed}", "--train.seed", str(seed)])
        assert rc == 0, "quickstart training failed"
        models[f"seed {seed}"] = work / "runs" / f"digits-{seed}" / "model.safetensors"
        say(f"digits: trained in {time.perf_counter() - t0:.0f} s")
    results = {}
    for key, ckpt in models.items():
        res = {"checkpoint": str(ckpt)}
        for label, extra in (("onnx fp32", []), *DIGITS_INT8.items()):
            out = work / f"digits-{key}-{label}.onnx".replace(" ", "_")
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--fold-bn", "--dynamic-batch",
                            *extra, "--out", str(out)]) == 0
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert cli(["validate", "--onnx", str(out), "--data", "digits", "--workers", "0", "--device", "cpu",
                            "--json"]) == 0
            stats = json.loads(buf.getvalue().strip().splitlines()[-1])
            res[label] = {"top1": stats["top1"], "loss": stats["loss"], "images": stats["images"]}
            if label != "onnx fp32":
                res[label]["top1_qdq_in_float"] = _top1_qdq_in_float(out)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert cli(["validate", "--checkpoint", str(ckpt), "--data", "digits", "--workers", "0", "--device", "cpu",
                        "--json"]) == 0
        res["pytorch"] = {"top1": json.loads(buf.getvalue().strip().splitlines()[-1])["top1"]}
        for label in DIGITS_INT8:
            res[label]["top1_change"] = res[label]["top1"] - res["onnx fp32"]["top1"]
        say(f"digits {key}: top-1 pytorch {res['pytorch']['top1']:.2f}, onnx fp32 {res['onnx fp32']['top1']:.2f}, "
            + ", ".join(f"{label} {res[label]['top1_change']:+.2f}" for label in DIGITS_INT8))
        results[key] = res
    return results


def _top1_qdq_in_float(path: Path) -> float:
    """Top-1 (%) on the digits test split of an int8 QDQ model that onnxruntime runs in float
    (``session.disable_quant_qdq``: no integer kernels, the quantize / dequantize pairs computed as such)."""
    import json

    import onnxruntime as ort

    from flexbone.config.schema import DataConfig
    from flexbone.data.datasets import digits_dataset
    from flexbone.data.transforms import build_eval_transform

    side = json.loads(Path(f"{path}.json").read_text())
    size = side["input_size"][-1]
    cfg = DataConfig(img_size=size, test_img_size=size, crop_pct=side["crop_pct"], interpolation=side["interpolation"],
                     mean=tuple(side["mean"]), std=tuple(side["std"]))
    data = digits_dataset(False, cfg.digits_test_fraction, cfg.digits_split_seed, build_eval_transform(cfg))
    x = torch.stack([data[i][0] for i in range(len(data))]).numpy()
    y = np.array([data[i][1] for i in range(len(data))])
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return float((session.run(None, {side["input_name"]: x})[0].argmax(1) == y).mean() * 100)


def int8_variants(name: str, threads: int, rounds: int, work: Path, say) -> list[dict]:
    """The fp32 model and int8 models made with onnxruntime's other settings, timed side by side at batch 1, with
    their op counts after onnxruntime's graph optimisation (what actually runs)."""
    import collections

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from flexbone.export.quantize import _Reader

    model, _, display, subnet = build(name)
    folder = work / f"variants-{name}"
    folder.mkdir(parents=True)
    fp32 = folder / "fp32.onnx"
    say(f"int8 variants of {display}: exporting and quantizing")
    export_model(ExportSource(model, name, subnet=subnet or None), fp32, "onnx", img_size=224, fold=True,
                 log=lambda s: None)
    pre, pre_kept = folder / "pre.onnx", folder / "pre-no-optimisation.onnx"
    quant_pre_process(str(fp32), str(pre))
    quant_pre_process(str(fp32), str(pre_kept), skip_optimization=True)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(4)]  # ranges only: speed
    variants = {  # label -> (source graph, quantize_static arguments)
        "int8 (flexbone's default)": (pre, {}),
        "int8 per-tensor weights": (pre, dict(per_channel=False)),
        "int8 QOperator format": (pre, dict(quant_format=QuantFormat.QOperator)),
        "int8 without quant_pre_process": (fp32, {}),
        "int8, pre-processed keeping HardSwish": (pre_kept, {}),
    }
    paths = {"fp32 (flexbone onnx)": fp32}
    for i, (label, (src, kwargs)) in enumerate(variants.items()):
        paths[label] = folder / f"int8-{i}.onnx"
        args = {**dict(quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                       activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8), **kwargs}
        quantize_static(str(src), str(paths[label]), _Reader("image", calib), **args)
    x = torch.from_numpy(rng.standard_normal((1, 3, 224, 224)).astype(np.float32))
    steps, ops = {}, {}
    for label, path in paths.items():
        optimised = path.with_suffix(".optimised.onnx")
        steps[label] = ort_step(path, x, threads, optimised)
        ops[label] = collections.Counter(n.op_type for n in onnx.load(str(optimised)).graph.node)
    for step in steps.values():
        step()
    say(f"int8 variants of {display}: {rounds} interleaved rounds of {len(steps)} models")
    times = {k: [] for k in steps}
    for i in range(rounds):
        for k in round_order(list(steps), i):
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = med["fp32 (flexbone onnx)"]
    rows = [{"model": display, "variant": k, "median_ms": med[k], "ms": [t * 1e3 for t in times[k]],
             "vs_fp32": base / med[k], "ops": dict(ops[k])} for k in steps]
    say("  " + ", ".join(f"{k} {med[k]:.1f} ms" for k in steps))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=list(MODELS),
                   help=f"default: {' '.join(MODELS)} (none: no latency rows)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--digits-checkpoint", type=Path, default=None,
                   help="a quickstart model.safetensors (default: train one per --digits-seeds seed, ~1 min each)")
    p.add_argument("--digits-seeds", nargs="+", type=int, default=[0, 1, 2], help="default: 0 1 2")
    p.add_argument("--int8-variants", nargs="*", default=["mobilenetv3_large_100"],
                   help="models whose int8 settings are compared at batch 1 (default: mobilenetv3_large_100; "
                        "none: skip)")
    p.add_argument("--skip-digits", action="store_true")
    p.add_argument("--digits-only", action="store_true",
                   help="keep the latency rows (and int8 variants) of OUT_DIR/deploy_cpu.json and run only the "
                        "digits part (when that part of a run failed); the report says so")
    add_run_options(p, HERE / "results", warmup=2, repeats=12, repeats_help="timed rounds at batch 1 (larger "
                                                                              "batches: a quarter, at least 3)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    env = environment()
    env["started_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    env["command"] = " ".join([".venv/bin/python", "benchmarks/bench_deploy.py", *(argv or sys.argv[1:])])
    import onnxruntime

    env["onnxruntime_version"] = onnxruntime.__version__
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    rows: list[dict] = []
    variants: list[dict] = []
    digits = None

    def report(done: bool) -> None:  # after every model too: an interrupted run keeps what it measured
        write_report(args.out_dir, "deploy_cpu", *render(args, env, rows, variants, digits, load_before,
                                                         os.getloadavg(), time.perf_counter() - t_start, done),
                     echo=done)

    if args.digits_only:
        import json

        previous = json.loads((args.out_dir / "deploy_cpu.json").read_text())
        rows, env, variants = previous["rows"], previous["environment"], previous.get("int8_variants", [])
        env["digits_part"] = (f"run separately at {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
                              f"with `{' '.join(['benchmarks/bench_deploy.py', *(argv or sys.argv[1:])])}`")
        load_before = tuple(previous["load_before"])
        t_start -= previous["wall_s"]  # the wall time reported: both parts together
        args.models, args.int8_variants = [], []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        for name in args.models:
            rows += measure_model(name, args.batch_sizes, args.img_size, args.threads, args.warmup, args.repeats,
                                  Path(tmp), say)
            report(False)
        for name in args.int8_variants:
            variants += int8_variants(name, args.threads, max(args.repeats, 3) * 3, Path(tmp), say)
            report(False)
        digits = None if args.skip_digits else digits_int8(args.digits_checkpoint, args.digits_seeds, Path(tmp), say)
    report(True)
    return 0


def _points(x: float) -> str:
    """A signed change in points, without the '-0.00' of a float's rounding error."""
    return f"{round(x, 6) + 0.0:+.2f}"


def render(args, env, rows, variants, digits, load_before, load_after, wall, done) -> tuple[dict, str]:
    """The results as (JSON data, markdown)."""
    table = [[r["model"], r["batch_size"], r["case"], f"{r['median_ms']:.1f}", f"{r['vs_timm_eager']:.2f}",
              f"{r['vs_hand_onnx']:.2f}", f"{r['vs_flexbone_onnx']:.2f}"] for r in rows]
    md = report_header("Deployment on the CPU: exported artifacts vs timm eager and timm exported by hand", env,
                       args.threads, load_before, load_after, packages=("timm", "onnxruntime"))
    md += ["", f"Inputs {args.img_size} px, fp32 except the int8 rows; weights random (the same in timm's and "
           f"flexbone's models); {args.warmup} warm-up and {args.repeats} timed interleaved rounds at batch 1, "
           f"1 warm-up and a quarter of the rounds (at least 3) at larger batches; median per case. Columns 'x' "
           f"are speed-ups (median time of the reference / median time of the row): > 1 means the row is faster.",
           "", f"Noise: the machine's {os.cpu_count()} cores were shared with other engineers' jobs during the run "
           f"(load average above; a load above the core count means runnable jobs waited). Under such load the "
           f"figures move between runs by far more than a few percent, the multi-threaded ones most (a thread "
           f"that waits at a barrier while its sibling is descheduled). Wall time of the whole run: "
           f"{wall / 60:.1f} min.", ""]
    md += [format_markdown(["model", "batch", "case", "median ms", "x timm eager", "x hand-onnx", "x flexbone onnx"],
                           table), ""]
    if variants:
        shown = ("QLinearConv", "Conv", "QuantizeLinear", "DequantizeLinear", "HardSigmoid", "HardSwish")
        md += ["## int8 settings and speed (batch 1)", "",
               "The same model quantized with onnxruntime's other settings, timed side by side with the fp32 "
               "model (interleaved rounds; random calibration inputs, which change the ranges, not the graph). "
               "The op counts are those of the graph onnxruntime runs after its own optimisation (saved with "
               "`optimized_model_filepath`): where two variants run the same graph, their time difference is "
               "noise.", "",
               format_markdown(["model", "variant", "median ms", "x fp32", *shown],
                               [[v["model"], v["variant"], f"{v['median_ms']:.1f}", f"{v['vs_fp32']:.2f}",
                                 *(v["ops"].get(op, 0) for op in shown)] for v in variants]), ""]
    if digits:
        first = next(iter(digits.values()))
        labels = list(DIGITS_INT8)
        md += ["## int8 accuracy: the quickstart digits model", "",
               f"`resnet8s_tiny` trained with `flexbone train --recipe quickstart --train.seed S`, exported with "
               f"`flexbone export --fold-bn --dynamic-batch` in fp32 and with `--int8 --calib-data digits` (16 or 64 "
               f"calibration batches of 8 training images: two calibration samples; `--int8-full-range`: 8-bit "
               f"weights, flexbone's default before this run), evaluated with `flexbone validate --onnx --data "
               f"digits` on the held-out split ({first['onnx fp32']['images']} images: one image is "
               f"{100 / first['onnx fp32']['images']:.2f} points). 'in float': the same int8 file run by onnxruntime "
               f"with `session.disable_quant_qdq` (the quantize / dequantize arithmetic in float, no integer "
               f"kernels).", "",
               format_markdown(["model", "pytorch top-1 %", "onnx fp32 top-1 %",
                                *[f"{label}: change (in float)" for label in labels]],
                               [[key, f"{d['pytorch']['top1']:.2f}", f"{d['onnx fp32']['top1']:.2f}",
                                 *[f"{_points(d[label]['top1_change'])} "
                                   f"({_points(d[label]['top1_qdq_in_float'] - d['onnx fp32']['top1'])})"
                                   for label in labels]]
                                for key, d in digits.items()]), ""]
        for label in labels:
            changes = [d[label]["top1_change"] for d in digits.values()]
            md += [f"* {label}: top-1 change {_points(min(changes))} to {_points(max(changes))} points, mean "
                   f"{_points(statistics.mean(changes))}."]
        md += [""] + ([f"(This part was {env['digits_part']}, after the latency part's run.)", ""]
                      if env.get("digits_part") else [])
    if not done:
        md += ["**Partial: the run was still going (or was stopped) when this was written.**", ""]
    data = {"environment": env, "threads": args.threads, "load_before": load_before, "load_after": load_after,
            "wall_s": wall, "complete": done, "rows": rows, "int8_variants": variants, "digits_int8": digits}
    return data, "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
