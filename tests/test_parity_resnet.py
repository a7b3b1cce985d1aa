"""ResNet family vs the references nobody here wrote: timm and torchvision.

For every registered ResNet variant that timm also has: timm's state dict loads into ours with
strict=True, outputs agree in eval mode (fp32, max abs diff <= 1e-5) and parameter counts are equal.
torchvision's checkpoints load the same way.
"""
import pytest
import torch

import flexbone
from flexbone.models.resnet import VARIANTS

from _helpers import max_abs_diff, num_params, randomize_

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity

TIMM_NAMES = [n for n in VARIANTS if n in set(timm.list_models())]
BIG = {n for n in TIMM_NAMES if any(d in n for d in ("152", "200", "270", "350", "420", "101"))}


def test_every_standard_variant_has_a_timm_twin():
    # only flexbone's own small-image variants lack one
    assert set(VARIANTS) - set(TIMM_NAMES) == {"resnet10s", "resnet8s_tiny"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in TIMM_NAMES])
def test_timm_checkpoint_loads_and_matches(name, tmp_path):
    ref = randomize_(timm.create_model(name), keep_random_init=True).eval()
    ours = flexbone.create_model(name).eval()
    assert num_params(ours) == num_params(ref)
    # through a real file, as a user would (timm-style .pth); the big ones in memory to spare the disk
    path = ref.state_dict()
    if name not in BIG:
        path = tmp_path / f"{name}.pth"
        torch.save(ref.state_dict(), path)
    report = flexbone.load_checkpoint(ours, path, strict=True)
    assert report.ok
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5
        # the pooled features too (forward_head(pre_logits=True) is the embedding users take)
        assert max_abs_diff(ours.forward_head(ours.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "resnetrs50"])
def test_timm_parity_in_train_mode_and_dilated(name):
    # train-mode BN (batch statistics) and output_stride=16 dilation must agree as well
    ref = randomize_(timm.create_model(name, output_stride=16))
    ours = flexbone.create_model(name, output_stride=16)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert max_abs_diff(ours(x), ref(x)) <= 1e-5


TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if "101" in n or "152" in n else n
                                  for n in TORCHVISION])
def test_torchvision_checkpoint_loads_and_matches(name, tmp_path):
    ref = randomize_(getattr(torchvision.models, name)(weights=None), keep_random_init=True).eval()
    ours = flexbone.create_model(name).eval()
    assert num_params(ours) == num_params(ref)
    flexbone.load_checkpoint(ours, ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5


@pytest.mark.parametrize("name,expected", [
    # DESIGN.md reference counts (timm, 1000 classes)
    ("resnet18", 11_689_512), ("resnet50", 25_557_032), ("resnet50d", 25_576_264), ("seresnet50", 28_088_024),
    ("wide_resnet50_2", 68_883_240), ("resnext50_32x4d", 25_028_904), ("resnetrs50", 35_691_912),
])
def test_reference_parameter_counts(name, expected):
    assert num_params(flexbone.create_model(name)) == expected


@pytest.mark.slow
@pytest.mark.parametrize("depth,expected_m", [(101, 63.62), (152, 86.62), (200, 93.21), (270, 129.86),
                                              (350, 163.96), (420, 191.89)])
def test_resnet_rs_parameter_counts(depth, expected_m):
    # ResNet-RS paper / timm counts from DESIGN.md, in millions (two decimals)
    with torch.device("meta"):
        model = flexbone.create_model(f"resnetrs{depth}")
    assert round(num_params(model) / 1e6, 2) == expected_m


def test_features_match_timm_stage_outputs():
    # timm's five levels (the stride-2 stem first), and the four-level pyramid (layer1..layer4)
    ref = randomize_(timm.create_model("resnet50d", features_only=True)).eval()
    ours = flexbone.create_model("resnet50d", features_only=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x), strict=True):
            assert max_abs_diff(a, b) <= 1e-5
    assert ours.feature_info.channels() == ref.feature_info.channels()
    assert ours.feature_info.reduction() == ref.feature_info.reduction()
    pyramid = flexbone.create_model("resnet50d", features_only=True, out_indices=(-4, -3, -2, -1))
    assert pyramid.feature_info.reduction() == [4, 8, 16, 32] and pyramid.feature_info.module_name()[0] == "layer1"
