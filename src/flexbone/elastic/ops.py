"""Dynamic layers: the building blocks of once-for-all supernets (Cai et al., ICLR 2020).

A dynamic layer owns the weight of its *largest* configuration and runs a *leading slice* of it:

* input channels follow the input tensor (``x.shape[1]``), so a layer never needs to be told them;
* output channels are the layer's ``active_out_channels`` (``None`` = all);
* a depthwise kernel smaller than the largest is the centre crop of the largest, passed through learned
  kernel-transformation matrices (7x7 -> 5x5 -> 3x3, each initialised to the identity);
* batch norm uses the leading slice of its affine parameters and running statistics.

Every dynamic layer subclasses the matching ``torch.nn`` layer (``nn.Conv2d``, ``nn.BatchNorm2d``,
``nn.Linear``), so its parameter names are those of a static layer and code that looks for
``nn.BatchNorm2d`` (BN recalibration, weight-decay filters) finds it. A supernet names its modules as the
static zoo model it extracts to; :func:`copy_active` then fills that static model from the supernet.

Elastic blocks: :class:`DynamicBottleneck` (ResNet bottleneck with elastic expand ratio and width),
:class:`DynamicStemResidual` (the residual middle conv of OFA-ResNet's stem), :class:`DynamicInvertedResidual`
(MobileNet block with elastic kernel and expand ratio), and :class:`ElasticDepth` (a stage that runs its
first ``active_depth`` blocks).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from ..layers.activations import create_act, get_act_layer
from ..layers.conv_norm_act import get_padding
from ..layers.drop import DropPath
from ..layers.helpers import make_divisible
from ..layers.norm import BatchNorm2d

CHANNEL_DIVISOR = 8  # elastic widths are rounded to multiples of 8, as in the reference code


def _check_active(name: str, value: int | None, maximum: int) -> int:
    if value is None:
        return maximum
    if not 0 < value <= maximum:
        raise ValueError(f"{name} = {value} is outside 1..{maximum}")
    return value


def _centre(size: int, sub: int) -> slice:
    """The centre ``sub x sub`` window of a ``size x size`` kernel (both odd)."""
    start = size // 2 - sub // 2
    return slice(start, start + sub)


# ------------------------------------------------------------------------------ sliced weights, recycled gradients
# A sub-network uses the leading block of a shared weight, so the weight's gradient is zero outside that block, but
# autograd wants it full-size. A fresh zero-filled tensor per weight per step is a visible part of a small
# sub-network's training step on a CPU (112 MB of zero fill for OFA-ResNet50 at its smallest). So the full-size
# gradient a large weight received is kept when the optimiser lets go of it (``zero_grad(set_to_none=True)``), and
# the next backward reuses it: it zeroes only the block the last step wrote, then writes its own. The gradient is
# reused only when nothing else can see it: no ``.grad`` is set (no accumulation in progress), its version counter
# is the one it had when kept (else, e.g. after gradient clipping scaled it in place, it is zeroed whole), and no
# other reference or view of it is alive. Switching a layer to ``eval()`` releases its kept gradients.
RECYCLE_MIN_NUMEL = 1 << 16  # below this, a fresh zero tensor costs less than the bookkeeping
_kept_gradients = WeakIdKeyDictionary()  # parameter -> (gradient, its version when kept, block it holds)
_handed_out = WeakIdKeyDictionary()  # parameter -> (data pointer, version, block) of the gradient this backward returned
_watched = WeakIdKeyDictionary()  # parameters that carry the keeping hook


def _block(sizes: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in sizes)


def _cuts_rows_only(tensor: torch.Tensor, sizes: tuple[int, ...]) -> bool:
    """Whether ``sizes`` cut only the first dimension of ``tensor`` (its leading block is then a view)."""
    return len(sizes) <= tensor.dim() and sizes[1:] == tensor.shape[1:len(sizes)]


def _leading(tensor: torch.Tensor, sizes: tuple[int, ...], rows_only: bool) -> torch.Tensor:
    """``tensor[:n0, :n1, ...]``: a view when only the first dimension is cut, else a contiguous copy."""
    return tensor[:sizes[0]] if rows_only else tensor[_block(sizes)].contiguous()


def _keep_gradient(param: torch.Tensor) -> None:
    """Post-accumulate-grad hook: keep ``param.grad`` if it is, unchanged, the tensor our backward handed to autograd
    (not summed with another use of ``param``, not replaced by a wrapper such as DDP's)."""
    handed = _handed_out.pop(param, None)
    grad = param.grad
    if handed is not None and grad is not None and (grad.data_ptr(), grad._version) == handed[:2]:
        _kept_gradients[param] = (grad, handed[1], handed[2])
    else:
        _kept_gradients.pop(param, None)


def _reusable_gradient(param: torch.Tensor, sizes: tuple[int, ...], grad: torch.Tensor) -> torch.Tensor | None:
    """The kept full-size gradient of ``param``, zero outside ``sizes``' block, or None if it may not be reused."""
    if param.grad is not None:
        return None
    entry = _kept_gradients.pop(param, None)
    if entry is None:
        return None
    full, version, written = entry
    del entry
    if full.shape != param.shape or full.dtype != grad.dtype or full.device != grad.device:
        return None
    # held by this frame only (getrefcount counts its own argument), and its storage by this tensor only
    # (untyped_storage() adds one): a .grad someone kept from an earlier step is never overwritten
    if sys.getrefcount(full) > 2 or torch._C._storage_Use_Count(full.untyped_storage()._cdata) > 2:
        return None
    if full._version != version:
        full.zero_()  # changed in place since (e.g. clipped): zero it whole
    elif any(w > n for w, n in zip(written, sizes)):
        full[_block(written)].zero_()  # the new block (written next) does not cover the old one
    return full


def _recyclable(tensor: torch.Tensor) -> torch.Tensor | None:
    """``tensor`` if its full-size gradient is worth recycling (a large trainable parameter), else None."""
    if tensor.numel() < RECYCLE_MIN_NUMEL or not (tensor.is_leaf and tensor.requires_grad) \
            or torch.compiler.is_compiling():
        return None
    if tensor not in _watched:
        tensor.register_post_accumulate_grad_hook(_keep_gradient)
        _watched[tensor] = True
    return tensor


def _full_gradient(param: torch.Tensor | None, full_shape: torch.Size, sizes: tuple[int, ...],
                   grad: torch.Tensor) -> torch.Tensor:
    """``grad`` written into the leading block of a full-size gradient, zero elsewhere (recycled if ``param`` is
    given and its kept gradient may be reused)."""
    full = _reusable_gradient(param, sizes, grad) if param is not None else None
    if full is None:  # zero-padded to the full shape: one operation
        full = F.pad(grad, [p for n, g in zip(reversed(full_shape), reversed(grad.shape)) for p in (0, n - g)])
    else:
        full[_block(sizes)] = grad
    if param is not None:
        if not _handed_out:  # the first of this backward pass: forget them all when it ends (the hook may not run)
            torch.autograd.Variable._execution_engine.queue_callback(_handed_out.clear)
        _handed_out[param] = (full.data_ptr(), full._version, sizes)
    return full


def release_kept_gradients(module: nn.Module) -> None:
    """Drop the full-size gradients kept for ``module``'s own parameters (see above)."""
    for param in module.parameters(recurse=False):
        _kept_gradients.pop(param, None)


class _LeadingBlock(torch.autograd.Function):
    """Forward: ``param[:n0, :n1, ...]``, a view when only the first dimension is cut, else a contiguous copy.
    Backward: the gradient written into the parameter's recycled full-size gradient (see above). Plain indexing
    would differentiate each sliced dimension on its own: a fresh zero tensor of a growing size and one copy per
    dimension."""

    @staticmethod
    def forward(ctx, param: torch.Tensor, sizes: tuple[int, ...], rows_only: bool) -> torch.Tensor:
        ctx.param, ctx.sizes = param, sizes
        return _leading(param, sizes, rows_only)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _full_gradient(ctx.param, ctx.param.shape, ctx.sizes, grad), None, None


def leading_block(tensor: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """``tensor[:sizes[0], :sizes[1], ...]``; differentiated into a recycled gradient for a large parameter (see above).

    Cutting only the first dimension (a conv's output channels, a norm's features) leaves a view, laid out as
    ``tensor``: no copy. Other cuts copy the block into a contiguous tensor."""
    sizes = tuple(sizes)
    rows_only = _cuts_rows_only(tensor, sizes)
    if torch.is_grad_enabled() and _recyclable(tensor) is not None:
        return _LeadingBlock.apply(tensor, sizes, rows_only)
    # small tensors: autograd's own (C++) slice backward costs less than a Python one
    return _leading(tensor, sizes, rows_only)


class _InferenceWeightCache:
    """Keeps the last derived weight (sliced, kernel-transformed, made contiguous) of a dynamic layer for inference.

    Deriving a sub-network's weight costs a copy (and, for a smaller depthwise kernel, two matrix products)
    on every call: a few percent of a small sub-network's inference time on a CPU. In eval mode without
    autograd the result depends only on the active shape and the source tensors, so it is reused until one
    of them changes: the key holds their in-place version counters and storage addresses (an optimiser step,
    ``load_state_dict``, ``.to()`` invalidate it), and switching between ``train()`` and ``eval()`` drops it.
    Training, autograd, tracing and compiling always derive the weight afresh. (A write through ``.data``
    bypasses the version counter: after one, call ``eval()`` again before evaluating.)
    """

    _weight_cache: tuple[tuple, torch.Tensor] | None = None

    def _derived_weight(self, shape_key: tuple, sources: Sequence[torch.Tensor],
                        derive: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return derive()
        try:
            key = shape_key + tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in sources)
        except RuntimeError:  # tensors without storage (fake / functional tensors while exporting)
            return derive()
        cached = self._weight_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        weight = derive()
        self._weight_cache = (key, weight)
        return weight

    def train(self, mode: bool = True):
        self._weight_cache = None
        if not mode:
            release_kept_gradients(self)  # type: ignore[arg-type]
        return super().train(mode)  # type: ignore[misc]


# ------------------------------------------------------------------------------ the weights of a step, planned
# A small sub-network's training step derives a few dozen weights (leading blocks, transformed kernels), each its own
# autograd node: a fraction of a millisecond apiece on a CPU, and more when their Python runs between convolutions
# that have just evicted the caches. So a supernet's ``forward`` plans them: before its layers run, it derives every
# weight the active sub-network will use in one autograd node (one pass forward, one backward, each weight with the
# arithmetic of the layer's own derivation, so the numbers are the same bit for bit) and hands each layer its tensors.
# A layer takes them only if they are for the shapes it is about to use, and otherwise derives its own (a layer called
# on its own, a checkpoint recomputing a block): a plan can cost time, never change a result.
class _LeadingSlice:
    """Plan entry: ``tensors[source][:n0, :n1, ...]`` (a view when only the first dimension is cut)."""
    __slots__ = ("source", "sizes", "rows_only", "recycle")

    def __init__(self, source: int, sizes: tuple[int, ...], rows_only: bool, recycle: torch.Tensor | None):
        self.source, self.sizes, self.rows_only, self.recycle = source, sizes, rows_only, recycle


class _SteppedKernel:
    """Plan entry: a depthwise kernel stepped down through the kernel sizes (:func:`_step_down`)."""
    __slots__ = ("source", "channels", "steps", "matrices", "recycle")

    def __init__(self, source: int, channels: int, steps: tuple[tuple[int, int], ...], matrices: tuple[int, ...],
                 recycle: torch.Tensor | None):
        self.source, self.channels, self.steps, self.matrices, self.recycle = source, channels, steps, matrices, recycle


class WeightPlan:
    """The derived weights of one forward pass of a supernet, computed as one autograd node (see above).

    Layers add their entries with their ``plan_weights`` methods; :meth:`hand_out` derives them all and gives each
    layer its tensors, which its next forward takes (once) if the shapes match; :meth:`withdraw` takes back what
    was not used."""

    def __init__(self) -> None:
        self._tensors: list[torch.Tensor] = []
        self._index: dict[int, int] = {}  # id(tensor) -> position in _tensors
        self._entries: list[_LeadingSlice | _SteppedKernel] = []
        self._layers: list[tuple[nn.Module, object, int]] = []  # (layer, key, number of tensors)

    def _source(self, tensor: torch.Tensor) -> int:
        i = self._index.get(id(tensor))
        if i is None:
            i = self._index[id(tensor)] = len(self._tensors)
            self._tensors.append(tensor)
        return i

    def leading(self, tensor: torch.Tensor, sizes: tuple[int, ...]) -> _LeadingSlice:
        return _LeadingSlice(self._source(tensor), sizes, _cuts_rows_only(tensor, sizes), _recyclable(tensor))

    def kernel(self, weight: torch.Tensor, channels: int, steps: tuple[tuple[int, int], ...],
               matrices: Sequence[torch.Tensor]) -> _SteppedKernel:
        return _SteppedKernel(self._source(weight), channels, steps, tuple(self._source(m) for m in matrices),
                              _recyclable(weight))

    def add(self, layer: nn.Module, key: object, *entries: _LeadingSlice | _SteppedKernel) -> None:
        """``layer``'s next forward, if its shapes give ``key``, takes the tensors of ``entries`` (in order)."""
        self._entries.extend(entries)
        self._layers.append((layer, key, len(entries)))

    def hand_out(self) -> None:
        if not any(t.requires_grad for t in self._tensors):
            return  # nothing to differentiate: the layers' own (cached in eval) derivations are as cheap
        outputs = _PlannedWeights.apply(tuple(self._entries), *self._tensors)
        at = 0
        for layer, key, n in self._layers:
            vars(layer)["_planned"] = (key, outputs[at:at + n])  # plain attribute, past nn.Module.__setattr__
            at += n

    def withdraw(self) -> None:
        for layer, _, _ in self._layers:
            vars(layer).pop("_planned", None)


def _take_planned(layer: nn.Module, key: object) -> tuple[torch.Tensor, ...] | None:
    """The tensors planned for ``layer`` (used once), if they were planned for ``key``."""
    planned = vars(layer).pop("_planned", None)
    return planned[1] if planned is not None and planned[0] == key else None


@contextlib.contextmanager
def planned_weights(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s layers take the weights that ``model.plan_weights(plan)`` planned, derived in
    one autograd node. Only where autograd records (a training step); not while compiling, exporting or tracing,
    nor with gradient checkpointing (a recomputed block must repeat its own operations)."""
    if not torch.is_grad_enabled() or getattr(model, "grad_checkpointing", False) or torch.jit.is_tracing() \
            or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        yield
        return
    plan = WeightPlan()
    try:
        model.plan_weights(plan)
        plan.hand_out()
        yield
    finally:
        plan.withdraw()


class _PlannedWeights(torch.autograd.Function):
    """All entries of a :class:`WeightPlan` as one autograd node. Forward and backward do, entry by entry, what
    :class:`_LeadingBlock` and :class:`_TransformedKernel` do for one weight."""

    @staticmethod
    def forward(ctx, entries: tuple[_LeadingSlice | _SteppedKernel, ...], *tensors: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        with _autocast_off(tensors[0]):
            return _PlannedWeights._forward(ctx, entries, tensors)

    @staticmethod
    def _forward(ctx, entries: tuple[_LeadingSlice | _SteppedKernel, ...], tensors: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, ...]:
        outputs, saved, counts = [], [], []
        for e in entries:
            source = tensors[e.source]
            if type(e) is _LeadingSlice:
                outputs.append(_leading(source, e.sizes, e.rows_only))
                counts.append(0)
                continue
            matrices, crops = [tensors[i] for i in e.matrices], []
            outputs.append(_step_down(source, e.channels, e.steps, matrices, crops))
            saved += crops + matrices
            counts.append(len(crops) + len(matrices))
        ctx.save_for_backward(*saved)
        ctx.entries, ctx.counts, ctx.shapes = entries, counts, [t.shape for t in tensors]
        ctx.set_materialize_grads(False)  # an entry whose layer did not run gets no gradient
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        given = [g for g in grads if g is not None]
        if not given:
            return (None,) * (1 + len(ctx.shapes))
        with _autocast_off(given[0]):
            return _PlannedWeights._backward(ctx, grads)

    @staticmethod
    def _backward(ctx, grads: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor | None, ...]:
        saved, needs, shapes = ctx.saved_tensors, ctx.needs_input_grad[1:], ctx.shapes
        result: list[torch.Tensor | None] = [None] * len(shapes)

        def add(i: int, grad: torch.Tensor) -> None:  # a tensor used by two entries gets the sum
            result[i] = grad if result[i] is None else result[i] + grad

        at = 0
        for e, grad, count in zip(ctx.entries, grads, ctx.counts):
            mine, at = saved[at:at + count], at + count
            if grad is None:
                continue
            if type(e) is _LeadingSlice:
                if needs[e.source]:
                    add(e.source, _full_gradient(e.recycle, shapes[e.source], e.sizes, grad))
                continue
            n = len(e.steps)
            weight_grad, matrix_grads = _step_down_backward(grad, e.channels, e.steps, mine[:n], mine[n:],
                                                            [needs[i] for i in e.matrices])
            if needs[e.source]:
                if e.channels != shapes[e.source][0]:
                    weight_grad = _full_gradient(e.recycle, shapes[e.source], (e.channels,), weight_grad)
                add(e.source, weight_grad)
            for i, g in zip(e.matrices, matrix_grads):
                if g is not None:
                    add(i, g)
        return (None, *result)


# ------------------------------------------------------------------------------------------ layers
class DynamicConv2d(_InferenceWeightCache, nn.Conv2d):
    """``nn.Conv2d`` with elastic input channels (from the input) and output channels (``active_out_channels``).

    Groups are not elastic (dense convolutions only; see :class:`DynamicDepthwiseConv2d`). Padding
    defaults to 'same' for odd kernels, as in the reference.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, bias: bool = False):
        if padding is None:
            padding = get_padding(kernel_size, stride, dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, bias=bias)
        self.active_out_channels: int | None = None  # None = all

    def active_weight(self, in_channels: int, out_channels: int | None = None) -> torch.Tensor:
        out_channels = _check_active("active_out_channels", out_channels or self.active_out_channels, self.out_channels)
        return leading_block(self.weight, (out_channels, in_channels))

    def plan_weights(self, plan: WeightPlan, in_channels: int, out_channels: int | None = None) -> None:
        """Plan the weight (and bias) of a forward on ``in_channels`` with ``out_channels`` (default: active)."""
        out_channels = out_channels or self.active_out_channels or self.out_channels
        if (in_channels, out_channels) != (self.in_channels, self.out_channels) \
                and 0 < in_channels <= self.in_channels and 0 < out_channels <= self.out_channels:
            bias = () if self.bias is None else (plan.leading(self.bias, (out_channels,)),)
            plan.add(self, (in_channels, out_channels), plan.leading(self.weight, (out_channels, in_channels)), *bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_chs = x.shape[1]
        out_chs = self.active_out_channels or self.out_channels
        planned = _take_planned(self, (in_chs, out_chs))
        if planned is not None:
            bias = planned[1] if len(planned) > 1 else None
            return F.conv2d(x, planned[0], bias, self.stride, self.padding, self.dilation)
        if in_chs == self.in_channels and out_chs == self.out_channels:
            return super().forward(x)
        if in_chs > self.in_channels:
            raise ValueError(f"{in_chs} input channels, but this layer has at most {self.in_channels}")
        weight = self._derived_weight((in_chs, out_chs), (self.weight,),
                                      lambda: self.active_weight(in_chs, out_chs))
        bias = self.bias[:out_chs] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> None:
        """Write the slice that ``conv`` (a static layer of the sub-network's size) stands for."""
        conv.weight.copy_(self.weight[:conv.out_channels, :conv.in_channels])
        if conv.bias is not None:
            conv.bias.copy_(self.bias[:conv.out_channels])


def _step_down(weight: torch.Tensor, channels: int, steps: Sequence[tuple[int, int]], matrices: Sequence[torch.Tensor],
               crops: list[torch.Tensor] | None = None) -> torch.Tensor:
    """``weight[:channels]`` (``(C, 1, K, K)``) stepped down through the kernel sizes: at each ``(big, small)`` step,
    the centre ``small x small`` crop, its flattened taps mixed by the step's ``(small^2, small^2)`` matrix.
    ``crops``, if given, receives each step's flattened crop."""
    weight = weight[:channels]
    for (big, small), matrix in zip(steps, matrices):
        crop = weight[:, :, _centre(big, small), _centre(big, small)].reshape(channels, small * small)
        if crops is not None:
            crops.append(crop)
        weight = F.linear(crop, matrix).reshape(channels, 1, small, small)
    return weight


def _autocast_off(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``tensor``'s device (if on): a derived weight keeps its parameter's dtype, and the
    layer that uses it casts it, so that forward and backward of the derivation agree on dtypes."""
    device = tensor.device.type
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else contextlib.nullcontext()


class _TransformedKernel(torch.autograd.Function):
    """:func:`_step_down` as one autograd node (a dozen when differentiated op by op: slices, reshapes, matrix
    products). The same arithmetic both ways: the forward is :func:`_step_down`; the backward computes what
    autograd computes for it (the matrix products of ``F.linear``'s derivative, in the same order), so the
    gradients are those of the op-by-op graph, bit for bit."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, channels: int, steps: tuple[tuple[int, int], ...],
                param: torch.Tensor | None, *matrices: torch.Tensor) -> torch.Tensor:
        crops: list[torch.Tensor] = []
        with _autocast_off(weight):
            out = _step_down(weight, channels, steps, matrices, crops)
        ctx.save_for_backward(*crops, *matrices)
        ctx.channels, ctx.steps, ctx.full_shape, ctx.param = channels, steps, weight.shape, param
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        n = len(ctx.steps)
        saved = ctx.saved_tensors  # once: activation checkpointing unpacks each saved tensor a single time
        with _autocast_off(grad):
            weight_grad, matrix_grads = _step_down_backward(grad, ctx.channels, ctx.steps, saved[:n], saved[n:],
                                                            ctx.needs_input_grad[4:])
        if not ctx.needs_input_grad[0]:
            weight_grad = None
        elif ctx.channels != ctx.full_shape[0]:
            weight_grad = _full_gradient(ctx.param, ctx.full_shape, (ctx.channels,), weight_grad)
        return (weight_grad, None, None, None, *matrix_grads)


def _step_down_backward(grad: torch.Tensor, channels: int, steps: Sequence[tuple[int, int]],
                        crops: Sequence[torch.Tensor], matrices: Sequence[torch.Tensor], needs_matrix_grad: Sequence[bool]
                        ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The gradients of :func:`_step_down` (given its saved ``crops``): that of ``weight[:channels]`` and those of
    the matrices (None where not needed). What autograd computes for the op-by-op graph (``F.linear``'s derivative,
    the same matrix products in the same order), so the numbers are the same bit for bit."""
    c, n = channels, len(steps)
    matrix_grads: list[torch.Tensor | None] = [None] * n
    for i in reversed(range(n)):
        big, small = steps[i]
        g = grad.reshape(c, small * small)
        if needs_matrix_grad[i]:
            matrix_grads[i] = g.t().mm(crops[i])  # d(crop @ M^T)/dM
        border = (big - small) // 2  # d(crop @ M^T)/d(crop), zero-padded back to the bigger kernel
        grad = F.pad(g.mm(matrices[i]).view(c, 1, small, small), (border, border, border, border))
    return grad, matrix_grads


class DynamicDepthwiseConv2d(_InferenceWeightCache, nn.Conv2d):
    """Depthwise conv with elastic channels (from the input) and elastic kernel size (``active_kernel_size``).

    The weight is that of the largest kernel, ``(C, 1, K, K)``. A kernel ``k < K`` is made by stepping
    down through the kernel sizes: take the centre crop of the current kernel and multiply its flattened
    ``k*k`` taps by the learned matrix ``'{K}to{k}_matrix'`` (``(k*k, k*k)``, shared by all channels,
    initialised to the identity so that a fresh supernet starts with plain centre crops).
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7), stride: int = 1, dilation: int = 1):
        self.kernel_sizes = tuple(sorted(set(kernel_sizes)))
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {self.kernel_sizes}")
        k_max = self.kernel_sizes[-1]
        super().__init__(channels, channels, k_max, stride=stride, padding=get_padding(k_max, stride, dilation),
                         dilation=dilation, groups=channels, bias=False)
        for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1]):
            # name as the reference ('7to5_matrix'), so its checkpoints map one to one
            self.register_parameter(f"{big}to{small}_matrix", nn.Parameter(torch.eye(small * small)))
        self.active_kernel_size: int | None = None  # None = largest

    def _steps(self, k: int) -> tuple[tuple[int, int], ...]:
        """The ``(big, small)`` steps from the largest kernel down to ``k``: 7 -> 5 -> 3."""
        return tuple((big, small) for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1])
                     if small >= k)

    def active_weight(self, channels: int, kernel_size: int | None = None) -> torch.Tensor:
        """The ``(channels, 1, k, k)`` filter of the active (or given) kernel size."""
        k = kernel_size or self.active_kernel_size or self.kernel_sizes[-1]
        if k not in self.kernel_sizes:
            raise ValueError(f"kernel size {k} is not one of {self.kernel_sizes}")
        steps = self._steps(k)
        if not steps:
            return leading_block(self.weight, (channels,))
        matrices = self._matrices(k)
        if torch.is_grad_enabled() and not torch.compiler.is_compiling() and (
                self.weight.requires_grad or any(m.requires_grad for m in matrices)):
            return _TransformedKernel.apply(self.weight, channels, steps, _recyclable(self.weight), *matrices)
        return _step_down(self.weight, channels, steps, matrices)

    def plan_weights(self, plan: WeightPlan, channels: int, kernel_size: int | None = None) -> None:
        """Plan the filter of a forward on ``channels`` with ``kernel_size`` (default: the active one)."""
        k = kernel_size or self.active_kernel_size or self.kernel_sizes[-1]
        if k not in self.kernel_sizes or not 0 < channels <= self.in_channels \
                or (channels == self.in_channels and k == self.kernel_sizes[-1]):
            return
        steps = self._steps(k)
        if not steps:
            plan.add(self, (channels, k), plan.leading(self.weight, (channels,)))
        else:
            plan.add(self, (channels, k), plan.kernel(self.weight, channels, steps, self._matrices(k)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        k = self.active_kernel_size or self.kernel_sizes[-1]
        planned = _take_planned(self, (channels, k))
        if planned is not None:
            return F.conv2d(x, planned[0], None, self.stride, get_padding(k, self.stride[0], self.dilation[0]),
                            self.dilation, groups=channels)
        if channels > self.in_channels:
            raise ValueError(f"{channels} input channels, but this layer has at most {self.in_channels}")
        if channels == self.in_channels and k == self.kernel_sizes[-1]:
            weight = self.weight  # the largest kernel over all channels: nothing to derive
        else:
            weight = self._derived_weight((channels, k), (self.weight, *self._matrices()),
                                          lambda: self.active_weight(channels, k).contiguous())
        padding = get_padding(k, self.stride[0], self.dilation[0])
        return F.conv2d(x, weight, None, self.stride, padding, self.dilation, groups=channels)

    def _matrices(self, k: int | None = None) -> list[torch.Tensor]:
        """The transformation matrices of the steps down to kernel ``k`` (default: to the smallest)."""
        return [getattr(self, f"{big}to{small}_matrix") for big, small in self._steps(k or self.kernel_sizes[0])]

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> None:
        if conv.groups != conv.in_channels:
            raise ValueError("a depthwise dynamic conv copies into a depthwise nn.Conv2d only")
        conv.weight.copy_(self.active_weight(conv.out_channels, conv.kernel_size[0]))


class DynamicBatchNorm2d(BatchNorm2d):
    """``nn.BatchNorm2d`` over the leading ``C`` channels of its statistics and affine parameters.

    In training mode the leading slice of the running statistics is updated in place (with the same
    momentum rule as ``nn.BatchNorm2d``); the channels beyond ``C`` are left as they are. Inference runs in
    place on the input, as flexbone's static ``BatchNorm2d`` does (the input is a dynamic conv's fresh output).
    """

    def plan_weights(self, plan: WeightPlan, channels: int) -> None:
        """Plan the affine parameters of a forward on ``channels``."""
        if self.weight is not None and self.bias is not None and 0 < channels < self.num_features:
            plan.add(self, channels, plan.leading(self.weight, (channels,)), plan.leading(self.bias, (channels,)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        planned = _take_planned(self, c)
        if c > self.num_features:
            raise ValueError(f"{c} input channels, but this layer has at most {self.num_features}")
        if planned is None and (c == self.num_features or self._normalise_in_place(x)):
            return super().forward(x)
        weight, bias = planned if planned is not None else (
            self.weight[:c] if self.weight is not None else None, self.bias[:c] if self.bias is not None else None)
        factor = 0.0
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,  # views: updated in place
            self.running_var[:c] if self.running_var is not None else None,
            weight, bias, use_batch_stats, factor, self.eps,
        )

    @torch.no_grad()
    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            src, dst = getattr(self, name), getattr(bn, name)
            if dst is not None:
                dst.copy_(src[:c])
        if bn.num_batches_tracked is not None and self.num_batches_tracked is not None:
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        bn.eps, bn.momentum = self.eps, self.momentum


class DynamicLinear(_InferenceWeightCache, nn.Linear):
    """``nn.Linear`` with elastic input features (from the input) and output features (``active_out_features``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.active_out_features: int | None = None  # None = all

    def plan_weights(self, plan: WeightPlan, in_features: int) -> None:
        """Plan the weight (and bias) of a forward on ``in_features``."""
        out_f = self.active_out_features or self.out_features
        if (in_features, out_f) != (self.in_features, self.out_features) \
                and 0 < in_features <= self.in_features and 0 < out_f <= self.out_features:
            bias = () if self.bias is None else (plan.leading(self.bias, (out_f,)),)
            plan.add(self, (in_features, out_f), plan.leading(self.weight, (out_f, in_features)), *bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_f = x.shape[-1]
        out_f = _check_active("active_out_features", self.active_out_features, self.out_features)
        planned = _take_planned(self, (in_f, out_f))
        if planned is not None:
            return F.linear(x, planned[0], planned[1] if len(planned) > 1 else None)
        if in_f == self.in_features and out_f == self.out_features:
            return super().forward(x)
        bias = self.bias[:out_f] if self.bias is not None else None
        weight = self._derived_weight((in_f, out_f), (self.weight,), lambda: leading_block(self.weight, (out_f, in_f)))
        return F.linear(x, weight, bias)

    @torch.no_grad()
    def copy_to(self, linear: nn.Linear) -> None:
        linear.weight.copy_(self.weight[:linear.out_features, :linear.in_features])
        if linear.bias is not None:
            linear.bias.copy_(self.bias[:linear.out_features])


class DynamicSqueezeExcite(nn.Module):
    """Squeeze-excite with elastic channels: ``x * gate(conv_expand(act(conv_reduce(mean_hw(x)))))``.

    The reduced width follows the input: ``make_divisible(C * rd_ratio, 8)``. Names as timm's MobileNetV3
    ``SqueezeExcite`` (``conv_reduce``, ``conv_expand``), the static block that it extracts to.
    """

    def __init__(self, channels: int, rd_ratio: float = 0.25, rd_divisor: int = CHANNEL_DIVISOR,
                 act_layer: str | Callable = "relu", gate_layer: str | Callable = "hard_sigmoid"):
        super().__init__()
        self.rd_ratio, self.rd_divisor = rd_ratio, rd_divisor
        self.conv_reduce = DynamicConv2d(channels, self.reduced_channels(channels), 1, bias=True)
        self.act1 = create_act(act_layer, inplace=True)
        self.conv_expand = DynamicConv2d(self.reduced_channels(channels), channels, 1, bias=True)
        self.gate = create_act(gate_layer)

    def reduced_channels(self, channels: int) -> int:
        return make_divisible(channels * self.rd_ratio, self.rd_divisor)

    def plan_weights(self, plan: WeightPlan, channels: int) -> None:
        reduced = self.reduced_channels(channels)
        self.conv_reduce.plan_weights(plan, channels, reduced)
        self.conv_expand.plan_weights(plan, reduced, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        self.conv_reduce.active_out_channels = self.reduced_channels(c)
        self.conv_expand.active_out_channels = c
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)


# ------------------------------------------------------------------------------------------ blocks
class ElasticDepth(nn.Sequential):
    """A stage of blocks of which only the first ``active_depth`` run (``None`` = all): elastic depth."""

    def __init__(self, *blocks: nn.Module):
        super().__init__(*blocks)
        self.active_depth: int | None = None

    def active_blocks(self) -> list[nn.Module]:
        depth = _check_active("active_depth", self.active_depth, len(self))
        return list(self)[:depth]

    def plan_weights(self, plan: WeightPlan, in_channels: int) -> int:
        """Plan the active blocks' weights for an input of ``in_channels``; returns the output channels."""
        for block in self.active_blocks():
            in_channels = block.plan_weights(plan, in_channels)
        return in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.active_blocks():
            x = block(x)
        return x


class DynamicStemResidual(nn.Module):
    """``x + act(bn(conv3x3(x)))`` with elastic width (its output follows its input), which depth may drop.

    Extracts to :class:`flexbone.models.resnet.StemResidual` (or ``nn.Identity`` when ``active`` is False).
    """

    def __init__(self, channels: int, act_layer: str | Callable = "relu"):
        super().__init__()
        self.conv = DynamicConv2d(channels, channels, 3)
        self.bn = DynamicBatchNorm2d(channels)
        self.act = get_act_layer(act_layer)(inplace=True)
        self.active = True

    def plan_weights(self, plan: WeightPlan, in_channels: int) -> int:
        if self.active:
            self.conv.plan_weights(plan, in_channels, in_channels)
            self.bn.plan_weights(plan, in_channels)
        return in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        self.conv.active_out_channels = x.shape[1]  # the identity shortcut fixes the width
        return x + self.act(self.bn(self.conv(x)))


class DynamicBottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1) with elastic input, output and middle widths.

    The output width is ``active_out_channels``; the middle width is
    ``make_divisible(round(active_out_channels * active_expand_ratio), 8)`` (OFA-ResNet's rule: the
    expand ratio is relative to the block's *output*, 0.25 in a standard ResNet-50). The stride sits on
    the 3x3 conv (ResNet v1.5). The shortcut is the identity when the block keeps shape (same width
    choices, stride 1), else ``'avg'`` (ResNet-D: 2x2 average pool, then 1x1 conv + BN) or ``'conv'``
    (strided 1x1 conv + BN). Names follow :class:`flexbone.models.resnet.Bottleneck`.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratios: Sequence[float] = (0.25,),
                 stride: int = 1, downsample: str | None = "avg", act_layer: str | Callable = "relu",
                 drop_path_rate: float = 0.0):
        super().__init__()
        act_layer = get_act_layer(act_layer)
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.out_channels = out_channels
        mid = self.mid_channels(out_channels, self.expand_ratios[-1])
        self.conv1 = DynamicConv2d(in_channels, mid, 1)
        self.bn1 = DynamicBatchNorm2d(mid)
        self.act1 = act_layer(inplace=True)
        self.conv2 = DynamicConv2d(mid, mid, 3, stride=stride)
        self.bn2 = DynamicBatchNorm2d(mid)
        self.act2 = act_layer(inplace=True)
        self.conv3 = DynamicConv2d(mid, out_channels, 1)
        self.bn3 = DynamicBatchNorm2d(out_channels)
        self.act3 = act_layer(inplace=True)
        self.downsample = None
        if downsample is not None:
            if downsample == "avg":
                pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
                self.downsample = nn.Sequential(pool, DynamicConv2d(in_channels, out_channels, 1),
                                                DynamicBatchNorm2d(out_channels))
            elif downsample == "conv":
                self.downsample = nn.Sequential(DynamicConv2d(in_channels, out_channels, 1, stride=stride),
                                                DynamicBatchNorm2d(out_channels))
            else:
                raise ValueError(f"unknown downsample {downsample!r}; choose 'avg', 'conv' or None (identity)")
        elif stride != 1:
            raise ValueError("a strided block needs a downsample shortcut")
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else None
        self.active_out_channels: int | None = None  # None = all
        self.active_expand_ratio: float | None = None  # None = largest

    @staticmethod
    def mid_channels(out_channels: int, expand_ratio: float) -> int:
        return make_divisible(round(out_channels * expand_ratio), CHANNEL_DIVISOR)

    def active_mid_channels(self) -> int:
        expand = self.active_expand_ratio or self.expand_ratios[-1]
        return self.mid_channels(self.active_out_channels or self.out_channels, expand)

    def plan_weights(self, plan: WeightPlan, in_channels: int) -> int:
        """Plan the weights of a forward on ``in_channels``; returns the output channels."""
        out_chs, mid = self.active_out_channels or self.out_channels, self.active_mid_channels()
        for conv, bn, n_in, n_out in ((self.conv1, self.bn1, in_channels, mid), (self.conv2, self.bn2, mid, mid),
                                      (self.conv3, self.bn3, mid, out_chs)):
            conv.plan_weights(plan, n_in, n_out)
            bn.plan_weights(plan, n_out)
        if self.downsample is not None:
            self.downsample[-2].plan_weights(plan, in_channels, out_chs)
            self.downsample[-1].plan_weights(plan, out_chs)
        return out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_chs = self.active_out_channels or self.out_channels
        mid = self.active_mid_channels()
        self.conv1.active_out_channels = self.conv2.active_out_channels = mid
        self.conv3.active_out_channels = out_chs
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            self.downsample[-2].active_out_channels = out_chs
            shortcut = self.downsample(shortcut)
        x += shortcut  # in place, as the static Bottleneck: no extra (B, C, H, W) tensor per block
        return self.act3(x)

    @torch.no_grad()
    def reorganize_channels(self, expand_stage: int = 0) -> None:
        """Sort the middle channels by importance (L1 norm of the weights that read them), most important first.

        After sorting, a smaller expand ratio keeps the most important channels. ``expand_stage`` k > 0
        keeps the channel groups of the k+1 largest expand ratios apart (a channel already inside the
        width of ratio ``r`` stays inside it), so that widths trained in earlier phases keep their
        channels, as the reference does. The function of the full block does not change.
        """
        widths = [self.mid_channels(self.out_channels, e) for e in reversed(self.expand_ratios)]  # largest first
        # conv3 reads conv2's outputs: permute conv3's inputs, bn2 and conv2's outputs together
        self._permute_mid(self.conv3, self.bn2, self.conv2, widths, expand_stage)
        # conv2 reads conv1's outputs
        self._permute_mid(self.conv2, self.bn1, self.conv1, widths, expand_stage)

    @staticmethod
    def _permute_mid(reader: nn.Conv2d, bn: nn.BatchNorm2d, writer: nn.Conv2d, widths: list[int], stage: int) -> None:
        order = _importance_order(reader.weight, widths, stage)
        _permute(reader.weight, order, 1)
        _permute(writer.weight, order, 0)
        _permute_bn(bn, order)


class DynamicInvertedResidual(nn.Module):
    """MBConv (1x1 expand -> depthwise kxk -> [SE] -> 1x1 project) with elastic kernel, expand ratio and width.

    The middle width is ``make_divisible(round(C_in * active_expand_ratio), 8)`` (relative to the block's
    *input*, as in MobileNet and the reference ``DynamicMBConvLayer``); the depthwise kernel is
    ``active_kernel_size``; the output width ``active_out_channels``. The identity shortcut is structural
    (stride 1 and equal largest input and output widths), as a static block's. Names follow
    :class:`flexbone.layers.inverted_residual.InvertedResidual` (timm's ``conv_pw``, ``bn1``, ``conv_dw``,
    ``bn2``, ``se``, ``conv_pwl``, ``bn3``), the block it extracts to.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (3, 5, 7),
                 expand_ratios: Sequence[float] = (3, 4, 6), stride: int = 1, act_layer: str | Callable = "relu",
                 se_layer: Callable[[int], nn.Module] | None = None, skip: bool = True, drop_path_rate: float = 0.0):
        super().__init__()
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.has_skip = skip and stride == 1 and in_channels == out_channels
        mid = self.mid_channels(in_channels, self.expand_ratios[-1])
        self.conv_pw = DynamicConv2d(in_channels, mid, 1)
        self.bn1 = DynamicBatchNorm2d(mid)
        self.act1 = create_act(act_layer, inplace=True)
        self.conv_dw = DynamicDepthwiseConv2d(mid, kernel_sizes, stride=stride)
        self.bn2 = DynamicBatchNorm2d(mid)
        self.act2 = create_act(act_layer, inplace=True)
        self.se = se_layer(mid) if se_layer is not None else nn.Identity()
        self.conv_pwl = DynamicConv2d(mid, out_channels, 1)
        self.bn3 = DynamicBatchNorm2d(out_channels)  # linear bottleneck: no activation
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and self.has_skip else nn.Identity()
        self.active_out_channels: int | None = None  # None = all
        self.active_expand_ratio: float | None = None  # None = largest
        self.active_kernel_size: int | None = None  # None = largest

    @staticmethod
    def mid_channels(in_channels: int, expand_ratio: float) -> int:
        return make_divisible(round(in_channels * expand_ratio), CHANNEL_DIVISOR)

    def plan_weights(self, plan: WeightPlan, in_channels: int) -> int:
        """Plan the weights of a forward on ``in_channels``; returns the output channels."""
        mid = self.mid_channels(in_channels, self.active_expand_ratio or self.expand_ratios[-1])
        out_chs = self.active_out_channels or self.out_channels
        self.conv_pw.plan_weights(plan, in_channels, mid)
        self.bn1.plan_weights(plan, mid)
        self.conv_dw.plan_weights(plan, mid, self.active_kernel_size)
        self.bn2.plan_weights(plan, mid)
        if isinstance(self.se, DynamicSqueezeExcite):
            self.se.plan_weights(plan, mid)
        self.conv_pwl.plan_weights(plan, mid, out_chs)
        self.bn3.plan_weights(plan, out_chs)
        return out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expand = self.active_expand_ratio or self.expand_ratios[-1]
        self.conv_pw.active_out_channels = self.mid_channels(x.shape[1], expand)
        self.conv_dw.active_kernel_size = self.active_kernel_size
        self.conv_pwl.active_out_channels = self.active_out_channels
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))  # (B, in, H, W) -> (B, mid, H, W)
        x = self.se(self.act2(self.bn2(self.conv_dw(x))))  # (B, mid, H/s, W/s)
        x = self.bn3(self.conv_pwl(x))  # (B, out, H/s, W/s)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x

    @torch.no_grad()
    def reorganize_channels(self, expand_stage: int = 0) -> None:
        """Sort the middle channels by importance (L1 norm of ``conv_pwl``'s weights that read them).

        Also sorts the squeeze-excite's reduced channels by the L1 norm of ``conv_expand``'s weights, as the
        reference does. ``expand_stage``: see :meth:`DynamicBottleneck.reorganize_channels` (the widths are
        those of the largest input width). The function of the full block does not change.
        """
        widths = [self.mid_channels(self.in_channels, e) for e in reversed(self.expand_ratios)]  # largest first
        order = _importance_order(self.conv_pwl.weight, widths, expand_stage)
        _permute(self.conv_pwl.weight, order, 1)
        _permute_bn(self.bn2, order)
        _permute(self.conv_dw.weight, order, 0)  # depthwise: one filter per middle channel
        if isinstance(self.se, DynamicSqueezeExcite):
            se = self.se
            _permute(se.conv_expand.weight, order, 0)
            _permute(se.conv_expand.bias, order, 0)
            _permute(se.conv_reduce.weight, order, 1)
            se_order = _importance_order(se.conv_expand.weight)  # the reduced channels, read by conv_expand
            _permute(se.conv_expand.weight, se_order, 1)
            _permute(se.conv_reduce.weight, se_order, 0)
            _permute(se.conv_reduce.bias, se_order, 0)
        _permute_bn(self.bn1, order)
        _permute(self.conv_pw.weight, order, 0)


# ------------------------------------------------------------------------------ channel importance
def _importance_order(reader_weight: torch.Tensor, widths: Sequence[int] = (), stage: int = 0) -> torch.Tensor:
    """Input channels of a layer, most important first (importance: L1 norm of the weights that read them).

    ``widths`` (largest first) and ``stage`` k > 0: the channels outside the ``k+1`` largest widths are kept
    below those inside them, so that widths trained in earlier phases keep their channels (the reference's
    penalties of 1e5 per width).
    """
    importance = reader_weight.abs().sum(dim=(0, 2, 3))  # (C_in,): one L1 norm per input channel
    if stage > 0:
        right, penalty = len(importance), -len(widths) * 1e5
        for left in widths[:stage + 1]:
            importance[left:right] += penalty
            penalty += 1e5
            right = left
    return torch.sort(importance, dim=0, descending=True).indices


def _permute(t: torch.Tensor | None, order: torch.Tensor, dim: int) -> None:
    if t is not None:
        t.copy_(t.index_select(dim, order))


def _permute_bn(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        _permute(getattr(bn, name), order, 0)


# -------------------------------------------------------------------------------------- extraction
@torch.no_grad()
def copy_active(static: nn.Module, supernet: nn.Module) -> nn.Module:
    """Fill ``static`` (a plain model of the active sub-network's shape) with the supernet's active weights.

    Modules are matched by name: a supernet names its layers as the static model it extracts to. Each
    static layer that holds tensors takes them from the supernet layer of the same name, sliced (and,
    for depthwise kernels, transformed) to its own shape. A missing counterpart raises.
    """
    for name, module in static.named_modules():
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not own:
            continue
        try:
            source = supernet.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{type(supernet).__name__} has no layer {name!r} to copy into the sub-network") from None
        if hasattr(source, "copy_to"):
            source.copy_to(module)
            continue
        for t_name, t in own:  # a static layer inside the supernet (e.g. a fixed-size layer): same shape
            src = getattr(source, t_name)
            if src.shape != t.shape:
                raise ValueError(f"{name}.{t_name}: supernet shape {tuple(src.shape)} vs sub-network {tuple(t.shape)}")
            t.copy_(src)
    return static
