"""`flexbone train / validate / predict` end to end on the bundled digits (a few steps)."""
import json

import pytest
from PIL import Image

from flexbone.cli import main

pytestmark = pytest.mark.cli

TINY = ["--data.img_size", "8", "--data.test_img_size", "8", "--data.batch_size", "32", "--schedule.epochs", "2",
        "--train.max_steps_per_epoch", "4", "--optim.lr", "0.2", "--no-progress"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(out),
                 "--train.run_name", "cli"]) == 0
    return out / "cli"


def _digit_images():
    """The quickstart's test split as (N, 8, 8) uint8 grey images and labels."""
    from flexbone.data.datasets import digits_dataset

    test = digits_dataset(train=False, test_fraction=0.2, split_seed=0)  # quickstart.yaml's split
    return test.images[:, 0].numpy(), test.targets.numpy()


def test_train_writes_a_run(trained_run):
    for name in ("recipe.yaml", "checkpoint-last.pt", "model.safetensors", "metrics.csv", "curves.png"):
        assert (trained_run / name).is_file(), name
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[-1]["step"] == 8


def test_resume_of_a_finished_run_trains_no_further(trained_run, capsys):
    # a finished run resumed with the same recipe has nothing left to do
    assert main(["train", "--resume", str(trained_run), "--no-progress"]) == 0
    assert "resumed" in capsys.readouterr().out
    rows = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_validate_agrees_with_the_run_and_with_an_image_folder(trained_run, tmp_path, capsys):
    from flexbone.train.checkpoint import read_metadata

    # the run's test top-1 (the final model on the test scans; the epochs chose on the quickstart's hold-out split)
    final = read_metadata(trained_run / "model.safetensors")
    assert main(["validate", "--checkpoint", str(trained_run / "model.safetensors"), "--data", "digits",
                 "--json"]) == 0
    on_digits = json.loads(capsys.readouterr().out)
    assert on_digits["top1"] == pytest.approx(final["top1"]) and on_digits["images"] == len(_digit_images()[1])
    # the same test images as PNG files in an image folder (val/<class>/...): the folder code path
    images, labels = _digit_images()
    for i, (im, label) in enumerate(zip(images, labels)):
        (tmp_path / "val" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(tmp_path / "val" / str(label) / f"{i}.png")
    assert main(["validate", "--model", "resnet8s_tiny", "--checkpoint", str(trained_run / "checkpoint-last.pt"),
                 "--data", str(tmp_path), "--workers", "0", "--json"]) == 0
    on_folder = json.loads(capsys.readouterr().out)
    assert on_folder["images"] == on_digits["images"] and on_folder["top1"] == pytest.approx(on_digits["top1"])
    assert on_folder["top5"] == pytest.approx(on_digits["top5"])


def test_predict_labels_from_checkpoint_and_corrupt_image(trained_run, tmp_path, capsys):
    images, labels = _digit_images()
    path = tmp_path / "digit.png"
    Image.fromarray(images[0]).save(path)
    assert main(["predict", "--checkpoint", str(trained_run / "model.safetensors"), str(path), "--topk", "3",
                 "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["topk"]
    assert len(top) == 3 and all(t["label"] == str(t["index"]) for t in top)  # digits' class names are "0".."9"
    assert sum(t["prob"] for t in top) <= 1.0 + 1e-6 and top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    assert main(["predict", "--checkpoint", str(trained_run / "model.safetensors"), str(path), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flexbone: error: cannot read image") and str(bad) in err and "\n" not in err


@pytest.mark.parametrize("argv, expected", [
    (["--recipe", "quickstart", "--optim.lrr", "0.1"], "Did you mean: optim.lr"),
    (["--recipe", "quickstart", "--data.img_sise", "8"], "Did you mean: data.img_size"),
    (["--recipe", "quickstrat"], "Did you mean: quickstart"),
    (["--recipe", "quickstart", "--train.amp", "fp61"], "fp16"),
])
def test_bad_recipe_input_exits_non_zero_with_a_suggestion(argv, expected, capsys, tmp_path):
    assert main(["train", *argv, "--train.output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written for a rejected recipe


def test_train_help_lists_the_shorthands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--resume RUN_DIR" in out and "--optim.lr" in out


def test_demo_trains_the_quickstart_and_says_where_everything_is(tmp_path, capsys, monkeypatch):
    import flexbone.config

    real_load = flexbone.config.load_recipe

    def shortened(name, overrides=None):  # the real recipe, cut to a few steps
        assert name == "quickstart"
        return real_load(name, {**dict(overrides or {}), "schedule.epochs": 1, "train.max_steps_per_epoch": 2})

    monkeypatch.setattr(flexbone.config, "load_recipe", shortened)
    assert main(["demo", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    assert "test top-1" in out
    for name in ("checkpoint-last.pt", "recipe.yaml", "metrics.csv", "curves.png", "model.safetensors"):
        assert str(run_dir / name) in out and (run_dir / name).is_file()
