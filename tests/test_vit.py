"""ViT / DeiT: strict timm parity (state dict, outputs, parameter counts, features) and DeiT anchors in SN-Net."""
from __future__ import annotations

import pytest
import torch

import flexbone
from flexbone.errors import ConfigError
from flexbone.models.vit import VARIANTS, VisionTransformer
from flexbone.stitch import SNNet

from _helpers import max_abs_diff, num_params, randomize_

timm = pytest.importorskip("timm")


def _timm_on_meta(name: str, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_and_state_dict_names_match_timm(name):
    from flexbone.bench.complexity import build_on_meta

    ours, ref = build_on_meta(name), _timm_on_meta(name)
    assert num_params(ours) == num_params(ref)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    for key in ("input_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier", "fixed_input_size"):
        assert ours.default_cfg[key] == ref.pretrained_cfg[key], (name, key)


@pytest.mark.parity
@pytest.mark.parametrize("name, size", [("deit_tiny_patch16_224", 32), ("vit_small_patch32_224", 64)])
def test_outputs_and_intermediates_match_timm(name, size):
    ref = randomize_(timm.create_model(name, img_size=size, num_classes=11)).eval()
    ours = flexbone.create_model(name, img_size=size, num_classes=11).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0
        assert max_abs_diff(ours(x), expected) <= 1e-5
        assert max_abs_diff(ours.forward_head(ours.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5
        for kwargs in (dict(indices=[1, -1], norm=True), dict(indices=2, output_fmt="NLC")):
            (f1, i1), (f2, i2) = ours.forward_intermediates(x, **kwargs), ref.forward_intermediates(x, **kwargs)
            assert max_abs_diff(f1, f2) <= 1e-5 and len(i1) == len(i2)
            assert all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(i1, i2))
        feats = flexbone.create_model(name, img_size=size, features_only=True, out_indices=(3, -1)).eval()
        feats.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("head")}, strict=True)
        maps = feats(x)
        ref_maps = ref.forward_intermediates(x, [3, 11], intermediates_only=True)
        grid = size // ours.patch_size
        assert [tuple(m.shape) for m in maps] == [(2, ours.embed_dim, grid, grid)] * 2
        assert all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(maps, ref_maps))
    assert [f["module"] for f in ours.feature_info] == [f["module"] for f in ref.feature_info]
    assert [f["reduction"] for f in ours.feature_info] == [f["reduction"] for f in ref.feature_info]


@pytest.mark.parity
def test_train_mode_drop_path_schedule_and_avg_pool_match_timm():
    ref = timm.create_model("deit_tiny_patch16_224", img_size=32, drop_path_rate=0.1, global_pool="avg", num_classes=5)
    ours = flexbone.create_model("deit_tiny_patch16_224", img_size=32, drop_path_rate=0.1, global_pool="avg", num_classes=5)
    ours.load_state_dict(randomize_(ref).state_dict(), strict=True)
    assert [b.drop_path1.drop_prob for b in ours.blocks[1:]] == pytest.approx([b.drop_path1.drop_prob for b in ref.blocks[1:]])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_abs_diff(ours.eval()(x), ref.eval()(x)) <= 1e-5


