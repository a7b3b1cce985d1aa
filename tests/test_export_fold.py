"""BN folding (flexbone.export.fold): the folded copy computes what the model computes, for every family.

The reference is the unfolded model itself (torch's batch norm in eval mode) and, for the arithmetic of one
pair, torch's own ``torch.nn.utils.fusion.fuse_conv_bn_eval``. Batch-norm statistics and affine parameters
are randomised first: with fresh ones (mean 0, var 1) folding would be close to a no-op.
"""
import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

import flexbone
from flexbone.export import find_conv_bn_pairs, fold_bn
from flexbone.layers.norm import BatchNorm2d

from _helpers import max_abs_diff


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm) and m.running_var is not None:
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


def _ofa_subnet(name: str) -> nn.Module:
    net = flexbone.create_model(name)
    net.set_active(net.space.sample(0))
    return net.extract()


def _bns(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def _working_modules(model: nn.Module) -> int:
    return sum(not isinstance(m, nn.Identity) for m in model.modules())


def _outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, (list, tuple)) else [out]


# one small model per family and per block variant; every BN in them follows a conv
CASES = {
    "resnet8s_tiny": lambda: flexbone.create_model("resnet8s_tiny"),
    "resnet18": lambda: flexbone.create_model("resnet18"),
    "resnet18d": lambda: flexbone.create_model("resnet18d"),  # deep stem, avg-pool shortcut
    "seresnet18": lambda: flexbone.create_model("seresnet18"),
    "resnetblur18": lambda: flexbone.create_model("resnetblur18"),  # BlurPool after the BN, before the next conv
    "resnetaa50d": lambda: flexbone.create_model("resnetaa50d"),
    "resnetrs50": lambda: flexbone.create_model("resnetrs50"),
    "resnext50_32x4d": lambda: flexbone.create_model("resnext50_32x4d"),  # grouped convs
    "mobilenetv2_035": lambda: flexbone.create_model("mobilenetv2_035"),
    "mobilenetv3_small_050": lambda: flexbone.create_model("mobilenetv3_small_050"),
    "mobilenetv3_large_075": lambda: flexbone.create_model("mobilenetv3_large_075"),
    "vovnet27_slim": lambda: flexbone.create_model("vovnet27_slim"),
    "ese_vovnet19b_dw": lambda: flexbone.create_model("ese_vovnet19b_dw"),
    "cb_resnet18": lambda: flexbone.create_model("cb_resnet18"),  # composite: two backbones + compositions
    "resnet18_features": lambda: flexbone.create_model("resnet18", features_only=True),
    "ofa_mbv3_subnet": lambda: _ofa_subnet("ofa_mbv3_d234_e346_k357_w1.0"),
    "ofa_resnet50_subnet": lambda: _ofa_subnet("ofa_resnet50"),
}


def _close(reference, actual, tol):
    """Max abs difference below ``tol`` times the output's scale (logits of random nets reach ~30)."""
    for a, b in zip(reference, actual):
        assert max_abs_diff(a, b) < tol * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("case", list(CASES))
def test_fold_equals_model(case):
    model = _randomise_bn(CASES[case]())
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_bn(model, x)

    assert _bns(model) > 0 and _bns(folded) == 0, "every BN of these models follows a conv"
    assert _working_modules(folded) == _working_modules(model) - _bns(model)
    _close(_outputs(model, x), _outputs(folded, x), 1e-5)
    # on another input size too (the pairs do not depend on the example's size)
    y = torch.randn(1, 3, 96, 96)
    _close(_outputs(model, y), _outputs(folded, y), 1e-5)
    # the original is untouched
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # in float64 the fold is exact up to float64 rounding: fp32 differences above are rounding, not a wrong formula
    model64 = model.double()
    _close(_outputs(model64, y.double()), _outputs(fold_bn(model64, x.double()), y.double()), 1e-10)


@pytest.mark.parametrize("name", ["pvt_tiny", "pvt_v2_b0"])
def test_fold_pvt_without_batch_norm(name):
    """PVT has no conv + BN pair (LayerNorms only): folding leaves it computing the same."""
    model = flexbone.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    folded = fold_bn(model, x)
    assert find_conv_bn_pairs(model, x) == []
    assert max_abs_diff(model(x), folded(x)) == 0


