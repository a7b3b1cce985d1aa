"""The once-for-all ResNet-50 supernet vs the reference ``ofa`` package (``OFAResNets``), extraction, BN recalibration.

The reference supernet is built with the published hyper-parameters and random weights; its state dict
loads into flexbone's ``ofa_resnet50`` (through the documented key converter) and both must compute the same
function for the same sub-network, give sub-networks of the same size, and recalibrate BN the same way.
Inputs are 64x64 to keep this fast.
"""
import copy
import random

import pytest
import torch

import flexbone
from flexbone.elastic import SubnetConfig, load_subnet, recalibrate_bn
from flexbone.errors import CheckpointError, ConfigError
from flexbone.models.resnet import ResNet

from _helpers import (assert_extract_equals_active_path, assert_saved_subnet_reloads,
                      assert_training_gradients_match, max_abs_diff, num_params, randomize_)

ofa_resnets = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks.ofa_resnets")

# every test here shares the (48M-parameter) module fixtures: keep them on one xdist worker
pytestmark = pytest.mark.xdist_group("ofa_resnet50")

WIDTHS = [0.65, 0.8, 1.0]  # the reference's width choices, addressed by index in its configs
N_RANDOM = 10


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    net = ofa_resnets.OFAResNets(n_classes=1000, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                                 width_mult_list=WIDTHS)
    return randomize_(net).eval()


@pytest.fixture(scope="module")
def ours(ref):
    net = flexbone.create_model("ofa_resnet50").eval()
    report = flexbone.load_checkpoint(net, ref.state_dict(), strict=True)  # via OFAResNet._convert_checkpoint
    assert report.ok
    return net


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _set_ref(ref, cfg: SubnetConfig) -> None:
    ref.set_active_subnet(d=list(cfg.depth), e=list(cfg.expand), w=[WIDTHS.index(v) for v in cfg.width])


def _configs(space):
    return {"max": space.max(), "min": space.min(),
            **{f"random{s}": space.sample(random.Random(s)) for s in range(N_RANDOM)}}


def _space():
    from flexbone.elastic.ofa_resnet import OFAResNetSpec
    return OFAResNetSpec().space("ofa_resnet50")


CONFIGS = _configs(_space())


# ---------------------------------------------------------------------------------------- registry
def test_registered_like_any_model():
    assert flexbone.list_models("ofa_resnet*") == ["ofa_resnet50", "ofa_resnet50_subnet"]
    assert isinstance(flexbone.create_model("ofa_resnet50_subnet", subnet=_space().min()), ResNet)
    with pytest.raises(ConfigError, match="output_stride=32 only"):
        flexbone.create_model("ofa_resnet50", output_stride=16)


