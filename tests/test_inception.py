"""Inception-v4 and Inception-ResNet-v2 vs timm's ``inception_v4.py`` / ``inception_resnet_v2.py``.

Both load timm's state dict strictly and give the same outputs (eval, fp32, <= 1e-5) at 75 px, the
smallest input the unpadded (TensorFlow VALID) convs allow; the feature levels and preprocessing are timm's.
"""
import pytest
import torch

import flexbone
from flexbone.errors import ConfigError

from _helpers import max_abs_diff, randomize_
from _zoo_parity import (assert_features_match, assert_outputs_match, assert_param_count,
                         assert_preprocessing_matches)

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity

NAMES = ["inception_v4", "inception_resnet_v2"]


def test_registered():
    assert set(flexbone.list_models(family="inception")) == set(NAMES) <= set(timm.list_models())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_is_timms(name):
    assert_param_count(timm, name)


@pytest.mark.parametrize("name", NAMES)
def test_timm_outputs_and_feature_levels_match(name):
    ref = timm.create_model(name)  # built once (its initialisation is the slow part), randomised by the helpers
    assert_outputs_match(ref, name, size=75)
    assert_features_match(ref, name, size=(75, 107))


def test_train_mode_and_options_match_timm():
    kwargs = dict(num_classes=7, in_chans=1, global_pool="avgmax")
    ref = randomize_(timm.create_model("inception_resnet_v2", **kwargs))
    ours = flexbone.create_model("inception_resnet_v2", **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1, 75, 75)
    out = ours(x)
    assert out.shape == (2, 7) and max_abs_diff(out, ref(x)) <= 1e-5
    assert ours.get_classifier() is ours.classif


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, NAMES)


def test_output_stride_other_than_32_is_refused():
    with pytest.raises(ConfigError, match="output_stride"):
        flexbone.create_model("inception_v4", output_stride=16)
