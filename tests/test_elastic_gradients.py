"""Gradients of sliced supernet weights: the one-node kernel transform and the recycled full-size gradients.

The reference is torch's own differentiation of plain indexing (``weight[:o, :i]``) and of the op-by-op kernel
transform (crop, ``F.linear``, reshape); the optimised paths must give the same gradients, step after step.
"""
import pytest
import torch
import torch.nn.functional as F

from flexbone.elastic import ops
from flexbone.elastic.ops import DynamicConv2d, DynamicDepthwiseConv2d, leading_block


# --------------------------------------------------------------------------------- kernel transform
def _depthwise(seed: int = 0) -> DynamicDepthwiseConv2d:
    torch.manual_seed(seed)
    conv = DynamicDepthwiseConv2d(12, (3, 5, 7))
    with torch.no_grad():
        for m in conv._matrices():
            m.add_(0.1 * torch.randn_like(m))  # not the identity: the matrices take part in the gradient
    return conv


@pytest.mark.parametrize("kernel,channels", [(3, 8), (3, 12), (5, 8), (5, 12), (7, 8)])
def test_kernel_transform_gradients_equal_op_by_op_autograd(kernel, channels):
    conv = _depthwise()
    conv.active_kernel_size = kernel
    x = torch.randn(2, channels, 9, 9)
    params = [conv.weight, *conv._matrices()]
    y = conv(x)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, params, g, allow_unused=True)

    steps = tuple((b, s) for b, s in zip((7, 5), (5, 3)) if s >= kernel)
    weight = ops._step_down(conv.weight, channels, steps, [getattr(conv, f"{b}to{s}_matrix") for b, s in steps])
    y_ref = F.conv2d(x, weight.contiguous(), None, 1, kernel // 2, 1, channels)
    expected = torch.autograd.grad(y_ref, params, g, allow_unused=True)

    assert torch.equal(y, y_ref)
    for a, b in zip(got, expected):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)


def test_kernel_transform_is_one_autograd_node_and_passes_gradcheck():
    conv = _depthwise().double()
    conv.active_kernel_size = 3
    weight = conv.active_weight(8)
    assert type(weight.grad_fn).__name__ == "_TransformedKernelBackward"
    w = torch.randn(12, 1, 7, 7, dtype=torch.float64, requires_grad=True)
    m75 = torch.randn(25, 25, dtype=torch.float64, requires_grad=True)
    m53 = torch.randn(9, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w, a, b: ops._TransformedKernel.apply(w, 8, ((7, 5), (5, 3)), None, a, b), (w, m75, m53))


# ------------------------------------------------------------------------------- recycled gradients
def _conv(seed: int = 0) -> DynamicConv2d:
    torch.manual_seed(seed)
    conv = DynamicConv2d(64, 96, 3)  # 55k weights: above the threshold the `recycling` fixture sets
    assert conv.weight.numel() >= ops.RECYCLE_MIN_NUMEL
    return conv


