"""The model contract (DESIGN.md), checked for every registered model.

Parametrised over ``list_models()``: a family added to the registry is tested without a line here.
Inputs are tiny (64 px, batch 2); the largest variants are marked slow.
"""
import re

import pytest
import torch

import flexbone
from flexbone import create_model, list_models
from flexbone.errors import ConfigError, FlexboneError, UnknownModelError
from flexbone.layers import norm
from flexbone.layers.norm import BatchNorm2d
from flexbone.models import PYRAMID

from _helpers import max_abs_diff, sized

ALL = list_models()
# composite and elastic models have their own contract tests (tests/test_cbnet.py, tests/test_ofa_*.py)
# (FFNet: segmentation outputs and ~90 variants; tests/test_ffnet.py checks its contract and official sizes)
# (SN-Net: anchors joined by stitches, tests/test_stitch.py)
STATIC = [n for n in ALL if flexbone.models.model_family(n) not in (
    "cbnet", "ofa_resnet", "ofa_mobilenet", "ffnet", "stitch")]


# the deep and wide variants: same code paths as their small siblings, many more FLOPs. Here they are built and run
# for shapes on the meta device; the arithmetic is checked on the small siblings (and against timm in the families'
# parity tests)
_BIG = re.compile(r"(101|152|200|269|270|350|420|wide_|x8d|64x4d|pvt_v2_b[345]|pvt_medium|pvt_large|vovnet99|maxvit_(rmlp_)?(small|base)|vit_large|vit_huge|deit_base_distilled)")


@pytest.mark.parametrize("name", [n for n in STATIC if not _BIG.search(n)])
def test_contract(name, monkeypatch):
    kwargs, size = sized(name, 64)
    model = create_model(name, num_classes=5, in_chans=2, drop_rate=0.1, drop_path_rate=0.1, **kwargs)
    assert model.num_classes == 5
    x = torch.randn(2, 2, size, size)

    # forward + backward reach every parameter
    out = model(x)
    assert out.shape == (2, 5)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)  # timm's meaning: the width the classifier sees
        classifier = model.get_classifier()
        if isinstance(classifier, tuple):  # a distilled DeiT's two heads (timm's): each maps the pre-logits width
            assert [tuple(h(pre).shape) for h in classifier] == [(2, 5)] * len(classifier)
        else:
            assert max_abs_diff(model.forward_head(feats), classifier(pre)) < 1e-5
        # BN inference in place on its input (flexbone.layers.BatchNorm2d) gives what torch's BN gives: every
        # norm's input is fresh. A norm fed a tensor that is read again (a shortcut) would fail here.
        monkeypatch.setattr(norm, "_INPLACE_MIN_NUMEL", 0)
        in_place = model(x)
        monkeypatch.setattr(BatchNorm2d, "_normalise_in_place", lambda self, x: False)
        assert max_abs_diff(in_place, model(x)) < 1e-6
        monkeypatch.undo()
        # a new classifier, and none at all
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.head_hidden_size)


@pytest.mark.parametrize("name", [n for n in STATIC if _BIG.search(n)])
def test_contract_shapes_of_the_big_variants(name):
    """The deep and wide variants share test_contract's code paths with their small siblings; each is built here on
    the meta device (shapes, no weights, no arithmetic) and its outputs, pre-logits and new classifiers checked
    for shape."""
    kwargs, size = sized(name, 64)
    with torch.device("meta"):
        model = create_model(name, num_classes=5, in_chans=2, drop_rate=0.1, drop_path_rate=0.1, **kwargs).eval()
        feats = model.forward_features(torch.empty(2, 2, size, size))  # one forward: a deep model's cost
        assert model.forward_head(feats).shape == (2, 5) and model.num_classes == 5
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        model.reset_classifier(3)
        assert model.forward_head(feats).shape == (2, 3)
        model.reset_classifier(0)
        assert model.forward_head(feats).shape == (2, model.head_hidden_size)


