"""NASNet-A large and PNASNet-5 large vs timm's ``nasnet.py`` / ``pnasnet.py`` (Cadene's ports of the TF models).

For both: the parameter names, shapes and count and the feature levels are timm's (meta device); at 40 px (maps of
19, 10, 5, 3 and 2 px: odd ones, where TF 'SAME' padding pads asymmetrically) the model loads timm's state dict
strictly and gives the same logits, pre-logits and feature maps (eval, fp32, <= 1e-5), also when stopped early
at an inner level and after pruning; preprocessing is timm's. The forwards are marked slow: 86-89 M parameters,
so each pair is built once for the module (``pairs``) and shared by the tests that need one.
"""
import copy
import functools

import pytest
import torch

import flexbone
from flexbone.bench.complexity import build_on_meta
from flexbone.errors import ConfigError

from _helpers import max_abs_diff
from _zoo_parity import assert_features_match, assert_outputs_match, assert_preprocessing_matches

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.parity

# name -> (family, timm's parameter count)
MODELS = {"nasnetalarge": ("nasnet", 88_753_150), "pnasnet5large": ("pnasnet", 86_057_668)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_and_levels_are_timms(name):
    family, count = MODELS[name]
    assert flexbone.list_models(family=family) == [name] and timm.is_model(name)
    ours = build_on_meta(name)
    with torch.device("meta"):
        ref = timm.create_model(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.num_params() == sum(p.numel() for p in ref.parameters()) == count
    assert [dict(s) for s in ours.feature_info] == [dict(s) for s in ref.feature_info]


SIZE = 40  # px: the smallest input whose stage maps are odd at three levels (19, 5, 3); 32 px runs too


@pytest.fixture(scope="module")
def pairs():
    """``pairs(name)``: timm's model (10 classes, random weights and statistics, eval) and ours with its state dict
    loaded strictly and the same logits and pre-logits, built once for the module (a test that changes either
    takes a deepcopy)."""
    @functools.cache
    def build(name):
        ref = timm.create_model(name, num_classes=10)
        return assert_outputs_match(ref, name, size=SIZE, num_classes=10), ref
    yield build
    build.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_timm_outputs_feature_maps_and_pruning_match(pairs, name):
    ours, ref = pairs(name)  # (outputs compared as they are built)
    assert_features_match(ref, name, size=SIZE)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():  # stopped early at an inner level: the features end activated, as timm's
        (f1, m1), (f2, m2) = (m.forward_intermediates(x, [1, 2], stop_early=True) for m in (ours, ref))
        assert max_abs_diff(f1, f2) <= 1e-5 and all(max_abs_diff(a, b) <= 1e-5 for a, b in zip(m1, m2))
        ours, ref = copy.deepcopy(ours), copy.deepcopy(ref)
        assert ours.prune_intermediate_layers([0, 3]) == ref.prune_intermediate_layers([0, 3])
        assert ours.state_dict().keys() == ref.state_dict().keys()
        assert max_abs_diff(ours.forward_features(x), ref.forward_features(x)) <= 1e-5


def test_preprocessing_is_timms():
    assert_preprocessing_matches(timm, sorted(MODELS))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_stride_other_than_32_is_refused(name):
    with pytest.raises(ConfigError, match="output_stride"):
        flexbone.create_model(name, output_stride=16)


@pytest.mark.slow
def test_onnx_export_matches_onnxruntime(pairs, tmp_path):
    """TF 'SAME' padding on odd maps survives the export (it did not before layers/padding.py's fix)."""
    pytest.importorskip("onnxruntime")
    from flexbone.export.onnx import export_onnx

    model = pairs("pnasnet5large")[0]
    result = export_onnx(model, tmp_path / "m.onnx", {"random": torch.randn(1, 3, SIZE, SIZE)}, what="pnasnet",
                         dynamic_batch=True)  # checked in onnxruntime against the eager model, else ExportError
    assert result["max_abs_diff"]["random"] < 1e-4 and (tmp_path / "m.onnx").exists()
