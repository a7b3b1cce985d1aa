"""Parity checks of a flexbone family against timm (the reference nobody here wrote), shared by the zoo tests.

* parameter counts of every name: both models built on the meta device (no memory, no initialisation);
* outputs: timm's model with random weights and statistics, its state dict loaded into ours with
  ``strict=True``, equal logits and pre-logits (eval, fp32, max abs diff <= 1e-5);
* feature levels: timm's ``feature_info`` (channels, reduction, module) and its
  ``forward_intermediates`` maps equal our ``feature_info`` and ``features_only`` maps;
* preprocessing: timm's ``pretrained_cfg`` keys equal our ``default_cfg``.
"""
from __future__ import annotations

import copy

import torch

import flexbone
from flexbone.bench.complexity import build_on_meta, count_params

from _helpers import max_abs_diff, num_params, randomize_

PREPROCESSING_KEYS = ("input_size", "test_input_size", "crop_pct", "interpolation", "mean", "std", "first_conv",
                      "classifier")


def _build_for_loading(name: str, **kwargs) -> torch.nn.Module:
    """Our model, allocated without its (slow, here pointless) weight initialisation: a strict load overwrites
    every parameter and persistent buffer. Models with non-persistent buffers (blur filters) are built normally."""
    with torch.device("meta"):
        model = flexbone.create_model(name, **kwargs)
    if set(dict(model.named_buffers())) - set(model.state_dict()):
        return flexbone.create_model(name, **kwargs)
    return model.to_empty(device="cpu")


def timm_param_count(timm, name: str, **kwargs) -> int:
    with torch.device("meta"):
        return num_params(timm.create_model(name, **kwargs))


def assert_param_count(timm, name: str, **kwargs) -> None:
    ours = count_params(build_on_meta(name, **kwargs))
    assert ours == timm_param_count(timm, name, **kwargs), name


def assert_outputs_match(ref: torch.nn.Module, name: str, size: int | tuple[int, int] = 64, atol: float = 1e-5,
                         **kwargs) -> torch.nn.Module:
    """Copy ``ref``'s (randomised) state dict into ``flexbone.create_model(name)`` strictly; compare outputs."""
    randomize_(ref, keep_random_init=True).eval()
    ours = _build_for_loading(name, **kwargs).eval()
    assert num_params(ours) == num_params(ref)
    assert flexbone.load_checkpoint(ours, ref.state_dict(), strict=True).ok
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, kwargs.get("in_chans", 3), h, w)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0  # a degenerate (constant) output would hide wiring mistakes
        assert max_abs_diff(ours(x), expected) <= atol
        assert max_abs_diff(ours.forward_head(ours.forward_features(x), pre_logits=True),
                            ref.forward_head(ref.forward_features(x), pre_logits=True)) <= atol
    return ours


def assert_features_match(ref: torch.nn.Module, name: str, size: int | tuple[int, int] = 64, exact: bool = True,
                          **kwargs) -> None:
    """Our feature levels are timm's: same ``feature_info`` and the same maps as timm's forward_intermediates.

    ``exact=False`` for families on a trunk owned elsewhere (the ResNet trunk's levels): each of our levels
    must be one of timm's, equal in channels, reduction and values.
    """
    randomize_(ref, keep_random_init=True).eval()
    ours = _build_for_loading(name, features_only=True, **kwargs).eval()
    kept = ours.state_dict().keys()  # (once: a state_dict() per key was quadratic, ~60 s for NASNet's 1.8k keys)
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k in kept}, strict=True)
    theirs = [(i["num_chs"], i["reduction"], i["module"]) for i in ref.feature_info]
    mine = [(s.num_chs, s.reduction, s.module) for s in ours.feature_info]
    if exact:
        assert mine == theirs
    else:
        assert mine and set(mine) <= set(theirs), (mine, theirs)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[theirs.index(m) for m in mine], intermediates_only=True)
        got = ours(x)
    assert len(got) == len(expected) == len(mine)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and max_abs_diff(a, b) <= 1e-5


def assert_preprocessing_matches(timm, names) -> None:
    for name in names:
        ref = timm.models.get_pretrained_cfg(name).to_dict()
        cfg = build_on_meta(name).default_cfg
        assert {k: cfg.get(k) for k in PREPROCESSING_KEYS} == {k: ref.get(k) for k in PREPROCESSING_KEYS}, name
        assert cfg.get("test_crop_pct") == ref.get("test_crop_pct"), name


def assert_pruning_matches(timm, name: str, size: int = 64, **kwargs) -> None:
    """``prune_intermediate_layers`` as timm's in each case: a cut trunk with the head dropped or kept asked for,
    and the head alone (the trunk whole): the levels kept, the state dict's keys and shapes, the widths
    (``num_features``, ``head_hidden_size``) and what the pruned model returns for the same weights."""
    ref = randomize_(timm.create_model(name, **kwargs), keep_random_init=True).eval()
    n = len(ref.feature_info)
    x = torch.randn(1, 3, size, size)
    for indices, prune_head in (([0, n - 2], True), ([0, n - 2], False), ([0, n - 1], True)):
        theirs = copy.deepcopy(ref)
        ours = _build_for_loading(name, **kwargs).eval()
        assert flexbone.load_checkpoint(ours, ref.state_dict(), strict=True).ok
        case = (name, indices, prune_head)
        assert ours.prune_intermediate_layers(indices, prune_head=prune_head) == \
            list(theirs.prune_intermediate_layers(indices, prune_head=prune_head)), case
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
            {k: v.shape for k, v in theirs.state_dict().items()}, case
        assert (ours.num_features, ours.head_hidden_size) == (theirs.num_features, theirs.head_hidden_size), case
        with torch.no_grad():
            expected = theirs(x)
            assert max_abs_diff(ours(x), expected) <= 1e-5 and expected.std() > 0, case


def assert_train_mode_matches(timm, name: str, size: int = 64, **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Train mode (batch statistics) with options other than the defaults (``kwargs``: classes, input channels,
    pooling ...): timm's randomised state dict loads strictly and the logits are equal (<= 1e-5). Returns
    (ours, timm's) for the family's own checks."""
    ref = randomize_(timm.create_model(name, **kwargs))
    ours = flexbone.create_model(name, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, kwargs.get("in_chans", 3), size, size)
    out = ours(x)
    assert out.shape == (2, kwargs.get("num_classes", 1000)) and max_abs_diff(out, ref(x)) <= 1e-5
    return ours, ref


def assert_drop_path_rates_match(timm, name: str, rate: float) -> None:
    """Stochastic depth at ``drop_path_rate=rate``: every ``DropPath`` module's name and rate as timm's, the
    deepest at ``rate`` (both models on the meta device: only the modules' settings are compared)."""
    with torch.device("meta"):
        ref = timm.create_model(name, drop_path_rate=rate)
        ours = flexbone.create_model(name, drop_path_rate=rate)

    def rates(model):
        return {n: round(m.drop_prob, 6) for n, m in model.named_modules() if type(m).__name__ == "DropPath"}

    assert rates(ours) == rates(ref) and abs(max(rates(ours).values()) - rate) < 1e-6, name