def _step(conv: DynamicConv2d, in_chs: int, out_chs: int, seed: int) -> torch.Tensor:
    """One backward of a sliced conv with the given active widths; returns the expected gradient (plain indexing)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, in_chs, 5, 5, generator=g)
    conv.active_out_channels = out_chs
    conv(x).square().sum().backward()
    w = conv.weight.detach().clone().requires_grad_()
    F.conv2d(x, w[:out_chs, :in_chs], None, 1, 1).square().sum().backward()
    return w.grad


@pytest.fixture
def recycling(monkeypatch):
    monkeypatch.setattr(ops, "RECYCLE_MIN_NUMEL", 1 << 10)


def test_recycled_gradients_equal_fresh_ones_over_changing_widths(recycling):
    """Step after step, widths growing and shrinking: the reused tensor holds exactly this step's gradient.
    (The full width uses the whole weight, no slice: its gradient is autograd's own and is not kept.)"""
    conv = _conv()
    previous = None
    for seed, (i, o) in enumerate([(64, 48), (32, 24), (48, 96), (16, 8), (64, 88), (64, 96), (40, 40), (8, 8)]):
        conv.weight.grad = None  # zero_grad(set_to_none=True)
        expected = _step(conv, i, o, seed)
        assert torch.equal(conv.weight.grad, expected), (i, o)
        full = (i, o) == (64, 96)
        if previous is not None and not full:
            assert conv.weight.grad.data_ptr() == previous, (i, o)  # the same memory, not a fresh allocation
        previous = None if full else conv.weight.grad.data_ptr()


def test_recycling_leaves_a_kept_gradient_alone(recycling):
    """A .grad (or a view of it) that the user kept from an earlier step is never written into."""
    conv = _conv()
    _step(conv, 32, 24, 0)
    kept = conv.weight.grad
    snapshot = kept.clone()
    conv.weight.grad = None
    expected = _step(conv, 48, 48, 1)
    assert torch.equal(kept, snapshot) and torch.equal(conv.weight.grad, expected)

    view = conv.weight.grad[:4]
    snapshot = view.clone()
    conv.weight.grad = None
    expected = _step(conv, 16, 8, 2)
    assert torch.equal(view, snapshot) and torch.equal(conv.weight.grad, expected)


def test_recycling_after_in_place_changes_and_with_accumulation(recycling):
    conv = _conv()
    _step(conv, 32, 24, 0)
    conv.weight.grad.mul_(-3.0)  # e.g. gradient clipping: changes the tensor in place (and its version)
    conv.weight.grad.add_(1.0)  # ... even outside the block
    conv.weight.grad = None
    expected = _step(conv, 16, 8, 1)
    assert torch.equal(conv.weight.grad, expected)

    # accumulation over two backward passes without zero_grad: the sum, as autograd gives it
    second = _step(conv, 48, 40, 2)
    assert torch.allclose(conv.weight.grad, expected + second, rtol=0, atol=1e-5)


def test_a_weight_used_whole_and_sliced_in_one_step_is_not_kept(recycling):
    """Autograd sums the two uses into one gradient, dense beyond the block: it must not be reused as if it were
    zero outside the block."""
    x = torch.randn(2, 32, 5, 5)
    for sliced_first in (True, False):  # the order of the forward decides which gradient autograd sums into
        conv = _conv()
        conv.active_out_channels = 24
        if sliced_first:
            loss = conv(x).square().sum() + conv.weight.square().sum()
        else:
            whole = conv.weight.square().sum()
            loss = whole + conv(x).square().sum()
        loss.backward()
        for seed, (i, o) in enumerate([(16, 8), (24, 16)]):
            conv.weight.grad = None
            expected = _step(conv, i, o, seed)
            assert torch.equal(conv.weight.grad, expected), (sliced_first, i, o)


def test_a_gradient_not_accumulated_is_forgotten_when_the_backward_ends(recycling):
    """torch.autograd.grad returns the gradient instead of accumulating it: no hook runs, and the record of the
    tensor handed out must not outlive the backward pass (its memory may be reused by any later gradient)."""
    conv = _conv()
    conv.active_out_channels = 24
    (grad,) = torch.autograd.grad(conv(torch.randn(2, 32, 5, 5)).sum(), conv.weight)
    assert conv.weight not in ops._handed_out and conv.weight not in ops._kept_gradients
    assert grad[24:].abs().sum() == 0 and grad[:, 32:].abs().sum() == 0


def test_optimizer_steps_with_recycled_gradients_match_plain_slicing(recycling):
    """A few SGD steps (momentum, weight decay) of a supernet layer, sub-networks changing: same weights as with
    plain indexing, i.e. the recycled gradient is zero outside the active block every time."""
    conv, ref = _conv(), _conv()
    opt = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for seed, (i, o) in enumerate([(64, 96), (32, 24), (16, 8), (48, 64), (64, 96)]):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, i, 5, 5, generator=g)
        for model, optim, plain in ((conv, opt, False), (ref, opt_ref, True)):
            optim.zero_grad(set_to_none=True)
            model.active_out_channels = o
            w = model.weight[:o, :i] if plain else None
            y = F.conv2d(x, w, None, 1, 1) if plain else model(x)
            y.square().mean().backward()
            optim.step()
    assert torch.allclose(conv.weight, ref.weight, rtol=0, atol=1e-6)


