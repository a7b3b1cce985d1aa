"""CBNetV2 composite backbones (Liang et al. 2021).

No reference implementation is importable (the official code is an mmdetection fork), so the tests pin
the paper's definition down: k=1 is the plain backbone, a zero composition leaves the lead backbone alone,
the lead output follows the DHLC equation written out by hand, the assisting backbone is the plain
backbone, and a single-backbone checkpoint (timm's) initialises every copy — after which the lead
pyramid equals timm's own feature pyramid.
"""
import pytest
import torch
import torch.nn.functional as F

import flexbone
from flexbone.errors import CheckpointError, ConfigError
from flexbone.models import PYRAMID, Backbone
from flexbone.models.cbnet import CompositeBackbone

from _helpers import max_abs_diff, num_params, randomize_


def _plain_copy(composite: CompositeBackbone, index: int, name: str) -> Backbone:
    """The backbone ``index`` of a composite as a stand-alone features_only model with the same weights."""
    plain = flexbone.create_model(name, features_only=True, out_indices=PYRAMID).eval()
    prefix = f"backbones.{index}."
    plain.load_state_dict({k[len(prefix):]: v for k, v in composite.state_dict().items() if k.startswith(prefix)},
                          strict=True)
    return plain


def _set_composition(composite: CompositeBackbone, scale: float | None) -> None:
    """Random (non-zero) composition links, or ``scale=None``: zero them (norm scale and shift 0)."""
    with torch.no_grad():
        for name, p in composite.composition.named_parameters():
            if scale is None:
                if ".bn." in name:
                    p.zero_()
            else:
                p.normal_(0.0, scale)


def test_registered_composites_are_backbones_with_a_pyramid():
    assert {"cb_resnet18", "cb_resnet50"} <= set(flexbone.list_models("cb_*"))
    model = flexbone.create_model("cb_resnet50")
    assert isinstance(model, Backbone)
    assert model.feature_info.channels() == [256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.module_name()[0] == "backbones.1.layer1"  # the lead backbone's levels
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 96))
    assert [tuple(t.shape) for t in out] == [(1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]


@pytest.mark.parametrize("name", ["resnet18", "ese_vovnet19b_slim_dw", "pvt_v2_b0"])
def test_k1_is_exactly_the_plain_backbone(name):
    plain = randomize_(flexbone.create_model(name, features_only=True, out_indices=PYRAMID)).eval()
    composite = CompositeBackbone(name, k=1).eval()
    flexbone.load_checkpoint(composite, plain.state_dict(), strict=True)  # single-backbone keys -> backbones.0.*
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(composite(x), plain(x), strict=True):
            assert torch.equal(a, b)
    assert composite.feature_info.channels() == plain.feature_info.channels()


@pytest.mark.parametrize("name", ["resnet18", "pvt_v2_b0"])  # pvt: its first stage input is channels-last
def test_composition_changes_the_lead_and_zero_composition_leaves_it_alone(name):
    composite = randomize_(CompositeBackbone(name, k=2)).eval()
    x = torch.randn(1, 3, 64, 64)
    lead_alone = _plain_copy(composite, 1, name)
    with torch.no_grad():
        alone = lead_alone(x)
        _set_composition(composite, 0.05)
        composed = composite(x)
        assert all(max_abs_diff(a, b) > 1e-3 for a, b in zip(composed, alone))  # every level changes
        _set_composition(composite, None)
        for a, b in zip(composite(x), alone, strict=True):
            assert max_abs_diff(a, b) <= 1e-5


def test_fresh_composite_starts_as_the_plain_backbone():
    # zero-initialised composition (as the official code): the lead is the plain backbone until trained
    composite = flexbone.create_model("cb_resnet18").eval()
    lead_alone = _plain_copy(composite, 1, "resnet18")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(composite(x), lead_alone(x), strict=True):
            assert torch.equal(a, b)


def test_lead_follows_the_dhlc_equation():
    # x_2^l = F_2^l(x_2^(l-1) + sum_{i>=l} up(BN(conv1x1(x_1^i)))), written out on torchvision-style names
    composite = randomize_(CompositeBackbone("resnet18", k=2, upsample="nearest")).eval()
    _set_composition(composite, 0.05)
    b1, b2 = composite.backbones
    links = composite.composition.links
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        h = b1.maxpool(b1.act1(b1.bn1(b1.conv1(x))))
        assisting = []
        for layer in (b1.layer1, b1.layer2, b1.layer3, b1.layer4):
            h = layer(h)
            assisting.append(h)
        h = b2.maxpool(b2.act1(b2.bn1(b2.conv1(x))))
        expected = []
        for stage, layer in enumerate((b2.layer1, b2.layer2, b2.layer3, b2.layer4)):
            for level in range(stage, 4):
                link = links[f"level{level}_to_stage{stage}"]
                g = F.batch_norm(F.conv2d(assisting[level], link.conv.weight), link.bn.running_mean,
                                 link.bn.running_var, link.bn.weight, link.bn.bias, False, 0.0, link.bn.eps)
                h = h + F.interpolate(g, size=h.shape[-2:], mode="nearest")
            h = layer(h)
            expected.append(h)
        lead = composite(x)
        composite.return_assistants = True
        lead2, assistants = composite(x)
    for a, b in zip(lead, expected, strict=True):
        assert max_abs_diff(a, b) <= 1e-5
    assert all(torch.equal(a, b) for a, b in zip(lead, lead2))
    # the assisting backbone sees no composition: its pyramid is the plain backbone's
    assert len(assistants) == 1
    for a, b in zip(assistants[0], assisting, strict=True):
        assert torch.equal(a, b)


def test_k3_out_indices_and_assistant_outputs():
    model = flexbone.create_model("cb_resnet18", k=3, features_only=True, out_indices=(1, -1),
                                  return_assistants=True).eval()
    with torch.no_grad():
        lead, assistants = model(torch.randn(1, 3, 64, 64))
    assert [t.shape[1] for t in lead] == [128, 512]
    assert len(assistants) == 2 and all([t.shape[1] for t in p] == [128, 512] for p in assistants)
    # one set of composition links serves both pairs: a third backbone adds only its own parameters
    dual = flexbone.create_model("cb_resnet18")
    single = flexbone.create_model("resnet18", features_only=True)
    assert num_params(model) - num_params(dual) == num_params(single)


def test_backward_reaches_every_parameter_with_and_without_grad_checkpointing():
    model = randomize_(flexbone.create_model("cb_resnet18"))
    _set_composition(model, 0.05)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        sum(t.square().mean() for t in model(x)).backward()  # the lead's outputs only: the assistant learns via DHLC
        dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not dead
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert all(max_abs_diff(grads[0][n], grads[1][n]) <= 1e-4 for n in grads[0])
    # composition norms keep fixed statistics in training (the official code's choice); the backbones' do not
    assert not any(m.training for m in model.composition.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.backbones[0].bn1.training


@pytest.mark.parity
def test_single_backbone_checkpoint_initialises_every_copy(tmp_path):
    timm = pytest.importorskip("timm")
    ref = randomize_(timm.create_model("resnet18")).eval()  # with its classifier, as timm saves it
    path = tmp_path / "resnet18.safetensors"
    flexbone.save_state_dict(ref.state_dict(), path)
    for model in (flexbone.create_model("cb_resnet18"), flexbone.create_model("cb_resnet18", pretrained=path)):
        composition = {k: v.clone() for k, v in model.composition.state_dict().items()}
        report = flexbone.load_checkpoint(model, path, strict=True)
        assert report.ok
        for k, v in ref.state_dict().items():
            if not k.startswith("fc."):
                assert torch.equal(model.state_dict()[f"backbones.0.{k}"], v)
                assert torch.equal(model.state_dict()[f"backbones.1.{k}"], v)
        assert all(torch.equal(v, model.composition.state_dict()[k]) for k, v in composition.items())
    # zero composition + copies of timm's weights: the lead pyramid is timm's own feature pyramid
    feats = timm.create_model("resnet18", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    feats.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), feats(x), strict=True):
            assert max_abs_diff(a, b) <= 1e-5


def test_checkpoint_round_trip_and_wrong_architecture(tmp_path):
    model = randomize_(flexbone.create_model("cb_resnet18"))
    path = tmp_path / "cb.safetensors"
    flexbone.save_state_dict(model.state_dict(), path)
    other = flexbone.create_model("cb_resnet18")
    flexbone.load_checkpoint(other, path, strict=True)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="unexpected keys: layer1.2"):  # resnet34 has 3 blocks in layer1
        flexbone.load_checkpoint(other, flexbone.create_model("resnet34").state_dict(), strict=True)


