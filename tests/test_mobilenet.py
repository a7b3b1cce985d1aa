"""MobileNetV2 / V3 against the references nobody here wrote: timm and the once-for-all (`ofa`) package.

* every registered name is a timm model: timm's state dict loads with strict=True, outputs agree in eval
  mode (fp32, max abs diff <= 1e-5), parameter counts are equal;
* the 4-level pyramid equals timm's feature extractor levels (reductions 4..32), also dilated (output stride
  16 / 8), and a timm feature-extractor state dict loads into ours strictly;
* the block-table path: static sub-networks taken out of the `ofa` package's OFA-MobileNetV3 and
  OFA-ProxylessNAS (MobileNetV2 space) supernets, rebuilt as flexbone models from their block tables,
  compute the same outputs with the same weights.
"""
import json
import random

import pytest
import torch

import flexbone
from flexbone.errors import ConfigError
from flexbone.models.mobilenet import VARIANTS, BlockSpec, MobileNetV2, MobileNetV3, resolve_stages

from _helpers import max_abs_diff, num_params, randomize_

timm = pytest.importorskip("timm")

NAMES = list(VARIANTS)


def _timm_and_ours(name: str, **kwargs):
    ref = randomize_(timm.create_model(name, **kwargs)).eval()
    ours = flexbone.create_model(name, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


# ------------------------------------------------------------------------------------ timm parity
@pytest.mark.parity
def test_registered_names_cover_timms_plain_mobilenetv2_v3():
    timm_names = set(timm.list_models(["mobilenetv2_*", "mobilenetv3_large_*", "mobilenetv3_small_*"]))
    assert set(NAMES) == timm_names


@pytest.mark.parity
@pytest.mark.parametrize("name", NAMES)
def test_timm_checkpoint_loads_and_matches(name, tmp_path):
    ref = randomize_(timm.create_model(name)).eval()
    ours = flexbone.create_model(name).eval()
    assert num_params(ours) == num_params(ref)
    path = tmp_path / f"{name}.pth"  # through a real file, as a user would
    torch.save(ref.state_dict(), path)
    assert flexbone.load_checkpoint(ours, path, strict=True).ok
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5
        assert max_abs_diff(ours.forward_features(x), ref.forward_features(x)) <= 1e-5
        assert max_abs_diff(ours.forward_head(ours.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5
    # timm's meanings: num_features the trunk width (960 for MobileNetV3), head_hidden_size the pre-logits width
    assert (ours.num_features, ours.head_hidden_size) == (ref.num_features, ref.head_hidden_size)


@pytest.mark.parametrize("name,expected", [("mobilenetv2_100", 3_504_872), ("mobilenetv3_large_100", 5_483_032)])
def test_reference_parameter_counts(name, expected):
    # DESIGN.md reference counts (timm, 1000 classes)
    assert num_params(flexbone.create_model(name)) == expected


@pytest.mark.parity
@pytest.mark.parametrize("name", ["mobilenetv2_050", "mobilenetv3_small_075"])
def test_timm_parity_in_train_mode(name):
    ref, ours = _timm_and_ours(name)
    ref.train(), ours.train()
    x = torch.randn(2, 3, 64, 64)
    assert max_abs_diff(ours(x), ref(x)) <= 1e-5  # batch statistics
    ref_state = ref.state_dict()  # both updated their running statistics the same way
    for k, v in ours.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            assert max_abs_diff(v, ref_state[k]) <= 1e-5, k


@pytest.mark.parity
@pytest.mark.parametrize("name,pool", [("mobilenetv2_050", "catavgmax"), ("mobilenetv3_small_050", "catavgmax"),
                                       ("mobilenetv3_small_050", "max")])
def test_timm_parity_with_other_pooling_and_classes(name, pool):
    ref, ours = _timm_and_ours(name, global_pool=pool, num_classes=7, in_chans=1)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5


@pytest.mark.parity
def test_timm_parity_dilated_classifier():
    # timm's MobileNetV2 (EfficientNet class) takes output_stride; its MobileNetV3 only in features mode (below)
    ref, ours = _timm_and_ours("mobilenetv2_050", output_stride=8)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("name", ["mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_075"])
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_features_match_timm_levels(name, output_stride):
    # timm's five levels, the stride-2 level first
    ref = randomize_(timm.create_model(name, features_only=True, output_stride=output_stride)).eval()
    ours = flexbone.create_model(name, features_only=True, output_stride=output_stride).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # the unused head is gone, as in timm
    assert ours.feature_info.channels() == ref.feature_info.channels()
    assert ours.feature_info.reduction() == ref.feature_info.reduction()
    assert ours.feature_info.reduction() == [min(r, output_stride) for r in (2, 4, 8, 16, 32)]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x), strict=True):
            assert max_abs_diff(a, b) <= 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("name", ["mobilenetv2_100", "mobilenetv3_large_100"])
def test_drop_path_rates_follow_timm(name):
    ref = timm.create_model(name, drop_path_rate=0.2)
    ours = flexbone.create_model(name, drop_path_rate=0.2)
    ref_rates = {n: m.drop_prob for n, m in ref.named_modules() if type(m).__name__ == "DropPath"}
    our_rates = {n: m.drop_prob for n, m in ours.named_modules() if type(m).__name__ == "DropPath"}
    # timm also attaches (unused) DropPath to blocks without a residual; ours only where it acts
    residual = {f"{n}.drop_path" for n, m in ref.named_modules() if getattr(m, "has_skip", False)} & set(ref_rates)
    assert len(residual) > 5 and set(our_rates) == residual
    assert all(our_rates[n] == pytest.approx(ref_rates[n]) for n in residual)


# ---------------------------------------------------------------------------- the model contract
def test_pretrained_path_with_new_classes_and_channels_and_features(tmp_path):
    ref = randomize_(timm.create_model("mobilenetv3_small_050")).eval()
    path = tmp_path / "mnv3.pth"
    torch.save(ref.state_dict(), path)
    model = flexbone.create_model("mobilenetv3_small_050", pretrained=path, num_classes=5, in_chans=1)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)
    torch.testing.assert_close(model.conv_head.weight, ref.conv_head.weight)
    feats = flexbone.create_model("mobilenetv3_small_050", pretrained=path, features_only=True, out_indices=(-2, -1))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = feats.eval()(x)
        assert [m.shape[1] for m in maps] == [f["num_chs"] for f in ref.feature_info][-2:]
        assert max_abs_diff(maps[-1], ref.forward_features(x)) <= 1e-5  # the last level is the trunk output
    assert not any(n.startswith(("conv_head", "classifier")) for n, _ in feats.named_parameters())


