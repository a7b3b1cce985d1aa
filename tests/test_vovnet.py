"""VoVNet v1/v2 vs timm's ``vovnet.py`` (the reference nobody here wrote).

Every VoVNet that timm 1.0.31 registers is registered here too; each loads timm's state dict with
strict=True and gives the same outputs (eval, fp32, max abs diff <= 1e-5) with the same parameter count.
The two rows timm does not register (vovnet27_slim of the VoVNet paper's code, ese_vovnet19b, which timm
has as a config only) are checked against timm's ``VovNet`` class built from the same configuration.
"""
import pytest
import torch

import flexbone
from flexbone.errors import ConfigError
from flexbone.models.vovnet import VARIANTS

from _helpers import assert_checkpointing_keeps_gradients, max_abs_diff, num_params, randomize_

timm = pytest.importorskip("timm")
from timm.models.vovnet import VovNet as TimmVovNet  # noqa: E402

pytestmark = pytest.mark.parity

TIMM_NAMES = set(timm.list_models("*vovnet*"))
BIG = {"vovnet57a", "ese_vovnet57b", "ese_vovnet99b"}


def _timm_model(name: str, **kwargs):
    """timm's registered model, or timm's VovNet class built from our table row for the names timm lacks."""
    if name in TIMM_NAMES:
        return timm.create_model(name, **kwargs)
    cfg = VARIANTS[name]
    return TimmVovNet(dict(stem_chs=list(cfg.stem_chs), stage_conv_chs=list(cfg.stage_conv_chs),
                           stage_out_chs=list(cfg.stage_out_chs), block_per_stage=list(cfg.block_per_stage),
                           layer_per_block=cfg.layer_per_block, residual=cfg.residual, depthwise=cfg.depthwise,
                           attn=cfg.attn), **kwargs)


def test_every_timm_vovnet_is_registered():
    assert TIMM_NAMES, "timm registers no VoVNet?"
    assert TIMM_NAMES <= set(flexbone.list_models(family="vovnet"))
    # the two extra rows: the VoVNet paper's vovnet27_slim and timm's unregistered ese_vovnet19b config
    assert set(flexbone.list_models(family="vovnet")) - TIMM_NAMES == {"vovnet27_slim", "ese_vovnet19b"}


def test_ese_vovnet19b_row_is_timms_config():
    # timm keeps the ese_vovnet19b configuration without registering it: our row must be that configuration
    from timm.models.vovnet import model_cfgs

    ours, ref = VARIANTS["ese_vovnet19b"], model_cfgs["ese_vovnet19b"]
    assert (list(ours.stem_chs), list(ours.stage_conv_chs), list(ours.stage_out_chs), list(ours.block_per_stage),
            ours.layer_per_block, ours.residual, ours.depthwise, ours.attn) == (
        ref["stem_chs"], ref["stage_conv_chs"], ref["stage_out_chs"], ref["block_per_stage"],
        ref["layer_per_block"], ref["residual"], ref["depthwise"], ref["attn"])


