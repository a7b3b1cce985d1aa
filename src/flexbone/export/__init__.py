"""Deployment: BN folding, export to ONNX / torch.export / safetensors with a checked artifact, int8.

    from flexbone.export import fold_bn, load_source, export_model, OnnxModel

    folded = fold_bn(model)                                   # conv + BN pairs folded; the original untouched
    source = load_source("resnet50", "resnet50.safetensors")  # or load_source(subnet="my_subnet/")
    export_model(source, "r50.onnx", "onnx", fold=True, dynamic_batch=True)   # + r50.onnx.json (the sidecar)
    export_model(source, "r50-int8.onnx", "onnx", int8=True, calib_data="photos/",
                 int8_options=Int8Options(calibration="percentile"))            # onnxruntime static int8
    logits = OnnxModel("r50.onnx")(images)                    # onnxruntime, called like the model

The heavy imports (onnx, onnxruntime, torch.onnx) happen only when an export or a session needs them.
"""
from .artifact import FORMATS, export_model, read_sidecar, sidecar_path
from .fold import find_conv_bn_pairs, fold_bn
from .quantize import Int8Options
from .runtime import OnnxModel, load_onnx_model
from .source import ExportSource, load_source

__all__ = ["FORMATS", "ExportSource", "Int8Options", "OnnxModel", "export_model", "find_conv_bn_pairs", "fold_bn",
           "load_onnx_model", "load_source", "read_sidecar", "sidecar_path"]
