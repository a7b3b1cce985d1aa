"""`flexbone compare`: the table, CSV and PNG; eager and onnxruntime latency; fine-tunes on the digits and on an
image folder; every option (and every --pretrained file's fit) checked before any work; nothing half-written
when a model fails."""
import csv

import onnx
import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

import flexbone
import flexbone.export
from flexbone.checkpoint import save_state_dict
import flexbone.search.latency as latency_module
from flexbone.bench.complexity import count_macs, count_params
from flexbone.cli import main
from flexbone.cli.compare import check_pretrained_fits
from flexbone.config.loader import recipe_path
from flexbone.errors import CheckpointError

pytestmark = pytest.mark.cli

FAST = ["--repeats", "1", "--warmup", "0", "--batch-size", "2", "--threads", "1", "--no-progress"]


@pytest.fixture
def tiny_recipe(tmp_path):
    """quickstart, cut to 2 optimiser steps of 16 images per epoch (the command's logic, not the training, is
    under test here)."""
    raw = yaml.safe_load(recipe_path("quickstart").read_text())
    raw["data"]["batch_size"] = 16
    raw["train"]["max_steps_per_epoch"] = 2
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture
def timed_onnx(monkeypatch):
    """What onnxruntime timed: each call's ONNX graph (read with the onnx package) and its settings; the real
    timing runs."""
    calls = []
    real = latency_module.time_onnx_file

    def spy(path, in_shape, **kwargs):
        graph = onnx.load(str(path)).graph
        calls.append(dict(kwargs, in_shape=in_shape, ops={n.op_type for n in graph.node},
                          batch_dim=graph.input[0].type.tensor_type.shape.dim[0]))
        return real(path, in_shape, **kwargs)

    monkeypatch.setattr(latency_module, "time_onnx_file", spy)
    return calls


