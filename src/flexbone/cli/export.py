"""`flexbone export --model NAME [--checkpoint C] | --subnet DIR --format onnx|pt2|safetensors --out PATH`.

Writes a deployment artifact checked against the PyTorch model (ONNX in onnxruntime, pt2 after
``torch.export.load``, safetensors after rebuilding with ``create_model``) and its sidecar ``PATH.json``
(input size, normalisation, class names, how it was made). Options are checked and ``--out`` is probed
before any work; the artifact appears only when complete and checked.
"""
from __future__ import annotations

import argparse

from ..options import int_range

EPILOG = """examples:
  flexbone export --checkpoint runs/resnet8s_tiny-quickstart-*/model.safetensors --format onnx --out digits.onnx
  flexbone export --model resnet50 --checkpoint resnet50.pth --format onnx --fold-bn --dynamic-batch --out r50.onnx
  flexbone export --subnet my_subnet/ --format pt2 --img-size 192 --out subnet.pt2
  flexbone export --checkpoint model.safetensors --format onnx --int8 --calib-data photos/ --out model-int8.onnx
  flexbone export --checkpoint snnet-r18-r50/ --config 4 --format onnx --fold-bn --out stitched.onnx
  flexbone export --subnet found/latency-15ms --format onnx --out chosen.onnx   (an SN-Net search's budget folder)
"""


