"""Optimisers: SGD (Nesterov), AdamW, and flexbone's LAMB; weight-decay parameter groups.

LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning") is Adam whose per-tensor update is
rescaled by a *trust ratio* ``||w|| / ||update||``, so every layer moves by a similar fraction of its
weight norm whatever the batch size. This implementation follows the NVIDIA/apex ``FusedLAMB`` variant
as timm's ``Lamb`` does (the optimiser behind the "ResNet strikes back" recipes):

1. optional global gradient-norm clipping: all gradients are divided by ``max(1, ||g||_global / max_norm)``;
2. Adam moments with "grad averaging": ``m = beta1 m + (1 - beta1) g``, ``v = beta2 v + (1 - beta2) g^2``;
3. bias correction: ``update = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)``;
4. weight decay added to the update (not to the gradient): ``update += wd * w``;
5. trust ratio ``||w|| / ||update||`` (1 when either norm is 0), only for tensors with weight decay
   (unless ``always_adapt``), optionally clipped at 1 (LAMBC);
6. ``w -= lr * trust_ratio * update``.

``tests/test_train_optim.py`` checks the updates against timm's ``Lamb`` over several steps.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adamw", "lamb")


class Lamb(torch.optim.Optimizer):
    """LAMB with bias correction, grad averaging, trust ratio and optional global grad-norm clipping.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: decay rates of the first and second moment.
        eps: added to the denominator (timm default 1e-6).
        weight_decay: added to the update as ``wd * w`` before the trust ratio.
        bias_correction: divide the moments by ``1 - beta^t``.
        grad_averaging: use ``(1 - beta1)`` on the gradient in the first moment (else 1).
        max_grad_norm: clip the global gradient norm (over all groups) to this value; ``None`` = off.
        trust_clip: clip the trust ratio at 1 (LAMBC).
        always_adapt: apply the trust ratio also to tensors without weight decay.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, bias_correction: bool = True,
                 grad_averaging: bool = True, max_grad_norm: float | None = 1.0, trust_clip: bool = False,
                 always_adapt: bool = False):
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0:
            raise ValueError(f"Lamb: lr, eps and weight_decay must be >= 0 (got {lr}, {eps}, {weight_decay})")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, grad_averaging=grad_averaging,
                        trust_clip=trust_clip, always_adapt=always_adapt)
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm  # global over all groups, so not a per-group setting

    def _global_clip_divisor(self) -> torch.Tensor | None:
        """``max(1, ||g|| / max_grad_norm)`` over every gradient, or None when clipping is off."""
        if self.max_grad_norm is None:
            return None
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return None
        global_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        return (global_norm / self.max_grad_norm).clamp_(min=1.0)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer.step)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clip_divisor = self._global_clip_divisor()
        for group in self.param_groups:
            # one step count per group (every tensor of a group steps together); an int so that the
            # optimizer state dict stays plain data for torch.load(weights_only=True)
            group["step"] = group.get("step", 0) + 1
            t = group["step"]
            beta1, beta2 = group["betas"]
            beta3 = 1.0 - beta1 if group["grad_averaging"] else 1.0
            bc1 = 1.0 - beta1 ** t if group["bias_correction"] else 1.0
            bc2 = 1.0 - beta2 ** t if group["bias_correction"] else 1.0
            wd, lr, eps = group["weight_decay"], group["lr"], group["eps"]
            adapt = wd != 0.0 or group["always_adapt"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if clip_divisor is None else p.grad / clip_divisor  # p.grad itself stays as is
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=beta3)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                update = (exp_avg / bc1).div_((exp_avg_sq / bc2).sqrt_().add_(eps))
                if wd != 0.0:
                    update.add_(p, alpha=wd)
                if adapt:
                    w_norm, u_norm = p.norm(2.0), update.norm(2.0)
                    # a zero norm (fresh zero-init weight, zero update) means no information: ratio 1
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    if group["trust_clip"]:
                        trust = trust.clamp(max=1.0)
                    update.mul_(trust)
                p.add_(update, alpha=-lr)
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["max_grad_norm"] = self.max_grad_norm
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.max_grad_norm = state_dict.pop("max_grad_norm", self.max_grad_norm)
        super().load_state_dict(state_dict)


