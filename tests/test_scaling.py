"""The ResNet-RS scaling rule (flexbone.models.scaling) and `flexbone info resnetrs*`.

The table is the paper's (Bello et al. 2021, Table 7). Its parameter counts are checked against timm's
ResNet-RS models and its FLOPs against flexbone's MAC counter (FLOPs = 2 x MACs, as the paper counts):
two independent sources agreeing with the transcribed numbers.
"""
import json

import pytest
import torch

from flexbone.bench.complexity import count_macs, build_on_meta
from flexbone.cli import main
from flexbone.errors import ConfigError
from flexbone.models.scaling import PAPER_TABLE, paper_training_resolutions, resnetrs_scaling

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("depth", sorted({r.depth for r in PAPER_TABLE}))
def test_paper_params_are_timms(depth):
    with torch.device("meta"):
        n = sum(p.numel() for p in timm.create_model(f"resnetrs{depth}").parameters())
    for row in (r for r in PAPER_TABLE if r.depth == depth):
        assert abs(n / 1e6 - row.params_m) <= 0.5, (row, n)


@pytest.mark.parametrize("row", [pytest.param(r, marks=pytest.mark.slow) if r.depth > 101 else r
                                 for r in PAPER_TABLE], ids=lambda r: f"rs{r.depth}@{r.image_size}")
def test_paper_flops_are_twice_our_macs(row):
    macs = count_macs(build_on_meta(row.model), row.image_size)
    # the paper rounds to 2 significant digits (4.6, 8.4, 12, 18, ...)
    assert abs(2 * macs / 1e9 - row.gflops) <= 0.05 * row.gflops, (row, macs)


def test_long_schedules_scale_depth_with_resolution_slowly():
    # 350 epochs: the best published pair within the budget
    assert (c := resnetrs_scaling(13, 350)).strategy == "depth" and (c.model, c.image_size) == ("resnetrs152", 224)
    assert resnetrs_scaling(2.3, 350).model == "resnetrs50"
    assert (resnetrs_scaling(1000, 350).depth, resnetrs_scaling(1000, 350).image_size) == (420, 320)
    # over the family, depth grows 8x while the resolution only doubles
    picks = [resnetrs_scaling(r.gmacs, 350) for r in PAPER_TABLE]
    assert [(p.depth, p.image_size) for p in picks] == [(r.depth, r.image_size) for r in PAPER_TABLE]
    assert all(p.gmacs <= r.gmacs for p, r in zip(picks, PAPER_TABLE))


def test_short_schedules_scale_width():
    c = resnetrs_scaling(9.2, 10)
    assert c.strategy == "width" and c.depth == 50 and c.image_size == 160
    assert c.width_multiplier == pytest.approx((9.2 / 2.3) ** 0.5)
    assert c.gmacs == pytest.approx(9.2)


@pytest.mark.parametrize("budget,epochs", [(0, 350), (-1, 10), (float("nan"), 10), (1.0, 350), (10, 0)])
def test_bad_inputs_are_user_errors(budget, epochs):
    with pytest.raises(ConfigError):
        resnetrs_scaling(budget, epochs)


def test_training_resolutions():
    assert paper_training_resolutions("resnetrs101") == [160, 192]
    assert paper_training_resolutions("resnetrs350") == [256, 320]
    assert paper_training_resolutions("resnet50") == []


@pytest.mark.cli
def test_info_shows_the_paper_resolution(capsys):
    assert main(["info", "resnetrs152", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["paper_train_img_sizes"] == [192, 224, 256]
    assert main(["info", "resnetrs50"]) == 0
    assert "trained at    160 px in the paper" in capsys.readouterr().out