def test_eval_releases_kept_gradients(recycling):
    conv = _conv()
    _step(conv, 32, 24, 0)
    assert conv.weight in ops._kept_gradients
    conv.eval()
    assert conv.weight not in ops._kept_gradients


def test_small_tensors_and_frozen_weights_are_not_recycled():
    conv = DynamicConv2d(8, 8, 1)  # 64 weights: below the default threshold
    x = torch.randn(1, 4, 3, 3)
    conv.active_out_channels = 4
    conv(x).sum().backward()
    assert conv.weight not in ops._kept_gradients and conv.weight.grad.shape == (8, 8, 1, 1)
    frozen = torch.randn(64, 64, 4, 4)  # no grad: a plain slice
    assert leading_block(frozen, (8, 8)).grad_fn is None


def test_a_frozen_depthwise_weight_with_trainable_kernel_transforms(recycling):
    """Fine-tuning only the transformation matrices: no hook on the frozen weight, gradients for the matrices."""
    conv = DynamicDepthwiseConv2d(64, (3, 5, 7))  # 3136 weights: above the lowered threshold
    conv.weight.requires_grad_(False)
    conv.active_kernel_size = 3
    conv(torch.randn(1, 32, 7, 7)).sum().backward()
    assert conv.weight.grad is None and conv.weight not in ops._watched
    assert all(m.grad is not None for m in conv._matrices())


@pytest.mark.parametrize("train", [False, True])
def test_a_transformed_kernel_exports(train):
    """torch.export traces the kernel transform (the plain ops, or the one-node function when gradients are on)
    and the exported program computes what the eager layer does."""
    conv = _depthwise().train(train)
    conv.active_kernel_size = 3
    x = torch.randn(1, 8, 9, 9)
    program = torch.export.export(conv, (x,))
    assert torch.equal(program.module()(x), conv(x))


# ---------------------------------------------------------------------------------- planned weights
# a supernet's forward derives the active sub-network's weights in one autograd node (ops.planned_weights); the
# reference is the same forward without the plan, each layer deriving its own weights (tested above against plain
# indexing and the op-by-op transform), and the ofa reference's gradients (tests/test_ofa_*.py)
TOY_MBV3 = dict(stem_width=8, first_block=[8, "relu", True], final_expand_width=32, head_width=32,
                units=[[8, 1, "relu", False], [16, 2, "relu", True], [16, 2, "hard_swish", False],
                       [24, 1, "hard_swish", True], [24, 2, "hard_swish", True]])
TOY_RESNET = dict(base_depths=(1, 1, 2, 1), stage_widths=(32, 64, 96, 128), stem_width=16)


def _toy(name: str):
    import flexbone

    torch.manual_seed(0)
    kwargs = TOY_MBV3 if name.startswith("ofa_mbv3") else TOY_RESNET
    net = flexbone.create_model(name, num_classes=10, **kwargs).train()
    with torch.no_grad():
        for p in net.parameters():  # away from the initialisation: no zero-initialised BN scales, no identities
            p.add_(0.05 * torch.randn_like(p))
    return net


