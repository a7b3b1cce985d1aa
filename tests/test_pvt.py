"""Pyramid Vision Transformers v1 and v2.

References nobody here wrote: timm's ``pvt_v2`` models (strict state-dict load, equal outputs, pyramids,
drop-path schedule and parameter counts; its converter for the original PVT v2 checkpoints) and, for PVT v1
which timm lacks, the paper's parameter counts and GFLOPs (Wang et al. 2021, Table 1/2).
"""
import pytest
import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import flexbone
from flexbone.errors import ConfigError
from flexbone.models.pvt import VARIANTS

from _helpers import max_abs_diff, num_params, randomize_

timm = pytest.importorskip("timm")

V2 = [n for n in VARIANTS if n.startswith("pvt_v2")]
V1 = [n for n in VARIANTS if not n.startswith("pvt_v2")]
BIG = {"pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5"}
SMALL = ["pvt_v2_b0", "pvt_v2_b2_li", "pvt_tiny"]  # one of each kind: v2, v2 linear SRA, v1


def _timm_pair(name: str, **kwargs):
    """timm's model with random weights, and ours with those weights loaded strictly; both in eval mode."""
    ref = randomize_(timm.create_model(name, **kwargs)).eval()
    ours = flexbone.create_model(name, **kwargs).eval()
    report = flexbone.load_checkpoint(ours, ref.state_dict(), strict=True)
    assert report.ok
    return ref, ours


# ------------------------------------------------------------------------------------- v2 vs timm
def test_every_v2_variant_has_a_timm_twin():
    assert set(V2) == set(timm.list_models("pvt_v2*"))


