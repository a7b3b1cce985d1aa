"""int8 export (onnxruntime static quantization): a trained digits model runs and agrees with fp32 on most
inputs, and the command quantizes with the settings its --help documents.

The digits model is trained here for a few epochs on scikit-learn's digits (a random network's near-tied
logits would make top-1 agreement meaningless); the agreement is measured with onnxruntime directly on the
held-out split, which calibration never sees. The settings are read back from the file onnxruntime wrote.
"""
import numpy as np
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


def _photos(folder, count=4):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _conv_weights(graph):
    """``[(int8 weight, scale)]`` for every conv of a QDQ graph (fails if a conv's weight is not quantized)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    made_by = {out: n for n in graph.node for out in n.output}
    weights = []
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        dq = made_by[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and dq.input[0] in inits, f"{conv.name}: weight not quantized"
        weights.append((inits[dq.input[0]], inits[dq.input[1]]))
    return weights


@pytest.mark.cli
def test_the_command_quantizes_with_the_documented_defaults(tmp_path, capsys):
    """`flexbone export --int8` with no int8 option: QDQ, uint8 activations, per-channel int8 weights in a 7-bit
    range (what onnxruntime wrote, read back from the file); the options switch each setting."""
    from flexbone.cli import export as cli_export
    from flexbone.cli import main
    from flexbone.export.quantize import CALIBRATION_METHODS, Int8Options

    assert cli_export.CALIBRATION_METHODS == CALIBRATION_METHODS
    assert cli_export.DEFAULT_CALIBRATION == Int8Options().calibration
    photos = _photos(tmp_path / "photos")
    base = ["export", "--model", "resnet8s_tiny", "--img-size", "8", "--format", "onnx", "--int8",
            "--calib-data", str(photos), "--calib-batches", "4"]
    assert main([*base, "--out", str(tmp_path / "default.onnx")]) == 0
    printed = capsys.readouterr()
    # the agreement line names the file the user asked for, not the staged temporary one
    assert "flexbone: default.onnx: int8 and fp32 agree on the top-1 class of" in printed.out + printed.err
    assert ".staged" not in printed.out + printed.err
    graph = onnx.load(str(tmp_path / "default.onnx")).graph
    weights = _conv_weights(graph)
    assert len(weights) == 12  # resnet8s_tiny's convs, each with a quantized weight (QDQ)
    for w, scale in weights:
        assert w.dtype == np.int8 and scale.shape == (w.shape[0],)  # one scale per output channel
        assert np.abs(w.astype(int)).max() <= 64  # onnxruntime's reduce_range: symmetric weights in [-64, 64]
    assert max(np.abs(w.astype(int)).max() for w, _ in weights) == 64  # ... and that range is used
    activations = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    zero_points = {i.name: i.data_type for i in graph.initializer}
    assert activations and all(zero_points[n.input[2]] == onnx.TensorProto.UINT8 for n in activations)
    assert read_sidecar(tmp_path / "default.onnx")["int8"]["reduce_range"] is True

    assert main([*base, "--int8-full-range", "--int8-per-tensor", "--out", str(tmp_path / "full.onnx")]) == 0
    weights = _conv_weights(onnx.load(str(tmp_path / "full.onnx")).graph)
    assert all(scale.size == 1 for _, scale in weights)  # one scale per tensor
    assert max(np.abs(w.astype(int)).max() for w, _ in weights) == 127  # the full 8-bit range


@pytest.mark.cli
def test_int8_options_need_int8_and_a_known_method(tmp_path, capsys):
    from flexbone.cli import main

    base = ["export", "--model", "resnet8s_tiny", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    assert main([*base, "--int8-full-range"]) == 2
    assert "add --int8" in capsys.readouterr().err
    assert main([*base, "--int8", "--calib-data", "digits", "--int8-calibration", "kl"]) == 2
    assert "minmax, entropy, percentile" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
