"""Learning-rate schedules against timm's schedulers and the closed form."""
import math

import pytest
import torch

from flexbone.config import ScheduleConfig
from flexbone.train.schedule import LRScheduler, cosine_lr, create_scheduler, step_lr

timm_scheduler = pytest.importorskip("timm.scheduler")


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _timm_lrs(sched, steps):
    out = []
    for t in range(steps):
        sched.step_update(t)
        out.append(sched.optimizer.param_groups[0]["lr"])
    return out


def _our_lrs(sched, steps):
    out = []
    for _ in range(steps):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.step()
    return out


@pytest.mark.parity
@pytest.mark.parametrize("warmup, warmup_lr, min_lr", [(0, 0.0, 0.0), (7, 1e-4, 1e-3), (20, 0.0, 5e-5)])
def test_cosine_matches_timm(warmup, warmup_lr, min_lr):
    total, peak = 100, 0.4
    ref = timm_scheduler.CosineLRScheduler(_opt(peak), t_initial=total - warmup, lr_min=min_lr, warmup_t=warmup,
                                           warmup_lr_init=warmup_lr, warmup_prefix=True, t_in_epochs=False)
    ours = LRScheduler(_opt(), lambda s: cosine_lr(s, total, peak, warmup, warmup_lr, min_lr))
    assert _our_lrs(ours, total) == pytest.approx(_timm_lrs(ref, total), rel=1e-12, abs=1e-15)


@pytest.mark.parity
def test_step_matches_timm():
    ref = timm_scheduler.StepLRScheduler(_opt(0.1), decay_t=30, decay_rate=0.1, warmup_t=5, warmup_lr_init=0.01,
                                         t_in_epochs=False)
    ours = LRScheduler(_opt(), lambda s: step_lr(s, 0.1, 30, 0.1, 5, 0.01))
    assert _our_lrs(ours, 95) == pytest.approx(_timm_lrs(ref, 95), rel=1e-12)


def test_cosine_closed_form_and_recipe_epochs():
    # 10 epochs of 8 steps, 2 warm-up epochs: linear 0 -> peak over 16 steps, then half a cosine to min_lr
    cfg = ScheduleConfig(name="cosine", epochs=10, warmup_epochs=2, warmup_lr=0.0, min_lr=0.01)
    opt = _opt()
    sched = create_scheduler(opt, cfg, peak_lr=0.5, steps_per_epoch=8)
    lrs = _our_lrs(sched, 80)
    assert lrs[0] == 0.0 and lrs[8] == pytest.approx(0.25) and lrs[16] == pytest.approx(0.5)
    mid = 16 + 32  # half-way through the cosine part
    assert lrs[mid] == pytest.approx(0.01 + 0.5 * (0.5 - 0.01) * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[16:], lrs[17:]))  # monotone after the warm-up
    assert 0.01 < lrs[-1] < 0.011  # the last step is one step short of the floor (as timm)


def test_param_group_lr_scale_and_state_roundtrip():
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.1}], lr=1.0)
    fn = lambda s: cosine_lr(s, 50, 1.0, 5)  # noqa: E731
    sched = LRScheduler(opt, fn)
    for _ in range(12):
        sched.step()
    lr_a, lr_b = sched.get_last_lr()
    assert lr_a == pytest.approx(fn(12)) and lr_b == pytest.approx(0.1 * fn(12))
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    resumed = LRScheduler(opt2, fn)
    resumed.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == lr_a


@pytest.mark.parity
def test_poly_matches_torch_polynomial_lr_and_the_hand_formula():
    from flexbone.train.schedule import poly_lr

    total, peak, power = 50, 0.4, 0.9
    opt = _opt(peak)
    ref, want = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=power), []
    for _ in range(total + 3):  # past the end: both stay at 0
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    cfg = ScheduleConfig(name="poly", epochs=10, power=power)
    ours = create_scheduler(_opt(), cfg, peak_lr=peak, steps_per_epoch=5)
    assert _our_lrs(ours, total + 3) == pytest.approx(want, rel=1e-9, abs=1e-15)
    # warm-up, then the decay from the peak to the floor over the remaining steps
    warm, floor = 10, 1e-3
    lrs = [poly_lr(s, total, peak, power, warm, 0.01, floor) for s in range(total + 1)]
    assert lrs[:warm] == pytest.approx([0.01 + (peak - 0.01) * s / warm for s in range(warm)])
    assert lrs[warm:] == pytest.approx([floor + (peak - floor) * (1 - t / (total - warm)) ** power
                                        for t in range(total - warm + 1)])