@pytest.mark.parity
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in V2])
def test_v2_timm_checkpoint_loads_and_matches(name):
    ref, ours = _timm_pair(name)
    assert num_params(ours) == num_params(ref)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5
        assert max_abs_diff(ours.forward_head(ours.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_v2_pyramid_matches_timm(name):
    ref, ours = _timm_pair(name)
    feats = flexbone.create_model(name, features_only=True).eval()
    feats.load_state_dict(ours.state_dict(), strict=False)  # the head is gone in a feature extractor
    assert feats.feature_info.channels() == [i["num_chs"] for i in ref.feature_info]
    assert feats.feature_info.reduction() == [i["reduction"] for i in ref.feature_info] == [4, 8, 16, 32]
    # square, divisible by 32; and sizes that are not (the overlapping convs pad: ceil division)
    for size in [(64, 64), (96, 96), (50, 70)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = ref.forward_intermediates(x, intermediates_only=True)
            got = feats(x)
            assert len(got) == 4
            for a, b in zip(got, expected, strict=True):
                assert a.shape == b.shape
                assert max_abs_diff(a, b) <= 1e-5
            assert max_abs_diff(ours(x), ref(x)) <= 1e-5


@pytest.mark.parity
def test_v2_train_mode_and_drop_path_schedule_match_timm():
    ref = randomize_(timm.create_model("pvt_v2_b0", drop_path_rate=0.3, drop_rate=0.2))
    ours = flexbone.create_model("pvt_v2_b0", drop_path_rate=0.3, drop_rate=0.2)

    def rates(model):
        return [round(float(getattr(b.drop_path1, "drop_prob", 0.0)), 6) for s in model.stages for b in s.blocks]

    assert rates(ours) == rates(ref)
    assert rates(ours)[0] == 0.0 and rates(ours)[-1] == pytest.approx(0.3)
    # train mode without the random parts: outputs agree too
    ref2, ours2 = _timm_pair("pvt_v2_b0")
    ref2.train(), ours2.train()
    x = torch.randn(2, 3, 64, 64)
    assert max_abs_diff(ours2(x), ref2(x)) <= 1e-5


@pytest.mark.parity
def test_v2_original_checkpoint_names_are_converted():
    # the original PVT v2 code names its weights patch_embed1 / block1.0 / norm1 / dwconv.dwconv; timm's
    # checkpoint_filter_fn is the reference for how they map onto the timm names that we use
    from timm.models.pvt_v2 import checkpoint_filter_fn

    import re

    ref = timm.create_model("pvt_v2_b0")
    timm_sd = ref.state_dict()
    original = {}
    for k, v in timm_sd.items():
        k = k.replace("mlp.dwconv", "mlp.dwconv.dwconv")
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.blocks\.", lambda m: f"block{int(m.group(1)) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m.group(1)) + 1}.", k)
        original[k] = v
    assert checkpoint_filter_fn(original, ref).keys() == timm_sd.keys()  # the renaming above is the original's
    ours = flexbone.create_model("pvt_v2_b0")
    assert flexbone.load_checkpoint(ours, original, strict=True).ok
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in timm_sd.items())


def test_pvt_v2_b0_reference_parameter_count():
    assert num_params(flexbone.create_model("pvt_v2_b0")) == 3_666_760  # DESIGN.md (timm, 1000 classes)


# ------------------------------------------------------------------------------------ v1 vs paper
# Wang et al. 2021, Table 2: parameters (M) and "GFLOPs" at 224x224, 1000 classes.
PAPER_V1 = {"pvt_tiny": (13.2, 1.9), "pvt_small": (24.5, 3.8), "pvt_medium": (44.2, 6.7), "pvt_large": (61.4, 9.8)}


@pytest.mark.parametrize("name", V1)
def test_v1_parameters_and_gflops_match_the_paper(name):
    params_m, gflops = PAPER_V1[name]
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = flexbone.create_model(name)
        x = torch.empty(1, 3, 224, 224)
    # the math backend spells attention out as two batched matmuls, which the counter sees; the paper
    # counts them (without them pvt_small/medium/large come to 3.7/6.4/9.5 instead of 3.8/6.7/9.8)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    counts = counter.get_flop_counts()["Global"]
    assert counts.get(torch.ops.aten.bmm, 0) > 0, "attention matmuls were not counted"
    # FlopCounterMode counts a multiply-add as 2 FLOPs; the paper's "GFLOPs" are multiply-adds (MACs)
    gmacs = counter.get_total_flops() / 2 / 1e9
    assert abs(num_params(model) / 1e6 - params_m) <= 0.01 * params_m
    assert round(num_params(model) / 1e6, 1) == params_m
    # within 1%, or within the paper's printed precision (+-0.05): pvt_tiny has 1.933 GMACs, printed "1.9"
    assert abs(gmacs - gflops) <= max(0.01 * gflops, 0.05)
    assert round(gmacs, 1) == gflops


def test_v1_position_embeddings_are_interpolated_per_stage_grid():
    model = flexbone.create_model("pvt_tiny", img_size=64).eval()  # grids 16, 8, 4, 2
    last = model.num_stages - 1
    with torch.no_grad():
        for i, g in enumerate(model.grid_sizes):
            pos = getattr(model, f"pos_embed{i + 1}")
            grid = pos[0, -g * g:].view(g, g, -1)
            rows = torch.arange(g, dtype=torch.float32)
            grid.zero_()
            grid[:, :, 0] = rows[:, None]  # channel 0 encodes the row, channel 1 the column
            grid[:, :, 1] = rows[None, :]
            if i == last:
                pos[0, 0] = 7.0  # the class token's position
        for i, g in enumerate(model.grid_sizes):
            # an input twice as wide, same height: rows untouched, columns stretched (bilinear), row-major tokens
            out = model._pos_embed(i, (g, 2 * g))
            if i == last:
                assert out.shape[1] == 1 + 2 * g * g and torch.all(out[0, 0] == 7.0)
                out = out[:, 1:]
            out = out[0].view(g, 2 * g, -1)
            assert torch.allclose(out[:, :, 0], torch.arange(g, dtype=torch.float32)[:, None].expand(g, 2 * g))
            cols = out[:, :, 1]
            assert torch.allclose(cols, cols[:1].expand(g, 2 * g))  # constant down each column
            assert torch.all(cols[0, 1:] >= cols[0, :-1]) and cols[0, 0] == 0 and cols[0, -1] == g - 1
            assert torch.all(out[:, :, 2:] == 0)
        assert model._pos_embed(0, (16, 16)).data_ptr() == model.pos_embed1.data_ptr()  # at img_size: as is
    # and the model runs at sizes it was not laid out for, square or not
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 64)).shape == (1, 1000)


