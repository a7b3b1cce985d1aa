"""The once-for-all MobileNet supernets vs the reference ``ofa`` package, extraction, saving, BN recalibration.

The reference supernets (``OFAMobileNetV3``, ``OFAProxylessNASNets``) are built with the published
hyper-parameters (the ``ofa`` model zoo's) and random weights; their state dicts load into flexbone's supernets
(through the documented key converter), and both must compute the same function for the same sub-network and
give sub-networks of the same size. Only the reference's network modules are imported (its model zoo and
tutorial need gdown). Inputs are 64x64 to keep this fast.
"""
import copy
import json
import random

import pytest
import torch

import flexbone
from flexbone.elastic import SubnetConfig, load_subnet, recalibrate_bn
from flexbone.elastic.ofa_mobilenet import (VARIANTS, OFAMobileNetSpec, convert_ofa_static_checkpoint,
                                            static_from_ofa_config)
from flexbone.errors import CheckpointError, ConfigError
from flexbone.models.mobilenet import MobileNetV2, MobileNetV3

from _helpers import (assert_extract_equals_active_path, assert_saved_subnet_reloads,
                      assert_training_gradients_match, max_abs_diff, num_params, randomize_)

ofa_nets = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")

# every test here shares the module fixtures (8M-parameter supernets): keep them on one xdist worker
pytestmark = pytest.mark.xdist_group("ofa_mobilenet")