def _uninitialised(build):
    """Build on the meta device and allocate without running the (slow, here pointless) weight init."""
    with torch.device("meta"):
        model = build()
    model = model.to_empty(device="cpu")
    for name, buf in model.named_buffers():
        if not buf.is_floating_point():
            buf.zero_()  # num_batches_tracked
    return model


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in VARIANTS])
def test_timm_checkpoint_loads_and_matches(name):
    # every weight and statistic is overwritten (randomize_, then a strict load): skip the initialisation
    ref = randomize_(_uninitialised(lambda: _timm_model(name))).eval()
    ours = _uninitialised(lambda: flexbone.create_model(name)).eval()
    assert num_params(ours) == num_params(ref)
    # (loading through a file is covered by test_classifier_reset_and_pretrained_with_new_classes)
    assert flexbone.load_checkpoint(ours, ref.state_dict(), strict=True).ok
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0  # a degenerate (constant) output would hide wiring mistakes
        assert max_abs_diff(ours(x), expected) <= 1e-5
        assert max_abs_diff(ours.forward_head(ours.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5


def test_preprocessing_is_timms():
    # the input size, crop, mean/std timm's trained weights expect (its pretrained_cfg), and where stem/head are
    keys = ("input_size", "test_input_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier")
    for name in sorted(TIMM_NAMES):
        ref = timm.models.get_pretrained_cfg(name).to_dict()
        with torch.device("meta"):
            cfg = flexbone.create_model(name).default_cfg
        assert {k: cfg.get(k) for k in keys} == {k: ref.get(k) for k in keys}, name  # (absent keys: as timm)
        assert cfg.get("test_crop_pct") == ref.get("test_crop_pct"), name


@pytest.mark.parametrize("name,expected", [("vovnet39a", 22_600_296), ("ese_vovnet39b", 24_568_936)])
def test_reference_parameter_counts(name, expected):
    # DESIGN.md reference counts (timm, 1000 classes)
    with torch.device("meta"):
        model = flexbone.create_model(name)
    assert num_params(model) == expected


@pytest.mark.parametrize("name", ["ese_vovnet19b_slim_dw", "vovnet27_slim"])
def test_features_match_timm_stage_outputs(name):
    # timm's five levels: the stride-2 stem level, then stages.0..3
    ref = randomize_(_timm_model(name)).eval()
    ours = flexbone.create_model(name, features_only=True).eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("head.")}, strict=True)
    x = torch.randn(1, 3, 64, 96)  # non-square, any size divisible by 32
    with torch.no_grad():
        _, expected = ref.forward_intermediates(x)
        got = ours(x)
    assert len(got) == 5
    for a, b in zip(got, expected, strict=True):
        assert max_abs_diff(a, b) <= 1e-5
    assert ours.feature_info.channels() == [i["num_chs"] for i in ref.feature_info]
    assert ours.feature_info.reduction() == [2, 4, 8, 16, 32] == [i["reduction"] for i in ref.feature_info]
    assert [tuple(t.shape[-2:]) for t in got] == [(64 // r, 96 // r) for r in (2, 4, 8, 16, 32)]


def test_out_indices_select_levels():
    full = flexbone.create_model("ese_vovnet19b_slim_dw", features_only=True).eval()
    part = flexbone.create_model("ese_vovnet19b_slim_dw", features_only=True, out_indices=(-3, -1)).eval()
    part.load_state_dict(full.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = full(x), part(x)
    assert len(b) == 2 and torch.equal(b[0], a[2]) and torch.equal(b[1], a[4])
    assert part.feature_info.channels() == [256, 512]


def test_train_mode_options_match_timm():
    # train-mode BN, a 1-channel stride-2 stem, another pooling and class count: all as timm
    kwargs = dict(num_classes=7, in_chans=1, global_pool="catavgmax", stem_stride=2)
    ref = randomize_(_timm_model("ese_vovnet19b_slim", **kwargs))
    ours = flexbone.create_model("ese_vovnet19b_slim", **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1, 64, 64)
    out = ours(x)
    assert out.shape == (2, 7)
    assert max_abs_diff(out, ref(x)) <= 1e-5
    assert ours.forward_head(ours.forward_features(x), pre_logits=True).shape == (2, 2 * 512)
    assert ours.feature_info.reduction() == [i["reduction"] for i in ref.feature_info] == [2, 4, 8, 16, 32]


def test_drop_rates_follow_timm():
    ref = _timm_model("ese_vovnet39b", drop_rate=0.3, drop_path_rate=0.2)
    ours = flexbone.create_model("ese_vovnet39b", drop_rate=0.3, drop_path_rate=0.2)
    assert ours.head.drop.p == ref.head.drop.p == 0.3

    def rates(model):  # stochastic depth of the blocks that have an identity shortcut
        return {n: round(m.drop_path.drop_prob, 6) for n, m in model.named_modules()
                if n.count(".") == 3 and hasattr(m, "residual") and m.residual and m.drop_path is not None}

    assert rates(ours) == rates(ref) and len(rates(ours)) == 2  # the second blocks of stages 3 and 4
    assert max(rates(ours).values()) == pytest.approx(0.2)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = randomize_(flexbone.create_model("ese_vovnet19b_slim_dw", num_classes=5))
    assert_checkpointing_keeps_gradients(model, torch.randn(2, 3, 64, 64))
    assert all(s.grad_checkpointing for s in model.stages)


def test_classifier_reset_and_pretrained_with_new_classes(tmp_path):
    ref = randomize_(timm.create_model("ese_vovnet19b_dw")).eval()
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    model = flexbone.create_model("ese_vovnet19b_dw", pretrained=path, num_classes=3).eval()
    assert model.get_classifier().out_features == 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the backbone came from the checkpoint: pooled features equal timm's
        assert max_abs_diff(model.forward_head(model.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5
    model.reset_classifier(0)
    assert model(x).shape == (1, 1024)


def test_output_stride_other_than_32_is_refused():
    with pytest.raises(ConfigError, match="output_stride"):
        flexbone.create_model("vovnet39a", output_stride=16)