# flexbone.export's defaults, repeated here because importing it imports torch, which `flexbone --help` must not
# (tests/test_faults.py checks that the two agree)
FORMATS = ("onnx", "pt2", "safetensors")  # flexbone.export.artifact.FORMATS
DEFAULT_OPSET = 17  # flexbone.export.onnx.DEFAULT_OPSET
DEFAULT_CALIB_BATCHES = 16  # flexbone.export.artifact.DEFAULT_CALIB_BATCHES
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # flexbone.export.quantize.CALIBRATION_METHODS
DEFAULT_CALIBRATION = "minmax"  # flexbone.export.quantize.Int8Options.calibration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model or sub-network to ONNX / torch.export / safetensors, checked",
                       description="Export a model (a registered name with a checkpoint, or a saved sub-network) as "
                                   "a deployment artifact, checked against the PyTorch model on a random and a real "
                                   "input (max abs difference <= 1e-4 in fp32, else nothing is written), plus a "
                                   "sidecar OUT.json with the preprocessing and class names.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="NAME", help="registered model name (default: the checkpoint's); alone, "
                                                   "random weights (for latency tests)")
    p.add_argument("--checkpoint", metavar="PATH", help="weights (.safetensors / .pt / .pth, flexbone run outputs, "
                                                        "timm / torchvision state dicts)")
    p.add_argument("--subnet", metavar="DIR", help="a sub-network folder written by save_subnet / flexbone search")
    p.add_argument("--config", type=int_range(0), default=None, metavar="ID",
                   help="with an SN-Net --checkpoint (a flexbone stitch folder or a run that trained one): the "
                        "configuration to export (ids as flexbone subnets / search list them)")
    # a free string, not choices=: an unknown format gets flexbone's own one-line message
    p.add_argument("--format", required=True, metavar="|".join(FORMATS), help="artifact format")
    p.add_argument("--out", required=True, metavar="PATH", help="the artifact to write (its sidecar: PATH.json)")
    p.add_argument("--img-size", type=int_range(1, 4096), default=None, metavar="N",
                   help="input resolution (default: the checkpoint's evaluation size, else the model's)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int_range(1, 4096), default=1, metavar="N",
                       help="the artifact's fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="any batch size (onnx, pt2)")
    p.add_argument("--fold-bn", action="store_true", help="fold batch norms into the convs before exporting")
    p.add_argument("--opset", type=int_range(7), default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--int8", action="store_true",
                   help="post-training static int8 quantization with onnxruntime's quantize_static (after its "
                        "quant_pre_process): QDQ, uint8 activations, per-channel int8 weights in a 7-bit range, "
                        "MinMax calibration; needs --calib-data")
    p.add_argument("--calib-data", metavar="DIR|digits", help="images to calibrate int8 on: a folder (any layout) "
                                                              "or 'digits'")
    p.add_argument("--calib-batches", type=int_range(1), default=DEFAULT_CALIB_BATCHES, metavar="N",
                   help=f"calibration batches of the artifact's batch size (of 8 images with --dynamic-batch), spread "
                        f"over --calib-data (default {DEFAULT_CALIB_BATCHES})")
    p.add_argument("--int8-calibration", default=DEFAULT_CALIBRATION, metavar="|".join(CALIBRATION_METHODS),
                   help=f"how activation ranges are set from the calibration images (default {DEFAULT_CALIBRATION}:"
                        f" the observed range; entropy and percentile clip outliers)")
    p.add_argument("--int8-per-tensor", action="store_true",
                   help="one weight scale per tensor instead of per output channel")
    p.add_argument("--int8-full-range", action="store_true",
                   help="full 8-bit weights instead of 7-bit: for CPUs with VNNI and ARM; on x86 without VNNI "
                        "(AVX2) onnxruntime's int16 sums saturate (the digits model lost ~1 top-1 point)")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N", help="torch threads while exporting")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..export.artifact import export_model, sidecar_path, validate_request
    from ..export.onnx import MIN_OPSET, max_opset, require_onnxruntime
    from ..export.quantize import Int8Options
    from ..export.source import load_source
    from ..outputs import check_writable

    # every option and the output before any model is built
    validate_request(args.format, fold=args.fold_bn, int8=args.int8, calib_data=args.calib_data,
                     batch_size=args.batch_size, dynamic_batch=args.dynamic_batch)
    int8_options = Int8Options(calibration=args.int8_calibration, per_channel=not args.int8_per_tensor,
                               reduce_range=not args.int8_full_range)
    int8_flags = [f for f, v in (("--int8-calibration", args.int8_calibration != DEFAULT_CALIBRATION),
                                 ("--int8-per-tensor", args.int8_per_tensor),
                                 ("--int8-full-range", args.int8_full_range)) if v]
    if int8_flags and not args.int8:
        raise ConfigError(f"{int8_flags[0]} sets how --int8 quantizes: add --int8")
    if args.format == "onnx" and not MIN_OPSET <= args.opset <= max_opset():
        raise ConfigError(f"--opset must be in [{MIN_OPSET}, {max_opset()}] for torch {torch.__version__}, "
                          f"got {args.opset}")
    if args.format == "onnx":
        require_onnxruntime()
    if args.dynamic_batch and args.format == "safetensors":  # weights have no batch size: say so, not ignore it
        raise ConfigError("--dynamic-batch applies to onnx and pt2; a safetensors file holds weights, no batch size")
    if args.subnet is None and args.model is None and args.checkpoint is None:
        raise ConfigError("nothing to export: give --model NAME (with --checkpoint C) or --subnet DIR")
    check_writable(args.out)
    check_writable(sidecar_path(args.out))
    if args.threads:
        torch.set_num_threads(args.threads)

    sized = {}
    if args.model and args.checkpoint is None and args.subnet is None and args.img_size:
        from ..bench.complexity import sized_kwargs

        sized = sized_kwargs(args.model, args.img_size)  # a ViT / Swin / MaxViT built for --img-size
    source = load_source(args.model, args.checkpoint, args.subnet, config=args.config, **sized)
    if args.checkpoint is None and args.subnet is None:
        print(f"flexbone: note: no --checkpoint: exporting {args.model} with random weights")
    export_model(source, args.out, args.format, img_size=args.img_size, batch_size=args.batch_size,
                 dynamic_batch=args.dynamic_batch, fold=args.fold_bn, opset=args.opset, int8=args.int8,
                 calib_data=args.calib_data, calib_batches=args.calib_batches, int8_options=int8_options)
    print(f"flexbone: wrote {args.out} and {sidecar_path(args.out)}")
    return 0