@pytest.mark.parametrize("name", ["mobilenetv2_035", "mobilenetv3_small_050"])
def test_reset_classifier_and_pre_logits(name):
    model = flexbone.create_model(name).eval()
    model.reset_classifier(3)
    x = torch.randn(2, 3, 32, 32)  # the smallest input the contract promises: 1x1 at stride 32
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    assert model.get_classifier() is model.classifier


def test_mobilenetv3_pooling_cannot_change_conv_head_width():
    model = flexbone.create_model("mobilenetv3_small_050")
    with pytest.raises(ConfigError, match="conv_head"):
        model.reset_classifier(10, "catavgmax")


def test_drop_rate_acts_before_classifier():
    model = flexbone.create_model("mobilenetv3_small_050", drop_rate=1.0, num_classes=4).train()
    out = model(torch.randn(2, 3, 32, 32))
    # every pooled feature dropped: the logits are the classifier's bias
    torch.testing.assert_close(out, model.classifier.bias.expand(2, 4))


@pytest.mark.parametrize("name", ["mobilenetv2_035", "mobilenetv3_small_050"])
def test_grad_checkpointing_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    a = flexbone.create_model(name, num_classes=4).train()
    b = flexbone.create_model(name, num_classes=4).train()
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 32, 32)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


@pytest.mark.slow
def test_torch_export_matches_eager():
    model = flexbone.create_model("mobilenetv3_small_050").eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert max_abs_diff(exported.module()(x), model(x)) <= 1e-6


# ----------------------------------------------------------------------------- block-table path
def test_arch_config_round_trips_through_json():
    model = flexbone.create_model("mobilenetv3_small_075").eval()
    arch = json.loads(json.dumps(model.arch_config()))
    rebuilt = MobileNetV3(**arch).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert max_abs_diff(rebuilt(x), model(x)) == 0.0
    assert flexbone.create_model("mobilenetv3_small_075", **arch).stage_specs == model.stage_specs


@pytest.mark.parametrize("stages,message", [
    ([[BlockSpec("ir", 3, 16)]], "needs mid_chs"),
    ([[BlockSpec("ds", 4, 16)]], "kernel must be odd"),
    ([[BlockSpec("ds", 3, 16), BlockSpec("ir", 3, 24, mid_chs=96, stride=2)]], r"stages\[0\]\[1\].*stride 2"),
    ([[{"kind": "ir", "kernel": 3, "out": 16}]], "fields are kind, kernel, out_chs"),
    ([[BlockSpec("mb", 3, 16)]], "kind 'mb'"),
    ([[BlockSpec("ds", 3, 16, act="swishy")]], "unknown activation"),
])
def test_invalid_block_table_names_the_problem(stages, message):
    with pytest.raises(ConfigError, match=message):
        resolve_stages(stages)


_OFA_ACT = {"relu": "relu", "relu6": "relu6", "h_swish": "hard_swish"}
_OFA_DS = {"depth_conv.conv": "conv_dw", "depth_conv.bn": "bn1", "depth_conv.se.fc.reduce": "se.conv_reduce",
           "depth_conv.se.fc.expand": "se.conv_expand", "point_linear.conv": "conv_pw", "point_linear.bn": "bn2"}
_OFA_IR = {"inverted_bottleneck.conv": "conv_pw", "inverted_bottleneck.bn": "bn1", "depth_conv.conv": "conv_dw",
           "depth_conv.bn": "bn2", "depth_conv.se.fc.reduce": "se.conv_reduce",
           "depth_conv.se.fc.expand": "se.conv_expand", "point_linear.conv": "conv_pwl", "point_linear.bn": "bn3"}


