"""Deployment: BN folding, export to ONNX / torch.export / safetensors with a checked artifact, int8."""
from .fold import find_conv_bn_pairs, fold_bn

__all__ = ["find_conv_bn_pairs", "fold_bn"]
