"""RDNet ("DenseNets Reloaded") vs timm's ``rdnet.py`` (the reference nobody here wrote).

All four names have timm's parameter count and feature levels (built on the meta device); the tiny model
loads timm's state dict strictly and gives the same outputs (eval, fp32, <= 1e-5), also in train mode
with stochastic depth off; the preprocessing is timm's.
"""
import pytest
import torch

import flexbone
from flexbone.models.rdnet import VARIANTS

from _zoo_parity import (assert_drop_path_rates_match, assert_features_match, assert_outputs_match,
                         assert_param_count, assert_preprocessing_matches, assert_pruning_matches,
                         assert_train_mode_matches)

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity


def test_every_timm_rdnet_is_registered():
    assert set(timm.list_models("rdnet*")) == set(flexbone.list_models(family="rdnet")) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_and_levels_are_timms(name):
    assert_param_count(timm, name)
    with torch.device("meta"):
        ref, ours = timm.create_model(name), flexbone.create_model(name)
    assert [(s.num_chs, s.reduction, s.module) for s in ours.feature_info] == \
        [(i["num_chs"], i["reduction"], i["module"]) for i in ref.feature_info]


def test_timm_outputs_and_feature_maps_match():
    ref = timm.create_model("rdnet_tiny")
    assert_outputs_match(ref, "rdnet_tiny", size=64)
    assert_features_match(ref, "rdnet_tiny", size=(64, 96))


def test_train_mode_and_options_match_timm():
    assert_train_mode_matches(timm, "rdnet_tiny", num_classes=7, in_chans=1, global_pool="max")


def test_stochastic_depth_rates_are_timms():
    assert_drop_path_rates_match(timm, "rdnet_tiny", 0.3)


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, sorted(VARIANTS))


def test_pruning_is_timms():
    assert_pruning_matches(timm, "rdnet_tiny")  # the head's norm goes with the head or a cut trunk
