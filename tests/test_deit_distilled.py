"""DeiT's distilled models (``deit_*_distilled_*``: a distillation token after the class token, a second head
``head_dist``, the two averaged): strict timm parity (``VisionTransformerDistilled``) at small inputs, the
checkpoint and fine-tune paths, TorchScript, training and ONNX export. (Parameter counts, state dict names and
cfg of all four names against timm's: ``tests/test_vit.py``, parametrised over ``VARIANTS``.)"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

import flexbone
from flexbone.errors import CheckpointError, ConfigError

from _helpers import max_abs_diff, randomize_

timm = pytest.importorskip("timm")

NAME = "deit_tiny_distilled_patch16_224"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")


def _pair(size: int = 32, num_classes: int = 11, **kwargs):
    """timm's model with random weights and ours with the same weights, both in eval mode."""
    ref = randomize_(timm.create_model(NAME, img_size=size, num_classes=num_classes, **kwargs)).eval()
    ours = flexbone.create_model(NAME, img_size=size, num_classes=num_classes, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _close(a, b) -> bool:
    return max_abs_diff(a, b) <= 1e-5


@pytest.mark.parity
def test_outputs_heads_and_intermediates_match_timm():
    ours, ref = _pair()
    assert ours.num_prefix_tokens == ref.num_prefix_tokens == 2 and ours.head_hidden_size == ref.head_hidden_size
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0 and _close(ours(x), expected)  # eval: the mean of the two heads
        feats = ours.forward_features(x)
        assert _close(feats, ref.forward_features(x))
        assert _close(ours.forward_head(feats, pre_logits=True), ref.forward_head(feats, pre_logits=True))
        # the two heads differ, so their mean is not either one
        assert max_abs_diff(ours.head(feats[:, 0]), expected) > 1e-3
        for kwargs in (dict(indices=[1, -1], norm=True), dict(indices=2, output_fmt="NLC", stop_early=True)):
            (f1, i1), (f2, i2) = ours.forward_intermediates(x, **kwargs), ref.forward_intermediates(x, **kwargs)
            assert _close(f1, f2) and len(i1) == len(i2) and all(_close(a, b) for a, b in zip(i1, i2))
        # the prefix tokens stripped from the maps are the class and distillation tokens
        ours_prefixed = ours.forward_intermediates(x, [3], return_prefix_tokens=True, intermediates_only=True)
        ref_prefixed = ref.forward_intermediates(x, [3], return_prefix_tokens=True, intermediates_only=True)
        (m1, p1), (m2, p2) = ours_prefixed[0], ref_prefixed[0]
        assert p1.shape == (2, 2, 192) and m1.shape == (2, 192, 2, 2) and _close(p1, p2) and _close(m1, m2)
    heads = ours.get_classifier()
    assert heads == (ours.head, ours.head_dist) and [type(h) for h in heads] == [type(h) for h in ref.get_classifier()]

    # training without distillation (what `flexbone train` does): the mean, as timm's; with it, both logits
    ours.train(), ref.train()
    with torch.no_grad():
        assert _close(ours(x), ref(x))
        ours.set_distilled_training(True), ref.set_distilled_training(True)
        got, want = ours(x), ref(x)
    assert isinstance(got, tuple) and len(got) == len(want) == 2 and all(_close(a, b) for a, b in zip(got, want))
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert _close(ours(x), expected)  # eval averages whatever the switch says

    # a new classifier resets both heads; none at all leaves the pre-logits (the mean of the two tokens)
    for n in (3, 0):
        ours.reset_classifier(n), ref.reset_classifier(n)
        assert [type(h) for h in ours.get_classifier()] == [type(h) for h in ref.get_classifier()]
        assert ours(x).shape == ref(x).shape == ((2, n) if n else (2, 192))
    with torch.no_grad():
        assert _close(ours(x), ref(x))


@pytest.mark.parity
def test_features_only_and_pruning_match_timm():
    ours, ref = _pair()
    x = torch.randn(2, 3, 32, 32)
    feats = flexbone.create_model(NAME, img_size=32, features_only=True, out_indices=(3, -1)).eval()
    feats.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("head")}, strict=True)
    with torch.device("meta"):
        ref_info = timm.create_model(NAME, img_size=32, features_only=True, out_indices=(3, -1)).feature_info
    assert feats.feature_info.get_dicts() == ref_info.get_dicts()
    with torch.no_grad():  # (timm's feature extractor wraps the model: its maps are forward_intermediates')
        maps, ref_maps = feats(x), ref.forward_intermediates(x, [3, 11], intermediates_only=True)
    assert [m.shape for m in maps] == [m.shape for m in ref_maps] == [(2, 192, 2, 2)] * 2
    assert all(_close(a, b) for a, b in zip(maps, ref_maps))

    pruned, ref_pruned = copy.deepcopy(ours), copy.deepcopy(ref)
    assert pruned.prune_intermediate_layers([1, 4], prune_norm=True) == ref_pruned.prune_intermediate_layers(
        [1, 4], prune_norm=True)
    assert len(pruned.blocks) == len(ref_pruned.blocks) == 5
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in ref_pruned.state_dict().items()}
    with torch.no_grad():
        assert _close(pruned(x), ref_pruned(x))  # no heads left: the mean of the two prefix tokens
        got = pruned.forward_intermediates(x, [1, 4], intermediates_only=True)
        want = ref_pruned.forward_intermediates(x, [1, 4], intermediates_only=True)
    assert all(_close(a, b) for a, b in zip(got, want))


