"""int8 export (onnxruntime static quantization) of a digits model: runs, and agrees with fp32 on most inputs.

The model is trained here for a few epochs on scikit-learn's digits (a random network's near-tied logits
would make top-1 agreement meaningless); the agreement is measured with onnxruntime directly on the
held-out split, which calibration never sees.
"""
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import flexbone
from flexbone.config.schema import DataConfig
from flexbone.data.datasets import digits_dataset
from flexbone.data.transforms import build_eval_transform
from flexbone.export.artifact import export_model, read_sidecar
from flexbone.export.source import ExportSource

PRE = dict(img_size=8, test_img_size=8, crop_pct=1.0, interpolation="bilinear", mean=(0.306,) * 3, std=(0.376,) * 3)


def _tensors(train: bool):
    ds = digits_dataset(train, transform=build_eval_transform(DataConfig(**PRE)))
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([ds[i][1] for i in range(len(ds))])


@pytest.mark.slow
def test_int8_digits_model_agrees_with_fp32(tmp_path):
    x, y = _tensors(True)
    model = flexbone.create_model("resnet8s_tiny", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(2):
        for idx in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    meta = {"img_size": 8, "crop_pct": 1.0, "interpolation": "bilinear", "mean": [0.306] * 3, "std": [0.376] * 3}
    source = ExportSource(model, "resnet8s_tiny", {"num_classes": 10}, metadata=meta)
    out = tmp_path / "digits-int8.onnx"
    side = export_model(source, out, "onnx", dynamic_batch=True, int8=True, calib_data="digits", calib_batches=8,
                        log=lambda s: None)

    graph = onnx.load(str(out)).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # QDQ
    assert any(n.op_type == "DequantizeLinear" and len(n.input) == 3 and _is_per_channel(graph, n.input[1])
               for n in graph.node), "per-channel weight scales"
    assert side["int8"]["per_channel"] and read_sidecar(out)["int8"]["calibration_images"] == 64

    xt, yt = _tensors(False)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    int8_top1 = session.run(None, {"image": xt.numpy()})[0].argmax(1)
    with torch.no_grad():
        fp32_top1 = model(xt).argmax(1).numpy()
    fp32_acc = (fp32_top1 == yt.numpy()).mean()
    assert fp32_acc > 0.8, "the digits model did not train"
    assert (int8_top1 == fp32_top1).mean() > 0.9
    assert (int8_top1 == yt.numpy()).mean() > fp32_acc - 0.05


def _is_per_channel(graph, name: str) -> bool:
    for init in graph.initializer:
        if init.name == name:
            return len(init.dims) == 1 and init.dims[0] > 1
    return False


def test_int8_calibration_folder_missing_fails_before_export(tmp_path):
    from flexbone.errors import ConfigError

    source = ExportSource(flexbone.create_model("resnet8s_tiny", num_classes=3).eval(), "resnet8s_tiny")
    with pytest.raises(ConfigError, match="--calib-data"):
        export_model(source, tmp_path / "m.onnx", "onnx", img_size=8, int8=True, calib_data=str(tmp_path / "nope"))
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError):
        export_model(source, tmp_path / "m.onnx", "onnx", img_size=8, int8=True, calib_data=str(empty))
    assert not (tmp_path / "m.onnx").exists()