MBV3 = "ofa_mbv3_d234_e346_k357_w1.0"
MBV3_W12 = "ofa_mbv3_d234_e346_k357_w1.2"
PROXYLESS = "ofa_proxyless_d234_e346_k357_w1.3"
MBV2 = "ofa_mbv2_d234_e346_k357_w1.0"
SPACE = dict(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
# the reference's constructors, as its model zoo (ofa/model_zoo.py: ofa_net) builds the published supernets
REFERENCE = {
    MBV3: lambda: ofa_nets.OFAMobileNetV3(width_mult=1.0, **SPACE),
    MBV3_W12: lambda: ofa_nets.OFAMobileNetV3(width_mult=1.2, **SPACE),
    PROXYLESS: lambda: ofa_nets.OFAProxylessNASNets(width_mult=1.3, **SPACE),
    MBV2: lambda: ofa_nets.OFAProxylessNASNets(width_mult=1.0, base_stage_width="google", **SPACE),
}
STATIC = {MBV3: MobileNetV3, MBV3_W12: MobileNetV3, PROXYLESS: MobileNetV2, MBV2: MobileNetV2}
N_RANDOM = 10


@pytest.fixture(scope="module")
def nets():
    """``nets(name)`` -> (reference supernet with random weights, flexbone supernet with the same weights), cached."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            ref = randomize_(REFERENCE[name]()).eval()
            ours = flexbone.create_model(name).eval()
            report = flexbone.load_checkpoint(ours, ref.state_dict(), strict=True)  # via _convert_checkpoint
            assert report.ok
            cache[name] = (ref, ours)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _space(name):
    return OFAMobileNetSpec(**VARIANTS[name]).space(name)


def _configs(name):
    space = _space(name)
    return {"max": space.max(), "min": space.min(),
            **{f"random{s}": space.sample(random.Random(s)) for s in range(N_RANDOM)}}


CONFIGS = {MBV3: _configs(MBV3), PROXYLESS: _configs(PROXYLESS)}


def _set_ref(ref, cfg: SubnetConfig) -> None:
    """The reference's per-block lists are our fields; its ProxylessNAS has a 6th depth, its 1-block tail."""
    depth = list(cfg.depth) + ([1] if isinstance(ref, ofa_nets.OFAProxylessNASNets) else [])
    ref.set_active_subnet(ks=list(cfg.kernel), e=list(cfg.expand), d=depth)


# ---------------------------------------------------------------------------------------- registry
def test_registered_like_any_model(capsys):
    from flexbone.cli import main

    assert flexbone.list_models("ofa_mbv3*") == [MBV3, f"{MBV3}_subnet", MBV3_W12, f"{MBV3_W12}_subnet"]
    assert flexbone.list_models("ofa_*proxyless*") == [PROXYLESS, f"{PROXYLESS}_subnet"]
    assert type(flexbone.create_model(f"{MBV3}_subnet", subnet=CONFIGS[MBV3]["min"])) is MobileNetV3
    assert type(flexbone.create_model(f"{PROXYLESS}_subnet")) is MobileNetV2
    with pytest.raises(ConfigError, match="output_stride=32 only"):
        flexbone.create_model(MBV3, output_stride=16)
    # `flexbone list` shows the dotted names, with the reference supernet's parameter count
    assert main(["list", "ofa_mbv3_*_w1.0*", "--json", "--no-macs"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [MBV3, f"{MBV3}_subnet"]
    assert rows[0]["params"] == num_params(REFERENCE[MBV3]())


def test_space_size_has_the_closed_form():
    # From the definition of OFA-MobileNetV3 (Cai et al. 2020, and the reference's sample_active_subnet):
    # 5 units; a unit of depth d in {2, 3, 4} runs d blocks, each with 3 kernel sizes x 3 expand ratios
    per_unit = sum((3 * 3) ** d for d in (2, 3, 4))
    assert per_unit == 9 ** 2 + 9 ** 3 + 9 ** 4 == 7371
    resolutions = len(range(128, 224 + 1, 4))  # 128 .. 224 px, step 4
    assert resolutions == 25
    for name in (MBV3, MBV3_W12):
        assert _space(name).count() == per_unit ** 5 * resolutions
    assert 2.1e19 < per_unit ** 5 < 2.3e19  # the paper's "2 x 10^19"
    # ProxylessNAS: the same 5 units, then one fixed-depth block with its own kernel x expand (9 choices)
    for name in (PROXYLESS, MBV2):
        assert _space(name).count() == per_unit ** 5 * 9 * resolutions


def test_invalid_config_names_the_field():
    net = flexbone.create_model(MBV3, num_classes=0)
    cfg = net.space.max()
    with pytest.raises(ConfigError, match=rf"SubnetConfig.kernel\[3\] = 4 is not allowed in {MBV3}; "
                                          r"allowed: 3, 5, 7"):
        net.set_active(cfg.replace(kernel=cfg.kernel[:3] + (4,) + cfg.kernel[4:]))
    with pytest.raises(ConfigError, match=r"SubnetConfig.depth has 4 values; .* needs 5 \(allowed: 2, 3, 4\)"):
        net.set_active(cfg.replace(depth=(4,) * 4))
    with pytest.raises(ConfigError, match=r"SubnetConfig.resolution = 130 .* allowed: 128, 132"):
        net.set_active(cfg.replace(resolution=130))
    with pytest.raises(ConfigError, match="no elastic width"):
        net.set_active(cfg.replace(width=(1.0,)))
    # a config without a resolution means the largest
    assert net.set_active(cfg.replace(resolution=None)).resolution == 224


def test_model_contract_of_the_supernet():
    # tests/test_models.py leaves elastic families out: the contract, at an active sub-network
    for name, feature_shapes in [(MBV3, [(24, 16, 16), (40, 8, 8), (112, 4, 4), (960, 2, 2)]),
                                 (PROXYLESS, [(32, 16, 16), (56, 8, 8), (128, 4, 4), (416, 2, 2)])]:
        net = flexbone.create_model(name, num_classes=5, in_chans=2, drop_rate=0.1, drop_path_rate=0.1)
        net.set_active(CONFIGS[name]["min"])
        x2 = torch.randn(2, 2, 64, 64)
        out = net(x2)
        assert out.shape == (2, 5)
        out.logsumexp(1).sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        net.eval()
        with torch.no_grad():
            pre = net.forward_head(net.forward_features(x2), pre_logits=True)
            assert pre.shape == (2, net.head_hidden_size)
            assert max_abs_diff(net.get_classifier()(pre), net(x2)) < 1e-5
            net.reset_classifier(3)
            assert net(x2).shape == (2, 3) and net.extract()(x2).shape == (2, 3)
            feats = flexbone.create_model(name, in_chans=2, features_only=True).eval()(x2)
            assert [tuple(f.shape[1:]) for f in feats][-4:] == feature_shapes  # after the stride-2 level
    # stochastic depth: the max sub-network keeps the supernet's per-block rates (MobileNetV3's i / N rule)
    net = flexbone.create_model(MBV3, drop_path_rate=0.2)
    rates = [[m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"] for model in (net, net.extract())]
    assert rates[0] == rates[1] and len(rates[0]) == 15  # blocks with an identity shortcut


# ------------------------------------------------------------------------------- reference parity
PARITY = [(MBV3, c) for c in CONFIGS[MBV3]] + [(PROXYLESS, c) for c in CONFIGS[PROXYLESS]]


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("name,config", PARITY, ids=[f"{n.split('_')[1]}-{c}" for n, c in PARITY])
def test_matches_reference_supernet_and_subnet_size(nets, x, name, config):
    ref, ours = nets(name)
    cfg = CONFIGS[name][config]
    _set_ref(ref, cfg)
    ours.set_active(cfg)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5
    # the extracted sub-networks have the size of the reference's get_active_subnet()
    assert ours.extract().num_params() == num_params(ref.get_active_subnet())


@pytest.mark.parity
@pytest.mark.parametrize("name", [MBV3_W12, MBV2])
def test_other_widths_match_reference(nets, x, name):
    ref, ours = nets(name)
    for cfg in (_space(name).min(), _space(name).sample(random.Random(11))):
        _set_ref(ref, cfg)
        ours.set_active(cfg)
        with torch.no_grad():
            assert max_abs_diff(ours(x), ref(x)) <= 1e-5
        assert ours.extract().num_params() == num_params(ref.get_active_subnet())


@pytest.mark.parity
@pytest.mark.parametrize("name", [MBV3, PROXYLESS])
def test_reference_sampler_configs_are_ours(nets, x, name):
    # architectures drawn by the reference's own sampler (its ks / e / d dicts) mean the same sub-network here
    ref, ours = nets(name)
    random.seed(3)
    arch = ref.sample_active_subnet()
    cfg = ours.set_active(ours.config_from_ofa(arch))
    assert cfg.kernel == tuple(arch["ks"]) and cfg.depth == tuple(arch["d"][:5])
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("name", [MBV3, PROXYLESS])
def test_matches_reference_in_train_mode(nets, name):
    ref, ours = nets(name)
    ref_t, ours_t = copy.deepcopy(ref).train(), copy.deepcopy(ours).train()
    for m in ref_t.modules():  # the reference's classifier dropout (p=0.1) is random: switched off
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = CONFIGS[name]["random0"]
    _set_ref(ref_t, cfg)
    ours_t.set_active(cfg)
    xb = torch.randn(2, 3, 64, 64)
    assert max_abs_diff(ours_t(xb), ref_t(xb)) <= 1e-5
    # the running statistics moved the same way (the active slices only)
    ours_bn = ours_t.blocks[1][0].bn1
    ref_bn = ref_t.blocks[1].conv.inverted_bottleneck.bn.bn
    assert max_abs_diff(ours_bn.running_var, ref_bn.running_var) <= 1e-6


@pytest.mark.parity
@pytest.mark.parametrize("name,config", [(MBV3, "min"), (MBV3, "random3"), (PROXYLESS, "random1")])
def test_training_gradients_match_reference(nets, name, config):
    """A training step's gradients (the planned weights of a supernet forward, their one-node backward, the
    recycled full-size gradients) equal those of the reference's plain slicing and op-by-op kernel transform."""
    ref, ours = nets(name)
    ref_t, ours_t = copy.deepcopy(ref).train(), copy.deepcopy(ours).train()
    for m in ref_t.modules():  # the reference's classifier dropout (p=0.1) is random: switched off
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    _set_ref(ref_t, CONFIGS[name][config])
    ours_t.set_active(CONFIGS[name][config])
    got = assert_training_gradients_match(ours_t, ref_t, torch.randn(2, 3, 64, 64))
    assert any(k.endswith("5to3_matrix") for k in got)  # the kernel transform took part


@pytest.mark.parity
@pytest.mark.parametrize("name", [MBV3, PROXYLESS])
def test_reference_static_subnets_convert(nets, x, name):
    # a static network extracted by the reference (its net.config + weights) -> the same flexbone static model
    ref, _ = nets(name)
    _set_ref(ref, CONFIGS[name]["random5"])
    sub = ref.get_active_subnet().eval()
    model = static_from_ofa_config(sub.config)
    assert type(model) is STATIC[name]
    flexbone.load_checkpoint(model, convert_ofa_static_checkpoint(sub.config, sub.state_dict()), strict=True)
    assert model.num_params() == num_params(sub)
    with torch.no_grad():
        assert max_abs_diff(model.eval()(x), sub(x)) <= 1e-5


@pytest.mark.parity
def test_reference_checkpoint_namings_load(nets, x):
    ref, _ = nets(MBV3)
    ref.set_max_net()
    with torch.no_grad():
        expected = ref(x)
    # the max sub-network's static checkpoint (one nesting level less) ...
    net = flexbone.create_model(MBV3).eval()
    flexbone.load_checkpoint(net, ref.get_active_subnet().state_dict(), strict=True)
    with torch.no_grad():
        assert max_abs_diff(net(x), expected) <= 1e-5
    # ... and the published checkpoints' older block name `mobile_inverted_conv`
    old = {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k: v
           for k, v in ref.state_dict().items()}
    assert any(".mobile_inverted_conv." in k for k in old)
    net = flexbone.create_model(MBV3).eval()
    flexbone.load_checkpoint(net, old, strict=True)
    with torch.no_grad():
        assert max_abs_diff(net(x), expected) <= 1e-5
    with pytest.raises(CheckpointError, match="blocks.3.conv.depth_conv.foo.weight"):
        net._convert_checkpoint({"blocks.3.conv.depth_conv.foo.weight": torch.zeros(1)})


# ----------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("name,config", [(MBV3, "max"), (MBV3, "min"), (MBV3, "random1"), (MBV3, "random2"),
                                         (PROXYLESS, "min"), (PROXYLESS, "random1")])
def test_extracted_subnet_equals_active_path(nets, name, config):
    net = copy.deepcopy(nets(name)[1])  # train mode moves BN statistics: keep the shared fixture clean
    cfg = CONFIGS[name][config]
    sub = assert_extract_equals_active_path(net, cfg, STATIC[name], "classifier")
    assert sub.default_cfg["input_size"] == (3, cfg.resolution, cfg.resolution)


def test_saved_subnet_reloads_with_create_model(nets, x, tmp_path):
    _, ours = nets(MBV3)
    cfg = CONFIGS[MBV3]["random3"]
    meta = assert_saved_subnet_reloads(ours, cfg, tmp_path / "sub", x, MobileNetV3)
    assert meta["model"] == f"{MBV3}_subnet"
    folder = tmp_path / "sub"
    assert load_subnet(folder).default_cfg["input_size"] == (3, cfg.resolution, cfg.resolution)
    # a dense-prediction variant of the same sub-network: output_stride 16, the same weights
    dense = load_subnet(folder, features_only=True, output_stride=16).eval()
    assert dense.feature_info.reduction() == [2, 4, 8, 16, 16]
    with torch.no_grad():
        assert max_abs_diff(dense(x)[1], ours.forward_intermediates(x, intermediates_only=True)[1]) <= 1e-6


def test_gradients_reach_only_the_active_slices(nets):
    net = copy.deepcopy(nets(MBV3)[1]).train()
    net.set_active(CONFIGS[MBV3]["min"])  # depth 2, kernel 3, expand 3 everywhere
    net.set_grad_checkpointing(True)
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    blk = net.blocks[1][0]  # 16 -> 24 channels; min: 16 x 3 = 48 of 96 middle channels
    assert blk.conv_pw.weight.grad[:48].abs().sum() > 0 and blk.conv_pw.weight.grad[48:].abs().sum() == 0
    dw = blk.conv_dw.weight.grad  # a 3x3 kernel: 7x7 -> centre 5x5 (x 7to5) -> centre 3x3 (x 5to3)
    assert dw[:48, :, 1:6, 1:6].abs().sum() > 0
    assert dw[48:].abs().sum() == 0 and dw[:, :, 0].abs().sum() == 0 and dw[:, :, :, 6].abs().sum() == 0
    assert blk.conv_dw.get_parameter("5to3_matrix").grad.abs().sum() > 0
    assert net.blocks[1][2].conv_pw.weight.grad is None  # depth 2 of 4: the third block did not run


def test_grad_checkpointing_gives_the_same_outputs_and_gradients(nets):
    net = copy.deepcopy(nets(PROXYLESS)[1]).train()
    net.set_active(CONFIGS[PROXYLESS]["random2"])
    xb = torch.randn(2, 3, 64, 64)
    grads = []
    for enable in (False, True):
        net.set_grad_checkpointing(enable)
        net.zero_grad()
        net(xb).square().mean().backward()
        grads.append(net.blocks[2][0].conv_pwl.weight.grad.clone())
    assert max_abs_diff(grads[0], grads[1]) <= 1e-6


@pytest.mark.parity
@pytest.mark.parametrize("expand_stage", [0, 1])
def test_channel_reorganisation_keeps_the_max_net_and_matches_reference(nets, x, expand_stage):
    ref, ours = nets(MBV3)
    net, ref_r = copy.deepcopy(ours), copy.deepcopy(ref)
    net.set_active(CONFIGS[MBV3]["max"])
    with torch.no_grad():
        before = net(x)
        net.reorganize_channels(expand_stage)
        assert not torch.equal(net.blocks[2][1].conv_pwl.weight, ours.blocks[2][1].conv_pwl.weight)
        assert max_abs_diff(net(x), before) <= 1e-5 * before.abs().max().item()
        ref_r.re_organize_middle_weights(expand_ratio_stage=expand_stage)
        cfg = CONFIGS[MBV3]["random4"]  # smaller expand ratios now keep the channels the reference keeps
        _set_ref(ref_r, cfg)
        net.set_active(cfg)
        assert max_abs_diff(net(x), ref_r(x)) <= 1e-5


# ------------------------------------------------------------------------------- BN recalibration
def _loader(n_batches=3, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 64, 64, generator=g) * 2 + 0.5, torch.zeros(batch, dtype=torch.long))
            for _ in range(n_batches)]


@pytest.mark.parametrize("name", [MBV3, PROXYLESS])
def test_recalibrated_supernet_path_equals_recalibrated_subnet(nets, x, name):
    net = copy.deepcopy(nets(name)[1])
    net.set_active(CONFIGS[name]["random6"])
    sub = net.extract()
    loader = _loader()
    with torch.no_grad():
        before = sub.eval()(x)
    assert recalibrate_bn(net, loader) == recalibrate_bn(sub, loader) == 12
    with torch.no_grad():
        after = sub(x)
        assert max_abs_diff(after, before) > 1e-3  # the statistics did change
        assert max_abs_diff(net.eval()(x), after) <= 1e-5
        assert max_abs_diff(net.extract()(x), after) <= 1e-5


@pytest.mark.parity
@pytest.mark.slow
def test_recalibration_matches_reference(nets, x):
    set_running_statistics = pytest.importorskip("ofa.imagenet_classification.elastic_nn.utils").set_running_statistics
    # float64: batch statistics of a few values per channel in the deep layers amplify float32 rounding
    ref, ours = nets(MBV3)
    cfg = CONFIGS[MBV3]["random7"]
    ref_r, net = copy.deepcopy(ref).double(), copy.deepcopy(ours).double()
    _set_ref(ref_r, cfg)
    net.set_active(cfg)
    loader = [(images.double(), targets) for images, targets in _loader()]
    set_running_statistics(ref_r, loader)
    recalibrate_bn(net, loader)
    with torch.no_grad():
        assert max_abs_diff(net(x.double()), ref_r(x.double())) <= 1e-9


# ---------------------------------------------------------------------------- inference weight cache
def test_inference_weight_cache_follows_weight_changes(nets, x):
    # in eval mode without autograd the dynamic layers reuse their derived (sliced / transformed) weights:
    # every way of changing the weights must still reach the output
    net = copy.deepcopy(nets(MBV3)[1]).eval()
    net.set_active(CONFIGS[MBV3]["random8"].replace(kernel=(5,) * 20))  # 5x5: the 7to5 matrix is used

    def fresh():  # a copy has new storage: nothing cached can apply to it
        return copy.deepcopy(net)(x)

    with torch.no_grad():
        first = net(x)
        assert torch.equal(net(x), first)
        blk = net.blocks[3][0]  # kernel-transformed depthwise conv and sliced 1x1 convs
        blk.conv_dw.get_parameter("7to5_matrix").mul_(1.5)  # an in-place change (as optimiser steps are)
        blk.conv_pw.weight.mul_(-1)
        changed = net(x)
        assert not torch.equal(changed, first) and torch.equal(changed, fresh())
        net.load_state_dict(nets(MBV3)[1].state_dict())
        assert torch.equal(net(x), first)
        net.set_active(CONFIGS[MBV3]["min"])  # another shape
        assert torch.equal(net(x), fresh())
    # a training step in between (train mode, autograd) invalidates it as well
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    opt.step()
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), fresh()) and torch.equal(net.extract()(x), net(x))
