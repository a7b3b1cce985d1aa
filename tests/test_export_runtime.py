"""`flexbone validate --onnx` / `flexbone predict --onnx`: the exported artifact, run in onnxruntime on the
same data, gives what the checkpoint gives (fp32: the same top-1, losses within rounding)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import flexbone
from flexbone.cli import main
from flexbone.export.runtime import OnnxModel
from flexbone.train.checkpoint import save_model_weights

from _helpers import randomize_

META = {"model": "resnet8s_tiny", "num_classes": 10, "class_names": [f"digit{i}" for i in range(10)],
        "img_size": 8, "test_img_size": 8, "crop_pct": 1.0, "interpolation": "bilinear",
        "mean": [0.306] * 3, "std": [0.376] * 3, "model_kwargs": {}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A digits-shaped checkpoint and its ONNX export with a fixed batch of 4 (so the runner must chunk)."""
    tmp = tmp_path_factory.mktemp("rt")
    torch.manual_seed(0)
    model = randomize_(flexbone.create_model("resnet8s_tiny", num_classes=10), keep_random_init=True)
    ckpt = tmp / "model.safetensors"
    save_model_weights(model.state_dict(), ckpt, META)
    onnx_path = tmp / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--batch-size", "4",
                 "--out", str(onnx_path)]) == 0
    return ckpt, onnx_path, model.eval()


def test_runner_chunks_a_fixed_batch(exported):
    _, onnx_path, model = exported
    runner = OnnxModel(onnx_path)
    assert runner.batch_size == 4 and runner.metadata()["class_names"] == META["class_names"]
    x = torch.randn(7, 3, 8, 8)  # one full chunk and one padded
    with torch.no_grad():
        ref = model(x)
    out = runner(x)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-4


@pytest.mark.cli
def test_validate_onnx_equals_checkpoint(exported, capsys):
    ckpt, onnx_path, _ = exported
    results = []
    for flag, path in (("--checkpoint", ckpt), ("--onnx", onnx_path)):
        assert main(["validate", flag, str(path), "--data", "digits", "--batch-size", "50", "--workers", "0",
                     "--device", "cpu", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    a, b = results
    assert a["images"] == b["images"] == 359 and a["top1"] == b["top1"] and a["top5"] == b["top5"]
    assert abs(a["loss"] - b["loss"]) < 1e-4
    assert b["checkpoint"] == str(onnx_path) and b["img_size"] == 8


@pytest.mark.cli
def test_predict_onnx_equals_checkpoint(exported, tmp_path, capsys):
    from sklearn.datasets import load_digits

    ckpt, onnx_path, _ = exported
    digits = load_digits()
    files = []
    for i in range(3):
        f = tmp_path / f"d{i}.png"
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).convert("RGB").save(f)
        files.append(str(f))
    outputs = []
    for flag, path in (("--checkpoint", ckpt), ("--onnx", onnx_path)):
        assert main(["predict", flag, str(path), *files, "--topk", "3", "--json"]) == 0
        outputs.append([json.loads(line) for line in capsys.readouterr().out.strip().splitlines()])
    for a, b in zip(*outputs):
        assert [t["label"] for t in a["topk"]] == [t["label"] for t in b["topk"]]
        assert a["topk"][0]["label"].startswith("digit")
        assert all(abs(p["prob"] - q["prob"]) < 1e-4 for p, q in zip(a["topk"], b["topk"]))


@pytest.mark.cli
def test_onnx_errors_are_one_line(exported, tmp_path, capsys):
    _, onnx_path, _ = exported
    assert main(["validate", "--onnx", str(onnx_path), "--data", "digits", "--img-size", "16", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "takes 8x8 px images, got 16x16" in err and len(err.splitlines()) == 1
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(onnx_path.read_bytes())  # no sidecar beside it
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["predict", "--onnx", str(lone), str(image)]) == 2
    assert "no sidecar" in capsys.readouterr().err
