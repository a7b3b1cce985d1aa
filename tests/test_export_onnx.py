"""Export (flexbone.export, `flexbone export`): every family to ONNX, checked in onnxruntime; pt2; safetensors.

The reference for each artifact is the PyTorch model it came from, run by an independent runtime
(onnxruntime for ONNX, ``torch.export.load`` for pt2, ``create_model`` + a strict load for safetensors).
Inputs are tiny (32-64 px, the smallest variant of each family).
"""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

import flexbone
from flexbone.cli import main
from flexbone.elastic import save_subnet
from flexbone.errors import ConfigError, ExportError
from flexbone.export import fold_bn
from flexbone.export.artifact import export_model, read_sidecar
from flexbone.export.check import real_images
from flexbone.export.onnx import export_onnx
from flexbone.export.source import ExportSource, load_source

from _helpers import randomize_


def _ofa_subnet(name="ofa_mbv3_d234_e346_k357_w1.0"):
    net = flexbone.create_model(name, num_classes=10)
    net.set_active(net.space.sample(1))
    return net.extract()


# one model of every family; (builder, image size)
FAMILIES = {
    "resnet": (lambda: flexbone.create_model("resnet18d"), 64),
    "resnet_rs": (lambda: flexbone.create_model("resnetrs50"), 32),  # SE, stride-2 conv stem, avg-pool shortcut
    "mobilenetv2": (lambda: flexbone.create_model("mobilenetv2_035"), 64),
    "mobilenetv3": (lambda: flexbone.create_model("mobilenetv3_small_050"), 64),
    "pvt_v1": (lambda: flexbone.create_model("pvt_tiny"), 64),  # spatial-reduction attention, position embeddings
    "pvt_v2": (lambda: flexbone.create_model("pvt_v2_b0"), 64),
    "vovnet": (lambda: flexbone.create_model("ese_vovnet19b_dw"), 64),
    "cbnet": (lambda: flexbone.create_model("cb_resnet18"), 64),  # composite; returns a pyramid
    "ofa_mbv3_subnet": (_ofa_subnet, 64),
    "features_only": (lambda: flexbone.create_model("resnet18", features_only=True, out_indices=(1, 2, 3)), 64),
}


def _ort_outputs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


_SLOW = {"resnet_rs", "cbnet", "ofa_mbv3_subnet"}  # 35M parameters, two backbones, a supernet to build


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in _SLOW else f for f in FAMILIES])
def test_every_family_exports_to_onnx_and_matches_onnxruntime(family, tmp_path):
    build, size = FAMILIES[family]
    model = randomize_(build(), keep_random_init=True).eval()
    x = torch.randn(2, 3, size, size)
    path = tmp_path / "m.onnx"
    result = export_onnx(model, path, {"random": x}, what=family, dynamic_batch=True)
    assert result["max_abs_diff"]["random"] < 1e-4
    onnx.checker.check_model(onnx.load(str(path)))
    # independently of the exporter's own check: onnxruntime on a new input, another batch size
    y = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = model(y)
    ref = ref if isinstance(ref, list) else [ref]
    got = _ort_outputs(path, y)
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert g.shape == tuple(r.shape)
        assert np.abs(g - r.numpy()).max() < 1e-4 * max(1.0, r.abs().max().item())


def test_folded_model_exports_with_fewer_nodes(tmp_path):
    model = randomize_(flexbone.create_model("mobilenetv3_small_050"), keep_random_init=True).eval()
    x = torch.randn(1, 3, 64, 64)
    export_onnx(model, tmp_path / "plain.onnx", {"random": x}, what="m")
    export_onnx(fold_bn(model, x), tmp_path / "folded.onnx", {"random": x}, what="m")
    plain, folded = onnx.load(str(tmp_path / "plain.onnx")), onnx.load(str(tmp_path / "folded.onnx"))
    # the TorchScript exporter folds eval-mode BNs into convs itself; the folded model must not be worse
    assert len(folded.graph.node) <= len(plain.graph.node)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    ref = fold_bn(model, x)(x).detach().numpy()
    assert np.abs(_ort_outputs(tmp_path / "folded.onnx", x)[0] - ref).max() < 1e-4


def test_real_input_is_a_photograph():
    pre = {"input_size": [3, 48, 48], "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear",
           "crop_pct": 1.0}
    x = real_images(3, pre)
    assert x.shape == (3, 3, 48, 48)
    assert torch.equal(x[0], x[2]) and not torch.equal(x[0], x[1])  # two photographs, cycled
    assert x.std() > 0.3  # a real picture, not a constant


def test_unexportable_op_names_the_op_and_model(tmp_path):
    class Bessel(nn.Module):
        def forward(self, x):
            return torch.special.i0(x)

    with pytest.raises(ExportError, match=r"my_model: torch.onnx cannot export the operator aten::i0"):
        export_onnx(Bessel(), tmp_path / "b.onnx", {"random": torch.randn(1, 3, 8, 8)}, what="my_model")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_wrong_artifact_is_refused_and_not_written(tmp_path, monkeypatch):
    """If onnxruntime disagrees with the model, the export fails and leaves nothing at --out."""
    import flexbone.export.onnx as onnx_export

    real_runner = onnx_export.ort_runner
    monkeypatch.setattr(onnx_export, "ort_runner", lambda s: (lambda x: [o + 1e-3 for o in real_runner(s)(x)]))
    model = flexbone.create_model("resnet8s_tiny", num_classes=4).eval()
    with pytest.raises(ExportError, match="differs from the model by 0.001"):
        export_onnx(model, tmp_path / "m.onnx", {"random": torch.randn(1, 3, 16, 16)}, what="resnet8s_tiny")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_pt2_dynamic_batch_reloads_and_matches(tmp_path):
    source = load_source("resnet8s_tiny", num_classes=7)
    meta = export_model(source, tmp_path / "m.pt2", "pt2", img_size=16, dynamic_batch=True, fold=True,
                        log=lambda s: None)
    assert meta["check"]["max_abs_diff"]["random"] < 1e-4
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert (program(x) - source.model(x)).abs().max() < 1e-4
    assert read_sidecar(tmp_path / "m.pt2")["dynamic_batch"] is True


