"""Model complexity: parameter counts and multiply-accumulates (MACs).

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of matrix
multiplications and convolutions from their shapes (1 MAC = 2 FLOPs); normalisations, activations,
pooling and element-wise additions count as zero, the convention of torchvision's ``_ops`` metadata
and of the papers' "FLOPs" (ResNet-50 at 224 px: 4.09 GMACs).

Attention counts its two matrix products (q @ k^T and attn @ v), on every device.

Counting needs only shapes, so :func:`model_complexity` builds the model on the ``meta`` device (no
memory, no weight initialisation) and runs a meta input through it, skipping the work that has no
values to produce (a test checks per family that the counts equal those of a real forward pass); a
model that cannot run on ``meta`` (data-dependent code) is built and run on the CPU instead.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

ImgSize = int | tuple[int, int]


def _hw(img_size: ImgSize) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


# ----------------------------------------------------------------------------- counter extensions
def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, s_q, d = query_shape  # (B, heads, tokens, head dim); keys and values may have other lengths
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d + d_v)  # q @ k^T, then attn @ v; a multiply-add = 2 FLOPs


# the CPU's fused attention kernel has no formula in torch's counter (CUDA's kernels and the math
# fallback that meta tensors take do): without this, attention would count as zero on the CPU only
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops} \
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu") else {}


# On the meta device some ops run Python reference kernels that cost more than everything else: weight
# initialisers (normal_, trunc-normal's erfinv_ / mul_ / clamp_ ...) while a model is built, and the
# normalisation layers (decomposed into a dozen element-wise prims each) in the forward pass. None of them
# counts as MACs and meta tensors hold no values, so they are short-circuited with outputs of the right
# shape. In-place views (transpose_, squeeze_ ...) and resize_ change shapes and are never skipped.
_INIT_OPS = {
    torch.ops.aten.normal_.default, torch.ops.aten.uniform_.default, torch.ops.aten.fill_.Scalar,
    torch.ops.aten.fill_.Tensor, torch.ops.aten.zero_.default, torch.ops.aten.bernoulli_.float,
    torch.ops.aten.exponential_.default, torch.ops.aten.random_.default, torch.ops.aten.copy_.default,
}
_BN_EVAL = {  # op -> position of its `training` argument (None: always eval)
    torch.ops.aten.native_batch_norm.default: 5,
    torch.ops.aten._native_batch_norm_legit_no_training.default: None,
}


def _skippable_inplace(func) -> bool:
    """An in-place element-wise op: it returns its first argument with the same shape."""
    return func in _INIT_OPS or (
        func._schema.name.endswith("_") and torch.Tag.pointwise in func.tags
        and torch.Tag.inplace_view not in func.tags
    )


class _MetaShortcuts(TorchDispatchMode):
    """Skip work whose result has no values anyway (see above); only ever applied to meta tensors."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        x = args[0] if args else None
        if getattr(x, "is_meta", False):
            if _skippable_inplace(func):
                return x
            if func in _BN_EVAL and (_BN_EVAL[func] is None or not args[_BN_EVAL[func]]):
                return torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,))  # eval: no saved stats
            if func is torch.ops.aten.native_layer_norm.default:  # -> (out, mean, rstd)
                axis = x.dim() - len(args[1])
                stats = x.new_empty(tuple(x.shape[:axis]) + (1,) * len(args[1]))
                return torch.empty_like(x), stats, stats.clone()
            if func is torch.ops.aten.native_group_norm.default:  # -> (out, mean (N, G), rstd (N, G))
                stats = x.new_empty((args[3], args[6]))
                return torch.empty_like(x), stats, stats.clone()
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------------------------ public API
def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def count_macs(model: nn.Module, img_size: ImgSize, in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass of one ``in_chans x img_size`` image (batch 1, eval mode).

    Works on models that live on the ``meta`` device (only shapes are needed) as well as on real ones.
    The model's train/eval mode is restored afterwards.
    """
    h, w = _hw(img_size)
    x = torch.zeros(1, in_chans, h, w, device=_model_device(model))
    was_training = model.training
    model.eval()  # eval: BN uses running stats, dropout / drop-path are off (no extra ops)
    # on meta, the shortcuts sit inside the counter: they see each op first and hand the rest on to it
    shortcuts = _MetaShortcuts() if x.is_meta else contextlib.nullcontext()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter, shortcuts:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2  # FlopCounterMode counts a multiply-add as 2 FLOPs


def build_on_meta(model_name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model on the ``meta`` device: correct shapes, no memory, no initialisation."""
    from ..models import create_model

    with torch.device("meta"), _MetaShortcuts():
        return create_model(model_name, **kwargs)


@dataclass(frozen=True)
class Complexity:
    """Size and cost of a model at one input size."""

    params: int
    macs: int | None  # None when not counted
    img_size: tuple[int, int]


def sized_kwargs(model_name: str, img_size: ImgSize, **kwargs: Any) -> dict[str, Any]:
    """``kwargs`` for ``create_model``, with ``img_size`` added for a model that is built for one input size (ViT,
    Swin, MaxViT: timm's ``fixed_input_size``) when ``img_size`` is not the size it is built for by default; a
    square ``img_size`` only (those models take one number). ``img_size`` already in ``kwargs`` is kept."""
    h, w = _hw(img_size)
    if "img_size" in kwargs or h != w:
        return dict(kwargs)
    cfg = getattr(build_on_meta(model_name, **kwargs), "default_cfg", {})
    if cfg.get("fixed_input_size") and tuple(cfg.get("input_size", ())[-2:]) != (h, w):
        return {**kwargs, "img_size": h}
    return dict(kwargs)


def model_complexity(model_name: str, img_size: ImgSize = 224, macs: bool = True, **kwargs: Any) -> Complexity:
    """Parameters and MACs of a registered model at ``img_size`` (batch 1), without allocating its weights.

    ``kwargs`` go to ``create_model`` (``num_classes``, ``in_chans``, family options). A model built for one input
    size is built for ``img_size`` (:func:`sized_kwargs`).
    """
    from ..errors import FlexboneError

    in_chans = kwargs.get("in_chans", 3)
    kwargs = sized_kwargs(model_name, img_size, **kwargs)
    try:
        model = build_on_meta(model_name, **kwargs)
        n_macs = count_macs(model, img_size, in_chans) if macs else None
    except FlexboneError:
        raise  # the user's mistake (unknown model, bad option): building on the CPU would not help
    except (NotImplementedError, RuntimeError):
        # code that needs real values (e.g. .item()) cannot run on meta: pay for a real CPU model
        from ..models import create_model

        model = create_model(model_name, **kwargs)
        n_macs = count_macs(model, img_size, in_chans) if macs else None
    return Complexity(params=count_params(model), macs=n_macs, img_size=_hw(img_size))
