"""DenseNet vs timm's ``densenet.py`` and torchvision's ``densenet.py`` (references nobody here wrote).

Every DenseNet that timm registers is registered here: equal parameter counts (built on the meta device),
strict state-dict loads and equal outputs (eval, fp32, <= 1e-5) for the smallest sibling of each
architecture kind; torchvision's densenet121/161/169/201 checkpoints load strictly too.
"""
import pytest
import torch

import flexbone
from flexbone.bench.complexity import build_on_meta
from flexbone.errors import ConfigError
from flexbone.models.densenet import VARIANTS

from _helpers import assert_checkpointing_keeps_gradients, max_abs_diff, randomize_
from _zoo_parity import (assert_features_match, assert_outputs_match, assert_param_count,
                         assert_preprocessing_matches, assert_train_mode_matches)

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity

TIMM_NAMES = set(timm.list_models("densenet*"))
TV_NAMES = ("densenet121", "densenet161", "densenet169", "densenet201")


def test_every_timm_densenet_is_registered():
    assert TIMM_NAMES and TIMM_NAMES == set(flexbone.list_models(family="densenet")) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_is_timms(name):
    assert_param_count(timm, name)


@pytest.mark.parametrize("name", TV_NAMES)
def test_torchvision_parameter_count_and_keys(name):
    with torch.device("meta"):
        ref = getattr(torchvision.models, name)()
    ours = build_on_meta(name)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("name", ["densenet121", "densenetblur121d"])
def test_timm_outputs_match(name):
    assert_outputs_match(timm.create_model(name), name, size=64)


def test_torchvision_outputs_match():
    ref = randomize_(torchvision.models.densenet121()).eval()
    ours = flexbone.create_model("densenet121").eval()
    assert flexbone.load_checkpoint(ours, ref.state_dict(), strict=True).ok
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0
        assert max_abs_diff(ours(x), expected) <= 1e-5


def test_feature_levels_are_timms():
    assert_features_match(timm.create_model("densenet121"), "densenet121", size=(64, 96))


def test_train_mode_and_options_match_timm():
    # train-mode BN, 1 input channel, another pooling and class count, dropout after each dense layer off
    ours, ref = assert_train_mode_matches(timm, "densenet121", num_classes=7, in_chans=1, global_pool="catavgmax")
    assert ours.num_features == ref.num_features and ours.head_hidden_size == ref.head_hidden_size


def test_grad_checkpointing_gives_the_same_gradients():
    model = randomize_(flexbone.create_model("densenet121", num_classes=5))
    assert_checkpointing_keeps_gradients(model, torch.randn(2, 3, 32, 32))


def test_features_are_not_overwritten_in_inference(monkeypatch):
    # the transition normalises a block output that is also a feature level: it must not do so in place
    from flexbone.layers import norm

    monkeypatch.setattr(norm, "_INPLACE_MIN_NUMEL", 0)
    model = randomize_(flexbone.create_model("densenet121", features_only=True)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model(x)
        block1 = model.features.denseblock1(model.features.pool0(model.features.norm0(model.features.conv0(x))))
    assert max_abs_diff(maps[1], block1) == 0


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, sorted(VARIANTS))


def test_output_stride_other_than_32_is_refused():
    with pytest.raises(ConfigError, match="output_stride"):
        flexbone.create_model("densenet121", output_stride=16)
