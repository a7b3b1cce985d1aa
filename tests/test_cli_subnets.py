"""`flexbone subnets`: sampled sub-networks of a trained (toy) supernet on digits, CSV + Pareto plot, errors."""
import csv
import random

import pytest
import torch

from flexbone.checkpoint import save_state_dict
from flexbone.cli import main
from flexbone.cli.subnets import pareto_front, sample_subnets
from flexbone.config import load_recipe
from flexbone.elastic import SubnetConfig
from flexbone.models import create_model
from flexbone.train import engine
from test_elastic_training import DIGITS, SUPERNET, TOY

pytestmark = pytest.mark.cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy OFA-MobileNetV3 after two sandwich steps on digits: a flexbone run's model.safetensors."""
    out = tmp_path_factory.mktemp("supernet")
    recipe = load_recipe("sandwich_mbv3", {**DIGITS, "schedule.epochs": 1, "train.output_dir": str(out),
                                           "train.run_name": "run"})
    return engine.run(recipe, progress=False, quiet=True).weights


def _subnets(tmp_path, *extra):
    return main(["subnets", "--data", "digits", "--out", str(tmp_path / "subnets.csv"), "--bn-batches", "2",
                 "--batch-size", "64", "--workers", "0", "--no-progress", "--threads", "1", *extra])


@pytest.mark.slow
def test_subnets_writes_configs_macs_params_top1_and_a_pareto_plot(tmp_path, trained, capsys):
    assert _subnets(tmp_path, "--checkpoint", str(trained), "--n", "4", "--seed", "3") == 0
    with open(tmp_path / "subnets.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows] == ["min", "max", "random", "random"]
    space = create_model(SUPERNET, **TOY).space
    cfgs = [SubnetConfig.from_json(r["config"]) for r in rows]
    strip = dict(resolution=None)  # evaluated at 16 px, outside the space's 128-224: no resolution recorded
    assert cfgs[0] == space.min().replace(**strip) and cfgs[1] == space.max().replace(**strip)
    assert len({space.canonical(c) for c in cfgs}) == 4 and all(r["img_size"] == "16" for r in rows)
    macs = [int(r["macs"]) for r in rows]
    assert macs[0] < min(macs[2:]) and max(macs[2:]) < macs[1]  # every dimension grows from min to max
    for r, cfg in zip(rows, cfgs):  # params: the static model built from its config, not from the supernet
        static = create_model(f"{SUPERNET}_subnet", subnet=cfg, num_classes=10, **TOY)
        assert int(r["params"]) == sum(p.numel() for p in static.parameters())
        assert 0 <= float(r["top1"]) <= float(r["top5"]) <= 100
    # the Pareto column marks exactly the points that no other point dominates
    top1 = [float(r["top1"]) for r in rows]
    for i, r in enumerate(rows):
        dominated = any(macs[j] <= macs[i] and top1[j] >= top1[i] and (macs[j], top1[j]) != (macs[i], top1[i])
                        for j in range(len(rows)))
        assert (r["pareto"] == "True") == (not dominated)
    png = (tmp_path / "subnets.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "subnets.csv" in printed


def test_pareto_front_keeps_exactly_the_undominated_points():
    rng = random.Random(0)
    macs = [rng.randint(1, 30) for _ in range(60)]
    top1 = [rng.randint(0, 20) * 5.0 for _ in range(60)]  # ties on both axes on purpose
    front = pareto_front(macs, top1)
    expected = {(m, t) for m, t in zip(macs, top1)
                if not any((m2 <= m and t2 > t) or (m2 < m and t2 >= t) for m2, t2 in zip(macs, top1))}
    assert {(macs[i], top1[i]) for i in front} == expected
    assert len(front) == len(expected)  # duplicates of a front point listed once
    assert [macs[i] for i in front] == sorted(macs[i] for i in front)


def test_sample_subnets_min_max_then_distinct_networks():
    space = create_model(SUPERNET, **TOY).space
    picks = sample_subnets(space, 12, seed=1)
    assert [k for k, _ in picks[:2]] == ["min", "max"] and picks[0][1] == space.min() and picks[1][1] == space.max()
    assert len({space.canonical(c.replace(resolution=None)) for _, c in picks}) == 12
    assert picks == sample_subnets(space, 12, seed=1) and picks != sample_subnets(space, 12, seed=2)
    tiny = space.restrict(kernel=[7], expand=[6], depth=[[2, 3]] + [[4]] * 4)  # two networks in all
    assert len(sample_subnets(tiny, 10)) == 2


def test_subnets_errors_speak_to_the_user(tmp_path, capsys):
    weights = tmp_path / "other.safetensors"
    save_state_dict({"classifier.weight": torch.zeros(10, 32), "stem.weight": torch.zeros(3)}, weights)
    cases = [
        (["--supernet", "ofa_mbv3_d234_e346_k357_w10", "--checkpoint", str(weights)], "Did you mean"),
        (["--supernet", "resnet18", "--checkpoint", str(weights)], "resnet18 is not an elastic supernet"),
        (["--supernet", SUPERNET, "--checkpoint", str(weights)], "does not fit ofa_mbv3_d234_e346_k357_w1.0"),
        (["--supernet", SUPERNET, "--checkpoint", str(tmp_path / "missing.pt")], "not found"),
        (["--checkpoint", str(weights)], "pass --supernet NAME"),
    ]
    for args, message in cases:
        assert _subnets(tmp_path, *args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "subnets.csv").exists()