def _graph_nodes(tensor: torch.Tensor) -> list[str]:
    seen, stack, names = set(), [tensor.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return names


def _training_step(net, x, planned: bool):
    """Outputs, gradients and BN statistics of one training step, with or without the plan."""
    import copy

    net = copy.deepcopy(net)
    y = net(x) if planned else net.forward_head(net.forward_features(x))
    nodes = _graph_nodes(y)
    y.logsumexp(1).sum().backward()
    grads = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
    return y, grads, {k: b for k, b in net.named_buffers()}, nodes


@pytest.mark.parametrize("name", ["ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50"])
@pytest.mark.parametrize("which", ["min", "max", "random"])
def test_planned_step_equals_each_layer_deriving_its_own(name, which):
    import random

    net = _toy(name)
    space = net.space
    net.set_active({"min": space.min(), "max": space.max(), "random": space.sample(random.Random(3))}[which])
    x = torch.randn(2, 3, 32, 32)
    y, grads, buffers, nodes = _training_step(net, x, planned=True)
    y_ref, grads_ref, buffers_ref, nodes_ref = _training_step(net, x, planned=False)
    assert nodes.count("_PlannedWeightsBackward") == (0 if which == "max" else 1)  # max: nothing to derive
    assert "_PlannedWeightsBackward" not in nodes_ref
    assert torch.equal(y, y_ref)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert torch.equal(grads[k], grads_ref[k]), k
    for k in buffers:
        assert torch.equal(buffers[k], buffers_ref[k]), k


def test_a_layer_whose_shapes_changed_after_planning_derives_its_own():
    net = _toy("ofa_mbv3_d234_e346_k357_w1.0")
    net.set_active(net.space.min())
    x = torch.randn(2, 3, 32, 32)
    with ops.planned_weights(net):
        planned = [m for m in net.modules() if "_planned" in vars(m)]
        assert planned
        blk = net.blocks[2][0]
        blk.active_kernel_size, blk.active_expand_ratio = 5, 4  # both differ from the plan's 3 and 3
        y = net.forward_head(net.forward_features(x))
    assert not any("_planned" in vars(m) for m in net.modules())
    y_ref = net.forward_head(net.forward_features(x))
    assert torch.equal(y, y_ref)


def test_plan_is_withdrawn_when_the_forward_raises():
    net = _toy("ofa_resnet50")
    net.set_active(net.space.min())
    with pytest.raises(ValueError, match="input channels"):
        net(torch.randn(2, 4, 32, 32))  # 4 input channels: the stem conv raises after the plan was handed out
    assert not any("_planned" in vars(m) for m in net.modules())


def test_no_plan_without_autograd_or_with_checkpointing(monkeypatch):
    handed = []
    monkeypatch.setattr(ops.WeightPlan, "hand_out", lambda self: handed.append(self))
    net = _toy("ofa_mbv3_d234_e346_k357_w1.0")
    net.set_active(net.space.min())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        net(x)
    assert not handed
    net.eval()(x)
    assert len(handed) == 1  # eval() alone leaves autograd on: planned
    net.train().set_grad_checkpointing(True)
    net(x).sum().backward()
    assert len(handed) == 1  # a checkpointed block recomputes its own derivations: no plan


@pytest.mark.parametrize("name", ["ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50"])
def test_training_step_under_autocast_equals_the_extracted_subnet(name):
    """bf16 autocast: a derived weight keeps its parameter's dtype and the layer casts it, as a static layer casts
    its parameter; so the gradients on the active slices are those of the extracted static network (plain torch
    layers under the same autocast), bit for bit, and float32. (A depthwise kernel's static counterpart is the
    transformed kernel, a different parameter: not compared.)"""
    net = _toy(name)
    net.set_active(net.space.min())
    static = net.extract().train()
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, grads, _, _ = _training_step(net, x, planned=True)
        _, grads_unplanned, _, _ = _training_step(net, x, planned=False)
        y_static = static(x)
    y_static.logsumexp(1).sum().backward()
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_static)
    assert all(torch.equal(g, grads_unplanned[k]) for k, g in grads.items())
    compared = 0
    for k, p in static.named_parameters():
        if "conv_dw" not in k:
            assert grads[k].dtype == torch.float32
            assert torch.equal(grads[k][tuple(slice(0, n) for n in p.shape)], p.grad), k
            compared += 1
    assert compared > 50
