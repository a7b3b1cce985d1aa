"""HarDNet vs the authors' reference: PingoLH/Pytorch-HarDNet (``hardnet.py``, ``README.md``, ``imagenet/main.py``).

timm 1.0.31 has no HarDNet, so there is no model to copy weights from. Instead: the harmonic link rule and layer
widths against tables worked out by hand from the paper's definition; the reference's state-dict key names
(written down below from its module structure) load with ``strict=True``; parameter counts and MACs against the
figures its README publishes; and the contract pieces the registry-wide tests run only for timm's classes
(TorchScript) or only for one name per family.
"""
import pytest
import torch

import flexbone
from flexbone.bench.complexity import build_on_meta, count_macs
from flexbone.errors import ConfigError
from flexbone.models.hardnet import HarDBlock, harmonic_links

from _helpers import assert_checkpointing_keeps_gradients, max_abs_diff, randomize_

NAMES = ["hardnet39ds", "hardnet68", "hardnet68ds", "hardnet85"]


def test_the_four_hub_models_are_registered():
    # the reference's hubconf.py entry points
    assert flexbone.list_models(family="hardnet") == NAMES


# ------------------------------------------------------------------------------------------- harmonic links
# Chao et al. 2019, sec. 3.1: layer k connects to layer k - 2^n if 2^n divides k (n >= 0, k - 2^n >= 0); layer 0 is
# the block input. Worked out by hand for k = 1..8 and 16 (nearest first, the reference's concatenation order).
LINKS_BY_HAND = {1: [0], 2: [1, 0], 3: [2], 4: [3, 2, 0], 5: [4], 6: [5, 4], 7: [6], 8: [7, 6, 4, 0],
                 12: [11, 10, 8], 16: [15, 14, 12, 8, 0]}


@pytest.mark.parametrize("k", sorted(LINKS_BY_HAND))
def test_harmonic_links_follow_the_papers_rule(k):
    assert harmonic_links(k) == LINKS_BY_HAND[k]


# HarDNet68's first block: input 64 channels, growth rate k = 14, m = 1.7, 8 layers. A layer with L links has
# 14 * 1.7^(L-1) channels, floored, odd rounded up to even: 1 link 14; 2 links 23.8 -> 24; 3 links 40.46 -> 40;
# 4 links 68.78 -> 68. Input width = sum of the linked layers' widths (layer 0: 64).
#              (links, in, out) per layer 1..8
BLOCK_68_1 = [([0], 64, 14), ([1, 0], 14 + 64, 24), ([2], 24, 14), ([3, 2, 0], 14 + 24 + 64, 40),
              ([4], 40, 14), ([5, 4], 14 + 40, 24), ([6], 24, 14), ([7, 6, 4, 0], 14 + 24 + 40 + 64, 68)]
# the output: the odd layers and the last one, 4 * 14 + 68 = 124 channels (its transition maps 124 -> 128)
OUT_68_1 = ([1, 3, 5, 7, 8], 124)

# HarDNet39DS's first block (depthwise-separable layers): input 48, k = 16, m = 1.6, 4 layers: 2 links 25.6 -> 26,
# 3 links 40.96 -> 40; output layers 1, 3, 4: 16 + 16 + 40 = 72 channels
BLOCK_39DS_1 = [([0], 48, 16), ([1, 0], 16 + 48, 26), ([2], 26, 16), ([3, 2, 0], 16 + 26 + 48, 40)]
OUT_39DS_1 = ([1, 3, 4], 72)


def _first_conv(layer):
    return layer.layer1.conv if hasattr(layer, "layer1") else layer.conv


