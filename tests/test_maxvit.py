"""MaxViT vs timm's ``maxxvit.py`` (``maxvit_*_tf_*``, the models ported from the official TF code).

Every name has timm's parameter names, shapes, counts and feature levels (built on the meta device); the tiny
model loads timm's state dict strictly and gives the same outputs (eval, fp32, <= 1e-5) at 64 and 32 px
(window / grid partitions 2x2 and 1x1; the model is built for its input size, as timm's ``img_size``), also in
train mode with other options; stochastic depth and preprocessing are timm's.
"""
import pytest
import torch
import torch.fx

import flexbone
from flexbone.bench.complexity import build_on_meta
from flexbone.errors import ConfigError
from flexbone.models.maxvit import VARIANTS

from _helpers import max_abs_diff, randomize_
from _zoo_parity import (assert_drop_path_rates_match, assert_features_match, assert_outputs_match,
                         assert_preprocessing_matches, assert_pruning_matches, assert_train_mode_matches)

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity


TF_NAMES = ["maxvit_base_tf_224", "maxvit_small_tf_224", "maxvit_tiny_tf_224"]  # (maxvit_rmlp_*: test_maxvit_rmlp.py)


def test_registered_names_are_timms():
    names = set(flexbone.list_models(family="maxvit"))
    assert names == set(VARIANTS) and set(TF_NAMES) == {n for n in names if "_tf_" in n}
    assert names <= set(timm.list_models("maxvit*"))


@pytest.mark.parametrize("name", sorted(VARIANTS))  # the TF ports and timm's own maxvit_rmlp_*
def test_state_dict_and_levels_are_timms(name):
    ours = build_on_meta(name)
    with torch.device("meta"):
        ref = timm.create_model(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.num_params() == sum(p.numel() for p in ref.parameters())
    assert [dict(s) for s in ours.feature_info] == [dict(s) for s in ref.feature_info]
    assert (ours.num_features, ours.head_hidden_size) == (ref.num_features, ref.head_hidden_size)
    assert ours.img_size == ref.img_size[0] and ours.window_size == ref.img_size[0] // 32  # 8 at 256, 12 at 384


@pytest.mark.parametrize("size", [64, pytest.param(32, marks=pytest.mark.slow)])
def test_timm_outputs_and_feature_maps_match(size):
    ref = timm.create_model("maxvit_tiny_tf_224", img_size=size)
    assert_outputs_match(ref, "maxvit_tiny_tf_224", size=size, img_size=size)
    assert_features_match(ref, "maxvit_tiny_tf_224", size=size, img_size=size)


def test_train_mode_and_options_match_timm():
    assert_train_mode_matches(timm, "maxvit_tiny_tf_224", img_size=64, num_classes=7, in_chans=1, global_pool="max")


def test_stochastic_depth_rates_are_timms():
    assert_drop_path_rates_match(timm, "maxvit_tiny_tf_224", 0.3)


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, TF_NAMES)


def test_bad_input_size_and_options_are_clear_errors():
    model = flexbone.create_model("maxvit_tiny_tf_224", img_size=64)
    with pytest.raises(ConfigError, match="img_size"):
        model(torch.randn(1, 3, 96, 96))  # 3x3 maps do not split into the 2x2 windows made for 64 px
    with pytest.raises(ConfigError, match="output_stride"):
        flexbone.create_model("maxvit_tiny_tf_224", output_stride=16)
    with pytest.raises(ConfigError, match="img_size"):
        flexbone.create_model("maxvit_tiny_tf_224", img_size=16)


@pytest.mark.slow
def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from flexbone.export.onnx import export_onnx

    model = randomize_(flexbone.create_model("maxvit_tiny_tf_224", img_size=64), keep_random_init=True).eval()
    result = export_onnx(model, tmp_path / "m.onnx", {"random": torch.randn(2, 3, 64, 64)}, what="maxvit",
                         dynamic_batch=True)  # checked in onnxruntime against the eager model, else ExportError
    assert result["max_abs_diff"]["random"] < 1e-4 and (tmp_path / "m.onnx").exists()


def test_pruning_is_timms():
    assert_pruning_matches(timm, "maxvit_tiny_tf_224", img_size=64)  # norm and hidden layer go with head or trunk


def test_torchscript_and_fx_equal_eager():
    """The TF port's own layers ('SAME'-padded convs and pools, the bias table, the hidden-layer head) script and
    trace (the registry-wide contract tests run the family's smallest model, an rmlp one)."""
    model = randomize_(flexbone.create_model("maxvit_tiny_tf_224", img_size=64), keep_random_init=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        assert max_abs_diff(torch.jit.script(model)(x), expected) == 0
        assert max_abs_diff(torch.fx.symbolic_trace(model)(x), expected) == 0
