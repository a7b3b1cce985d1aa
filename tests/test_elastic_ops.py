"""Dynamic layers and elastic blocks vs the reference ``ofa`` package's dynamic ops.

Each flexbone dynamic layer gets the reference layer's (randomised) weights, both are put in the same
active configuration, and their outputs must agree; extraction into a static layer must reproduce the
dynamic one exactly.
"""
import copy
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from flexbone.elastic.ops import (DynamicBatchNorm2d, DynamicBottleneck, DynamicConv2d, DynamicDepthwiseConv2d,
                                  DynamicInvertedResidual, DynamicLinear, DynamicSqueezeExcite, ElasticDepth,
                                  copy_active, leading_block)
from flexbone.layers.inverted_residual import InvertedResidual, MobileSqueezeExcite
from flexbone.models.resnet import Bottleneck, downsample_avg, downsample_conv

from _helpers import max_abs_diff, randomize_

dyn_op = pytest.importorskip("ofa.imagenet_classification.elastic_nn.modules.dynamic_op")
dyn_layers = pytest.importorskip("ofa.imagenet_classification.elastic_nn.modules.dynamic_layers")

pytestmark = pytest.mark.parity


def _load(ours: nn.Module, ref: nn.Module, rename: dict[str, str]) -> None:
    """Copy ``ref``'s state into ``ours``; ``rename`` maps reference module prefixes to ours (longest first)."""
    state = {}
    for key, value in ref.state_dict().items():
        for old in sorted(rename, key=len, reverse=True):
            if key.startswith(old):
                key = rename[old] + key[len(old):]
                break
        state[key] = value
    ours.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------------------ layers
def test_leading_block_gradient_equals_slicing():
    """The one-copy backward of a weight slice gives what autograd gives for plain indexing."""
    weight = torch.randn(6, 5, 3, 3, requires_grad=True)
    g = torch.randn(4, 2, 3, 3)
    block = leading_block(weight, (4, 2))
    assert block.shape == (4, 2, 3, 3) and block.is_contiguous() and torch.equal(block, weight[:4, :2])
    (expected,) = torch.autograd.grad((weight[:4, :2] * g).sum(), weight)
    (got,) = torch.autograd.grad((block * g).sum(), weight)
    assert torch.equal(got, expected)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: leading_block(w, (3, 1)), (x,))


