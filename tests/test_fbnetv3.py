"""FBNetV3 vs timm's ``mobilenetv3.py`` FBNetV3 models (the reference nobody here wrote).

All three load timm's state dict strictly with timm's parameter count; b (the smallest) and g (other stem,
widths and repeats) give timm's outputs (eval, fp32, <= 1e-5), also in train mode; the feature
levels and preprocessing are timm's.
"""
import pytest

import flexbone
from flexbone.models.fbnetv3 import VARIANTS

from _zoo_parity import (assert_features_match, assert_outputs_match, assert_param_count,
                         assert_preprocessing_matches, assert_train_mode_matches)

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity


def test_every_timm_fbnetv3_is_registered():
    assert set(timm.list_models("fbnetv3*")) == set(flexbone.list_models(family="fbnetv3")) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_is_timms(name):
    assert_param_count(timm, name)


@pytest.mark.parametrize("name", ["fbnetv3_b", "fbnetv3_g"])
def test_timm_outputs_and_feature_levels_match(name):
    ref = timm.create_model(name)
    assert_outputs_match(ref, name, size=64)
    assert_features_match(ref, name, size=(64, 96))


def test_train_mode_and_options_match_timm():
    ours, ref = assert_train_mode_matches(timm, "fbnetv3_b", num_classes=7, in_chans=1, drop_path_rate=0.0)
    assert (ours.num_features, ours.head_hidden_size) == (ref.num_features, ref.head_hidden_size) == (1344, 1984)


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, sorted(VARIANTS))
