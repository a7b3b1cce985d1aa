"""Optimisers: flexbone's LAMB against timm's Lamb, weight-decay groups, the optimizer factory."""
import copy

import pytest
import torch
import torch.nn as nn

from flexbone.config import OptimConfig
from flexbone.errors import ConfigError
from flexbone.train.optim import Lamb, create_optimizer, param_groups_weight_decay

timm_lamb = pytest.importorskip("timm.optim.lamb")


def _toy_model() -> nn.Module:
    # conv (4-D), BN (1-D scale/shift), linear (2-D + bias): all the cases the groups distinguish
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def _run(opt_cls, model, kwargs, steps, grads):
    opt = opt_cls(param_groups_weight_decay(model, kwargs.pop("weight_decay")), **kwargs)
    history = []
    for step in range(steps):
        for p, g in zip(model.parameters(), grads[step]):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in model.parameters()])
    return history


@pytest.mark.parity
@pytest.mark.parametrize("kwargs", [
    dict(lr=1e-2, weight_decay=0.02, max_grad_norm=1.0),  # the RSB setting (timm defaults)
    dict(lr=5e-3, weight_decay=0.01, max_grad_norm=None, betas=(0.8, 0.99), eps=1e-8),
    dict(lr=1e-2, weight_decay=0.05, max_grad_norm=0.1, trust_clip=True, always_adapt=True),
    dict(lr=1e-2, weight_decay=0.0, bias_correction=False, grad_averaging=False),
])
def test_lamb_matches_timm(kwargs):
    torch.manual_seed(1)
    ref_model = _toy_model()
    our_model = _toy_model()
    our_model.load_state_dict(ref_model.state_dict())
    initial = [p.detach().clone() for p in our_model.parameters()]
    # large gradients (norm >> max_grad_norm) so that the global clipping is exercised
    grads = [[torch.randn_like(p) * 3 for p in ref_model.parameters()] for _ in range(6)]
    ref = _run(timm_lamb.Lamb, ref_model, dict(kwargs), 6, grads)
    ours = _run(Lamb, our_model, dict(kwargs), 6, grads)
    for step, (r, o) in enumerate(zip(ref, ours)):
        for a, b in zip(r, o):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=f"step {step}")
    # every tensor moved (comparing two optimisers that do nothing would pass trivially)
    assert all(not torch.allclose(a, b) for a, b in zip(ours[-1], initial))


def test_lamb_state_roundtrip_continues_identically():
    torch.manual_seed(2)
    model = _toy_model()
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(4)]
    a = _toy_model()
    a.load_state_dict(model.state_dict())
    opt_a = Lamb(param_groups_weight_decay(a, 0.01), lr=1e-2)
    for g in grads[:2]:
        for p, gg in zip(a.parameters(), g):
            p.grad = gg.clone()
        opt_a.step()
    b = _toy_model()
    b.load_state_dict(a.state_dict())
    opt_b = Lamb(param_groups_weight_decay(b, 0.01), lr=1e-2, max_grad_norm=None)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # state_dict() shares the moment tensors
    assert opt_b.max_grad_norm == 1.0 and opt_b.param_groups[0]["step"] == 2
    for g in grads[2:]:
        for m, o in ((a, opt_a), (b, opt_b)):
            for p, gg in zip(m.parameters(), g):
                p.grad = gg.clone()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_no_weight_decay_on_norms_and_biases():
    model = _toy_model()
    groups = param_groups_weight_decay(model, 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert names == {"0.weight", "3.weight"}  # conv and linear weights only
    # a 1-D parameter under SGD weight decay stays put when its gradient is zero
    opt = create_optimizer(model, OptimConfig(name="sgd", lr=0.1, weight_decay=0.5, momentum=0.0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if n in names:
            torch.testing.assert_close(p, before[n] * (1 - 0.1 * 0.5))
        else:
            assert torch.equal(p, before[n])


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lamb", Lamb)])
def test_create_optimizer(name, cls):
    cfg = OptimConfig(name=name, lr=0.3, weight_decay=1e-4, nesterov=name == "sgd", eps=1e-6)
    opt = create_optimizer(_toy_model(), cfg, lr=0.05)
    assert type(opt) is cls
    assert all(g["lr"] == 0.05 for g in opt.param_groups)
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9
    if name == "lamb":
        assert opt.max_grad_norm == cfg.lamb_max_grad_norm == 1.0 and opt.param_groups[0]["eps"] == 1e-6


def _steps_with(model: nn.Module, cfg: OptimConfig, grads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    opt = create_optimizer(model, cfg)
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_step_matches_torch_for_loop_step(name):
    """The default (fused) step against torch's for-loop step over a few steps: equal up to float rounding."""
    torch.manual_seed(0)
    base = _toy_model()
    grads = [[torch.randn_like(p) for p in base.parameters()] for _ in range(5)]
    cfg = dict(name=name, lr=0.1, weight_decay=1e-2, momentum=0.9, nesterov=True)
    auto, loop = copy.deepcopy(base), copy.deepcopy(base)
    assert create_optimizer(auto, OptimConfig(**cfg)).param_groups[0]["fused"] is True  # CPU: fused by default
    assert not create_optimizer(loop, OptimConfig(**cfg, fused=False)).param_groups[0]["fused"]
    fused_params = _steps_with(auto, OptimConfig(**cfg), grads)
    loop_params = _steps_with(loop, OptimConfig(**cfg, fused=False), grads)
    assert any(not torch.equal(a, b) for a, b in zip(fused_params, base.parameters()))  # the steps moved them
    for a, b in zip(fused_params, loop_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_fused_true_on_unsupported_parameters_is_a_config_error():
    model = _toy_model().to(torch.float64)
    model[0].weight.data = model[0].weight.data.to(torch.complex128)  # complex: no fused kernel
    with pytest.raises(ConfigError, match="optim.fused"):
        create_optimizer(model, OptimConfig(name="sgd", fused=True))
    assert not create_optimizer(model, OptimConfig(name="sgd")).param_groups[0]["fused"]  # auto: for-loop step


def test_fused_sgd_with_a_parameter_that_gets_its_first_gradient_late():
    """A supernet's skipped block gets its first gradient after the others: torch's fused SGD alone fails on
    that mix; flexbone's SGD gives the for-loop step's updates (the late momentum starts as the gradient)."""
    torch.manual_seed(0)
    base = _toy_model()
    grads = [[torch.randn_like(p) for p in base.parameters()] for _ in range(4)]
    for g in grads[0][:2]:
        g.zero_()
    results = []
    for fused in (None, False):
        model = copy.deepcopy(base)
        opt = create_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, fused=fused))
        for step, step_grads in enumerate(grads):
            for i, (p, g) in enumerate(zip(model.parameters(), step_grads)):
                p.grad = None if (step == 0 and i < 2) else g.clone()  # the conv: no gradient in the first step
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
