"""`flexbone demo elastic`: its recipe, its arguments and its report (the whole demo takes minutes: not run here;
`make demo-elastic` runs it)."""
from __future__ import annotations

import argparse
import json

import pytest

from flexbone.cli import build_parser
from flexbone.cli.demo_elastic import NAME, _halves, better_sampled, digits_recipe, plot_report, report_markdown


def test_demo_defaults_to_the_quickstart_and_elastic_is_a_choice():
    parser = build_parser()
    assert parser.parse_args(["demo"]).which == "quickstart"
    args = parser.parse_args(["demo", "elastic", "--epochs", "3", "--n", "10"])
    assert (args.which, args.epochs, args.n, args.generations) == ("elastic", 3, 10, 500)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "elastic", "--n", "2"])


def test_the_demo_recipe_is_deps_on_the_registered_digits_supernet(tmp_path):
    recipe = digits_recipe(argparse.Namespace(epochs=5, seed=1), tmp_path)
    assert (recipe.model.name, recipe.elastic.strategy, recipe.data.dataset) == (NAME, "deps", "digits")
    assert recipe.schedule.epochs == 5 and recipe.train.seed == 1
    assert tuple(recipe.elastic.resolutions) == (24,)  # see demo_elastic.RESOLUTIONS


def test_test_digits_split_into_two_disjoint_halves(tmp_path):
    recipe = digits_recipe(argparse.Namespace(epochs=2, seed=0), tmp_path)
    search, report = _halves(recipe, 16, seed=0)
    a = {tuple(x.flatten().tolist()) for images, _ in search for x in images}
    b = {tuple(x.flatten().tolist()) for images, _ in report for x in images}
    assert sum(len(y) for _, y in search) + sum(len(y) for _, y in report) == 359
    assert search[0][0].shape[-1] == 16 and len(a & b) <= 3  # a few digit scans are identical images


def test_report_files(tmp_path):
    rows = [dict(latency_ms=1.0 + i, top1=80.0 + i) for i in range(5)]
    chosen = [dict(budget_ms=2.5, config=json.dumps({"depth": [2, 2, 2, 2, 2]}), resolution=16, predicted_top1=82.0,
                   top1_report_half=81.0, top1_search_half=83.0, table_ms=2.4, measured_ms=2.6, macs=1e6,
                   onnx_top1_report_half=81.0, onnx_ms=0.4, onnx_max_abs_diff=2e-6, onnx="chosen/budget1/model.onnx",
                   params=2e5, folder="chosen/budget1")]
    budgets = [{"latency": 2.5}]
    assert plot_report(rows, chosen, budgets, tmp_path / "r.png").stat().st_size > 1000
    summary = dict(supernet=NAME, epochs=2, seed=0, max_net_top1_full_test=90.0, threads=2, generations=5,
                   wall_s=10.0, table=dict(device="cpu", threads=2, batch_size=1, torch_version="x", parts_timed=9),
                   evaluated=[{**r, "config": "{}"} for r in rows], chosen=chosen)
    md = report_markdown(summary, budgets)
    assert "| 2.50 | 16 | [2, 2, 2, 2, 2] | search | 82.0 | 81.0 | 83.0 | 2.40 | 2.60 | 81.0 | 0.400 |" in md
    assert "report.png" in md and "chosen/budget1/model.onnx" in md


def test_an_evaluated_sample_replaces_a_found_subnet_only_when_it_fits_and_scored_better():
    rows = [dict(config="a", latency_ms=2.0, top1=90.0), dict(config="b", latency_ms=3.0, top1=95.0),
            dict(config="c", latency_ms=5.0, top1=99.0)]
    assert better_sampled(rows, 3.5, 92.0)["config"] == "b"  # c scores more but breaks the budget
    assert better_sampled(rows, 3.5, 95.0) is None  # a tie keeps the found one
    assert better_sampled(rows, 1.0, 10.0) is None  # nothing evaluated fits


def test_a_chosen_subnet_is_exported_with_the_digits_preprocessing_and_runs_in_onnxruntime(tmp_path):
    """The demo's export step: the saved sub-network becomes model.onnx whose onnxruntime logits equal the PyTorch
    sub-network's on real test digits, with the digits' normalisation, size and class names in its sidecar."""
    import torch

    from flexbone.elastic import save_subnet
    from flexbone.export.artifact import export_model, read_sidecar
    from flexbone.export.runtime import OnnxModel
    from flexbone.export.source import load_source
    from flexbone.cli.demo_elastic import _export_chosen
    from flexbone.models import create_model

    torch.manual_seed(0)
    net = create_model(NAME, num_classes=10).eval()
    cfg = net.space.min().replace(resolution=16)
    net.set_active(cfg)
    sub = net.extract().eval()
    folder = save_subnet(sub, tmp_path / "budget1")
    recipe = digits_recipe(argparse.Namespace(epochs=2, seed=0), tmp_path)
    onnx = _export_chosen(folder, recipe, 16, export_model, load_source)
    assert onnx["path"] == folder / "model.onnx" and onnx["max_abs_diff"] < 1e-4
    side = read_sidecar(onnx["path"])
    assert side["input_size"] == [3, 16, 16] and side["mean"] == list(recipe.data.mean) and side["crop_pct"] == 1.0
    assert side["class_names"] == [str(d) for d in range(10)] and side["subnet"] == cfg.to_dict()
    images, _ = _halves(recipe, 16, seed=0)[1][0]
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(onnx["path"])(images[:8]), sub(images[:8]), atol=1e-4, rtol=1e-4)