def _rename(state: dict, old: str, new: str, names: dict, out: dict) -> None:
    for k, v in state.items():
        for a, b in names.items():
            if k.startswith(f"{old}{a}."):
                out[f"{new}{b}.{k[len(old) + len(a) + 1:]}"] = v


def _flexbone_from_ofa(sub):
    """A static `ofa` MobileNetV3 / ProxylessNAS network -> (flexbone model, its state dict), via a block table."""
    cfg, state = sub.config, sub.state_dict()
    stages, new_state = [], {}
    _rename(state, "first_conv.", "", {"conv": "conv_stem", "bn": "bn1"}, new_state)
    for i, block in enumerate(cfg["blocks"]):
        conv = block["conv"]
        if i == 0 or block["shortcut"] is None:  # a block without identity shortcut starts a stage
            stages.append([])
        new = f"blocks.{len(stages) - 1}.{len(stages[-1])}."
        block_kw = dict(se=conv["use_se"], act=_OFA_ACT[conv["act_func"]], stride=conv["stride"],
                        skip=block["shortcut"] is not None)
        if conv["expand_ratio"] == 1:
            stages[-1].append(BlockSpec("ds", conv["kernel_size"], conv["out_channels"], **block_kw))
        else:
            mid = state[f"blocks.{i}.conv.inverted_bottleneck.conv.weight"].shape[0]
            stages[-1].append(BlockSpec("ir", conv["kernel_size"], conv["out_channels"], mid_chs=mid, **block_kw))
        _rename(state, f"blocks.{i}.conv.", new, _OFA_DS if conv["expand_ratio"] == 1 else _OFA_IR, new_state)
    _rename(state, "classifier.", "", {"linear": "classifier"}, new_state)
    act = _OFA_ACT[cfg["first_conv"]["act_func"]]
    stem_chs, head = cfg["first_conv"]["out_channels"], cfg["feature_mix_layer"]
    model_kw = dict(act_layer=act, num_classes=cfg["classifier"]["out_features"], stem_chs=stem_chs,
                    head_chs=head["out_channels"], bn_eps=cfg["bn"]["eps"], bn_momentum=cfg["bn"]["momentum"])
    if "final_expand_layer" in cfg:  # MobileNetV3: expand conv (+BN) in the trunk, feature mix after pooling
        final = cfg["final_expand_layer"]
        stages.append([BlockSpec("conv", 1, final["out_channels"], act=_OFA_ACT[final["act_func"]])])
        _rename(state, "final_expand_layer.", f"blocks.{len(stages) - 1}.0.", {"conv": "conv", "bn": "bn1"}, new_state)
        _rename(state, "feature_mix_layer.", "", {"conv": "conv_head"}, new_state)
        model = MobileNetV3(stages, head_bias=head["bias"], **model_kw)
    else:  # MobileNetV2 / ProxylessNAS: feature mix conv + BN before pooling
        _rename(state, "feature_mix_layer.", "", {"conv": "conv_head", "bn": "bn2"}, new_state)
        model = MobileNetV2(stages, **model_kw)
    return model, new_state


@pytest.fixture(scope="module")
def ofa_networks():
    pytest.importorskip("ofa")
    # only the network modules: the package's model_zoo / tutorial need gdown
    from ofa.imagenet_classification.elastic_nn.networks.ofa_mbv3 import OFAMobileNetV3
    from ofa.imagenet_classification.elastic_nn.networks.ofa_proxyless import OFAProxylessNASNets

    space = dict(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    return {"mbv3_w1.0": OFAMobileNetV3(width_mult=1.0, **space), "mbv3_w1.2": OFAMobileNetV3(width_mult=1.2, **space),
            "proxyless": OFAProxylessNASNets(width_mult=1.0, **space)}


@pytest.mark.parity
@pytest.mark.parametrize("supernet,config", [
    ("mbv3_w1.0", "max"), ("mbv3_w1.0", "min"), ("mbv3_w1.0", 0), ("mbv3_w1.0", 1), ("mbv3_w1.2", 2),
    ("proxyless", 3), ("proxyless", "min"),
])
def test_ofa_subnets_rebuild_from_block_tables(ofa_networks, supernet, config):
    net = ofa_networks[supernet]
    if config == "max":
        net.set_max_net()
    elif config == "min":
        net.set_active_subnet(ks=3, e=3, d=2)
    else:
        random.seed(config)
        net.sample_active_subnet()
    sub = randomize_(net.get_active_subnet(preserve_weight=True), seed=7).eval()
    model, state = _flexbone_from_ofa(sub)
    model.load_state_dict(state, strict=True)
    model.eval()
    assert num_params(model) == num_params(sub)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(model(x), sub(x)) <= 1e-5
    # train mode (batch statistics), with the reference's classifier dropout (p=0.1) switched off
    for m in sub.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.train(), sub.train()
    assert max_abs_diff(model(x), sub(x)) <= 1e-5