@pytest.mark.parametrize("block_args, table, output", [
    (dict(in_chs=64, growth_rate=14, grmul=1.7, num_layers=8), BLOCK_68_1, OUT_68_1),
    (dict(in_chs=48, growth_rate=16, grmul=1.6, num_layers=4, depthwise=True), BLOCK_39DS_1, OUT_39DS_1),
])
def test_block_widths_and_wiring_follow_the_hand_table(block_args, table, output):
    block = randomize_(HarDBlock(**block_args)).eval()
    for layer, (_, in_chs, out_chs) in zip(block.layers, table, strict=True):
        conv = _first_conv(layer)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == \
            (in_chs, out_chs, (1, 1) if block_args.get("depthwise") else (3, 3))
        if block_args.get("depthwise"):  # 1x1 conv, then a depthwise 3x3 over its output
            assert (layer.layer2.dwconv.groups, layer.layer2.dwconv.out_channels) == (out_chs, out_chs)
    assert block.out_chs == output[1]

    # wiring, seen from outside: each layer's input is the concatenation of the hand table's layers, in its order
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0], o))) for m in block.layers]
    x = torch.randn(2, block_args["in_chs"], 8, 8)
    with torch.no_grad():
        y = block(x)
    for h in hooks:
        h.remove()
    maps = [x] + [o for _, o in seen]
    for (layer_input, _), (links, _, _) in zip(seen, table):
        assert torch.equal(layer_input, torch.cat([maps[j] for j in links], 1))
    assert torch.equal(y, torch.cat([maps[k] for k in output[0]], 1))


# ------------------------------------------------------------------------------------------ reference's names
def _conv_layer(prefix):  # the reference's ConvLayer: conv, norm, relu (no parameters)
    return [f"{prefix}.conv.weight"] + _bn(f"{prefix}.norm")


def _dw_layer(prefix):  # DWConvLayer: dwconv, norm
    return [f"{prefix}.dwconv.weight"] + _bn(f"{prefix}.norm")


def _bn(prefix):
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _ds_block(prefix, n):  # HarDBlock(dwconv=True): layers.i = CombConvLayer(layer1 = ConvLayer 1x1, layer2 = DW)
    return [k for i in range(n) for k in _conv_layer(f"{prefix}.layers.{i}.layer1") + _dw_layer(
        f"{prefix}.layers.{i}.layer2")]


# PingoLH/Pytorch-HarDNet hardnet.py, HarDNet(depth_wise=True, arch=39): one ModuleList `base` of ConvLayer 3x3/2,
# ConvLayer 1x1, DWConvLayer /2, then per block (n_layers 4, 16, 8, 4; downSamp 1, 1, 1, 0) HarDBlock, ConvLayer 1x1,
# DWConvLayer /2 where downSamp; last, Sequential(AdaptiveAvgPool2d, Flatten, Dropout, Linear)
OFFICIAL_KEYS_39DS = (
    _conv_layer("base.0") + _conv_layer("base.1") + _dw_layer("base.2")
    + _ds_block("base.3", 4) + _conv_layer("base.4") + _dw_layer("base.5")
    + _ds_block("base.6", 16) + _conv_layer("base.7") + _dw_layer("base.8")
    + _ds_block("base.9", 8) + _conv_layer("base.10") + _dw_layer("base.11")
    + _ds_block("base.12", 4) + _conv_layer("base.13")
    + ["base.14.3.weight", "base.14.3.bias"]
)
# shapes outside the blocks; each transition's input is its block's output, by the rule above:
# block 1 (48 in, k 16, 4 layers): 72 (see OUT_39DS_1); block 2 (k 20, 16 layers): 8 odd layers x 20 + layer 16
# (5 links: 20 * 1.6^4 = 131.07 -> 132) = 292; block 3 (k 64, 8 layers): 4 x 64 + (64 * 1.6^3 = 262.14 -> 262) = 518;
# block 4 (k 160, 4 layers): 2 x 160 + (160 * 1.6^2 = 409.6 -> 410) = 730
OFFICIAL_SHAPES_39DS = {
    "base.0.conv.weight": (24, 3, 3, 3), "base.1.conv.weight": (48, 24, 1, 1), "base.2.dwconv.weight": (48, 1, 3, 3),
    "base.4.conv.weight": (96, 72, 1, 1), "base.5.dwconv.weight": (96, 1, 3, 3),
    "base.7.conv.weight": (320, 292, 1, 1), "base.8.dwconv.weight": (320, 1, 3, 3),
    "base.10.conv.weight": (640, 518, 1, 1), "base.11.dwconv.weight": (640, 1, 3, 3),
    "base.13.conv.weight": (1024, 730, 1, 1), "base.14.3.weight": (1000, 1024), "base.14.3.bias": (1000,),
}


