"""Deploy form of conv + batch norm: each BatchNorm that directly follows a conv folded into the conv.

In inference a BatchNorm is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``;
applied to a conv's output it can be moved into the conv's weights and bias, which leaves one op where
there were two (the deploy form of "Efficient ConvBN Blocks"):

    W' = W * s,   b' = (b - mean) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)

Which BN follows which conv is read from the data flow of one forward pass (module hooks plus a
``TorchFunctionMode`` that sees every torch call), not from attribute names or a torch.fx graph: a pair is
folded only if the BN's input *is* the conv's output tensor, and nothing else reads that tensor. So any
family folds without a table of its block layouts (ResNet, MobileNet, VoVNet, CBNet composites, extracted
sub-networks ...), and a conv whose output also feeds a shortcut is left alone. Only layers whose
arithmetic is known are folded: convs that use ``nn.Conv2d.forward`` as it is, and batch norms that use
``nn.BatchNorm2d``'s / flexbone's forward (or :class:`~flexbone.layers.norm_act.BatchNormAct2d`, which
becomes its activation); elastic layers that slice their weights are never touched.
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..layers.norm import BatchNorm2d

try:  # batch norm + activation in one module (pre-activation families)
    from ..layers.norm_act import BatchNormAct2d
except ImportError:  # pragma: no cover - older trees without it
    BatchNormAct2d = None

# Calls that read a tensor's metadata, not its values: they do not make a conv output "used elsewhere".
_METADATA_CALLS = frozenset({
    "__get__", "size", "dim", "ndimension", "numel", "nelement", "is_contiguous", "stride", "storage_offset",
    "element_size", "is_floating_point", "is_complex", "data_ptr", "__len__", "get_device",
})


_PLAIN_BN_FORWARDS = {_BatchNorm.forward, BatchNorm2d.forward} | ({BatchNormAct2d.forward} if BatchNormAct2d else set())


def _foldable_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward


def _foldable_bn(m: nn.Module) -> bool:
    return (isinstance(m, _BatchNorm) and type(m).forward in _PLAIN_BN_FORWARDS
            and m.track_running_stats and m.running_mean is not None and m.running_var is not None)


class _UseCounter(TorchFunctionMode):
    """Counts, per watched tensor, the torch calls that read its values."""

    def __init__(self, watched: dict[int, Any]):
        super().__init__()
        self.watched = watched
        self.uses: Counter[int] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in _METADATA_CALLS:
            for leaf in tree_flatten((args, kwargs))[0]:
                if isinstance(leaf, torch.Tensor) and id(leaf) in self.watched:
                    self.uses[id(leaf)] += 1
        return func(*args, **kwargs)


def example_input(model: nn.Module, batch_size: int = 1) -> torch.Tensor:
    """A random input of the size the model expects (its ``default_cfg`` input size; channels of its first conv)."""
    cfg = getattr(model, "default_cfg", None) or getattr(model, "pretrained_cfg", None) or {}
    _, h, w = cfg.get("input_size", (3, 224, 224))
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    chans = first.in_channels if first is not None else 3
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.randn(batch_size, chans, h, w, device=device)


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` of every batch norm whose only input is the output of a conv, in execution order.

    Runs one forward pass of ``model`` (in eval mode, with autograd on so that no layer works in place) on
    ``example`` (default: :func:`example_input`). Each conv and BN of a pair must run exactly once.
    """
    names = {m: n for n, m in model.named_modules()}
    conv_outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id -> (conv, tensor kept alive so ids stay unique)
    bn_inputs: dict[str, list[int]] = {}
    calls: Counter[str] = Counter()

    def after_conv(module, inputs, output):
        calls[names[module]] += 1
        conv_outputs[id(output)] = (names[module], output)

    def before_bn(module, inputs):
        calls[names[module]] += 1
        bn_inputs.setdefault(names[module], []).append(id(inputs[0]) if inputs else None)

    handles = []
    for module, name in names.items():
        if _foldable_conv(module):
            handles.append(module.register_forward_hook(after_conv))
        elif _foldable_bn(module):
            handles.append(module.register_forward_pre_hook(before_bn))
    was_training = model.training
    model.eval()
    if example is None:
        example = example_input(model)
    counter = _UseCounter(conv_outputs)
    try:
        with torch.enable_grad(), counter:
            model(example.detach().requires_grad_(True))  # an input that needs grad: BN takes torch's own path
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    pairs = []
    for bn_name, ids in bn_inputs.items():
        if len(ids) != 1 or ids[0] not in conv_outputs:
            continue
        conv_name, tensor = conv_outputs[ids[0]]
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if (calls[conv_name] == 1 and counter.uses[ids[0]] == 1 and tensor.shape[1] == conv.out_channels
                == bn.num_features):
            pairs.append((conv_name, bn_name))
    return pairs


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    # in float64, so the folded weights round once, not at every step of the formula
    dtype = conv.weight.dtype
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    shift = -mean * scale
    if bn.weight is not None:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double()
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    conv.weight.copy_((conv.weight.double() * scale.view(-1, *[1] * (conv.weight.dim() - 1))).to(dtype))
    conv.bias = nn.Parameter(shift.to(dtype), requires_grad=conv.weight.requires_grad)


class _FoldedNormAct(nn.Module):
    """What a folded ``BatchNormAct2d`` becomes: its activation alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


def _become_identity(bn: nn.Module) -> None:
    """Turn the folded BN object itself into an ``nn.Identity`` (or its activation), in place.

    Replacing it in its parent module is not enough: a model may hold other references to it (an SN-Net's
    cached stitch paths and anchor views, a feature extractor's list of stem modules), and those would keep
    normalising a conv output whose statistics already moved into the conv.
    """
    keep_act = BatchNormAct2d is not None and isinstance(bn, BatchNormAct2d)
    bn._parameters.clear()
    bn._buffers.clear()
    bn._non_persistent_buffers_set.clear()
    bn.__class__ = _FoldedNormAct if keep_act else nn.Identity


def fold_bn(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` in eval mode with every batch norm that directly follows a conv folded into it.

    The folded BN becomes ``nn.Identity`` in place (a ``BatchNormAct2d`` becomes its activation), so every
    reference to it sees the fold; other modules, parameter names of the convs and the model's attributes
    are kept. ``model`` itself is not changed.
    The pairs are found by :func:`find_conv_bn_pairs` on ``example`` (default: a random input of the
    model's ``default_cfg`` size). The copy computes the same function in inference, up to rounding; it is
    for deployment (export, inference), not for further training with batch statistics.
    """
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in find_conv_bn_pairs(folded, example):
        bn = folded.get_submodule(bn_name)
        _fold_into(folded.get_submodule(conv_name), bn)
        _become_identity(bn)
    return folded