def _zero_weights(name, **kwargs):
    """``create_model(name, **kwargs)`` with every weight and buffer 0, for checks of shapes only: the random
    initialisation took most of such a test's time (seconds for the largest models). A model with buffers that
    are not in its state dict (blur filters, Swin's relative position index) is built as usual."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    if set(dict(model.named_buffers())) - set(model.state_dict()):
        return create_model(name, **kwargs)
    model = model.to_empty(device="cpu")
    for t in model.state_dict().values():
        t.zero_()
    return model


@pytest.mark.parametrize("name", STATIC)
def test_features_only(name):
    # levels and shapes only (values: the families' timm parity tests). The model runs with zero weights at a small
    # size: fixed-size transformers are built for 64 px, valid-padding Inception at its minimum of 75; the
    # out_indices variants are built and run on the meta device (shapes without weights or arithmetic), the second
    # at timm's input size
    kwargs, small = sized(name, 64)
    big = _BIG.search(name)  # the deep / wide variants: arithmetic in their small siblings, shapes on meta here
    if big:
        with torch.device("meta"):
            model = create_model(name, features_only=True, **kwargs).eval()
    else:
        model = _zero_weights(name, features_only=True, **kwargs).eval()
    info = model.feature_info
    # timm's levels (CNNs: the stride-2 stem level first); the last four of a hierarchical model are the
    # dense-prediction pyramid at strides 4..32 (isotropic transformers: one stride for every level)
    levels = [(i["num_chs"], i["reduction"]) for i in info]  # every level (info.reduction(): the selected ones)
    hierarchical = len({r for _, r in levels}) > 1
    assert not hierarchical or [r for _, r in levels][-4:] == [4, 8, 16, 32] or name.endswith(("s", "s_tiny")), info
    with torch.device("meta"):
        pyramid = create_model(name, features_only=True, out_indices=PYRAMID).feature_info
    assert list(zip(pyramid.channels(), pyramid.reduction())) == levels[-4:]
    for size in [small] if kwargs or big else [small, small + 32]:  # a fixed-size model takes only its own size
        with torch.no_grad():
            maps = model(torch.randn(1, 3, size, size, device="meta" if big else "cpu"))
        if model.output_fmt == "NHWC":  # Swin's maps are channels-last, as timm's
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        assert [m.shape[1] for m in maps] == info.channels()
        for m, r in zip(maps, info.reduction()):  # size / reduction (valid padding: a few pixels less)
            assert max(size // r, 1) - 4 <= m.shape[-1] <= max(-(-size // r), 1), (m.shape, r)
    # negative indices count from the deepest level
    with torch.device("meta"):
        model = create_model(name, features_only=True, out_indices=(-2, -1)).eval()
        size = model.default_cfg["input_size"][-1]
        maps = model(torch.empty(1, 3, size, size))
    channel_dim = -1 if model.output_fmt == "NHWC" else 1
    assert len(maps) == 2 and [m.shape[channel_dim] for m in maps] == info.channels()[-2:]


def _first_of_each_family():
    seen, names = set(), []
    for n in (n for n in STATIC if not _BIG.search(n)):  # a small sibling: the same code at a fraction of the cost
        fam = flexbone.models.model_family(n)
        if fam not in seen:
            seen.add(fam)
            names.append(n)
    return names


@pytest.mark.parametrize("name", _first_of_each_family())
def test_smallest_input_and_export(name):
    """32 px works (or the family's smallest size); torch.export traces the model and gives the same outputs."""
    kwargs, small = sized(name, 32)
    model = create_model(name, **kwargs).eval()
    x = torch.randn(1, 3, small, small)
    with torch.no_grad():
        assert model(x).shape == (1, 1000)
    kwargs_64, size = sized(name, 64)
    if kwargs_64 != kwargs:  # only a fixed-size transformer is built anew for another size
        model = create_model(name, **kwargs_64).eval()
    program = torch.export.export(model, (torch.randn(1, 3, size, size),))
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert max_abs_diff(program.module()(x), model(x)) < 1e-5


@pytest.mark.parametrize("name", ["resnet50d", "seresnext26d_32x4d", "resnetrs50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride(name, output_stride):
    ref = create_model(name, features_only=True).eval()
    model = create_model(name, features_only=True, output_stride=output_stride).eval()
    model.load_state_dict(ref.state_dict())  # dilation changes no parameter shape
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [64 // min(r, output_stride) for r in (2, 4, 8, 16, 32)]
    assert model.feature_info.reduction() == [min(r, output_stride) for r in (2, 4, 8, 16, 32)]


def test_gradient_checkpointing_gives_the_same_gradients():
    model = create_model("resnet18d", num_classes=4)
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


def test_stochastic_depth_rises_linearly():
    from flexbone.layers import DropPath

    model = create_model("resnet50", drop_path_rate=0.2)
    rates = [0.0] + [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert len(rates) == 16  # first block has rate 0 and no DropPath module
    assert rates[-1] == pytest.approx(0.2)
    steps = [b - a for a, b in zip(rates, rates[1:])]
    assert max(steps) == pytest.approx(min(steps))


def test_dropblock_and_zero_init_options():
    from flexbone.layers import DropBlock2d

    model = create_model("resnet50", drop_block_rate=0.1)
    blocks = [m for m in model.modules() if isinstance(m, DropBlock2d)]
    assert len(blocks) == 6 + 3  # stages 3 and 4 only
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in model.layer1)
    model = create_model("resnet50", zero_init_last=False)
    assert all(torch.count_nonzero(b.bn3.weight) > 0 for b in model.layer1)


def test_dropblock_drops_in_training_only():
    from flexbone.layers import DropBlock2d

    layer = DropBlock2d(drop_prob=0.3, block_size=3)
    x = torch.ones(8, 4, 16, 16)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert 0.1 < dropped < 0.5  # about drop_prob of the activations are zeroed, in blocks
    assert abs(y.mean().item() - 1.0) < 0.05  # and the rest rescaled to keep the expectation
    assert torch.equal(layer.eval()(x), x)


def test_unknown_model_names_the_closest_matches():
    with pytest.raises(UnknownModelError, match="resnet50"):
        create_model("resnt50")


def test_bad_options_are_user_errors():
    with pytest.raises(ConfigError, match="output_stride"):
        create_model("resnet18", output_stride=4)
    with pytest.raises(ConfigError, match="no_such_option"):
        create_model("resnet18", no_such_option=1)
    with pytest.raises(FlexboneError, match="never downloads"):
        create_model("resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="out_indices"):
        create_model("resnet18", features_only=True, out_indices=(0, 7))


def test_list_models_filters_and_registry_rejects_duplicates():
    assert "resnet50" in list_models("resnet*") and "mobilenetv2_100" not in list_models("resnet*")
    assert list_models("resnet5?") == ["resnet50"]
    from flexbone.models import register_model

    with pytest.raises(FlexboneError, match="already registered"):
        register_model(lambda **kw: None, name="resnet50")


def test_pretrained_path_adapts_classifier_and_stem(tmp_path):
    src = create_model("resnet18d")
    path = tmp_path / "w.safetensors"
    flexbone.save_state_dict(src.state_dict(), path)
    model = create_model("resnet18d", pretrained=path, num_classes=7, in_chans=1)
    assert torch.equal(model.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert torch.allclose(model.conv1[0].weight, src.conv1[0].weight.sum(1, keepdim=True))
    assert model.fc.out_features == 7


@pytest.mark.parametrize("norm", ["groupnorm", "groupnorm1"])
def test_norm_layer_by_name(norm):
    model = create_model("resnet18", norm_layer=norm, num_classes=3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