@pytest.mark.parity
def test_dynamic_img_size_matches_timm_at_any_input_size():
    """timm's dynamic_img_size: one model (position embedding made for 64 px) takes other and non-square sizes,
    the embedding resampled per input; eager, features_only and TorchScript equal timm's."""
    ref = randomize_(timm.create_model("deit_tiny_patch16_224", img_size=64, dynamic_img_size=True, num_classes=7))
    ours = flexbone.create_model("deit_tiny_patch16_224", img_size=64, dynamic_img_size=True, num_classes=7).eval()
    ours.load_state_dict(ref.eval().state_dict(), strict=True)
    assert ours.default_cfg["fixed_input_size"] is False
    feats = flexbone.create_model("deit_tiny_patch16_224", img_size=64, dynamic_img_size=True, features_only=True,
                                  out_indices=(5, -1)).eval()
    feats.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("head")}, strict=True)
    scripted = torch.jit.script(ours)
    for h, w in ((64, 64), (96, 48), (32, 80)):
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            expected = ref(x)
            assert max_abs_diff(ours(x), expected) <= 1e-5 and max_abs_diff(scripted(x), expected) <= 1e-5
            ref_maps = ref.forward_intermediates(x, [5, 11], intermediates_only=True)
            maps = feats(x)
        assert [tuple(m.shape) for m in maps] == [(2, 192, h // 16, w // 16)] * 2
        assert all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(maps, ref_maps))


@pytest.mark.parity
def test_set_input_size_matches_timm():
    ref = randomize_(timm.create_model("deit_tiny_patch16_224", img_size=64, num_classes=7)).eval()
    ours = flexbone.create_model("deit_tiny_patch16_224", img_size=64, num_classes=7).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.set_input_size(img_size=96)
    ours.set_input_size(img_size=(96, 96))
    assert ours.default_cfg["input_size"] == (3, 96, 96) and ours.patch_embed.grid_size == ref.patch_embed.grid_size
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5
    with pytest.raises(ConfigError, match="square"):
        ours.set_input_size(img_size=(96, 64))
    with pytest.raises(ConfigError, match="patch size"):
        ours.set_input_size(patch_size=8)


def test_wrong_input_size_and_options_are_clear_errors():
    model = flexbone.create_model("deit_tiny_patch16_224", img_size=32)
    with pytest.raises(ConfigError, match="img_size=48, or dynamic_img_size=True"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ConfigError, match="global_pool"):
        flexbone.create_model("deit_tiny_patch16_224", global_pool="max")


def test_reset_classifier_and_grad_checkpointing():
    model = flexbone.create_model("deit_tiny_patch16_224", img_size=32, num_classes=4)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 192)
    model.reset_classifier(3)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert all(max_abs_diff(a, p.grad) <= 1e-5 for a, p in zip(plain, model.parameters()))


# ------------------------------------------------------------------------------ DeiT anchors in SN-Net
def test_deit_ti_s_b_stitch_into_71_configurations():
    from flexbone.bench.complexity import build_on_meta

    with torch.device("meta"):
        net = SNNet([build_on_meta(n) for n in ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")])
    assert net.rule == "vit" and net.num_configs == 71
    layers = {k: sum(p.numel() for p in v.parameters()) for k, v in net.stitch_layers.items()}
    # 11 Linear layers per neighbouring pair: 11 * (192 * 384 + 384) and 11 * (384 * 768 + 768)
    assert layers == {"stage0_0to1": 815_232, "stage0_1to2": 3_252_480}
    # stitched paths carry the front's embedding and blocks, the stitch, the end's blocks and head
    assert net.config_params(0) == 5_717_416 and net.config_params(2) == 86_567_656  # timm's DeiT-Ti / -B


def _tiny_vit(dim: int, heads: int, seed: int) -> VisionTransformer:
    torch.manual_seed(seed)
    return randomize_(VisionTransformer(img_size=16, patch_size=4, embed_dim=dim, depth=4, num_heads=heads,
                                        num_classes=5), seed).eval()


def test_vit_snnet_extract_and_least_squares():
    anchors = [_tiny_vit(16, 2, 0), _tiny_vit(32, 4, 1), _tiny_vit(48, 4, 2)]
    net = SNNet(anchors).eval()
    assert net.num_configs == 3 + 2 * (3 * 4 - 2)
    x = torch.randn(3, 3, 16, 16)
    net.init_stitches(torch.randn(20, 3, 16, 16))
    with torch.no_grad():
        for i in range(3):
            net.set_active(i)
            assert torch.equal(net(x), anchors[i](x))
        for i in range(net.num_configs):
            net.set_active(i)
            assert max_abs_diff(net.extract(i).eval()(x), net(x)) <= 1e-6
    # a chain through three anchors (nearest off) runs and extracts as well
    chained = SNNet(anchors, nearest=False).eval()
    chain_id = next(i for i, c in enumerate(chained.stitch_configs) if len(c.anchors) == 3)
    chained.set_active(chain_id)
    with torch.no_grad():
        assert max_abs_diff(chained.extract().eval()(x), chained(x)) <= 1e-6
