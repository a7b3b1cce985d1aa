"""data.holdout_fraction: checkpoint-best is chosen on training images kept apart; the test split is used once."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from flexbone.cli import main
from flexbone.config import load_recipe
from flexbone.data.datasets import digits_dataset
from flexbone.data.loader import build_datasets, build_loaders

TINY = {"data.img_size": 8, "data.test_img_size": 8, "data.batch_size": 32, "schedule.epochs": 2,
        "train.max_steps_per_epoch": 2}


def test_holdout_is_a_stratified_part_of_the_training_split_with_the_eval_transform():
    recipe = load_recipe("quickstart", {**TINY, "data.holdout_fraction": 0.1})
    train, holdout, test, classes = build_datasets(recipe, with_holdout=True)
    full_train = digits_dataset(True, 0.2, 0)
    assert len(train) + len(holdout) == len(full_train) and len(test) == 359
    # every hold-out image is a training scan, none of them is trained on (compare raw pixels)
    raw = {bytes(im.numpy()) for im in full_train.images}
    trained = Counter(bytes(im.numpy()) for im in train.images)
    normalise = torch.tensor(recipe.data.std).view(3, 1, 1), torch.tensor(recipe.data.mean).view(3, 1, 1)
    held = [torch.round((holdout[i][0] * normalise[0] + normalise[1]) * 255).to(torch.uint8) for i in range(len(holdout))]
    assert all(bytes(h.numpy()) in raw for h in held)  # the eval transform (normalise only) was applied
    # per class about a tenth (stratified), as numpy's count of the labels says
    labels = full_train.targets.numpy()
    held_labels = np.bincount([holdout[i][1] for i in range(len(holdout))], minlength=10)
    assert np.abs(held_labels - np.round(np.bincount(labels) * 0.1)).max() == 0
    # trained + held out = the training split, image for image (nothing lost, nothing in both)
    assert trained + Counter(bytes(h.numpy()) for h in held) == Counter(bytes(im.numpy()) for im in full_train.images)


def test_no_holdout_keeps_the_old_loaders():
    recipe = load_recipe("quickstart", {**TINY, "data.holdout_fraction": 0.0})
    train_loader, holdout_loader, eval_loader, n, _ = build_loaders(recipe, with_holdout=True)
    assert holdout_loader is None and n == 10 and len(train_loader.dataset) == 1438


@pytest.mark.cli
def test_train_chooses_on_the_holdout_and_reports_test_once(capsys, tmp_path, monkeypatch):
    from flexbone.train import engine

    seen = []
    real = engine.evaluate

    def evaluate(model, loader, *a, **k):
        seen.append(len(loader.dataset))
        return real(model, loader, *a, **k)

    monkeypatch.setattr(engine, "evaluate", evaluate)
    args = [f"--{k}={v}" for k, v in TINY.items()]
    assert main(["train", "--recipe", "quickstart", *args, "--data.holdout_fraction", "0.1", "--no-progress",
                 "--threads", "1", "--train.output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    holdout, test = 143, 359
    assert seen == [holdout, holdout, test]  # one selection pass per epoch, the test split once
    assert "hold-out top-1" in out and f"({test} images, the final model, evaluated once; checkpoint-best chosen " \
                                      f"on {holdout} hold-out images" in out


def test_holdout_fraction_is_range_checked(capsys, tmp_path):
    assert main(["train", "--recipe", "quickstart", "--data.holdout_fraction", "1.0",
                 "--train.output_dir", str(tmp_path)]) == 2
    assert "data.holdout_fraction must be in [0, 1)" in capsys.readouterr().err
