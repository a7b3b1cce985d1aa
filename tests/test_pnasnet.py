"""PNASNet-5 large vs timm's ``pnasnet.py`` (Cadene's port of the TF model).

The parameter names, shapes and count and the feature levels are timm's (meta device); at 64 px (odd stage
maps, so the TF 'SAME' padding pads asymmetrically) the model loads timm's state dict strictly and gives the
same logits, pre-logits and feature maps (eval, fp32, <= 1e-5); pruning keeps timm's modules; preprocessing is
timm's. The forward at 64 px is the slow part's small end: the model has 86.1 M parameters.
"""
import pytest
import torch

import flexbone
from flexbone.bench.complexity import build_on_meta
from flexbone.errors import ConfigError

from _helpers import max_abs_diff
from _zoo_parity import assert_features_match, assert_outputs_match, assert_preprocessing_matches

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity


def test_state_dict_and_levels_are_timms():
    assert flexbone.list_models(family="pnasnet") == ["pnasnet5large"] and timm.is_model("pnasnet5large")
    ours = build_on_meta("pnasnet5large")
    with torch.device("meta"):
        ref = timm.create_model("pnasnet5large")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.num_params() == sum(p.numel() for p in ref.parameters()) == 86_057_668
    assert [dict(s) for s in ours.feature_info] == [dict(s) for s in ref.feature_info]


@pytest.mark.slow
def test_timm_outputs_feature_maps_and_pruning_match():
    ref = timm.create_model("pnasnet5large", num_classes=10)
    ours = assert_outputs_match(ref, "pnasnet5large", size=64, num_classes=10)
    assert_features_match(ref, "pnasnet5large", size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # stopped early at an inner level: the features end activated, as timm's
        (f1, m1), (f2, m2) = (m.forward_intermediates(x, [1, 2], stop_early=True) for m in (ours, ref))
        assert max_abs_diff(f1, f2) <= 1e-5 and all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(m1, m2))
        assert ours.prune_intermediate_layers([0, 3]) == ref.prune_intermediate_layers([0, 3])
        assert ours.state_dict().keys() == ref.state_dict().keys()
        assert max_abs_diff(ours.forward_features(x), ref.forward_features(x)) <= 1e-5


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, ["pnasnet5large"])


def test_output_stride_other_than_32_is_refused():
    with pytest.raises(ConfigError, match="output_stride"):
        flexbone.create_model("pnasnet5large", output_stride=16)
