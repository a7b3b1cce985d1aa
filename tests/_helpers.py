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


def assert_checkpointing_keeps_gradients(model: nn.Module, x: torch.Tensor, atol: float = 1e-4) -> None:
    """The gradients of ``model(x).sum()`` with ``set_grad_checkpointing(True)`` equal those without."""
    model(x).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        assert max_abs_diff(p.grad, plain[n]) <= atol, n


def assert_extract_equals_active_path(net: nn.Module, cfg, static_cls: type, classifier: str) -> nn.Module:
    """A supernet's ``extract()`` after ``set_active(cfg)``, in eval and train mode: a ``static_cls`` in the same
    mode whose output and intermediate maps (the features a detector would take) equal the active path's
    (<= 1e-6), and an independent copy (changing the supernet's ``classifier`` weights leaves it as it was).
    ``net`` is changed (modes, BN statistics): pass a copy of a shared fixture. Returns the last extracted model."""
    xb = torch.randn(2, 3, 64, 64)
    for train in (False, True):
        net.train(train)
        net.set_active(cfg)
        sub = net.extract()
        assert type(sub) is static_cls and sub.training == train
        with torch.no_grad():
            assert max_abs_diff(sub(xb), net(xb)) <= 1e-6
            for a, b in zip(sub.forward_intermediates(xb, intermediates_only=True),
                            net.forward_intermediates(xb, intermediates_only=True), strict=True):
                assert max_abs_diff(a, b) <= 1e-6
    before = sub.get_submodule(classifier).weight.clone()
    with torch.no_grad():
        net.get_submodule(classifier).weight.add_(1.0)
    assert torch.equal(sub.get_submodule(classifier).weight, before)
    return sub


def assert_saved_subnet_reloads(net: nn.Module, cfg, folder, x: torch.Tensor, static_cls: type) -> dict:
    """``save_subnet(net, folder, cfg)`` comes back three ways, each a ``static_cls`` with the recorded parameter
    count and the supernet's output for ``cfg`` (<= 1e-6): ``load_subnet``, ``create_model`` with the recorded
    arguments, the static class itself. Returns the folder's ``config.json``."""
    import json

    import flexbone
    from flexbone.elastic import SubnetConfig, load_subnet, save_subnet

    folder = save_subnet(net, folder, cfg)
    with torch.no_grad():
        expected = net(x)
    meta = json.loads((folder / "config.json").read_text())
    assert meta["model"] == f"{net.name}_subnet" and meta["subnet"] == cfg.to_dict()
    assert SubnetConfig.from_json(folder / "config.json") == cfg
    loaded = [
        load_subnet(folder),
        flexbone.create_model(meta["model"], pretrained=folder / "model.safetensors", **meta["kwargs"]),
        static_cls(**meta["architecture"]["kwargs"]),
    ]
    flexbone.load_checkpoint(loaded[2], folder / "model.safetensors", strict=True)
    for model in loaded:
        assert type(model) is static_cls and model.num_params() == meta["params"]
        with torch.no_grad():
            assert max_abs_diff(model.eval()(x), expected) <= 1e-6
    return meta

def sized(name: str, size: int) -> tuple[dict, int]:
    """create_model arguments and an input size near ``size`` that ``name`` accepts: a fixed-size transformer
    (ViT, Swin: timm's ``fixed_input_size``) is built for ``size``; a valid-padding family (Inception:
    ``min_input_size`` 75) gets its smallest size instead of a smaller one."""
    from flexbone.bench.complexity import build_on_meta

    cfg = build_on_meta(name).default_cfg
    if cfg.get("fixed_input_size"):
        return {"img_size": size}, size
    return {}, max(size, (cfg.get("min_input_size") or (3, 0, 0))[-1])
