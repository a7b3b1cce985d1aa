"""Weight EMA against timm's ModelEmaV3 and TensorFlow's warm-up formula."""
import copy

import pytest
import torch
import torch.nn as nn

from flexbone.train.ema import ModelEma

timm_ema = pytest.importorskip("timm.utils.model_ema")


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _train_steps(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(n):
        x = torch.randn(4, 3, 8, 8, generator=g)
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        yield


@pytest.mark.parity
def test_ema_matches_timm_model_ema_v3():
    model = _model()
    ours = ModelEma(model, decay=0.9)
    ref = timm_ema.ModelEmaV3(model, decay=0.9)
    for _ in _train_steps(model, 5):
        ours.update(model)
        ref.update(model)  # no step given: constant decay, as ours without warm-up
    for (k, a), b in zip(ours.module.state_dict().items(), ref.module.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # the average lags behind the model (it is not a copy)
    assert not torch.allclose(ours.module[0].weight, model[0].weight)
    assert ours.module[1].num_batches_tracked == model[1].num_batches_tracked  # integer buffers are copied


def test_ema_warmup_follows_tensorflow_formula():
    model = _model()
    init = copy.deepcopy(model.state_dict())
    ema = ModelEma(model, decay=0.99, warmup=True)
    expected = {k: v.clone() for k, v in init.items()}
    for k_step, _ in enumerate(_train_steps(model, 4)):
        ema.update(model)
        # tf.train.ExponentialMovingAverage(decay, num_updates=k): min(decay, (1 + k) / (10 + k))
        decay = min(0.99, (1 + k_step) / (10 + k_step))
        for name, v in model.state_dict().items():
            if v.is_floating_point():
                expected[name] = decay * expected[name] + (1 - decay) * v
    for name, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, expected[name], msg=name)


def test_ema_state_roundtrip():
    model = _model()
    ema = ModelEma(model, decay=0.9, warmup=True)
    for _ in _train_steps(model, 3):
        ema.update(model)
    other = ModelEma(_model(), decay=0.9, warmup=True)
    other.load_state_dict(copy.deepcopy(ema.state_dict()))
    assert other.num_updates == 3
    for _ in _train_steps(model, 2, seed=1):
        ema.update(model)
        other.update(model)
    for a, b in zip(ema.module.state_dict().values(), other.module.state_dict().values()):
        assert torch.equal(a, b)
