"""timm's own MaxViT models (``maxvit_rmlp_*_rw_*``: MLP relative-position bias) vs timm's ``maxxvit.py``.

Every name has timm's parameter names, shapes, counts, feature levels and preprocessing (built on the meta
device). The pico model loads timm's state dict strictly and gives the same outputs (eval, fp32, <= 1e-5) at
64 px (2x2 windows and grids: the partitions follow img_size, as timm's), the same feature maps, the same
``forward_intermediates`` (with ``norm``) and pruning; in train mode too, with the relative-position MLP's
dropout and stochastic depth drawing the same random numbers in the same order. The small model's LayerScale
and the base model's hidden-layer head run on the pico's widths (timm's config overlays); the big models
themselves are compared in slow tests.
"""
import dataclasses

import pytest
import torch

import flexbone
from flexbone.layers.rel_pos_mlp import RelPosMlp
from flexbone.models.maxvit import VARIANTS, MaxVit

from _helpers import max_abs_diff, randomize_
from _zoo_parity import (assert_drop_path_rates_match, assert_features_match, assert_outputs_match,
                         assert_preprocessing_matches, assert_pruning_matches)

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity

NAMES = sorted(n for n in VARIANTS if n.startswith("maxvit_rmlp_"))
PICO = "maxvit_rmlp_pico_rw_256"


def _loaded_pair(ref: torch.nn.Module, ours: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's model with random weights and statistics, and ours with its state dict loaded strictly; eval."""
    randomize_(ref, keep_random_init=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval(), ref


def test_registered_names_are_timms():
    assert len(NAMES) == 7 and NAMES == sorted(timm.list_models("maxvit_rmlp_*"))
    assert set(NAMES) <= set(flexbone.list_models(family="maxvit"))


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, NAMES)


def test_rel_pos_mlp_bias_is_timms():
    """The bias layer alone, at window sizes 1, 2 and 7: the same offsets, index and biases as timm's."""
    for p in (1, 2, 7):
        ref = timm.layers.RelPosMlp(window_size=(p, p), num_heads=3, hidden_dim=16).eval()
        ours = RelPosMlp(p, num_heads=3, hidden_dim=16).eval()
        ours.load_state_dict(randomize_(ref).state_dict(), strict=True)
        assert torch.equal(ours.rel_coords_log, ref.rel_coords_log)
        assert torch.equal(ours.relative_position_index, ref.relative_position_index)
        with torch.no_grad():
            expected = ref.get_bias()  # (1, heads, p*p, p*p)
            assert expected.std() > 0 or p == 1
            assert ours.get_bias().shape == expected.shape and max_abs_diff(ours.get_bias(), expected) == 0


def test_outputs_and_feature_maps_match_timm():
    ref = timm.create_model(PICO, img_size=64)
    assert_outputs_match(ref, PICO, size=64, img_size=64)
    assert_features_match(ref, PICO, size=64, img_size=64)


def test_layer_scale_and_hidden_head_match_timm():
    """The small model's LayerScale (init_values) and the base model's pool -> LN -> tanh layer -> fc head with no
    trunk norm, on the pico's widths (timm's overlay of the same config fields)."""
    ref = timm.create_model(PICO, img_size=64, transformer_init_values=1e-6, head_hidden_size=96)
    ours = MaxVit(dataclasses.replace(VARIANTS[PICO], init_values=1e-6, head_hidden_size=96), img_size=64)
    ours, ref = _loaded_pair(ref, ours)  # (gamma randomised around 0, +-0.1: the branches count)
    keys = ours.state_dict().keys()
    assert "stages.0.blocks.0.attn_grid.ls2.gamma" in keys and "head.pre_logits.fc.weight" in keys
    assert "norm.weight" not in keys
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0 and max_abs_diff(ours(x), expected) <= 1e-5
        assert ours.head_hidden_size == ref.head_hidden_size == 96
        got, want = ours.forward_intermediates(x, norm=True), ref.forward_intermediates(x, norm=True)
        assert max_abs_diff(got[0], want[0]) <= 1e-5
        assert all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(got[1], want[1], strict=True))


def test_train_mode_with_options_matches_timm():
    """Train mode (batch statistics, the bias MLP's dropout 0.125, stochastic depth) with other options: the same
    logits as timm's from the same seed, so both draw the same random numbers in the same order."""
    kwargs = dict(img_size=64, num_classes=7, in_chans=1, global_pool="max", drop_path_rate=0.2)
    ref = randomize_(timm.create_model(PICO, **kwargs))
    ours = flexbone.create_model(PICO, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1, 64, 64)
    torch.manual_seed(3)
    out = ours(x)
    torch.manual_seed(3)
    assert out.shape == (2, 7) and max_abs_diff(out, ref(x)) <= 1e-5
    torch.manual_seed(4)
    assert max_abs_diff(ours(x), out) > 1e-4  # the dropout is really drawn (another seed, other logits)


def test_stochastic_depth_rates_are_timms():
    assert_drop_path_rates_match(timm, PICO, 0.3)


def test_forward_intermediates_and_pruning_match_timm():
    ours, ref = _loaded_pair(timm.create_model(PICO, img_size=64), flexbone.create_model(PICO, img_size=64))
    x = torch.randn(2, 3, 64, 64)
    calls = [dict(norm=True), dict(indices=[1, -1], norm=True, intermediates_only=True),
             dict(indices=2, stop_early=True), dict(indices=[3], stop_early=True, norm=True)]
    with torch.no_grad():
        for kw in calls:  # the trunk's final norm: on the returned features and, with norm=True, the last level
            got, want = ours.forward_intermediates(x, **kw), ref.forward_intermediates(x, **kw)
            if not kw.get("intermediates_only"):
                assert max_abs_diff(got[0], want[0]) <= 1e-5, kw
                got, want = got[1], want[1]
            assert [t.shape for t in got] == [t.shape for t in want], kw
            assert all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(got, want)), kw
    assert_pruning_matches(timm, PICO, img_size=64)


def test_prune_norm_drops_the_trunk_norm_as_timm():
    ours, ref = _loaded_pair(timm.create_model(PICO, img_size=64), flexbone.create_model(PICO, img_size=64))
    last = [len(ref.feature_info) - 1]  # the trunk whole: only the norm (and the classifier) go
    assert ours.prune_intermediate_layers(last, prune_norm=True) == list(ref.prune_intermediate_layers(
        last, prune_norm=True))
    assert ours.state_dict().keys() == ref.state_dict().keys() and "norm.weight" not in ours.state_dict()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), ref(x)) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maxvit_rmlp_small_rw_224", "maxvit_rmlp_base_rw_224"])
def test_big_models_outputs_match_timm(name):
    ref = timm.create_model(name, img_size=64)
    assert_outputs_match(ref, name, size=64, img_size=64)


@pytest.mark.slow
def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from flexbone.export.onnx import export_onnx

    model = randomize_(flexbone.create_model(PICO, img_size=64), keep_random_init=True).eval()
    result = export_onnx(model, tmp_path / "m.onnx", {"random": torch.randn(2, 3, 64, 64)}, what="maxvit",
                         dynamic_batch=True)  # checked in onnxruntime against the eager model, else ExportError
    assert result["max_abs_diff"]["random"] < 1e-4 and (tmp_path / "m.onnx").exists()