def test_model_contract_of_the_supernet():
    # tests/test_models.py leaves elastic families out: the contract, at an active sub-network
    net = flexbone.create_model("ofa_resnet50", num_classes=5, in_chans=2, drop_rate=0.1, drop_path_rate=0.1)
    net.set_active(CONFIGS["min"])
    x = torch.randn(2, 2, 64, 64)
    out = net(x)
    assert out.shape == (2, 5)
    out.logsumexp(1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    with torch.no_grad():
        feats = net.forward_features(x)
        assert feats.shape == (2, 1328, 2, 2)  # min: 2048 x 0.65 -> 1328 channels
        pre = net.forward_head(feats, pre_logits=True)
        assert max_abs_diff(net.forward_head(feats), net.get_classifier()(pre)) < 1e-5
        net.reset_classifier(3)
        assert net(x).shape == (2, 3) and net.extract()(x).shape == (2, 3)
        net.reset_classifier(0)
        assert net(x).shape == (2, 1328)


def test_subnet_builder_takes_resnet_options(ours):
    # a sub-network for dense prediction: output_stride=16 dilates its last stage, the weights still fit
    cfg = CONFIGS["random7"]
    sub = ours.extract(cfg).eval()
    dense = flexbone.create_model("ofa_resnet50_subnet", subnet=cfg, features_only=True, output_stride=16).eval()
    flexbone.load_checkpoint(dense, sub.state_dict(), skip_mismatched_classifier=True)
    assert dense.feature_info.reduction() == [2, 4, 8, 16, 16]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(dense(x)[:4], sub.forward_intermediates(x, intermediates_only=True)[:4], strict=True):
            assert max_abs_diff(a, b) <= 1e-6


def test_space_size_has_the_closed_form(ours):
    # From the definition of the space (OFA-ResNet50, as OFAResNets samples it):
    # - stem: with or without its residual middle conv                          -> 2
    # - stage i has base_i + d blocks, d in {0, 1, 2}; each running block takes one of 3 expand ratios
    #   -> sum_d 3^(base_i + d):  base 2: 3^2 + 3^3 + 3^4 = 117;  base 4: 3^4 + 3^5 + 3^6 = 1053
    # - width multipliers: stem inner, stem output and 4 stages, 3 choices each -> 3^6
    stage_b2 = 3 ** 2 + 3 ** 3 + 3 ** 4
    stage_b4 = 3 ** 4 + 3 ** 5 + 3 ** 6
    assert (stage_b2, stage_b4) == (117, 1053)
    expected = 2 * stage_b2 ** 3 * stage_b4 * 3 ** 6
    assert ours.space.count() == expected == 2_458_914_796_962


def test_invalid_config_names_the_field(ours):
    cfg = ours.space.max()
    with pytest.raises(ConfigError, match=r"SubnetConfig.expand\[3\] = 0.3 is not allowed in ofa_resnet50; "
                                          r"allowed: 0.2, 0.25, 0.35"):
        ours.set_active(cfg.replace(expand=cfg.expand[:3] + (0.3,) + cfg.expand[4:]))
    with pytest.raises(ConfigError, match=r"SubnetConfig.depth\[0\] = 1 .* allowed: 0, 2"):
        ours.set_active(cfg.replace(depth=(1, 2, 2, 2, 2)))
    with pytest.raises(ConfigError, match=r"SubnetConfig.width has 4 values; ofa_resnet50 needs 6"):
        ours.set_active(cfg.replace(width=(1.0,) * 4))
    with pytest.raises(ConfigError, match="no elastic kernel"):
        ours.set_active(cfg.replace(kernel=(3,) * 18))


# ------------------------------------------------------------------------------- reference parity
@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference_supernet_and_subnet_size(ref, ours, x, name):
    cfg = CONFIGS[name]
    _set_ref(ref, cfg)
    ours.set_active(cfg)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5
    # the extracted sub-networks have the same size as the reference's get_active_subnet()
    assert ours.extract().num_params() == num_params(ref.get_active_subnet())


@pytest.mark.parity
def test_reference_sampler_configs_are_ours(ref, ours, x):
    # configurations drawn by the reference's own sampler (its d/e/w format) mean the same sub-network here
    random.seed(3)
    arch = ref.sample_active_subnet()
    cfg = SubnetConfig(depth=arch["d"], expand=arch["e"], width=[WIDTHS[i] for i in arch["w"]])
    ours.set_active(cfg)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5


@pytest.mark.parity
def test_matches_reference_in_train_mode(ref, ours):
    cfg = CONFIGS["random0"]
    ref_t, ours_t = copy.deepcopy(ref).train(), copy.deepcopy(ours).train()
    _set_ref(ref_t, cfg)
    ours_t.set_active(cfg)
    xb = torch.randn(2, 3, 64, 64)
    assert max_abs_diff(ours_t(xb), ref_t(xb)) <= 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("name", ["min", "random2"])
def test_training_gradients_match_reference(ref, ours, name):
    """A training step's gradients (the planned weights of a supernet forward, their one-node backward, the
    recycled full-size gradients) equal those of the reference's plain slicing."""
    ref_t, ours_t = copy.deepcopy(ref).train(), copy.deepcopy(ours).train()
    _set_ref(ref_t, CONFIGS[name])
    ours_t.set_active(CONFIGS[name])
    assert_training_gradients_match(ours_t, ref_t, torch.randn(2, 3, 64, 64))


@pytest.mark.parity
def test_reference_static_subnet_checkpoint_loads(ref, ours, x):
    # the reference's extracted ResNets uses the *static* layer naming (one level less): accepted as well
    _set_ref(ref, CONFIGS["max"])
    static_ref = ref.get_active_subnet().eval()
    net = flexbone.create_model("ofa_resnet50").eval()
    flexbone.load_checkpoint(net, static_ref.state_dict(), strict=True)
    with torch.no_grad():
        assert max_abs_diff(net(x), static_ref(x)) <= 1e-5
    with pytest.raises(CheckpointError, match="blocks.0.conv9.conv.weight"):
        net._convert_checkpoint({"blocks.0.conv9.conv.weight": torch.zeros(1)})


# ----------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("name", ["max", "min", "random1", "random2"])
def test_extracted_subnet_equals_active_path(ours, name):
    net = copy.deepcopy(ours)  # train mode moves BN statistics: keep the shared fixture clean
    assert_extract_equals_active_path(net, CONFIGS[name], ResNet, "fc")


def test_saved_subnet_reloads_with_create_model(ours, x, tmp_path):
    cfg = CONFIGS["min"]  # the smallest (fast to build thrice); random ones are covered by the tests above
    meta = assert_saved_subnet_reloads(ours, cfg, tmp_path / "sub", x, ResNet)
    assert meta["model"] == "ofa_resnet50_subnet"
    feats = load_subnet(tmp_path / "sub", features_only=True)(x)
    assert [f.shape[1] for f in feats][-4:] == meta["architecture"]["kwargs"]["stage_widths"]  # after the stem level


def test_features_only_supernet_follows_the_active_widths(ours, x):
    net = flexbone.create_model("ofa_resnet50", features_only=True).eval()
    net.set_active(CONFIGS["min"])
    feats = net(x)
    assert [tuple(f.shape[1:]) for f in feats][-4:] == [(168, 16, 16), (336, 8, 8), (664, 4, 4), (1328, 2, 2)]


def test_gradients_reach_only_the_active_slices(ours):
    net = copy.deepcopy(ours).train()
    net.set_active(CONFIGS["min"])
    net.set_grad_checkpointing(True)
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    grad = net.layer1[0].conv1.weight.grad  # min: 168 outputs x 0.2 -> 32 middle channels, stem 40 channels
    assert grad[:32, :40].abs().sum() > 0
    assert grad[32:].abs().sum() == 0 and grad[:, 40:].abs().sum() == 0
    assert net.layer1[2].conv1.weight.grad is None  # depth 2 of 4: the third block did not run


def test_channel_reorganisation_keeps_the_max_net_and_matches_reference(ref, ours, x):
    net, ref_r = copy.deepcopy(ours), copy.deepcopy(ref)
    net.set_active(CONFIGS["max"])
    with torch.no_grad():
        before = net(x)
        net.reorganize_channels()
        assert max_abs_diff(net(x), before) <= 1e-5 * before.abs().max().item()
        ref_r.re_organize_middle_weights()
        cfg = CONFIGS["random4"]
        _set_ref(ref_r, cfg)
        net.set_active(cfg)
        assert max_abs_diff(net(x), ref_r(x)) <= 1e-5


# ------------------------------------------------------------------------------- BN recalibration
def _loader(n_batches=3, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 64, 64, generator=g) * 2 + 0.5, torch.zeros(batch, dtype=torch.long))
            for _ in range(n_batches)]