def test_fold_arithmetic_matches_torch_fusion():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    bn = _randomise_bn(nn.Sequential(BatchNorm2d(6)))[0]
    seq = nn.Sequential(conv, bn).eval()
    folded = fold_bn(seq, torch.randn(1, 4, 8, 8))
    reference = fuse_conv_bn_eval(conv.eval(), bn.eval())
    assert isinstance(folded[1], nn.Identity)
    assert max_abs_diff(folded[0].weight, reference.weight) < 1e-6
    assert max_abs_diff(folded[0].bias, reference.bias) < 1e-6


class _SharedOutput(nn.Module):
    """A conv whose output is read twice (BN and a shortcut), and a conv that runs twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.twice = nn.Conv2d(3, 3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.conv3 = nn.Conv2d(3, 3, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        x = self.bn(y) + y  # folding self.bn would change the shortcut
        x = self.bn2(self.twice(self.twice(x)))  # the conv runs twice: its weights serve both calls
        return self.bn3(self.conv3(x))  # the one foldable pair


def test_fold_only_where_the_conv_output_goes_to_the_bn_alone():
    model = _randomise_bn(_SharedOutput())
    x = torch.randn(2, 3, 8, 8)
    assert find_conv_bn_pairs(model, x) == [("conv3", "bn3")]
    folded = fold_bn(model, x)
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn2, nn.BatchNorm2d)
    assert isinstance(folded.bn3, nn.Identity)
    assert max_abs_diff(model(x), folded(x)) < 1e-6


def test_fold_leaves_elastic_layers_alone():
    """A supernet's dynamic layers slice their weights: not foldable; the supernet computes the same."""
    net = flexbone.create_model("ofa_mbv3_d234_e346_k357_w1.0")
    net.set_active(net.space.min())
    net = _randomise_bn(net)
    x = torch.randn(1, 3, 64, 64)
    folded = fold_bn(net, x)
    assert max_abs_diff(net(x), folded(x)) < 1e-5


# The other families: CSP / DarkNet, DenseNet, FBNetV3, RDNet, Res2Net, Inception, FFNet, ViT. "all": every BN
# follows a conv; "some": pre-activation blocks (BN -> act -> conv) keep their BNs, only conv -> BN pairs fold;
# "unfoldable": BNs, none of them right after a conv; "none": no batch norm at all (LayerNorm).
OTHER_FAMILIES = {
    "cs3darknet_s": ("all", 64),
    "darknet17": ("all", 64),
    "densenet121": ("some", 64),
    "fbnetv3_b": ("all", 64),
    "rdnet_tiny": ("none", 64),  # LayerNorm2d throughout
    "res2net50_14w_8s": ("all", 64),
    "ffnet40S_BBB_mobile": ("all", 64),
    "inception_v4": ("all", 96),
    "vit_tiny_patch16_224": ("none", 224),
}
_SLOW_OTHERS = {"inception_v4", "res2net50_14w_8s", "rdnet_tiny"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_OTHERS else n
                                  for n in OTHER_FAMILIES])
def test_fold_other_families(name):
    expect, size = OTHER_FAMILIES[name]
    model = _randomise_bn(flexbone.create_model(name))
    x = torch.randn(1, 3, size, size)
    folded = fold_bn(model, x)
    pairs = find_conv_bn_pairs(model, x)
    assert _bns(folded) == _bns(model) - len(pairs)
    if expect == "all":
        assert _bns(model) > 0 and _bns(folded) == 0
    elif expect == "some":
        assert 0 < len(pairs) < _bns(model)
    elif expect == "unfoldable":
        assert _bns(model) > 0 and pairs == []
    else:
        assert _bns(model) == 0
    _close(_outputs(model, x), _outputs(folded, x), 1e-5)


def test_fold_stitched_network():
    """SN-Net: the extracted stitched model folds completely, and a folded SNNet stays right for every stitch."""
    net = _randomise_bn(flexbone.create_model("snnet", anchors=["resnet18", "resnet34"]))
    x = torch.randn(1, 3, 64, 64)
    stitched = [i for i in range(net.num_configs) if not net.stitch_config(i).is_anchor]
    ids = sorted({0, stitched[0], stitched[-1], net.num_configs - 1})
    net.set_active(stitched[0])
    static = net.extract(stitched[0])
    folded_static = fold_bn(static, x)
    assert _bns(static) > 0 and _bns(folded_static) == 0
    _close(_outputs(static, x), _outputs(folded_static, x), 1e-5)
    folded_net = fold_bn(net, x)  # traced with one stitch active; every other configuration must still agree
    for i in ids:
        net.set_active(i)
        folded_net.set_active(i)
        _close(_outputs(net, x), _outputs(folded_net, x), 1e-5)
