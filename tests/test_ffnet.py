"""FFNet (models/ffnet.py) against the official code's facts: parameter counts of every registered model,
parameter names of the official checkpoints, the pre-down Gaussian (scipy), and the ResNet backbone
(torchvision's ResNet-34/50 weights give the same stage outputs)."""
import numpy as np
import pytest
import torch
import torchvision
from scipy import ndimage

import flexbone
from flexbone.bench.complexity import build_on_meta, count_params
from flexbone.checkpoint import save_state_dict
from flexbone.errors import ConfigError

# Parameter counts of the official model definitions (Qualcomm-AI-research/FFNet @2291ae7, instantiated without
# weights; /work/shared/reference/ffnet.md, table B.2). Keys drop the official "segmentation_" /
# "classification_" prefix, as flexbone's names do.
OFFICIAL_PARAMS = {
    "ffnet101_AAA": 47545171, "ffnet50_AAA": 28553043, "ffnet150_AAA": 98843475, "ffnet134_AAA": 98251603,
    "ffnet86_AAA": 53987155, "ffnet56_AAA": 33624915, "ffnet34_AAA": 25285203, "ffnet150_ABB": 96108435,
    "ffnet86_ABB": 51252115, "ffnet56_ABB": 30889875, "ffnet34_ABB": 22550163, "ffnet150S_BBB": 48006259,
    "ffnet86S_BBB": 26603123, "ffnet122N_CBB": 51393555, "ffnet74N_CBB": 37148179, "ffnet46N_CBB": 20214035,
    "ffnet101_dAAA": 47545171, "ffnet50_dAAA": 28553043, "ffnet150_dAAA": 98847699, "ffnet134_dAAA": 98255827,
    "ffnet86_dAAA": 53991379, "ffnet56_dAAA": 33629139, "ffnet34_dAAA": 25289427, "ffnet18_dAAA": 15181267,
    "ffnet150_dAAC": 97069779, "ffnet86_dAAC": 52213459, "ffnet34_dAAC": 23511507, "ffnet18_dAAC": 13403347,
    "ffnet150S_dBBB": 48010483, "ffnet86S_dBBB": 26607347,
    "ffnet86S_dBBB_mobile": 26607347, "ffnet78S_dBBB_mobile": 27491059, "ffnet54S_dBBB_mobile": 18044659,
    "ffnet40S_dBBB_mobile": 13911283,
    "ffnet150S_BBB_mobile": 48006259, "ffnet86S_BBB_mobile": 26603123, "ffnet78S_BBB_mobile": 27486835,
    "ffnet54S_BBB_mobile": 18040435, "ffnet40S_BBB_mobile": 13907059,
    "ffnet150S_BCC_mobile": 47347859, "ffnet86S_BCC_mobile": 25944723, "ffnet78S_BCC_mobile": 26828435,
    "ffnet54S_BCC_mobile": 17382035, "ffnet40S_BCC_mobile": 13248659,
    "ffnet122NS_CBB_mobile": 32815891, "ffnet74NS_CBB_mobile": 23956243, "ffnet46NS_CBB_mobile": 13181203,
    "ffnet122NS_CCC_mobile": 32165683, "ffnet74NS_CCC_mobile": 23306035, "ffnet46NS_CCC_mobile": 12530995,
    # ImageNet classification forms
    "ffnet101_AAX": 56957096, "ffnet122NS_CBX_mobile": 43727720, "ffnet122N_CBX": 62305384,
    "ffnet134_AAX": 107663528, "ffnet150S_BBX": 58918088, "ffnet150S_BBX_mobile": 58918088,
    "ffnet150_AAX": 108255400, "ffnet18_AAX": 24588968, "ffnet34_AAX": 34697128, "ffnet40S_BBX_mobile": 24818888,
    "ffnet46NS_CBX_mobile": 24093032, "ffnet46N_CBX": 31125864, "ffnet50_AAX": 37964968,
    "ffnet54S_BBX_mobile": 28952264, "ffnet56_AAX": 43036840, "ffnet74NS_CBX_mobile": 34868072,
    "ffnet74N_CBX": 48060008, "ffnet78S_BBX_mobile": 38398664, "ffnet86S_BBX": 37514952,
    "ffnet86S_BBX_mobile": 37514952, "ffnet86_AAX": 63399080,
}
# `_pre_down` models have the params of their `_mobile` base (the Gaussian is a buffer)
EXPECTED = {n: OFFICIAL_PARAMS[n.removesuffix("_pre_down")] for n in flexbone.list_models(family="ffnet")}


def test_every_registered_ffnet_has_the_official_parameter_count():
    assert set(OFFICIAL_PARAMS) <= set(EXPECTED), "a model of the official README tables is not registered"
    got = {n: count_params(build_on_meta(n)) for n in EXPECTED}
    wrong = {n: (got[n], want) for n, want in EXPECTED.items() if got[n] != want}
    assert not wrong, wrong