def test_pruned_stem_is_shared_as_in_the_official_code():
    # pruned_stages=0: the lead reuses the first backbone's stem output (official cb_del_stages=0)
    full = CompositeBackbone("resnet18", k=2)
    pruned = randomize_(CompositeBackbone("resnet18", k=2, pruned_stages=0)).eval()
    stem = sum(p.numel() for n, p in full.named_parameters() if n.startswith("backbones.1.") and
               n.split(".")[2] in ("conv1", "bn1"))
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in pruned.parameters()) == stem
    assert not any(k.startswith(("backbones.1.conv1", "backbones.1.bn1")) for k in pruned.state_dict())
    flexbone.load_checkpoint(pruned, flexbone.create_model("resnet18").state_dict(), strict=True)
    _set_composition(pruned, None)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        b1, b2 = pruned.backbones
        h = b1.maxpool(b1.act1(b1.bn1(b1.conv1(x))))  # the first backbone's stem feeds the lead's layer1
        for layer in (b2.layer1, b2.layer2, b2.layer3, b2.layer4):
            h = layer(h)
        assert max_abs_diff(pruned(x)[-1], h) <= 1e-5


def test_refusals():
    with pytest.raises(ConfigError, match="cannot be composed"):
        CompositeBackbone("pvt_tiny")  # PVT v1's stages are not its module sequence
    with pytest.raises(ConfigError, match="no classifier"):
        flexbone.create_model("cb_resnet18").reset_classifier(10)
    with pytest.raises(ConfigError, match="k >= 1"):
        CompositeBackbone("resnet18", k=0)


def test_model_factory():
    # any callable that builds a flexbone backbone works, features_only or not
    model = CompositeBackbone(lambda **kw: flexbone.create_model("resnet18", **kw), k=2, drop_path_rate=0.1)
    assert model.backbones[1].layer4[1].drop_path.drop_prob == pytest.approx(0.1)
    with torch.no_grad():
        assert [t.shape[1] for t in model.eval()(torch.randn(1, 3, 64, 64))] == [64, 128, 256, 512]
