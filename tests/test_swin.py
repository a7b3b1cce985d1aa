"""Swin Transformer: strict timm parity (state dict, outputs, parameter counts, features) and Swin anchors in SN-Net."""
from __future__ import annotations

import pytest
import torch

import flexbone
from flexbone.errors import ConfigError
from flexbone.models.resnet import ResNet
from flexbone.models.swin import VARIANTS, SwinTransformer
from flexbone.stitch import SNNet

from _helpers import max_abs_diff, num_params, randomize_

timm = pytest.importorskip("timm")


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_and_state_dict_names_match_timm(name):
    from flexbone.bench.complexity import build_on_meta

    ours = build_on_meta(name)
    with torch.device("meta"):
        ref = timm.create_model(name)
    assert num_params(ours) == num_params(ref)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert [dict(f) for f in ours.feature_info] == [dict(f) for f in ref.feature_info]
    for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier"):
        assert ours.default_cfg[key] == ref.pretrained_cfg[key], (name, key)


@pytest.mark.parity
@pytest.mark.parametrize("size", [64, pytest.param(96, marks=pytest.mark.slow)])
def test_outputs_and_features_match_timm(size):
    # 64: stage maps 16/8/4/2 (padded windows, shifts, then maps smaller than a window); 96: 24/12/6/3
    name = "swin_tiny_patch4_window7_224"
    ref = randomize_(timm.create_model(name, img_size=size, num_classes=9)).eval()
    ours = flexbone.create_model(name, img_size=size, num_classes=9).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0
        assert max_abs_diff(ours(x), expected) <= 1e-5
        assert max_abs_diff(ours.forward_head(ours.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5
        (f1, i1), (f2, i2) = ours.forward_intermediates(x, [0, 3], norm=True), ref.forward_intermediates(x, [0, 3], norm=True)
        assert max_abs_diff(f1, f2) <= 1e-5 and all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(i1, i2))
        feats = flexbone.create_model(name, img_size=size, features_only=True).eval()
        feats.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("head")}, strict=True)
        maps = feats(x)  # channels-last, as timm's Swin feature extractor
        ref_feats = timm.create_model(name, img_size=size, features_only=True).eval()
        ref_feats.load_state_dict({k.replace("layers.", "layers_", 1): v for k, v in feats.state_dict().items()
                                   if not k.startswith("norm.")})
        ref_maps = ref_feats(x)
        assert feats.output_fmt == ref_feats.output_fmt == "NHWC"
        assert [m.shape[-1] for m in maps] == [96, 192, 384, 768]
        assert all(a.shape == b.shape and max_abs_diff(a, b) <= 1e-5 for a, b in zip(maps, ref_maps))
        nchw = ours.forward_intermediates(x, intermediates_only=True)  # timm's forward_intermediates: NCHW
        assert all(max_abs_diff(a.permute(0, 3, 1, 2), b) == 0 for a, b in zip(maps, nchw))


@pytest.mark.parity
def test_train_mode_drop_path_matches_timm():
    ref = timm.create_model("swin_tiny_patch4_window7_224", img_size=64, drop_path_rate=0.2)
    ours = flexbone.create_model("swin_tiny_patch4_window7_224", img_size=64, drop_path_rate=0.2)
    ours.load_state_dict(ref.state_dict(), strict=True)

    def rates(model):
        return [getattr(b.drop_path1, "drop_prob", 0.0) for s in model.layers for b in s.blocks]

    assert rates(ours) == pytest.approx(rates(ref))


def test_bad_input_is_a_clear_error():
    model = flexbone.create_model("swin_tiny_patch4_window7_224", img_size=64)
    with pytest.raises(ConfigError, match="img_size"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(ConfigError, match="global_pool"):
        flexbone.create_model("swin_tiny_patch4_window7_224", global_pool="token")


# ------------------------------------------------------------------------------ Swin anchors in SN-Net
def test_resnet18_swin_tiny_stitch_into_8_configurations():
    from flexbone.bench.complexity import build_on_meta

    with torch.device("meta"):
        net = SNNet([build_on_meta("resnet18"), build_on_meta("swin_tiny_patch4_window7_224")])
    assert net.rule == "hierarchical" and net.num_configs == 8
    # CNN -> transformer: a 1x1 conv (with bias) 128 -> 192 in stage 1 and 256 -> 384 in stage 2
    shapes = {k: [tuple(l.transform.weight.shape) for l in v] for k, v in net.stitch_layers.items()}
    assert shapes == {"stage1_0to1": [(192, 128, 1, 1)], "stage2_0to1": [(384, 256, 1, 1)] * 2}


def test_cnn_to_swin_stitches_extract_exactly():
    torch.manual_seed(0)
    cnn = randomize_(ResNet(block="basic", layers=(1, 2, 2, 1), channels=(8, 8, 16, 16), num_classes=5)).eval()
    swin = randomize_(SwinTransformer(img_size=32, embed_dim=16, depths=(1, 2, 3, 1), num_heads=(1, 2, 2, 2),
                                      window_size=2, num_classes=5)).eval()
    net = SNNet([cnn, swin]).eval()
    assert net.num_configs == 2 + 1 + 2  # stage 1: equal depth 2 -> (0, 1); stage 2: 2 into 3 -> (0, 1), (1, 2)
    x = torch.randn(2, 3, 32, 32)
    net.init_stitches(torch.randn(12, 3, 32, 32))
    with torch.no_grad():
        net.set_active(1)
        assert torch.equal(net(x), swin(x))
        for i in range(net.num_configs):
            net.set_active(i)
            assert max_abs_diff(net.extract(i).eval()(x), net(x)) <= 1e-6
