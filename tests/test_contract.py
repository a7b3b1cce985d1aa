"""timm's model contract on every registered model (issue 18), checked against timm itself.

Registry-wide by construction: the cheap checks (attributes, cfg keys and values, feature_info, the
four-level pyramid, ``features_only`` shapes) run for every name or model class on the meta device; the values
of ``forward_intermediates`` against timm's model with the same weights run on the smallest model of each
model class; the costlier tools (``prune_intermediate_layers``, torch.fx, torchvision's
``create_feature_extractor``, TorchScript, gradients) on the smallest model of each family. Representatives
are chosen from the registry, so a new family is covered as soon as it registers; each is built once per run
(``built``) and a test that changes a model works on a copy.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools

import pytest
import timm
import torch
import torch.fx
from torchvision.models.feature_extraction import create_feature_extractor

import flexbone
from flexbone.errors import ConfigError
from flexbone.models import Backbone, model_family
from flexbone.models._base import CFG_KEYS
from flexbone.models._features import PYRAMID

from _helpers import max_abs_diff, randomize_

NAMES = flexbone.list_models()
FAMILIES = sorted({model_family(n) for n in NAMES})

# Deliberate differences from timm, each also a line of the README ("Models"):
# MobileNetV3-Small's stride-2 level is the stem's activation: timm's ``bn1`` holds norm + act in one module,
# flexbone's ``bn1`` is the norm alone and ``act1`` its activation (the same map).
MODULE_NAMES = {("MobileNetV3", "act1"): "bn1"}  # (our model class, our module) -> timm's module


# Families that landed while issue 18 was under way and miss part of the contract: each gap is the named family
# file's to close (strict xfail: the mark fails as soon as the gap is closed, so that it is removed then).
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def cases(test: str, items: list) -> list:
    """``items`` (names, or (family, name) pairs) as pytest params, a known gap marked as a strict xfail."""
    params = []
    for item in items:
        family = item[0] if isinstance(item, tuple) else model_family(item)
        reason = KNOWN_GAPS.get((test, family))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(*(item if isinstance(item, tuple) else (item,)), marks=marks))
    return params


@contextlib.contextmanager
def metadata_only():
    """Build models on the meta device without initialising their weights (the values mean nothing there,
    and torch's initialisers are slow on meta tensors): the metadata checks then cost milliseconds."""
    skipped = [(torch.nn.init, n) for n in ("normal_", "uniform_", "trunc_normal_", "kaiming_normal_",
                                             "kaiming_uniform_", "xavier_normal_", "xavier_uniform_", "zeros_",
                                             "ones_", "constant_", "orthogonal_")]
    skipped += [(torch.Tensor, n) for n in ("normal_", "uniform_", "zero_", "fill_")]
    saved = [(owner, n, getattr(owner, n)) for owner, n in skipped]
    for owner, n in skipped:
        setattr(owner, n, lambda t, *args, **kwargs: t)
    try:
        with torch.device("meta"):
            yield
    finally:
        for owner, n, fn in saved:
            setattr(owner, n, fn)


@functools.cache
def meta_model(name: str) -> Backbone:
    with metadata_only():
        return flexbone.create_model(name)


@functools.cache
def timm_meta_model(name: str) -> torch.nn.Module:
    with metadata_only():
        return timm.create_model(name)


def _num_params(name: str) -> int:
    return sum(p.numel() for p in meta_model(name).parameters())


def representatives(family: str, timm_only: bool = False, per_class: bool = True) -> list[str]:
    """The smallest model of each model class in ``family`` (of the family, without ``per_class``; only names
    timm also has, with ``timm_only``)."""
    groups: dict[str, list[str]] = {}
    for n in flexbone.list_models(family=family):
        if not timm_only or timm.is_model(n):
            groups.setdefault(type(meta_model(n)).__name__ if per_class else family, []).append(n)
    return [min(names, key=_num_params) for names in groups.values()]


@functools.cache
def _runs_at(name: str, size: int) -> bool:
    """Whether the model takes a ``size`` x ``size`` input (valid-padding families need more): a meta forward."""
    model = meta_model(name)
    try:
        model.eval()(torch.empty(2, model_in_chans(model), size, size, device="meta"))
        return True
    except RuntimeError:
        return False


def _input_size(name: str, small: int = 96) -> tuple[int, int]:
    """A small input ``name`` takes: ``small`` px, the cfg's size for fixed-size models, the smallest size for
    valid-padding models (Inception: ``min_input_size``)."""
    cfg = meta_model(name).default_cfg
    if cfg.get("fixed_input_size"):
        return tuple(cfg["input_size"][1:])
    if not _runs_at(name, small):
        return tuple((cfg.get("min_input_size") or cfg["input_size"])[1:])
    return small, small


def _timm_module(ours: Backbone, timm_name: str) -> str:
    return MODULE_NAMES.get((type(ours).__name__, timm_name), timm_name)


def _timm_dicts(ours: Backbone, dicts: list[dict]) -> list[dict]:
    """Our level dicts with timm's module names (the deliberate differences of ``MODULE_NAMES``)."""
    return [dict(d, module=_timm_module(ours, d["module"])) for d in dicts]


# ------------------------------------------------------------------------------ every name, meta device
@pytest.mark.parametrize("name", cases("attributes", NAMES))
def test_attributes_cfg_and_feature_info(name):
    model = meta_model(name)
    assert model.pretrained_cfg is model.default_cfg
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name
    assert {k for k in CFG_KEYS if not k.startswith("test_")} <= cfg.keys()
    assert isinstance(model.num_features, int) and isinstance(model.head_hidden_size, int)
    if not hasattr(model, "feature_info"):  # SN-Net: its levels would change with the configuration
        with pytest.raises(ConfigError, match="features_only"), metadata_only():
            flexbone.create_model(name, features_only=True)
        return

    info = model.feature_info  # timm's list of dicts, plus the selector methods
    assert isinstance(info, list) and all(isinstance(i, dict) for i in info)
    assert "num_chs" in info[0] and "reduction" in info[0] and "module" in info[0]
    wrapped = timm.models.FeatureInfo(copy.deepcopy(list(info)), out_indices=tuple(range(len(info))))
    assert wrapped.channels() == info.channels() and wrapped.reduction() == info.reduction()
    assert wrapped.module_name() == info.module_name()
    for module in info.module_name():
        model.get_submodule(module)  # every level names a module of the model

    if timm.is_model(name):
        ref = timm_meta_model(name)
        assert (model.num_features, model.head_hidden_size) == (ref.num_features, ref.head_hidden_size)
        expected = {k: v for k, v in ref.pretrained_cfg.items() if k in CFG_KEYS}
        assert {k: v for k, v in cfg.items() if k in CFG_KEYS} == expected
        assert timm.data.resolve_model_data_config(model) == timm.data.resolve_model_data_config(ref)
        assert _timm_dicts(model, info) == [dict(d) for d in ref.feature_info]  # every key (timm's lists: no 'index')


@pytest.mark.parametrize("name", cases("pyramid", NAMES))
def test_four_level_pyramid_option(name):
    """``out_indices=PYRAMID`` (-4..-1): the four levels at strides 4..32 that dense heads and CBNet take."""
    levels = getattr(meta_model(name), "feature_info", [])  # (SN-Net: none, features_only refused)
    if len(levels) < 4:
        with pytest.raises(ConfigError, match="feature levels|features_only"), metadata_only():
            flexbone.create_model(name, features_only=True, out_indices=PYRAMID)
        return
    with metadata_only():
        model = flexbone.create_model(name, features_only=True, out_indices=PYRAMID).eval()
    assert model.feature_info.get_dicts() == [dict(s, index=i) for i, s in enumerate(levels)][-4:]
    _, h, w = model.default_cfg["input_size"]
    maps = _nchw(model, model(torch.empty(2, model_in_chans(model), h, w, device="meta")))
    assert [m.shape[:2] for m in maps] == [(2, c) for c in model.feature_info.channels()]
    for m, r in zip(maps, model.feature_info.reduction()):  # input / reduction (valid-padding families: a bit less)
        assert h // r - 4 <= m.shape[-2] <= -(-h // r) and w // r - 4 <= m.shape[-1] <= -(-w // r), (m.shape, r)


def _nchw(model: Backbone, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """``features_only`` maps as ``(B, C, H, W)`` (Swin's are channels-last, as timm's: ``output_fmt``)."""
    return [m.permute(0, 3, 1, 2) for m in maps] if model.output_fmt == "NHWC" else maps


def model_in_chans(model: Backbone) -> int:
    first = model.default_cfg.get("first_conv")
    weight = getattr(model.get_submodule(first), "weight", None) if first else None
    return weight.shape[1] if weight is not None and weight.ndim == 4 else 3


# ------------------------------------------------------------------------------ against timm's model, with values
TIMM_CASES = [(f, n) for f in FAMILIES for n in representatives(f, timm_only=True)]  # per model class
TIMM_FAMILY_CASES = [(f, n) for f in FAMILIES for n in representatives(f, timm_only=True, per_class=False)]
FAMILY_CASES = [(f, n) for f in FAMILIES for n in representatives(f, per_class=False)]
SMALL = 64  # px: the input of the value checks (fixed-size models: their size; valid padding: their minimum)


@pytest.fixture(scope="module")
def built():
    """``built(name)``: (ours, timm's or None) with the same random weights and statistics, in eval mode, built
    once for the module; a test that changes a model (pruning, training, features_only) takes a deepcopy."""
    @functools.cache
    def build(name):
        if not timm.is_model(name):
            return randomize_(flexbone.create_model(name), keep_random_init=True).eval(), None
        ref = randomize_(timm.create_model(name), keep_random_init=True).eval()
        ours = flexbone.create_model(name).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        return ours, ref
    yield build
    build.cache_clear()


@pytest.mark.parity
@pytest.mark.parametrize("family, name", TIMM_CASES)
def test_forward_intermediates_match_timm(built, family, name):
    ours, ref = built(name)
    x = torch.randn(2, 3, *_input_size(name, SMALL))
    n = len(ref.feature_info)
    calls = [dict(), dict(indices=1), dict(indices=[0, -1]),
             dict(indices=[n - 2], stop_early=True, intermediates_only=True),  # (timm's MobileNetV3 needs both)
             dict(indices=list(PYRAMID)[-min(n, 4):], intermediates_only=True)]
    with torch.no_grad():
        for kw in calls:
            got, expected = ours.forward_intermediates(x.clone(), **kw), ref.forward_intermediates(x.clone(), **kw)
            if not kw.get("intermediates_only"):
                assert got[0].shape == expected[0].shape and max_abs_diff(got[0], expected[0]) < 1e-4, kw
                got, expected = got[1], expected[1]
            assert [t.shape for t in got] == [t.shape for t in expected], kw
            for a, b in zip(got, expected):
                assert max_abs_diff(a, b) < 1e-4, kw
        final, _ = ours.forward_intermediates(x.clone())
        assert max_abs_diff(final, ours.forward_features(x.clone())) == 0


@pytest.mark.parity
@pytest.mark.parametrize("family, name", cases("features_only", TIMM_CASES))
def test_features_only_matches_timm(family, name):
    """timm's default levels, and every valid ``out_indices``, give the maps timm's feature extractor gives."""
    with metadata_only():
        ref = timm.create_model(name, features_only=True)
        ours = flexbone.create_model(name, features_only=True)
        ref_pair = timm.create_model(name, features_only=True, out_indices=(1, -1))
    assert ours.feature_info.out_indices == tuple(ref.feature_info.out_indices)
    assert _timm_dicts(ours, ours.feature_info.get_dicts()) == ref.feature_info.get_dicts()  # (with 'index')
    x = torch.empty(2, 3, *_input_size(name), device="meta")
    expected = [tuple(t.shape) for t in ref(x)]
    assert [tuple(t.shape) for t in ours(x)] == expected
    n = len(ours.feature_info)
    with metadata_only():
        every_level = [tuple(t.shape) for t in timm.create_model(name, features_only=True, out_indices=range(n))(x)]
    for i in range(n):  # every level on its own, by its index from either end
        assert ours.as_features((i - n,)).feature_info.out_indices == ours.as_features((i,)).feature_info.out_indices
        assert [tuple(t.shape) for t in ours(x)] == [every_level[i]], i
    ours.as_features((1, -1))
    assert [tuple(t.shape) for t in ours(x)] == [tuple(t.shape) for t in ref_pair(x)]
    assert _timm_dicts(ours, ours.feature_info.get_dicts()) == ref_pair.feature_info.get_dicts()
    if hasattr(ref, "output_fmt"):  # timm's FeatureListNet says its maps' layout (Swin: NHWC)
        assert ours.output_fmt == ref.output_fmt


def test_segmentation_heads_take_channels_last_pyramids():
    """A segmentation head over Swin (NHWC maps, as timm's) sees the same maps as over their NCHW form."""
    from flexbone.seg.model import SegmentationModel

    model = SegmentationModel("swin_tiny_patch4_window7_224", "fpn", num_classes=3, img_size=64).eval()
    assert model.backbone.output_fmt == "NHWC"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        nchw = model.backbone.forward_intermediates(x, list(PYRAMID), intermediates_only=True)
        assert max_abs_diff(model(x), model.head(nchw)) < 1e-5  # (a permuted view vs a contiguous copy)


@pytest.mark.parity
@pytest.mark.parametrize("family, name", cases("prune", TIMM_FAMILY_CASES))
def test_prune_intermediate_layers_matches_timm(built, family, name):
    ours, ref = (copy.deepcopy(m) for m in built(name))
    n = len(ref.feature_info)
    indices = [0, n - 2] if n > 2 else [0]
    assert ours.prune_intermediate_layers(indices) == ref.prune_intermediate_layers(indices)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    x = torch.randn(1, 3, *_input_size(name, SMALL))
    with torch.no_grad():
        got = ours.forward_intermediates(x.clone(), indices, intermediates_only=True)
        expected = ref.forward_intermediates(x.clone(), indices, intermediates_only=True)
    assert all(max_abs_diff(a, b) < 1e-4 for a, b in zip(got, expected)) and len(got) == len(expected)


# ------------------------------------------------------------------------------ tools: FX, TorchScript, autograd
TIMM_CLASSES = {type(meta_model(n)).__name__ for _, n in TIMM_CASES}
SCRIPT_CASES = [(f, n) for f, n in FAMILY_CASES if type(meta_model(n)).__name__ in TIMM_CLASSES]


def _diff(a, b) -> float:
    """Largest difference of two outputs (a tensor, or a list of maps)."""
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        return max(max_abs_diff(x, y) for x, y in zip(a, b))
    return max_abs_diff(a, b)


def _small_input(name: str) -> torch.Tensor:
    return torch.randn(2, model_in_chans(meta_model(name)), *_input_size(name, SMALL))


def _using_every_parameter(model: Backbone) -> Backbone:
    """A supernet at the configuration whose forward uses every parameter: every block at its largest depth,
    expansion and width, and the smallest kernel (which derives from the largest through every kernel
    transform); an SN-Net at a stitched configuration (two anchors and a stitching layer); a static model as it is."""
    if hasattr(model, "space"):
        model.set_active(dataclasses.replace(model.space.max(), kernel=model.space.min().kernel))
    if hasattr(model, "num_configs"):
        model.set_active(model.num_configs - 1)  # (anchors come first)
    return model


def _static(model: Backbone) -> Backbone:
    """A supernet's static sub-network at its active configuration (what FX and TorchScript users deploy: the
    supernet's own forward slices weights by the active configuration in Python; an SN-Net's forward follows the
    active configuration's path), at a stitched configuration for an SN-Net; any other model itself."""
    if hasattr(model, "space"):
        model.set_active(model.space.min())
        return model.extract()
    if hasattr(model, "num_configs"):
        return _using_every_parameter(model).extract()
    return model


@pytest.mark.parametrize("family, name", cases("fx", FAMILY_CASES))
def test_fx_trace_and_feature_extractor_equal_eager(built, family, name):
    model = _static(copy.deepcopy(built(name)[0]))
    x = _small_input(name)
    with torch.no_grad():
        expected = model(x.clone())
        traced = torch.fx.symbolic_trace(model)
        bns = [n for n in traced.graph.nodes if n.op == "call_module" and isinstance(
            traced.get_submodule(n.target), torch.nn.BatchNorm2d)]
        assert len(bns) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # BN: one call each
        assert _diff(traced(x.clone()), expected) == 0
        if getattr(type(model), "forward_intermediates", None) is Backbone.forward_intermediates:  # module outputs
            modules = model.feature_info.module_name()
            extractor = create_feature_extractor(model, return_nodes=modules)
            maps = extractor(x.clone())
            reference = model.forward_intermediates(x.clone(), intermediates_only=True)
            assert [max_abs_diff(maps[m], r) for m, r in zip(modules, reference)] == [0] * len(modules)


@pytest.mark.parametrize("family, name", cases("torchscript", SCRIPT_CASES))
def test_torchscript_equals_eager(built, family, name):
    model = built(name)[0]  # (scripting compiles the model; it does not change it)
    x = _small_input(name)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert _diff(scripted(x.clone()), model(x.clone())) == 0


# timm's feature extractor of these model classes does not script (timm 1.0.31: ViT's FeatureGetterNet; NASNet's and
# PNASNet's FeatureHookNet, whose forward hooks are functools.partial objects TorchScript cannot name)
TIMM_FEATURES_UNSCRIPTABLE = {"VisionTransformer", "NASNetALarge", "PNASNet5Large"}


@pytest.mark.parity
@pytest.mark.parametrize("family, name", cases("torchscript", TIMM_FAMILY_CASES))
def test_torchscript_features_only_matches_timm(built, tmp_path, family, name):
    """``torch.jit.script`` of a features_only model gives the maps of timm's scripted feature extractor with the
    same weights (timm's built from the classification checkpoint, as its users do) and keeps the same weights."""
    ours, ref = built(name)
    torch.save(ref.state_dict(), tmp_path / "weights.pth")
    ours = copy.deepcopy(ours).as_features().eval()
    scripted = torch.jit.script(ours)
    ref_features = timm.create_model(name, features_only=True, pretrained=True,
                                     pretrained_cfg_overlay=dict(file=str(tmp_path / "weights.pth"))).eval()
    x = torch.randn(2, 3, *_input_size(name, SMALL))
    with torch.no_grad():
        maps = scripted(x.clone())
        assert _diff(maps, ours(x.clone())) == 0
        assert [t.shape for t in maps] == [t.shape for t in ref_features(x.clone())]
        assert _diff(maps, ref_features(x.clone())) < 1e-4
    params = lambda m: dict(m.named_parameters())  # noqa: E731 (a scripted state_dict has non-persistent buffers)
    assert params(scripted).keys() <= params(ours).keys()  # the model's own names
    if type(ours).__name__ in TIMM_FEATURES_UNSCRIPTABLE:
        with pytest.raises(Exception):
            torch.jit.script(ref_features)
        return
    ref_scripted = torch.jit.script(ref_features)
    with torch.no_grad():
        assert _diff(maps, ref_scripted(x.clone())) < 1e-4
    size = lambda m: sum(t.numel() for t in params(m).values())  # noqa: E731
    assert size(scripted) == size(ref_scripted)  # the modules after the deepest level dropped, as timm's


def test_scripted_features_follow_train_and_eval():
    """The scripted extractor compiles each module's forward, so ``.train()`` still switches batch norm to batch
    statistics (a traced-through graph would have frozen the mode it was traced in)."""
    model = randomize_(flexbone.create_model("resnet18", features_only=True)).eval()
    scripted = torch.jit.script(copy.deepcopy(model))
    x = torch.randn(4, 3, 32, 32)
    model.train(), scripted.train()
    assert _diff(scripted(x.clone()), model(x.clone())) < 1e-5
    model.eval(), scripted.eval()
    with torch.no_grad():
        assert _diff(scripted(x.clone()), model(x.clone())) == 0


def test_scripting_a_parent_leaves_its_feature_extractor_alone():
    """Only the model being scripted is swapped for its feature graph: torch would leave a swapped submodule in
    the eager parent (here a segmentation model, whose heads do not script), even when scripting fails."""
    from flexbone.seg.model import SegmentationModel

    model = SegmentationModel("resnet18", "fpn", num_classes=3).eval()
    backbone = model.backbone
    with contextlib.suppress(Exception):  # scripted or not, the eager model must stay as it was
        torch.jit.script(model)
    assert model.backbone is backbone and model.feature_info.channels() == [64, 128, 256, 512]
    assert len(model(torch.randn(1, 3, 32, 32)).shape) == 4

    class Wrapper(torch.nn.Module):  # a parent that scripts: the backbone inside it fails loudly, not with wrong maps
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor):
            return self.inner(x)

    wrapper = Wrapper(backbone)
    scripted = torch.jit.script(wrapper)
    assert wrapper.inner is backbone
    with pytest.raises(torch.jit.Error, match="scripts on its own"):
        scripted(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("family, name", cases("backward", FAMILY_CASES))
def test_backward_reaches_every_parameter(built, family, name):
    model = _using_every_parameter(copy.deepcopy(built(name)[0]).train())
    out = model(_small_input(name))
    outputs = out if isinstance(out, (list, tuple)) else [out]
    sum(o.float().square().mean() for o in outputs).backward()
    if hasattr(model, "config_params"):  # SN-Net: exactly the parameters on the active path
        assert sum(p.numel() for p in model.parameters() if p.grad is not None) == model.config_params(model.active_id)
        return
    missing = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


@pytest.mark.parametrize("anchors, options, size", [
    (["resnet18", "resnet50"], [{}, {}], 32),  # CNN -> CNN
    (["resnet18", "swin_tiny_patch4_window7_224"], [{}, {"img_size": 64}], 64),  # CNN -> channels-last stages
    (["deit_tiny_patch16_224", "deit_small_patch16_224"], [{"img_size": 32}] * 2, 32),  # tokens
])
def test_snnet_answers_the_classifier_contract(anchors, options, size):
    """An SN-Net's forward_features / forward_head / classifier are those of the active path's last anchor, for
    every configuration; reset_classifier reaches every path."""
    net = flexbone.create_model("snnet", anchors=anchors, anchor_options=options, num_classes=5)
    net = randomize_(net, keep_random_init=True).eval()
    last = net.anchors[-1]
    assert net.get_submodule(net.pretrained_cfg["classifier"]) is last.get_classifier()
    assert net.pretrained_cfg["input_size"] == last.pretrained_cfg["input_size"]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for i in range(net.num_configs):
            net.set_active(i)
            end = net.anchors[net.stitch_config(i).anchors[-1]]
            assert (net.num_features, net.head_hidden_size) == (end.num_features, end.head_hidden_size)
            assert net.get_classifier() is end.get_classifier()
            features = net.forward_features(x.clone())
            assert _diff(net.forward_head(features), net(x.clone())) == 0
            if net.stitch_config(i).is_anchor:
                assert _diff(features, end.forward_features(x.clone())) == 0
            assert net.forward_head(features, pre_logits=True).shape == (2, end.head_hidden_size)
        net.reset_classifier(3)
        for i in range(net.num_configs):
            net.set_active(i)
            assert net(x.clone()).shape == (2, 3)
    with pytest.raises(ConfigError, match="features_only"):
        net.as_features()


def test_composite_refuses_num_classes():
    with pytest.raises(ConfigError, match="num_classes"):
        flexbone.create_model("cb_resnet18", num_classes=42)


@pytest.mark.parametrize("name", ["resnet18"] + [n for _, n in FAMILY_CASES if hasattr(meta_model(n), "space")])
def test_forward_intermediates_with_grad_checkpointing_runs_the_same_modules(name):
    """Checkpointing per block must not run blocks the forward skips (a supernet's inactive depth)."""
    model = flexbone.create_model(name).train()
    if hasattr(model, "set_active"):
        model.set_active(model.space.min())
    x = _small_input(name)
    torch.manual_seed(0)
    plain = model.forward_intermediates(x, intermediates_only=True)
    model.set_grad_checkpointing(True)
    torch.manual_seed(0)
    checkpointed = model.forward_intermediates(x, intermediates_only=True)
    assert _diff(checkpointed, plain) == 0