def test_v1_class_token_only_in_the_last_stage():
    model = flexbone.create_model("pvt_tiny").eval()
    assert [getattr(model, f"pos_embed{i}").shape[1] for i in range(1, 5)] == [56 * 56, 28 * 28, 14 * 14, 7 * 7 + 1]
    with torch.no_grad():
        tokens = model.forward_features(torch.randn(1, 3, 64, 64))
        assert tokens.shape == (1, 1 + 2 * 2, 512)
        assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens[:, 0])  # the class token
        model.reset_classifier(10, "avg")
        assert torch.allclose(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))


def test_v1_drop_path_rises_linearly_over_all_blocks():
    model = flexbone.create_model("pvt_small", drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for i in range(1, 5) for b in getattr(model, f"block{i}")]
    assert len(rates) == 16
    assert rates == pytest.approx([0.2 * k / 15 for k in range(16)])


# ------------------------------------------------------------------------------ the model contract
@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_reaches_every_parameter(name):
    model = flexbone.create_model(name, num_classes=10).train()
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("size", [64, 96])
def test_features_only_pyramid(name, size):
    model = flexbone.create_model(name, features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        feats = model(x)
    assert [f.shape for f in feats] == [(1, c, size // r, size // r) for c, r in
                                        zip(model.feature_info.channels(), model.feature_info.reduction())]
    sub = flexbone.create_model(name, features_only=True, out_indices=(1, -1)).eval()
    sub.load_state_dict(model.state_dict())
    with torch.no_grad():
        picked = sub(x)
    assert len(picked) == 2
    assert torch.allclose(picked[0], feats[1]) and torch.allclose(picked[1], feats[3])


@pytest.mark.parametrize("name", SMALL)
def test_smallest_input_32px(name):
    model = flexbone.create_model(name).eval()
    feats = flexbone.create_model(name, features_only=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (1, 1000)
        assert [f.shape[-1] for f in feats(x)] == [8, 4, 2, 1]


@pytest.mark.parametrize("name", SMALL)
def test_classifier_options(name):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model = flexbone.create_model(name, num_classes=0).eval()
        assert model(x).shape == (1, model.num_features)
        assert isinstance(model.get_classifier(), nn.Identity)
        model.reset_classifier(7)
        assert model(x).shape == (1, 7) and model.get_classifier().out_features == 7
        unpooled = flexbone.create_model(name, num_classes=0, global_pool="").eval()(x)
        v1 = not name.startswith("pvt_v2")
        assert unpooled.shape == ((1, 1 + 4, 512) if v1 else (1, unpooled.shape[1], 2, 2))
        assert flexbone.create_model(name, in_chans=1).eval()(torch.randn(1, 1, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError):  # a classifier needs pooling
        flexbone.create_model(name, global_pool="")


@pytest.mark.parametrize("name", SMALL)
def test_dropout_and_drop_path_are_active_only_in_training(name):
    model = flexbone.create_model(name, drop_rate=0.5, drop_path_rate=0.5)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", SMALL)
def test_grad_checkpointing_gives_the_same_gradients(name):
    model = flexbone.create_model(name, num_classes=10).train()
    x = torch.randn(1, 3, 32, 32)

    def grads():
        model.zero_grad()
        model(x).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_grad_checkpointing(True)
    ckpt = grads()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, ckpt, strict=True))


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_tiny"])
def test_output_stride_other_than_32_is_a_clear_error(name):
    for os_ in (8, 16):
        with pytest.raises(ConfigError, match="output_stride"):
            flexbone.create_model(name, output_stride=os_)


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_tiny"])
def test_pretrained_file_for_a_new_task(name, tmp_path):
    # an ImageNet checkpoint fine-tuned to 5 classes on grey images: the stem is adapted, the head left fresh
    source = flexbone.create_model(name)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = flexbone.create_model(name, pretrained=path, num_classes=5, in_chans=1).eval()
    first = model.default_cfg["first_conv"]
    assert first in ("patch_embed.proj", "patch_embed1.proj")
    stem = model.get_submodule(first).weight
    assert torch.allclose(stem, source.get_submodule(first).weight.sum(1, keepdim=True))
    assert model.get_classifier() is model.head and model.head.out_features == 5
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 5)
