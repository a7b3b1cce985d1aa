"""Shared test utilities."""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, keep_random_init: bool = False) -> nn.Module:
    """Give every norm parameter, BN statistic and constant weight random values.

    Fresh models hide wiring mistakes: zero-initialised last BNs make residual branches output zero,
    and unit running statistics make BN an affine no-op. Parity tests randomise the reference first.
    ``keep_random_init`` leaves weights that already hold a random initialisation as they are (cheap for
    100M+ models); without it every tensor is redrawn (needed for models built without initialisation).
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():  # saved tensors only: fixed buffers (blur filters) stay
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
        elif name.endswith("running_mean"):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        elif t.ndim <= 1:  # norm weights / biases: around 1 and 0 so activations stay in range
            base = 1.0 if name.endswith("weight") else 0.0
            t.copy_(base + torch.randn(t.shape, generator=g) * 0.1)
        elif not keep_random_init or t.flatten()[:4096].std() == 0:  # with keep_random_init: constants only
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=g) * (1.0 / fan_in) ** 0.5)
    return model


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def assert_training_gradients_match(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One backward of each supernet on ``x``; ``ref``'s gradients, renamed by ``ours._convert_checkpoint`` (the
    checkpoint key mapping), must equal ours, parameter by parameter. Returns our gradients."""
    for net in (ours, ref):
        net(x).logsumexp(1).sum().backward()
    expected = ours._convert_checkpoint({k: p.grad for k, p in ref.named_parameters() if p.grad is not None})
    got = {k: p.grad for k, p in ours.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5, msg=k)
    return got


def sized(name: str, size: int) -> tuple[dict, int]:
    """create_model arguments and an input size near ``size`` that ``name`` accepts: a fixed-size transformer
    (ViT, Swin: timm's ``fixed_input_size``) is built for ``size``; a valid-padding family (Inception:
    ``min_input_size`` 75) gets its smallest size instead of a smaller one."""
    from flexbone.bench.complexity import build_on_meta

    cfg = build_on_meta(name).default_cfg
    if cfg.get("fixed_input_size"):
        return {"img_size": size}, size
    return {}, max(size, (cfg.get("min_input_size") or (3, 0, 0))[-1])