def test_reference_key_names_and_shapes():
    state = build_on_meta("hardnet39ds").state_dict()
    assert list(state) == OFFICIAL_KEYS_39DS  # the same names in the same order
    assert {k: tuple(state[k].shape) for k in OFFICIAL_SHAPES_39DS} == OFFICIAL_SHAPES_39DS


def test_a_reference_checkpoint_loads_strictly(tmp_path):
    # a state dict under the reference's names (what torch.hub's hardnet39ds.pth holds), and the training script's
    # checkpoint of a DataParallel model (imagenet/main.py: {'state_dict': {'module.base...'}})
    source = randomize_(flexbone.create_model("hardnet39ds"), seed=1).state_dict()
    official = {k: source[k].clone() for k in OFFICIAL_KEYS_39DS}
    model = flexbone.create_model("hardnet39ds")
    assert flexbone.load_checkpoint(model, official, strict=True).ok
    assert all(torch.equal(model.state_dict()[k], v) for k, v in official.items())
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in official.items()}}, tmp_path / "ckpt.pth.tar")
    tuned = flexbone.create_model("hardnet39ds", pretrained=tmp_path / "ckpt.pth.tar", num_classes=10)
    assert torch.equal(tuned.base[13].conv.weight, official["base.13.conv.weight"])
    assert tuned.get_classifier().out_features == 10


