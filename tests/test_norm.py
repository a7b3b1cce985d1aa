"""flexbone's BatchNorm2d against torch's: in-place inference, and the plain path wherever autograd,
low precision or training need it."""
import pytest
import torch
import torch.nn as nn

from flexbone.elastic.ops import DynamicBatchNorm2d
from flexbone.layers import norm
from flexbone.layers.norm import BatchNorm2d, get_norm_layer


def _pair(channels=8, affine=True):
    ours, ref = BatchNorm2d(channels, affine=affine), nn.BatchNorm2d(channels, affine=affine)
    with torch.no_grad():
        for t in [*ref.parameters(), ref.running_mean]:
            t.normal_()
        ref.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(ref.state_dict())
    return ours.eval(), ref.eval()


@pytest.fixture
def always_in_place(monkeypatch):
    monkeypatch.setattr(norm, "_INPLACE_MIN_NUMEL", 0)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_is_in_place_and_equals_torch(always_in_place, affine, channels_last):
    ours, ref = _pair(affine=affine)
    x = torch.randn(2, 8, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = ref(x)  # computed before ours overwrites x
    with torch.no_grad():
        out = ours(x)
    assert out.data_ptr() == x.data_ptr(), "inference should reuse the input's memory"
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_large_inputs_only_by_default():
    ours, _ = _pair()
    small = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        assert ours(small).data_ptr() != small.data_ptr()
        big = torch.randn(1, 8, 256, 128)  # 2**18 elements
        assert ours(big).data_ptr() == big.data_ptr()


def test_plain_path_where_autograd_or_training_need_it(always_in_place):
    ours, ref = _pair()
    x = torch.randn(2, 8, 5, 7, requires_grad=True)
    out = ours(x)  # eval, grad enabled, input needs grad
    assert out.data_ptr() != x.data_ptr()
    out.sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    ref(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)

    # eval-mode BN with trainable affine parameters (frozen statistics, as detection fine-tuning does)
    x = torch.randn(2, 8, 5, 7)
    ours(x.clone()).square().sum().backward()
    ref(x).square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)

    # training mode: batch statistics and running-stat updates exactly as torch
    ours.train(), ref.train()
    x = torch.randn(4, 8, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)


def test_low_precision_keeps_the_native_kernel(always_in_place):
    ours, ref = _pair()
    ours, ref = ours.to(torch.bfloat16), ref.to(torch.bfloat16)
    x = torch.randn(2, 8, 5, 7, dtype=torch.bfloat16)
    with torch.no_grad():
        out = ours(x)
        assert out.data_ptr() != x.data_ptr()
        assert torch.equal(out, ref(x))


def test_dynamic_bn_slices_statistics_in_place(always_in_place):
    dyn = DynamicBatchNorm2d(8).eval()
    with torch.no_grad():
        for t in [dyn.weight, dyn.bias, dyn.running_mean]:
            t.normal_()
        dyn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 5, 6, 6)
    expected = nn.functional.batch_norm(x, dyn.running_mean[:5], dyn.running_var[:5], dyn.weight[:5], dyn.bias[:5],
                                        False, 0.0, dyn.eps)
    with torch.no_grad():
        out = dyn(x)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_batchnorm_by_name_is_flexbones():
    assert get_norm_layer("batchnorm") is BatchNorm2d
    assert issubclass(BatchNorm2d, nn.BatchNorm2d)  # isinstance checks (BN recalibration, weight decay) still hold
