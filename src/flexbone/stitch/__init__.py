"""Stitchable neural networks (SN-Net): pretrained anchors joined by stitching layers, one switch per budget."""
from .anchors import AnchorView, StitchStage, anchor_view
from .configs import StitchConfig, hierarchical_stitch_configs, paired_stitching, unpaired_stitching, vit_stitch_configs
from .layer import StitchingLayer
from .least_squares import averaged_stitch, least_squares_stitch
from .snnet import (SNNet, StitchedModel, build_snnet, is_snnet_checkpoint, load_snnet, load_snnet_checkpoint,
                    save_configuration, save_snnet)

__all__ = [
    "AnchorView", "SNNet", "build_snnet", "is_snnet_checkpoint", "load_snnet", "load_snnet_checkpoint",
    "save_configuration", "save_snnet", "StitchConfig", "StitchStage", "StitchedModel", "StitchingLayer", "anchor_view",
    "averaged_stitch", "hierarchical_stitch_configs", "least_squares_stitch", "paired_stitching",
    "unpaired_stitching", "vit_stitch_configs",
]