@pytest.fixture
def unexportable(monkeypatch):
    """resnet10s with torch.special.i0 on its logits, an op torch.onnx cannot export (its export really fails)."""
    real = flexbone.export.load_source

    class WithBessel(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.num_classes = model, model.num_classes

        def forward(self, x):
            return torch.special.i0(self.model(x))

    def load_source(name=None, *args, **kwargs):
        source = real(name, *args, **kwargs)
        if name == "resnet10s":
            source.model = WithBessel(source.model).eval()
        return source

    monkeypatch.setattr(flexbone.export, "load_source", load_source)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_compare_on_digits(tmp_path, tiny_recipe, capsys, timed_onnx):
    out = tmp_path / "cmp"
    models = ["resnet8s_tiny", "resnet10s"]
    assert main(["compare", *models, "--data", "digits", "--epochs", "1", "--img-size", "8", "--recipe", tiny_recipe,
                 "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "top-1 (%)" in printed and "eager ms @b2" in printed and "onnxruntime ms @b2" in printed
    assert all(m in printed for m in models)
    rows = _rows(out / "compare.csv")
    assert [r["model"] for r in rows] == models
    for r in rows:
        model = flexbone.create_model(r["model"])
        assert int(r["params"]) == count_params(model)
        assert int(r["macs"]) == count_macs(model, 8)
        for backend in ("eager", "onnxruntime"):
            assert float(r[f"{backend}_latency_b1_ms"]) > 0 and float(r[f"{backend}_latency_b2_ms"]) > 0
        assert r["onnxruntime_error"] == "" and r["threads"] == "1"
        assert 0 <= float(r["top1"]) <= 100 and r["epochs"] == "1"
        # the top-1 is the fine-tune's final evaluation on the digits' 359-image test split
        assert round(float(r["top1"]) * 359 / 100, 6).is_integer()
        assert (out / "runs" / r["model"] / "model.safetensors").is_file()
    # onnxruntime timed one dynamic-batch export per model, BN folded, at batch 1 and 2, with the eager thread count
    assert [(c["batch_size"], c["threads"], c["in_shape"]) for c in timed_onnx] == [(1, 1, (3, 8, 8)),
                                                                                    (2, 1, (3, 8, 8))] * 2
    for call in timed_onnx:
        assert call["batch_dim"].dim_param and not call["batch_dim"].dim_value  # symbolic: any batch
        assert "Conv" in call["ops"] and "BatchNormalization" not in call["ops"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".cmp.*"))  # no staging folder left behind


def test_compare_on_an_image_folder_from_a_checkpoint_of_other_classes(tmp_path, tiny_recipe):
    root = tmp_path / "images"
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(10):  # 20 training images: the quickstart's 10% hold-out keeps 2 to choose on
                pixels = (torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    weights = tmp_path / "w.pth"  # 7 classes, the data has 2: the classifier is re-initialised, the rest loads
    torch.save(flexbone.create_model("resnet8s_tiny", num_classes=7).state_dict(), weights)
    out = tmp_path / "cmp"
    assert main(["compare", "resnet8s_tiny", "--data", str(root), "--epochs", "1", "--img-size", "8",
                 "--recipe", tiny_recipe, "--pretrained", f"resnet8s_tiny={weights}", "--latency-backend", "eager",
                 "--out", str(out), *FAST]) == 0
    (row,) = _rows(out / "compare.csv")
    assert row["pretrained"] == str(weights) and 0 <= float(row["top1"]) <= 100
    recipe = yaml.safe_load((out / "runs" / "resnet8s_tiny" / "recipe.yaml").read_text())
    assert recipe["model"]["num_classes"] in (None, 2) and recipe["data"]["path"] == str(root)


def test_compare_without_data(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "resnet8s_tiny", "--img-size", "8", "--out", str(out), *FAST]) == 0
    (row,) = _rows(out / "compare.csv")
    assert "top1" not in row and int(row["img_size"]) == 8
    assert float(row["onnxruntime_latency_b2_ms"]) > 0
    assert "top-1" not in capsys.readouterr().out


def test_eager_only_exports_nothing(tmp_path, capsys, timed_onnx, monkeypatch):
    monkeypatch.setattr(flexbone.export, "export_model", lambda *a, **k: pytest.fail("exported with eager only"))
    out = tmp_path / "cmp"
    assert main(["compare", "resnet8s_tiny", "--img-size", "8", "--latency-backend", "eager", "--batch-size", "1",
                 "--out", str(out), *FAST]) == 0
    (row,) = _rows(out / "compare.csv")
    assert float(row["eager_latency_b1_ms"]) > 0 and not any(k.startswith("onnxruntime") for k in row)
    assert "onnxruntime" not in capsys.readouterr().out and timed_onnx == []


def test_a_model_that_cannot_be_exported_gets_na_and_the_comparison_goes_on(tmp_path, capsys, unexportable):
    out = tmp_path / "cmp"
    assert main(["compare", "resnet10s", "resnet8s_tiny", "--img-size", "8", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    reason = "torch.onnx cannot export the operator aten::i0 at opset 17"
    table = printed.splitlines()
    (line,) = [t for t in table if t.startswith("resnet10s ")]
    assert "n/a: torch.onnx cannot export" in line  # the cell, cut to fit the table
    assert f"resnet10s: no onnxruntime latency: {reason}" in printed  # the whole reason below it
    bad, good = _rows(out / "compare.csv")
    assert bad["onnxruntime_latency_b1_ms"] == bad["onnxruntime_latency_b2_ms"] == ""
    assert bad["onnxruntime_error"].startswith(reason) and float(bad["eager_latency_b2_ms"]) > 0
    assert good["onnxruntime_error"] == "" and float(good["onnxruntime_latency_b2_ms"]) > 0
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnxruntime_only_fails_on_a_model_that_cannot_be_exported_and_leaves_nothing(tmp_path, capsys,
                                                                                      unexportable):
    out = tmp_path / "cmp"
    assert main(["compare", "resnet8s_tiny", "resnet10s", "--img-size", "8", "--latency-backend", "onnxruntime",
                 "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flexbone: error: resnet10s: no onnxruntime latency: torch.onnx cannot export the "
                          "operator aten::i0") and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".cmp.*"))  # the first model's results are not kept


@pytest.mark.parametrize("argv,message", [
    (["resnt50"], "Did you mean"),
    (["resnet8s_tiny", "--pretrained", "resnet8s_tiny"], "MODEL=PATH"),
    (["resnet8s_tiny", "--pretrained", "resnet18=w.pth", "--data", "digits"], "not one of the compared models"),
    (["resnet8s_tiny", "--pretrained", "resnet8s_tiny=missing.pth", "--data", "digits"], "no file"),
    (["resnet8s_tiny", "--data", "no/such/folder"], "no such folder"),
    (["resnet8s_tiny", "--data", "digits", "--recipe", "no_such_recipe"], "recipe"),
    (["resnet8s_tiny", "--img-size", "4"], "--img-size"),
    (["resnet8s_tiny", "--device", "tpu"], "--device"),
    (["resnet8s_tiny", "--latency-backend", "tensorrt"], "--latency-backend"),
])
def test_bad_options_fail_first_with_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "cmp"
    try:
        code = main(["compare", *argv, "--out", str(out), *FAST])
    except SystemExit as e:  # argparse's own range checks exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_unwritable_out_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["compare", "resnet8s_tiny", "--out", str(tmp_path / "file"), *FAST]) == 2
    assert "not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------- --pretrained fit
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(flexbone.create_model("resnet18").state_dict(), path)
    return str(path)


def test_a_checkpoint_of_another_architecture_is_refused_before_any_measurement(tmp_path, capsys, resnet18_file,
                                                                                  monkeypatch):
    import flexbone.bench.complexity as complexity

    monkeypatch.setattr(complexity, "model_complexity", lambda *a, **k: pytest.fail("measured before the check"))
    out = tmp_path / "cmp"
    # resnet34 has three blocks in layer1 where resnet18 has two: layer1.2.* is the first key the file lacks
    assert main(["compare", "resnet8s_tiny", "resnet34", "--data", "digits", "--pretrained",
                 f"resnet34={resnet18_file}", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"flexbone: error: --pretrained resnet34={resnet18_file} does not fit resnet34: "
                   "layer1.2.conv1.weight is not in the file (" + f"{_missing('resnet18', 'resnet34')} missing, "
                   "0 unexpected, 0 mis-shaped keys)")
    assert not out.exists() and not list(tmp_path.glob(".cmp.*"))


def _missing(have: str, want: str) -> int:
    """Keys of ``want``'s state dict that ``have``'s lacks, counted by torch on the two real models."""
    return len(set(flexbone.create_model(want).state_dict()) - set(flexbone.create_model(have).state_dict()))


def test_pretrained_fit_is_what_the_fine_tunes_load_accepts(tmp_path, resnet18_file):
    """The up-front check agrees with create_model(pretrained=...), the fine-tune's load, on real files."""
    ten_classes = tmp_path / "ten.safetensors"
    save_state_dict(flexbone.create_model("resnet18", num_classes=10).state_dict(), ten_classes)
    for name, path in [("resnet18", resnet18_file), ("resnet18", str(ten_classes))]:
        check_pretrained_fits(name, path, {})  # another number of classes: accepted
        flexbone.create_model(name, pretrained=path, num_classes=3)
    narrow = tmp_path / "narrow.pth"
    torch.save(flexbone.create_model("resnet8s_tiny").state_dict(), narrow)
    # resnet8s_tiny's stages are (64, 32, 32, 64) channels wide, resnet10s's (64, 128, 256, 512)
    with pytest.raises(CheckpointError, match=r"resnet10s: layer2\.0\.conv1\.weight has shape \(32, 64, 3, 3\) in "
                                              r"the file, \(128, 64, 3, 3\) in the model"):
        check_pretrained_fits("resnet10s", str(narrow), {})
    with pytest.raises(CheckpointError):  # and the fine-tune's own load refuses it too
        flexbone.create_model("resnet10s", pretrained=str(narrow), num_classes=3)