@pytest.mark.parity
def test_dynamic_img_size_set_input_size_and_torchscript_match_timm():
    ours, ref = _pair(dynamic_img_size=True, num_classes=5)
    scripted = torch.jit.script(ours)
    for h, w in ((32, 32), (48, 32)):
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            expected = ref(x)
            assert _close(ours(x), expected) and _close(scripted(x), expected)
            got = ours.forward_intermediates(x, [2], intermediates_only=True)[0]
            assert got.shape == (2, 192, h // 16, w // 16)
            assert _close(got, ref.forward_intermediates(x, [2], intermediates_only=True)[0])
    # scripted, timm's model averages the heads in training too (its tuple branch is not compiled); so does ours
    ref_scripted = torch.jit.script(ref)
    ours.set_distilled_training(True), ref.set_distilled_training(True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        scripted.train(), ref_scripted.train()
        want = ref_scripted(x)
        assert isinstance(want, torch.Tensor) and _close(scripted(x), want)

    fixed, ref_fixed = _pair(num_classes=5)
    fixed.set_input_size(img_size=48), ref_fixed.set_input_size(img_size=48)
    assert fixed.pos_embed.shape == ref_fixed.pos_embed.shape == (1, 2 + 9, 192)
    assert fixed.default_cfg["input_size"] == (3, 48, 48)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert _close(fixed(x), ref_fixed(x))


@pytest.mark.parity
def test_a_checkpoint_of_another_size_loads_as_in_timm_and_fine_tuning_resets_both_heads(tmp_path):
    torch.manual_seed(0)
    state = randomize_(timm.create_model(NAME, img_size=64)).state_dict()
    torch.save(state, tmp_path / "w.pth")
    ref = timm.create_model(NAME, img_size=32).eval()
    ref.load_state_dict(timm.models.vision_transformer.checkpoint_filter_fn(dict(state), ref))
    ours = flexbone.create_model(NAME, img_size=32, pretrained=str(tmp_path / "w.pth")).eval()
    assert ours.pos_embed.shape == (1, 2 + 4, 192) and state["pos_embed"].shape == (1, 2 + 16, 192)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _close(ours(x), ref(x))

    # fine-tuning to 10 classes: both heads start afresh, everything else comes from the checkpoint
    tuned = flexbone.create_model(NAME, img_size=32, pretrained=str(tmp_path / "w.pth"), num_classes=10)
    tuned_state = tuned.state_dict()
    for key in ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias"):
        assert tuned_state[key].shape[0] == 10
    assert not torch.equal(tuned.head.weight, tuned.head_dist.weight)  # each initialised on its own
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in tuned_state.items() if not k.startswith("head"))
    headless = flexbone.create_model(NAME, img_size=32, pretrained=str(tmp_path / "w.pth"), num_classes=0)
    assert headless(x).shape == (2, 192)

    # a foreign checkpoint without metadata (flexbone validate / export): the class count read from its heads
    from flexbone.train.checkpoint import model_from_checkpoint

    torch.save(timm.create_model(NAME, num_classes=7).state_dict(), tmp_path / "w7.pth")
    rebuilt, _ = model_from_checkpoint(tmp_path / "w7.pth", model_name=NAME)
    assert rebuilt.num_classes == 7 and rebuilt.head_dist.out_features == 7

    # a checkpoint of the undistilled DeiT does not fit: its missing token is named, nothing half-loaded
    torch.save(timm.create_model("deit_tiny_patch16_224", img_size=32).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="dist_token"):
        flexbone.create_model(NAME, img_size=32, pretrained=str(tmp_path / "plain.pth"))


def test_what_a_distilled_deit_refuses_is_a_clear_error():
    from flexbone.stitch import SNNet

    with pytest.raises(ConfigError, match="global_pool must be 'token'"):
        flexbone.create_model(NAME, img_size=32, global_pool="avg")
    model = flexbone.create_model(NAME, img_size=32, num_classes=3)
    with pytest.raises(ConfigError, match="global_pool must be 'token'"):
        model.reset_classifier(3, "avg")
    with pytest.raises(ConfigError, match="distilled DeiT .* cannot be an SN-Net anchor"):
        SNNet([flexbone.create_model("deit_tiny_patch16_224", img_size=32), model])
    with pytest.raises(ConfigError, match="only a distilled DeiT"):
        flexbone.create_model("deit_tiny_patch16_224", img_size=32).set_distilled_training(True)


@pytest.mark.cli
def test_train_from_a_timm_checkpoint_then_export_to_onnx(tmp_path, capsys):
    """`flexbone train` fine-tunes the distilled DeiT (224 px timm weights, 10 digits at 32 px: both heads new,
    the mean of the two trained by cross-entropy as timm does without distillation); `flexbone export` writes the
    run's model as ONNX, which onnxruntime runs as PyTorch does."""
    import onnxruntime as ort

    from flexbone.cli import main
    from flexbone.config.loader import recipe_path

    raw = yaml.safe_load(recipe_path("quickstart").read_text())
    raw["data"]["batch_size"], raw["train"]["max_steps_per_epoch"] = 16, 2
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    torch.manual_seed(0)
    start = timm.create_model(NAME).state_dict()
    torch.save(start, tmp_path / "w224.pth")
    assert main(["train", "--recipe", str(tmp_path / "tiny.yaml"), "--model", NAME, "--schedule.epochs", "1",
                 "--data.img_size", "32", "--data.test_img_size", "32", "--model.pretrained",
                 str(tmp_path / "w224.pth"), "--train.output_dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    trained = flexbone.load_state_dict(run / "model.safetensors")
    assert trained["head.weight"].shape == trained["head_dist.weight"].shape == (10, 192)
    assert not torch.equal(trained["head_dist.weight"], start["head_dist.weight"][:10])
    assert not torch.equal(trained["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])  # it trained

    out = tmp_path / "deploy" / "m.onnx"
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run / "model.safetensors"), "--format", "onnx", "--out", str(out)]) == 0
    assert "max abs difference to the PyTorch model" in capsys.readouterr().out
    ref = timm.create_model(NAME, img_size=32, num_classes=10).eval()
    ref.load_state_dict(trained, strict=True)
    x = torch.randn(1, 3, 32, 32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert np.abs(got - ref(x).numpy()).max() < 1e-4


@pytest.mark.parity
@pytest.mark.parametrize("name, size", [
    ("deit_small_distilled_patch16_224", 32),
    pytest.param("deit_base_distilled_patch16_224", 32, marks=pytest.mark.slow),
    pytest.param("deit_base_distilled_patch16_384", None, marks=pytest.mark.slow),  # at its own 384 px
])
def test_the_other_distilled_names_match_timm(name, size):
    kwargs = dict(img_size=size) if size else {}
    ref = randomize_(timm.create_model(name, num_classes=6, **kwargs), keep_random_init=True).eval()
    ours = flexbone.create_model(name, num_classes=6, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    side = size or ours.default_cfg["input_size"][-1]
    assert side == ref.patch_embed.img_size[0] == (size or 384)
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0 and _close(ours(x), expected)
        assert _close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                      ref.forward_head(ref.forward_features(x), pre_logits=True))