# ------------------------------------------------------------------------------------- published sizes and levels
# README.md of PingoLH/Pytorch-HarDNet ("Results" tables; imagenet/README.md repeats them): MParam and GMACs at 224
PUBLISHED = {  # name: (M params, GMACs, decimals of the GMACs figure)
    "hardnet39ds": (3.5, 0.44, 2), "hardnet68ds": (4.2, 0.8, 1),
    "hardnet68": (17.6, 4.3, 1), "hardnet85": (36.7, 9.1, 1),
}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_and_macs_are_the_published(name):
    params, gmacs, decimals = PUBLISHED[name]
    model = build_on_meta(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == params
    # conv and linear MACs (flexbone's count, BN folded away) are within one unit of the published figure's last
    # digit (39DS 0.43 vs 0.44, 68 4.2 vs 4.3); the published figure itself, at its rounding, when each BN output
    # element counts a multiply and an add, as un-fused layer-wise counters (thop, ptflops) count batch norm
    bn_elements = []
    hooks = [m.register_forward_hook(lambda m, i, o: bn_elements.append(o.numel()))
             for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    macs = count_macs(model, 224)
    for h in hooks:
        h.remove()
    assert abs(round(macs / 1e9, decimals) - gmacs) <= 1.01 * 10 ** -decimals
    assert round((macs + 2 * sum(bn_elements)) / 1e9, decimals) == gmacs


# levels: the transition (1x1 ConvLayer) before each downsampling and the last one, after the stride-2 stem conv
LEVELS = {  # (channels, reduction, module) per level, from the reference's `base` lists
    "hardnet39ds": [(48, 2, "base.1"), (96, 4, "base.4"), (320, 8, "base.7"), (640, 16, "base.10"),
                    (1024, 32, "base.13")],
    "hardnet68": [(64, 2, "base.1"), (128, 4, "base.4"), (320, 8, "base.9"), (640, 16, "base.12"),
                  (1024, 32, "base.15")],
    "hardnet68ds": [(64, 2, "base.1"), (128, 4, "base.4"), (320, 8, "base.9"), (640, 16, "base.12"),
                    (1024, 32, "base.15")],
    "hardnet85": [(96, 2, "base.1"), (192, 4, "base.4"), (320, 8, "base.9"), (720, 16, "base.14"),
                  (1280, 32, "base.18")],
}
# the reference's dropout before the classifier (0.05 for every DS model) and HarDNet85's Dropout(0.1) before its
# last transition
DROPOUT = {"hardnet39ds": [0.05], "hardnet68": [0.1], "hardnet68ds": [0.05], "hardnet85": [0.1, 0.2]}


@pytest.mark.parametrize("name", NAMES)
def test_feature_levels_and_dropout(name):
    model = build_on_meta(name)
    assert [(s.num_chs, s.reduction, s.module) for s in model.feature_info] == LEVELS[name]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == DROPOUT[name]
    assert model.get_submodule(LEVELS[name][-1][2]) is model.base[model.num_trunk - 1]  # the last before the head


def test_preprocessing_is_the_reference_evaluations():
    # imagenet/main.py validates with Resize(256) (torchvision's default: bilinear), CenterCrop(224), ImageNet
    # mean / std
    timm = pytest.importorskip("timm")
    cfg = timm.data.resolve_model_data_config(build_on_meta("hardnet68"))
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 224 / 256 and cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- contract extras
@pytest.mark.parametrize("name", ["hardnet39ds", "hardnet68"])
def test_torchscript_equals_eager(name):
    """The registry-wide TorchScript tests cover timm's model classes only; both layer kinds are scripted here."""
    model = randomize_(flexbone.create_model(name, num_classes=7)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(torch.jit.script(model)(x), model(x)) == 0
        features = model.as_features((1, -1))
        maps = torch.jit.script(features)(x)
        expected = features(x)
        assert [m.shape[1] for m in maps] == [128 if name == "hardnet68" else 96, 1024]
        assert max(max_abs_diff(a, b) for a, b in zip(maps, expected)) == 0


def test_forward_intermediates_and_pruning():
    """timm's signatures (the registry-wide value checks compare with timm's model, which HarDNet lacks): the maps
    are the outputs of the level modules, the final features forward_features'; pruning keeps the levels asked for."""
    model = randomize_(flexbone.create_model("hardnet39ds")).eval()
    x = torch.randn(2, 3, 64, 64)
    outputs = {}
    for name in model.feature_info.module_name():
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, o.clone()))
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert max_abs_diff(final, model.forward_features(x)) == 0
        assert [max_abs_diff(a, outputs[m]) for a, m in zip(maps, model.feature_info.module_name())] == [0] * 5
        assert [m.shape[-1] for m in maps] == [32, 16, 8, 4, 2]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [max_abs_diff(a, b) for a, b in zip(last_two, maps[-2:])] == [0, 0]
        early, kept = model.forward_intermediates(x, indices=[0, 2], stop_early=True)
        assert max_abs_diff(early, maps[2]) == 0 and len(kept) == 2
        assert model.prune_intermediate_layers([0, 2]) == [0, 2]
        assert [max_abs_diff(a, b) for a, b in zip(model.forward_intermediates(x, [0, 2], intermediates_only=True),
                                                    [maps[0], maps[2]])] == [0, 0]
    assert not any(k.startswith(("base.9.", "base.13.", "base.14.3")) for k in model.state_dict())


def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from flexbone.export.onnx import export_onnx

    model = randomize_(flexbone.create_model("hardnet39ds")).eval()
    result = export_onnx(model, tmp_path / "m.onnx", {"random": torch.randn(2, 3, 64, 64)}, what="hardnet39ds",
                         dynamic_batch=True)  # checked in onnxruntime against the eager model, else ExportError
    assert result["max_abs_diff"]["random"] < 1e-4 and (tmp_path / "m.onnx").exists()


def test_grad_checkpointing_gives_the_same_gradients():
    model = randomize_(flexbone.create_model("hardnet39ds", num_classes=5, drop_rate=0.0))
    assert_checkpointing_keeps_gradients(model, torch.randn(2, 3, 32, 32))


def test_options():
    with pytest.raises(ConfigError, match="output_stride"):
        flexbone.create_model("hardnet68", output_stride=16)
    model = flexbone.create_model("hardnet39ds", num_classes=3, in_chans=1, global_pool="catavgmax", drop_rate=0.3)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert model.head_hidden_size == 2 * model.num_features == 2048
    assert model.get_classifier().in_features == 2048 and model.base[-1][2].p == 0.3
