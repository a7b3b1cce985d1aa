"""Res2Net / Res2NeXt vs timm's ``res2net.py`` (the reference nobody here wrote).

Every Res2Net that timm registers is registered here with the same parameter count (built on the meta
device); one model of each kind (scale 2/4/8, Res2NeXt, ResNet-D stem) loads timm's state dict strictly and
gives the same outputs (eval, fp32, <= 1e-5), also dilated and in train mode.
"""
import pytest

import flexbone
from flexbone.models.res2net import VARIANTS

from _zoo_parity import (assert_drop_path_rates_match, assert_features_match, assert_outputs_match,
                         assert_param_count, assert_preprocessing_matches, assert_train_mode_matches)

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity

TIMM_NAMES = set(timm.list_models("res2n*"))


def test_every_timm_res2net_is_registered():
    assert TIMM_NAMES and TIMM_NAMES == set(flexbone.list_models(family="res2net")) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_is_timms(name):
    assert_param_count(timm, name)


@pytest.mark.parametrize("name", ["res2net50_14w_8s", "res2net50_48w_2s", "res2next50", "res2net50d"])
def test_timm_outputs_match(name):
    assert_outputs_match(timm.create_model(name), name, size=64)


def test_dilated_outputs_match():
    # output_stride 16: the last stage dilates instead of striding, as timm's
    assert_outputs_match(timm.create_model("res2net50_26w_4s", output_stride=16), "res2net50_26w_4s", size=64,
                         output_stride=16)


def test_train_mode_and_options_match_timm():
    assert_train_mode_matches(timm, "res2net50_26w_6s", num_classes=7, in_chans=1, global_pool="avgmax")


def test_stochastic_depth_rates_are_timms():
    assert_drop_path_rates_match(timm, "res2net50_26w_4s", 0.2)


def test_feature_levels_are_timms():
    assert_features_match(timm.create_model("res2net50_14w_8s"), "res2net50_14w_8s", size=(64, 96))


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, sorted(VARIANTS))
