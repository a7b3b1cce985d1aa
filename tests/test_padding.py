"""TF 'SAME' padding layers (flexbone.layers.padding) vs timm's Conv2dSame / AvgPool2dSame / MaxPool2dSame, and
their ONNX export checked in onnxruntime (odd sizes, where the padding is asymmetric)."""
import numpy as np
import pytest
import torch

from flexbone.layers.padding import conv2d_same, pool2d_same

from _helpers import max_abs_diff

timm_layers = pytest.importorskip("timm.layers")


@pytest.mark.parametrize("size", [15, 16])
@pytest.mark.parametrize("kernel, stride", [(3, 2), (5, 2), (1, 2), (3, 1), (2, 2)])
def test_same_padding_equals_timms(size, kernel, stride):
    x = torch.randn(2, 4, size, size)
    ours = conv2d_same(4, 6, kernel, stride=stride, bias=True)
    ref = timm_layers.create_conv2d(4, 6, kernel, stride=stride, padding="same", bias=True)
    ref.load_state_dict(ours.state_dict())
    assert max_abs_diff(ours(x), ref(x)) == 0
    for pool in ("avg", "max"):
        kw = dict(count_include_pad=False) if pool == "avg" else {}
        got = pool2d_same(pool, kernel, stride, **kw)(x)
        expected = timm_layers.create_pool2d(pool, kernel, stride, padding="same", **kw)(x)
        assert got.shape == expected.shape and max_abs_diff(got, expected) == 0, pool


def test_onnx_export_keeps_the_asymmetric_padding(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(conv2d_same(4, 4, 3, stride=2), pool2d_same("max", 3, 2),
                                pool2d_same("avg", 3, 2)).eval()
    x = torch.randn(1, 4, 31, 31)  # 31 -> 16 -> 8 -> 4 ('VALID' would give 15 -> 7 -> 3)
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape == (1, 4, 4, 4) and np.abs(got - expected).max() < 1e-5
