"""`flexbone compare`: the table, CSV and PNG; fine-tunes on the digits and on an image folder; every option
checked before any work; nothing half-written when a model fails."""
import csv

import pytest
import torch
import yaml
from PIL import Image

import flexbone
from flexbone.bench.complexity import count_macs, count_params
from flexbone.cli import main
from flexbone.config.loader import recipe_path

pytestmark = pytest.mark.cli

FAST = ["--repeats", "1", "--warmup", "0", "--batch-size", "2", "--no-progress"]


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


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_compare_on_digits(tmp_path, tiny_recipe, capsys):
    out = tmp_path / "cmp"
    models = ["resnet8s_tiny", "resnet10s"]
    assert main(["compare", *models, "--data", "digits", "--epochs", "1", "--img-size", "8", "--recipe", tiny_recipe,
                 "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "top-1 (%)" in printed and all(m in printed for m in models)
    rows = _rows(out / "compare.csv")
    assert [r["model"] for r in rows] == models
    for r in rows:
        model = flexbone.create_model(r["model"])
        assert int(r["params"]) == count_params(model)
        assert int(r["macs"]) == count_macs(model, 8)
        assert float(r["latency_b1_ms"]) > 0 and float(r["latency_b2_ms"]) > 0
        assert 0 <= float(r["top1"]) <= 100 and r["epochs"] == "1"
        # the top-1 is the fine-tune's final evaluation on the digits' 359-image test split
        assert round(float(r["top1"]) * 359 / 100, 6).is_integer()
        assert (out / "runs" / r["model"] / "model.safetensors").is_file()
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".cmp.*"))  # no staging folder left behind


def test_compare_on_an_image_folder_from_a_checkpoint(tmp_path, tiny_recipe):
    root = tmp_path / "images"
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(10):  # 20 training images: the quickstart's 10% hold-out keeps 2 to choose on
                pixels = (torch.rand(12, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    weights = tmp_path / "w.pth"
    torch.save(flexbone.create_model("resnet8s_tiny").state_dict(), weights)
    out = tmp_path / "cmp"
    assert main(["compare", "resnet8s_tiny", "--data", str(root), "--epochs", "1", "--img-size", "8",
                 "--recipe", tiny_recipe, "--pretrained", f"resnet8s_tiny={weights}", "--out", str(out), *FAST]) == 0
    (row,) = _rows(out / "compare.csv")
    assert row["pretrained"] == str(weights) and 0 <= float(row["top1"]) <= 100
    recipe = yaml.safe_load((out / "runs" / "resnet8s_tiny" / "recipe.yaml").read_text())
    assert recipe["model"]["num_classes"] in (None, 2) and recipe["data"]["path"] == str(root)


def test_compare_without_data(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "resnet8s_tiny", "--img-size", "8", "--out", str(out), *FAST]) == 0
    (row,) = _rows(out / "compare.csv")
    assert "top1" not in row and int(row["img_size"]) == 8
    assert "top-1" not in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["resnt50"], "Did you mean"),
    (["resnet8s_tiny", "--pretrained", "resnet8s_tiny"], "MODEL=PATH"),
    (["resnet8s_tiny", "--pretrained", "resnet18=w.pth", "--data", "digits"], "not one of the compared models"),
    (["resnet8s_tiny", "--pretrained", "resnet8s_tiny=missing.pth", "--data", "digits"], "no file"),
    (["resnet8s_tiny", "--data", "no/such/folder"], "no such folder"),
    (["resnet8s_tiny", "--data", "digits", "--recipe", "no_such_recipe"], "recipe"),
    (["resnet8s_tiny", "--img-size", "4"], "--img-size"),
    (["resnet8s_tiny", "--device", "tpu"], "--device"),
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


def test_a_failing_model_leaves_nothing(tmp_path, tiny_recipe, capsys):
    # the second model's checkpoint is readable (so not refused up front) but holds no weights of it: its fine-tune
    # fails after the first model finished
    bad = tmp_path / "bad.pth"
    torch.save({"unrelated": torch.zeros(3)}, bad)
    out = tmp_path / "cmp"
    assert main(["compare", "resnet8s_tiny", "resnet10s", "--data", "digits", "--epochs", "1", "--img-size", "8",
                 "--recipe", tiny_recipe, "--pretrained", f"resnet10s={bad}", "--out", str(out), *FAST]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".cmp.*"))
