"""Optimisers: flexbone's LAMB against timm's Lamb, weight-decay groups, the optimizer factory."""
import copy

import pytest
import torch
import torch.nn as nn

from flexbone.config import OptimConfig
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
