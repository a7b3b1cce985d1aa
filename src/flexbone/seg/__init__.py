"""Semantic segmentation: FFNet's heads over any zoo pyramid, image+mask data, mIoU, training and evaluation.

FFNet itself is a registered model family (:mod:`flexbone.models.ffnet`); this package puts its heads (and a
semantic FPN) on any model with ``features_only`` (registered as ``seg_<head>_<backbone>``), reads segmentation
data, and trains through the engine (the segmentation strategy) / evaluates.
"""
from .data import (CITYSCAPES_CLASSES, DIGITS_CLASSES, IGNORE_INDEX, DigitsSegmentation, SegDataError,
                   SegmentationPairs, apply_joint, build_datasets, build_loaders, cityscapes_label_map,
                   cityscapes_pairs, eval_transform, folder_pairs, read_mask, train_transform)
from .heads import HEADS, FFNetSegHead, FPNSegHead, create_head
from .metrics import ConfusionMatrix
from .model import (SegmentationModel, create_segmentation_model, is_segmentation_model, parse_seg_name,
                    upsample_logits)
from .training import SegmentationStrategy, build_segmentation_training, evaluate_segmentation, segmentation_loss