@pytest.mark.parametrize("in_chs,out_chs,stride", [(10, 8, 2), (16, 24, 1), (12, None, 1)])
def test_dynamic_conv_matches_reference(in_chs, out_chs, stride):
    ref = randomize_(dyn_op.DynamicConv2d(16, 24, kernel_size=3, stride=stride))
    ours = DynamicConv2d(16, 24, 3, stride=stride)
    _load(ours, ref, {"conv.": ""})
    ref.active_out_channel = out_chs or 24
    ours.active_out_channels = out_chs
    x = torch.randn(2, in_chs, 9, 9)
    y = ours(x)
    assert y.shape[1] == (out_chs or 24)
    assert max_abs_diff(y, ref(x)) <= 1e-6
    static = nn.Conv2d(in_chs, out_chs or 24, 3, stride=stride, padding=1, bias=False)
    ours.copy_to(static)
    assert torch.equal(static(x), y)


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_elastic_kernel_matches_reference(kernel, stride):
    # random (not identity) transformation matrices: the 7->5->3 chain must be applied as the reference does
    ref = randomize_(dyn_op.DynamicSeparableConv2d(16, [3, 5, 7], stride=stride))
    ours = DynamicDepthwiseConv2d(16, (3, 5, 7), stride=stride)
    _load(ours, ref, {"conv.": ""})
    ref.active_kernel_size = ours.active_kernel_size = kernel
    x = torch.randn(2, 12, 11, 11)  # 12 of 16 channels
    y = ours(x)
    assert max_abs_diff(y, ref(x)) <= 1e-6
    static = nn.Conv2d(12, 12, kernel, stride=stride, padding=kernel // 2, groups=12, bias=False)
    ours.copy_to(static)
    assert torch.equal(static(x), y)


def test_fresh_kernel_transform_is_the_centre_crop():
    # OFA: the matrices start as identities, so a new supernet's 3x3 kernel is the centre of its 7x7 one
    op = DynamicDepthwiseConv2d(8, (3, 5, 7))
    assert sorted(n for n, _ in op.named_parameters()) == ["5to3_matrix", "7to5_matrix", "weight"]
    op.active_kernel_size = 3
    x = torch.randn(1, 8, 10, 10)
    expected = F.conv2d(x, op.weight[:, :, 2:5, 2:5], padding=1, groups=8)
    assert max_abs_diff(op(x), expected) <= 1e-6


@pytest.mark.parametrize("channels", [10, 16])
@pytest.mark.parametrize("train", [True, False])
def test_dynamic_batchnorm_matches_reference(channels, train):
    ref = randomize_(dyn_op.DynamicBatchNorm2d(16))
    ours = DynamicBatchNorm2d(16)
    _load(ours, ref, {"bn.": ""})
    ref.train(train), ours.train(train)
    x = torch.randn(4, channels, 5, 5) * 3 + 1
    assert max_abs_diff(ours(x), ref(x)) <= 1e-5
    # in training mode the leading slice of the running statistics moves, the rest stays
    for k, v in ref.state_dict().items():
        assert torch.allclose(ours.state_dict()[k.removeprefix("bn.")].float(), v.float(), atol=1e-6), k
    if train and channels < 16:
        fresh = randomize_(dyn_op.DynamicBatchNorm2d(16))
        assert torch.equal(ours.running_mean[channels:], fresh.bn.running_mean[channels:])
        assert not torch.allclose(ours.running_mean[:channels], fresh.bn.running_mean[:channels])


def test_dynamic_batchnorm_copies_its_slice():
    ours = randomize_(DynamicBatchNorm2d(16)).eval()
    static = nn.BatchNorm2d(6).eval()
    ours.copy_to(static)
    x = torch.randn(2, 6, 3, 3)
    assert torch.equal(static(x), ours(x))


@pytest.mark.parametrize("in_features", [20, 32])
def test_dynamic_linear_matches_reference(in_features):
    ref = randomize_(dyn_op.DynamicLinear(32, 10))
    ours = DynamicLinear(32, 10)
    _load(ours, ref, {"linear.": ""})
    x = torch.randn(3, in_features)
    assert max_abs_diff(ours(x), ref(x)) <= 1e-6
    static = nn.Linear(in_features, 10)
    ours.copy_to(static)
    assert torch.equal(static(x), ours(x))


@pytest.mark.parametrize("channels", [24, 32])
def test_dynamic_squeeze_excite_matches_reference(channels):
    ref = randomize_(dyn_op.DynamicSE(32))
    ours = DynamicSqueezeExcite(32)
    _load(ours, ref, {"fc.reduce.": "conv_reduce.", "fc.expand.": "conv_expand."})
    x = torch.randn(2, channels, 6, 6)
    assert max_abs_diff(ours(x), ref(x)) <= 1e-6
    # extraction into the static MobileNetV3 squeeze-excite
    static = MobileSqueezeExcite(channels)
    copy_active(static, ours)
    assert max_abs_diff(static(x), ours(x)) <= 1e-6


# ------------------------------------------------------------------------------------------ blocks
_BOTTLENECK_RENAME = {
    "conv1.conv.conv.": "conv1.", "conv1.bn.bn.": "bn1.", "conv2.conv.conv.": "conv2.", "conv2.bn.bn.": "bn2.",
    "conv3.conv.conv.": "conv3.", "conv3.bn.bn.": "bn3.",
}


def _bottleneck_pair(mode: str):
    ref = dyn_layers.DynamicResNetBottleneckBlock([16, 24], [32, 48], expand_ratio_list=[0.2, 0.25, 0.35], stride=2,
                                                  downsample_mode={"avg": "avgpool_conv", "conv": "conv"}[mode])
    randomize_(ref)
    ours = DynamicBottleneck(24, 48, (0.2, 0.25, 0.35), stride=2, downsample=mode)
    shortcut = {"avg": {"downsample.conv.conv.": "downsample.1.", "downsample.bn.bn.": "downsample.2."},
                "conv": {"downsample.conv.conv.": "downsample.0.", "downsample.bn.bn.": "downsample.1."}}[mode]
    _load(ours, ref, {**_BOTTLENECK_RENAME, **shortcut})
    return ref, ours


@pytest.mark.parametrize("mode", ["avg", "conv"])
@pytest.mark.parametrize("train", [False, True])
def test_bottleneck_matches_reference_and_extracts(mode, train):
    ref, ours = _bottleneck_pair(mode)
    ref.active_out_channel = ours.active_out_channels = 32
    ref.active_expand_ratio = ours.active_expand_ratio = 0.2
    ref.train(train), ours.train(train)
    x = torch.randn(2, 16, 8, 8)
    static = Bottleneck(16, 8, stride=2, mid_chs=ours.active_mid_channels(), out_chs=32,
                        downsample=(downsample_avg if mode == "avg" else downsample_conv)(16, 32, 1, stride=2))
    copy_active(static, ours)  # before the train-mode forward moves the running statistics
    static.train(train)
    y = ours(x)
    assert y.shape == (2, 32, 4, 4)
    assert max_abs_diff(y, ref(x)) <= 1e-5
    assert max_abs_diff(static(x), y) <= 1e-6
    # OFA's rule: the middle width is relative to the *output* width
    assert ours.active_mid_channels() == ref.active_middle_channels == 8


@pytest.mark.parametrize("expand_stage", [0, 1, 2])
def test_bottleneck_channel_reorganisation_matches_reference(expand_stage):
    ref, ours = _bottleneck_pair("avg")
    ref.eval(), ours.eval()
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        before, before_conv2 = ours(x), ours.conv2.weight.clone()
        ref.re_organize_middle_weights(expand_ratio_stage=expand_stage)
        ours.reorganize_channels(expand_stage)
        assert not torch.equal(ours.conv2.weight, before_conv2)  # random weights: the order does change
        # the full block computes the same function (up to float summation order) ...
        assert max_abs_diff(ours(x), before) <= 1e-5
        # ... and the weights were permuted exactly as the reference permutes them
        mapped = copy.deepcopy(ours)
        _load(mapped, ref, {**_BOTTLENECK_RENAME, "downsample.conv.conv.": "downsample.1.",
                            "downsample.bn.bn.": "downsample.2."})
        for k, v in mapped.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), k
        # a smaller expand ratio now keeps the most important channels: same outputs as the reference
        ref.active_expand_ratio = ours.active_expand_ratio = 0.2
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5