def test_safetensors_rebuilds_through_create_model(tmp_path):
    from flexbone.train.checkpoint import model_from_checkpoint

    net = flexbone.create_model("ofa_mbv3_d234_e346_k357_w1.0", num_classes=5)
    net.set_active(net.space.sample(3))
    subnet_dir = tmp_path / "sub"
    save_subnet(net, subnet_dir)
    source = load_source(subnet=subnet_dir)
    meta = export_model(source, tmp_path / "w.safetensors", "safetensors", img_size=32, log=lambda s: None)
    assert meta["subnet"] == net.active_config.to_dict() and meta["supernet"] == net.name
    rebuilt, header = model_from_checkpoint(tmp_path / "w.safetensors")
    rebuilt2 = flexbone.create_model(meta["model"], pretrained=tmp_path / "w.safetensors", **meta["kwargs"]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = net.extract().eval()(x)
        assert torch.equal(rebuilt(x), ref) and torch.equal(rebuilt2(x), ref)
    with pytest.raises(ConfigError, match="--fold-bn"):
        export_model(source, tmp_path / "f.safetensors", "safetensors", fold=True)


# ----------------------------------------------------------------------------------------- command line
def _trained_checkpoint(tmp_path):
    """A weights file as `flexbone train` writes it: class names and preprocessing in the metadata."""
    from flexbone.train.checkpoint import save_model_weights

    model = randomize_(flexbone.create_model("resnet8s_tiny", num_classes=3), keep_random_init=True)
    meta = {"model": "resnet8s_tiny", "num_classes": 3, "class_names": ["cat", "dog", "fox"], "img_size": 24,
            "test_img_size": 24, "crop_pct": 1.0, "interpolation": "bicubic", "mean": [0.4, 0.4, 0.4],
            "std": [0.3, 0.3, 0.3], "model_kwargs": {}}
    path = tmp_path / "model.safetensors"
    save_model_weights(model.state_dict(), path, meta)
    return path, model.eval()


@pytest.mark.cli
def test_cli_onnx_sidecar_and_onnxruntime(tmp_path, capsys):
    ckpt, model = _trained_checkpoint(tmp_path)
    out = tmp_path / "deploy" / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--fold-bn", "--dynamic-batch",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference to the PyTorch model on the photo input" in printed
    side = json.loads((tmp_path / "deploy" / "m.onnx.json").read_text())
    assert side["class_names"] == ["cat", "dog", "fox"] and side["input_size"] == [3, 24, 24]
    assert side["interpolation"] == "bicubic" and side["crop_pct"] == 1.0 and side["mean"] == [0.4] * 3
    assert side["versions"]["flexbone"] == flexbone.__version__ and side["fold_bn"] is True
    x = torch.randn(4, 3, 24, 24)
    with torch.no_grad():
        assert np.abs(_ort_outputs(out, x)[0] - model(x).numpy()).max() < 1e-4
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.json"]  # no temporary left


def test_help_example_names_the_quickstart_run_folder():
    """The first `flexbone export --help` example's glob matches the folder `flexbone train --recipe quickstart`
    (and `flexbone demo`) creates (it read runs/quickstart-*, which matches no run folder)."""
    import fnmatch
    import re

    from flexbone.cli.export import EPILOG
    from flexbone.config import load_recipe
    from flexbone.train.engine import default_run_name

    globs = re.findall(r"--checkpoint (runs/\S*quickstart\S*)/model\.safetensors", EPILOG)
    run_dir = f"runs/{default_run_name(load_recipe('quickstart'), 'quickstart')}"
    assert globs and all(fnmatch.fnmatch(run_dir, g) for g in globs), (globs, run_dir)


@pytest.mark.cli
@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet8s_tiny", "--format", "tflite"], "unknown export format 'tflite'"),
    (["--model", "resnet8s_tiny", "--format", "safetensors", "--fold-bn"], "--fold-bn"),
    (["--model", "resnet8s_tiny", "--format", "pt2", "--int8", "--calib-data", "digits"], "--int8 quantizes an ONNX"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--int8"], "--int8 needs --calib-data"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--opset", "99"], "--opset must be in"),
    (["--format", "onnx"], "nothing to export"),
])
def test_cli_bad_options_one_line_exit_2(argv, message, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.cli
def test_cli_unwritable_out_and_checkpoint_mismatch(tmp_path, capsys):
    ckpt, _ = _trained_checkpoint(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(blocker / "m.onnx")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["export", "--model", "resnet10s", "--checkpoint", str(ckpt), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.cli
def test_cli_unexportable_model_names_op_and_model(tmp_path, capsys, monkeypatch):
    import flexbone.export.source as source_module

    class Bessel(nn.Module):
        num_classes = 0

        def forward(self, x):
            return torch.special.i0(x)

    monkeypatch.setattr(source_module, "load_source",
                        lambda *a, **k: ExportSource(Bessel(), "bessel_net", metadata={"img_size": 8}))
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "bessel_net", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("flexbone: error: bessel_net: torch.onnx cannot export the operator aten::i0 at opset 17 "
                   "(try another --opset, or report the model)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.cli
def test_cli_without_onnxruntime_says_how_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    assert main(["export", "--model", "resnet8s_tiny", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'flexbone[export]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
