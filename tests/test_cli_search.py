"""`flexbone search`: a toy supernet trained a few steps on digits; predictor, latency table, search, checked
sub-networks that reload with load_subnet; errors before any work."""
import csv
import json

import pytest
import torch

from flexbone.bench.complexity import count_macs, count_params
from flexbone.cli import main
from flexbone.cli.search import parse_budgets
from flexbone.config import load_recipe
from flexbone.data.datasets import digits_dataset
from flexbone.data.transforms import build_eval_transform
from flexbone.elastic import SubnetConfig, load_subnet
from flexbone.errors import ConfigError
from flexbone.models import create_model
from flexbone.search.predictor import AccuracyPredictor
from flexbone.train import engine
from test_elastic_training import DIGITS, SUPERNET, TOY

pytestmark = pytest.mark.cli
TOY16 = {**TOY, "resolutions": [12, 16]}  # the digits are evaluated at 16 px; --resolutions all searches 12 too


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("supernet")
    # train.memory_check off: its estimate runs the toy net in train mode on one image, and BN refuses the 1x1 maps
    # at 16 px (a bug of the check, reported; it is no part of what this file tests)
    recipe = load_recipe("sandwich_mbv3", {**DIGITS, "model.kwargs": TOY16, "schedule.epochs": 1,
                                           "train.memory_check": False, "train.output_dir": str(out),
                                           "train.run_name": "run"})
    return engine.run(recipe, progress=False, quiet=True).weights


def _search(out, *extra):
    return main(["search", "--data", "digits", "--out", str(out), "--bn-batches", "1", "--batch-size", "128",
                 "--workers", "0", "--threads", "1", "--no-progress", "--warmup", "0", "--repeats", "2",
                 "--population", "16", "--generations", "3", "--pretrain-configs", "200", "--predictor-steps", "50",
                 *extra])