def test_recalibration_uses_the_mean_of_per_batch_statistics():
    # definition (OFA): batch-size-weighted mean of per-batch means and of per-batch biased variances
    bn = torch.nn.BatchNorm2d(3)
    batches = [torch.randn(n, 3, 4, 4) * (i + 1) + i for i, n in enumerate((2, 5))]
    recalibrate_bn(bn, batches)
    means = [b.mean((0, 2, 3)) for b in batches]
    variances = [b.permute(1, 0, 2, 3).reshape(3, -1).var(1, unbiased=False) for b in batches]
    assert torch.allclose(bn.running_mean, (2 * means[0] + 5 * means[1]) / 7, atol=1e-6)
    assert torch.allclose(bn.running_var, (2 * variances[0] + 5 * variances[1]) / 7, atol=1e-5)


@pytest.mark.parity
@pytest.mark.slow
def test_recalibration_matches_reference(ref, ours, x):
    set_running_statistics = pytest.importorskip("ofa.imagenet_classification.elastic_nn.utils").set_running_statistics
    # float64: in float32 the two implementations round differently (batch statistics of a few values per
    # channel in the deep layers amplify it to ~1e-4 relative); in float64 they must agree to rounding
    cfg = CONFIGS["random5"]
    ref_r, net = copy.deepcopy(ref).double(), copy.deepcopy(ours).double()
    _set_ref(ref_r, cfg)
    net.set_active(cfg)
    loader = [(images.double(), targets) for images, targets in _loader()]
    set_running_statistics(ref_r, loader)
    recalibrate_bn(net, loader)
    x = x.double()
    with torch.no_grad():
        after = net(x)
        ours.set_active(cfg)
        assert max_abs_diff(after, ours(x.float())) > 1e-3  # the statistics did change ...
        assert max_abs_diff(after, ref_r(x)) <= 1e-9  # ... as the reference changes them


def test_recalibrated_supernet_path_equals_recalibrated_subnet(ours, x):
    net = copy.deepcopy(ours)
    net.set_active(CONFIGS["random6"])
    sub = net.extract()
    loader = _loader()
    assert recalibrate_bn(net, loader) == recalibrate_bn(sub, loader) == 12
    with torch.no_grad():
        assert max_abs_diff(net.eval()(x), sub.eval()(x)) <= 1e-5
        assert max_abs_diff(net.extract()(x), sub(x)) <= 1e-5


def test_recalibration_restores_modes_and_touches_no_parameter(ours):
    net = copy.deepcopy(ours).train()
    net.layer2.eval()  # a mixed-mode model: each module gets its own flag back
    net.set_active(CONFIGS["min"])
    params = {k: v.clone() for k, v in net.named_parameters()}
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    modes = {k: m.training for k, m in net.named_modules()}
    consumed = []

    def loader():
        for item in _loader(n_batches=5, batch=2):
            consumed.append(1)
            yield item

    assert recalibrate_bn(net, loader(), num_batches=2) == 4
    assert len(consumed) <= 3  # stops after two batches
    assert all(torch.equal(v, params[k]) for k, v in net.named_parameters())
    assert {k: m.training for k, m in net.named_modules()} == modes
    state = dict(net.named_buffers())
    assert all(torch.equal(state[k], v) for k, v in buffers.items() if k.endswith("num_batches_tracked"))
    # BN layers outside the active path keep their statistics; the active slice of the others changes
    assert torch.equal(state["layer1.3.bn1.running_mean"], buffers["layer1.3.bn1.running_mean"])
    assert torch.equal(state["layer1.0.bn3.running_mean"][168:], buffers["layer1.0.bn3.running_mean"][168:])
    assert not torch.equal(state["layer1.0.bn3.running_mean"][:168], buffers["layer1.0.bn3.running_mean"][:168])