def test_official_parameter_names_and_shapes():
    # keys of the official state dicts (FFNet.backbone_model / FFNet.head.layers = [AdapterConv, UpBranch,
    # UpsampleCat, SegmentationHead_NoSigmoid_3x3] in models/ffnet_blocks.py), with their shapes
    seg = build_on_meta("ffnet40S_BBB_mobile_pre_down").state_dict()
    want = {
        "smoothing.weight": (3, 1, 5, 5),
        "backbone_model.conv0.weight": (32, 3, 3, 3), "backbone_model.bn1.running_var": (64,),
        "backbone_model.layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "backbone_model.layer4.3.conv2.weight": (320, 320, 3, 3),
        "head.layers.0.adapter_conv.3.layers.0.weight": (256, 320, 1, 1),
        "head.layers.1.fam_32_up.layers.0.weight": (128, 256, 1, 1),
        "head.layers.1.fam_4.layers.1.num_batches_tracked": (),
        "head.layers.3.last_layer.0.bias": (256,), "head.layers.3.last_layer.3.weight": (19, 256, 3, 3),
    }
    assert {k: tuple(seg[k].shape) for k in want} == want
    assert "backbone_model.layer1.0.downsample.0.weight" not in seg  # no projection without a stride
    d = build_on_meta("ffnet40S_dBBB_mobile").state_dict()
    assert tuple(d["backbone_model.layer1.0.downsample.0.weight"].shape) == (64, 64, 1, 1)  # the _D projection
    cls = build_on_meta("ffnet46NS_CBX_mobile").state_dict()
    want = {
        "backbone_model.conv2.weight": (64, 64, 3, 3), "backbone_model.layer3.7.bn2.bias": (256,),
        "head.layers.2.expansion_layers.3.downsample.0.weight": (1024, 32, 1, 1),
        "head.layers.2.downsampling_layers.2.0.bias": (1024,), "head.layers.2.final_layer.0.weight": (2048, 1024, 1, 1),
        "head.layers.2.classifier.weight": (1000, 2048),
    }
    assert {k: tuple(cls[k].shape) for k in want} == want


def test_pre_down_kernel_is_scipys_gaussian_filter_of_an_impulse():
    impulse = np.zeros((5, 5), np.float32)
    impulse[2, 2] = 1
    want = ndimage.gaussian_filter(impulse, sigma=0.7)  # what the official GaussianConv2D registers
    got = flexbone.create_model("ffnet40S_BBB_mobile_pre_down", num_classes=2).smoothing.weight
    assert np.abs(got[1, 0].numpy() - want).max() < 1e-7


@pytest.mark.parametrize("ours,theirs,depth", [("ffnet34_ABB", "resnet34", 34), ("ffnet50_AAA", "resnet50", 50)])
def test_stem_a_backbone_is_torchvisions_resnet(ours, theirs, depth):
    # stem A + BasicBlock / Bottleneck (stride on the 3x3) are torchvision's ResNet: its weights give the same maps
    tv = getattr(torchvision.models, theirs)().eval()
    for m in tv.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    model = flexbone.create_model(ours, features_only=True).eval()
    sd = {f"backbone_model.{k}": v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    model.load_state_dict(sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours_maps = model(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        theirs_maps = []
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
            y = layer(y)
            theirs_maps.append(y)
    for a, b in zip(ours_maps, theirs_maps):
        assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("name,stride", [("ffnet40S_BBB_mobile", 4), ("ffnet40S_dBBB_mobile", 8),
                                         ("ffnet46NS_CCC_mobile", 4), ("ffnet40S_BCC_mobile_pre_down", 8)])
def test_segmentation_output_stride_and_contract(name, stride):
    model = flexbone.create_model(name, num_classes=3)
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out.shape == (2, 3, 64 // stride, 96 // stride)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape[1] == model.num_features
        assert torch.allclose(model.forward_head(feats), model.get_classifier()(pre), atol=1e-6)
        model.reset_classifier(5)
        assert model(x).shape[1] == 5


def test_classification_form_batch_of_one_and_dropout():
    model = flexbone.create_model("ffnet46NS_CBX_mobile", num_classes=7, drop_rate=0.2)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)  # the official squeeze() returned (7,)
    model.reset_classifier(0)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    with pytest.raises(ConfigError, match="classification FFNets only"):
        flexbone.create_model("ffnet40S_BBB_mobile", drop_rate=0.1)


def test_features_only_pyramid():
    model = flexbone.create_model("ffnet122NS_CBB_mobile", features_only=True, out_indices=(-4, -3, -2, -1)).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [64, 64, 128, 256]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)]


def test_official_checkpoints_load(tmp_path):
    # a `_pre_down` checkpoint (what the official `_mobile` models load, non-strictly) into the `_mobile` model
    src = flexbone.create_model("ffnet40S_BBB_mobile_pre_down", num_classes=4)
    path = tmp_path / "pre_down.pth"
    save_state_dict(src.state_dict(), path)
    dst = flexbone.create_model("ffnet40S_BBB_mobile", pretrained=path, num_classes=4)
    x = torch.randn(1, 3, 64, 64)
    src.eval()
    with torch.no_grad():  # the same network, minus the Gaussian
        without_smoothing = src.forward_head(src.head.forward_features(src.backbone_model(x)))
        assert torch.allclose(dst.eval()(x), without_smoothing, atol=1e-6)
    # an ImageNet (classification-form) checkpoint gives a segmentation model its backbone; the head stays fresh
    cls = flexbone.create_model("ffnet40S_BBX_mobile", num_classes=10)
    path = tmp_path / "imagenet.safetensors"
    save_state_dict(cls.state_dict(), path)
    seg = flexbone.create_model("ffnet40S_BBB_mobile", pretrained=path)
    fresh = flexbone.create_model("ffnet40S_BBB_mobile")
    seg_sd, cls_sd = seg.state_dict(), cls.state_dict()
    assert all(torch.equal(seg_sd[k], v) for k, v in cls_sd.items() if k.startswith("backbone_model."))
    assert not torch.equal(seg_sd["head.layers.0.adapter_conv.0.layers.0.weight"],
                           cls_sd["head.layers.0.adapter_conv.0.layers.0.weight"])
    assert seg_sd["head.layers.3.last_layer.0.bias"].eq(1e-4).all()  # the official init of conv biases
    assert fresh.state_dict().keys() == seg_sd.keys()


def test_bad_names_are_refused():
    with pytest.raises(flexbone.errors.UnknownModelError):
        flexbone.create_model("ffnet40S_ABB")