def _static_macs(cfg):
    net = create_model(f"{SUPERNET}_subnet", subnet=cfg, num_classes=10, **TOY16)
    return count_macs(net, 16), count_params(net)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_search_finds_checks_and_saves_a_subnet_per_budget(tmp_path, trained, capsys):
    space = create_model(SUPERNET, **TOY16).space
    (lo, lo_params), (hi, _) = _static_macs(space.min()), _static_macs(space.max())
    macs_limit, params_limit = (lo + hi) / 2, 1.5 * lo_params
    budgets = [f"macs={macs_limit / 1e6:.4f}M", f"latency=1s,params={params_limit / 1e3:.3f}K"]
    out = tmp_path / "found"
    args = ["--checkpoint", str(trained), "--n", "4", "--budget", budgets[0], "--budget", budgets[1]]
    assert _search(out, *args, "--pretrain") == 0
    found = _rows(out / "search.csv")
    assert len(found) == 2 and len(_rows(out / "subnets.csv")) == 4
    # the measured top-1 is that of the saved sub-network, reloaded and evaluated here on the test digits
    data = digits_dataset(False, DIGITS["data.digits_test_fraction"], 0,
                          build_eval_transform(load_recipe("sandwich_mbv3", DIGITS).data))
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    for row, (limit_name, limit) in zip(found, [("macs", macs_limit), ("params", params_limit)]):
        net = load_subnet(out / row["folder"]).eval()
        cfg = SubnetConfig.from_json(row["config"])
        assert cfg in space and json.loads((out / row["folder"] / "config.json").read_text())["subnet"] == cfg.to_dict()
        macs, params = _static_macs(cfg)
        assert (macs, params) == (int(float(row["macs"])), int(float(row["params"])))
        assert {"macs": macs, "params": params}[limit_name] <= limit
        with torch.no_grad():
            top1 = (net(x).argmax(1) == y).float().mean().item() * 100
        assert top1 == pytest.approx(float(row["top1_measured"]), abs=1e-6)
        assert float(row["latency_measured_ms"]) > 0 and 0 <= float(row["top1_predicted"]) <= 100
    assert float(found[1]["latency_predicted_ms"]) <= 1000
    table = json.loads((out / "latency_table.json").read_text())
    assert table["resolutions"] == [16] and table["info"]["batch_size"] == 1
    predictor = AccuracyPredictor.load(out / "predictor.safetensors", space.restrict(resolution=[16]))  # searched at 16
    assert predictor.info["fit"]["configs"] == 4 and predictor.info["pretrained"]["proxies"] == ["macs", "params"]
    png = (out / "search.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "measured top-1" in capsys.readouterr().out
    # again from what the first run built: nothing evaluated to fit, no table timed, the same sub-networks found
    again = tmp_path / "again"
    assert _search(again, *args, "--predictor", str(out / "predictor.safetensors"),
                   "--latency-table", str(out / "latency_table.json")) == 0
    assert not (again / "subnets.csv").exists() and not (again / "latency_table.json").exists()
    assert [r["config"] for r in _rows(again / "search.csv")] == [r["config"] for r in found]


@pytest.mark.slow
def test_search_over_resolutions_evaluates_each_subnet_at_its_own(tmp_path, trained):
    """--resolutions all: the resolution is a gene; sampled and found sub-networks are evaluated at their own size
    (a found one, reloaded and run on the test digits at that size, scores what search.csv says), and the latency
    table covers every searched size."""
    out = tmp_path / "found"
    assert _search(out, "--checkpoint", str(trained), "--n", "6", "--resolutions", "all",
                   "--budget", "latency=1s", "--budget", "macs=1G") == 0
    sampled = _rows(out / "subnets.csv")
    assert {int(r["img_size"]) for r in sampled} == {12, 16}
    assert all(json.loads(r["config"])["resolution"] == int(r["img_size"]) for r in sampled)
    assert json.loads((out / "latency_table.json").read_text())["resolutions"] == [12, 16]
    recipe = load_recipe("sandwich_mbv3", DIGITS)
    for row in _rows(out / "search.csv"):
        size = int(row["img_size"])
        assert SubnetConfig.from_json(row["config"]).resolution == size
        recipe.data.test_img_size = size
        data = digits_dataset(False, DIGITS["data.digits_test_fraction"], 0, build_eval_transform(recipe.data))
        x = torch.stack([data[i][0] for i in range(len(data))])
        y = torch.tensor([data[i][1] for i in range(len(data))])
        assert x.shape[-1] == size
        with torch.no_grad():
            top1 = (load_subnet(out / row["folder"]).eval()(x).argmax(1) == y).float().mean().item() * 100
        assert top1 == pytest.approx(float(row["top1_measured"]), abs=1e-6)


def test_parse_budgets():
    assert parse_budgets(["macs=300M", "latency=20ms,params=3M"]) == [{"macs": 3e8}, {"latency": 20.0, "params": 3e6}]
    with pytest.raises(ConfigError, match="macs is limited twice"):
        parse_budgets(["macs=3M,macs=4M"])


def test_search_errors_come_before_any_work(tmp_path, trained, capsys):
    space = create_model(SUPERNET, **TOY16).space
    lo, _ = _static_macs(space.min())
    other = AccuracyPredictor(space.restrict(kernel=[3, 5]), hidden=8)
    other.save(tmp_path / "other.safetensors")
    ck = ["--checkpoint", str(trained)]
    cases = [
        (ck + ["--budget", "flops=3M"], "unknown metric 'flops'; the metrics are: macs, params, latency"),
        (ck + ["--budget", f"macs={lo / 2e6:.4f}M"], f"cannot be met: the smallest sub-network of {SUPERNET} costs "
                                                    f"macs = {lo:g}"),
        (ck + ["--budget", "macs=1G", "--predictor", str(tmp_path / "other.safetensors")],
         "fitted for another search space"),
        (ck + ["--budget", "macs=1G", "--img-size", "24"], "not a resolution of"),
        (ck + ["--budget", "macs=1G", "--resolutions", "12,24"], "--resolutions: 24 is not a resolution of"),
        (ck + ["--budget", "macs=1G", "--resolutions", "twelve"], "give sizes joined by commas"),
    ]
    for args, message in cases:
        assert _search(tmp_path / "out", *args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "other.safetensors"]  # no out/, no temp
    with pytest.raises(SystemExit):  # argparse: the range in the message
        _search(tmp_path / "out", *ck, "--budget", "macs=1G", "--n", "1")
    assert "--n: must be an integer >= 2, got 1" in capsys.readouterr().err