def test_inverted_residual_matches_reference_and_extracts():
    ref = randomize_(dyn_layers.DynamicMBConvLayer([16], [16], kernel_size_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                                                   stride=1, act_func="h_swish", use_se=True)).eval()
    ours = DynamicInvertedResidual(16, 16, (3, 5, 7), (3, 4, 6), act_layer="hard_swish",
                                   se_layer=partial(DynamicSqueezeExcite)).eval()
    _load(ours, ref, {"inverted_bottleneck.conv.conv.": "conv_pw.", "inverted_bottleneck.bn.bn.": "bn1.",
                      "depth_conv.conv.conv.": "conv_dw.", "depth_conv.conv.": "conv_dw.", "depth_conv.bn.bn.": "bn2.",
                      "depth_conv.se.fc.reduce.": "se.conv_reduce.", "depth_conv.se.fc.expand.": "se.conv_expand.",
                      "point_linear.conv.conv.": "conv_pwl.", "point_linear.bn.bn.": "bn3."})
    ref.active_kernel_size = ours.active_kernel_size = 5
    ref.active_expand_ratio = ours.active_expand_ratio = 4
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        y = ours(x)
        assert max_abs_diff(y, ref(x) + x) <= 1e-5  # the reference wraps its layer in a residual block
        static = InvertedResidual(16, 64, 16, kernel_size=5, act_layer="hard_swish",
                                  se_layer=MobileSqueezeExcite).eval()
        copy_active(static, ours)
        assert max_abs_diff(static(x), y) <= 1e-6


def test_elastic_depth_runs_the_leading_blocks():
    blocks = [nn.Linear(4, 4) for _ in range(3)]
    stage = ElasticDepth(*blocks)
    x = torch.randn(2, 4)
    stage.active_depth = 2
    assert torch.equal(stage(x), blocks[1](blocks[0](x)))
    stage.active_depth = None
    assert torch.equal(stage(x), blocks[2](blocks[1](blocks[0](x))))
    stage.active_depth = 4
    with pytest.raises(ValueError, match="active_depth"):
        stage(x)


def test_copy_active_names_a_missing_layer():
    with pytest.raises(ValueError, match="no layer 'extra'"):
        copy_active(nn.ModuleDict({"extra": nn.Linear(1, 1)}), nn.Sequential(nn.Linear(2, 2)))