def param_groups_weight_decay(model: nn.Module, weight_decay: float,
                              exclude_1d: bool = True) -> list[dict[str, Any]]:
    """Two parameter groups: with ``weight_decay``, and without it for 1-D tensors (norm scales/shifts, biases).

    Decaying a BN scale or a bias only shrinks the function's scale or offset and does not regularise
    (Goyal et al. 2017, "Bag of Tricks"); the RSB and ResNet-RS recipes exclude them.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_1d and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


FUSED_DEVICES = ("cpu", "cuda")


def use_fused(groups: list[dict[str, Any]], fused: bool | None) -> bool | None:
    """Whether SGD / AdamW should run torch's fused step (``fused=``), given the config's choice.

    The fused step reads and writes each tensor once per step instead of once per arithmetic operation: on
    a CPU it is about 3x faster than torch's default for-loop step (``benchmarks/results/optimizer_step_cpu.md``),
    with the same updates up to float rounding. ``None`` (the default) picks it wherever torch has
    one: every parameter a floating-point tensor on the CPU or a CUDA device. ``True`` insists (a clear
    error where it cannot run); ``False`` keeps torch's for-loop step. Returns ``None`` for "not fused",
    which is what torch's own default means.
    """
    params = [p for g in groups for p in g["params"]]
    unsupported = [p for p in params if not (p.is_floating_point() and p.device.type in FUSED_DEVICES)]
    if fused is None:
        return True if params and not unsupported else None
    if fused and unsupported:
        kinds = sorted({f"{p.dtype} on {p.device.type}" for p in unsupported})
        raise ConfigError(f"optim.fused: true needs floating-point parameters on {' or '.join(FUSED_DEVICES)}; "
                          f"this model has {', '.join(kinds)} (set optim.fused to null or false)")
    return True if fused else None


def _start_momentum_of_late_parameters(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook of a fused SGD: a zero momentum buffer for each parameter that gets its first gradient
    after other parameters of its group already have one.

    torch's fused SGD step handles a group whose momentum buffers all exist, or none (the first step), and
    fails on a mix, which a supernet produces: a block that the first sub-networks skipped gets its first
    gradient later. The for-loop step starts such a buffer as a copy of the gradient; with no dampening
    (``create_optimizer`` never sets one) a zero buffer gives exactly that after the fused update
    (``0.9 * 0 + g = g``).
    """
    for group in optimizer.param_groups:
        if not group["momentum"]:
            continue
        live = [p for p in group["params"] if p.grad is not None]
        started = [optimizer.state[p].get("momentum_buffer") is not None for p in live]
        if any(started) and not all(started):
            for p, has_buffer in zip(live, started):
                if not has_buffer:
                    optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def create_optimizer(model: nn.Module, cfg: Any, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimiser an ``OptimConfig`` describes, for ``model``'s trainable parameters.

    Args:
        model: the model (unwrapped or DDP-wrapped: parameters are the same tensors).
        cfg: a :class:`flexbone.config.schema.OptimConfig` (``name``, ``lr``, ``weight_decay``, ``momentum``,
            ``nesterov``, ``betas``, ``eps``, ``lamb_max_grad_norm``, ``no_weight_decay_on_norm_and_bias``,
            ``fused``: see :func:`use_fused`).
        lr: the learning rate to start from (e.g. ``cfg.lr`` scaled to the actual batch size); default ``cfg.lr``.
    """
    lr = cfg.lr if lr is None else lr
    groups = param_groups_weight_decay(model, cfg.weight_decay,
                                       exclude_1d=getattr(cfg, "no_weight_decay_on_norm_and_bias", True))
    name = cfg.name.lower()
    if name == "sgd":
        # weight decay as L2 on the gradient, as torch and timm do for SGD
        sgd = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                              fused=use_fused(groups, getattr(cfg, "fused", None)))
        if sgd.defaults["fused"]:
            sgd.register_step_pre_hook(_start_momentum_of_late_parameters)
        return sgd
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 fused=use_fused(groups, getattr(cfg, "fused", None)))
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                    max_grad_norm=getattr(cfg, "lamb_max_grad_norm", 1.0))
    raise ConfigError(f"unknown optimizer {cfg.name!r}; choose from {', '.join(OPTIMIZERS)}")
