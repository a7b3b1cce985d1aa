"""The command line: list, info, bench, tour; one-line errors with exit status 2 for user mistakes.

Numbers are checked against external references: torchvision's published parameter counts and MACs,
timm's feature pyramid and feature-map shapes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from flexbone.cli import build_parser, main

pytestmark = pytest.mark.cli

TV_RESNET18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta  # num_params, _ops (GMACs at 224)


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_user_error(rc, err, *fragments):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("flexbone: error:")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0]


# ------------------------------------------------------------------------------------------ --help
def test_help_lists_every_command_with_a_description():
    exe = Path(sys.executable).with_name("flexbone")  # the console script of this environment
    env = {**os.environ, "COLUMNS": "200"}  # a wide terminal: argparse then wraps no description
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, check=True,
                         env=env).stdout
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = {c.dest: c.help for c in sub._choices_actions}
    assert {"list", "info", "bench", "demo", "tour"} <= set(commands)
    flat = " ".join(out.split())  # a long command name puts its description on the next line
    for name, help_text in commands.items():
        assert help_text, f"command {name} has no description"
        assert f" {name} {' '.join(help_text.split())}" in flat, f"{name} missing from --help:\n{out}"


# -------------------------------------------------------------------------------------------- list
def test_list_json_matches_torchvision(capsys):
    rc, out, _ = _run(capsys, "list", "resnet18", "--json")
    assert rc == 0
    (row,) = json.loads(out)
    assert row["name"] == "resnet18" and row["family"] == "resnet"
    assert row["params"] == TV_RESNET18["num_params"]
    assert row["macs"] / 1e9 == pytest.approx(TV_RESNET18["_ops"], rel=0.02)


def test_list_table(capsys):
    rc, out, _ = _run(capsys, "list", "resnet18*")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "family", "params"] and "MACs (G) @224" in lines[0]
    row = next(ln.split() for ln in lines if ln.startswith("resnet18 "))
    assert row[1] == "resnet"
    assert float(row[2]) == pytest.approx(TV_RESNET18["num_params"] / 1e6, abs=0.005)
    assert float(row[3]) == pytest.approx(TV_RESNET18["_ops"], abs=0.01)
    assert any(ln.startswith("resnet18d ") for ln in lines)


def test_list_no_macs_and_names(capsys):
    rc, out, _ = _run(capsys, "list", "resnet1*", "--no-macs")
    assert rc == 0 and "MACs" not in out and "resnet18" in out
    rc, out, _ = _run(capsys, "list", "resnet1*", "--names")
    assert rc == 0
    assert out.split() == sorted(out.split()) and {"resnet18", "resnet101"} <= set(out.split())


@pytest.mark.parametrize("argv, fragment", [
    (["list", "nosuchnet*"], "no model matches pattern 'nosuchnet*'"),
    (["list", "resnet"], "Try 'resnet*'"),
    (["list", "resnt50"], "Did you mean: resnet50"),
])
def test_list_without_match_is_a_user_error(capsys, argv, fragment):
    rc, _, err = _run(capsys, *argv)
    _assert_user_error(rc, err, fragment)


# -------------------------------------------------------------------------------------------- info
def test_info_json_matches_torchvision_and_timm(capsys):
    timm = pytest.importorskip("timm")
    rc, out, _ = _run(capsys, "info", "resnet18", "--img-size", "64", "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["params"] == TV_RESNET18["num_params"]
    assert info["img_size"] == [64, 64]
    # at 64 px the MACs scale by (64/224)^2 from the 224-px metadata, up to edge effects of padding
    assert info["macs"] / 1e9 == pytest.approx(TV_RESNET18["_ops"] * (64 / 224) ** 2, rel=0.05)
    # the pyramid: timm's levels (the stride-2 stem level first), with the map shapes its model really produces
    ref = timm.create_model("resnet18", features_only=True)
    with torch.no_grad():
        ref_maps = ref(torch.zeros(1, 3, 64, 64))
    pyramid = info["feature_pyramid"]
    assert [p["channels"] for p in pyramid] == ref.feature_info.channels()
    assert [p["reduction"] for p in pyramid] == ref.feature_info.reduction()
    assert [p["module"] for p in pyramid] == ref.feature_info.module_name()
    assert [p["map_size"] for p in pyramid] == [list(m.shape[-2:]) for m in ref_maps]
    cfg = info["default_cfg"]
    assert cfg["input_size"] == [3, 224, 224] and cfg["interpolation"] == ref.pretrained_cfg["interpolation"]
    assert cfg["mean"] == pytest.approx(list(ref.pretrained_cfg["mean"]))
    assert cfg["std"] == pytest.approx(list(ref.pretrained_cfg["std"]))


def test_info_text(capsys):
    rc, out, _ = _run(capsys, "info", "resnet50")
    assert rc == 0
    assert "25,557,032" in out  # torchvision's resnet50 (DESIGN.md: = timm)
    assert "4.089 G at 224x224" in out  # torchvision: ResNet50_Weights.IMAGENET1K_V2.meta['_ops'] == 4.089
    for level in ("layer1", "layer2", "layer3", "layer4"):
        assert level in out
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation"):
        assert key in out


def test_info_unknown_model_suggests_names(capsys):
    rc, _, err = _run(capsys, "info", "resnt50")
    _assert_user_error(rc, err, "unknown model 'resnt50'", "Did you mean: resnet50")


# ------------------------------------------------------------------------------------------- bench
TINY = ["--img-size", "16", "--batch-size", "2", "--warmup", "1", "--repeats", "2", "--threads", "1"]


@pytest.mark.parametrize("ext", ["json", "csv"])
def test_bench_writes_results_with_their_settings(capsys, tmp_path, ext):
    out_file = tmp_path / f"results.{ext}"
    rc, out, _ = _run(capsys, "bench", "resnet8s_tiny", "resnet10s", *TINY, "--out", str(out_file))
    assert rc == 0
    assert "resnet8s_tiny" in out and "resnet10s" in out and "img/s" in out
    if ext == "json":
        data = json.loads(out_file.read_text())
        rows = data["results"]
        assert data["environment"]["torch_version"] == torch.__version__
    else:
        import csv

        rows = list(csv.DictReader(out_file.open()))
    assert [r["model"] for r in rows] == ["resnet8s_tiny", "resnet10s"]
    for r in rows:
        assert str(r["batch_size"]) == "2" and str(r["img_size"]) == "16" and str(r["threads"]) == "1"
        assert r["device"] == "cpu" and r["dtype"] == "fp32" and r["torch_version"] == torch.__version__
        assert str(r["repeats"]) == "2" and str(r["warmup"]) == "1"
        assert float(r["throughput"]) > 0 and float(r["latency_p50_ms"]) <= float(r["latency_p90_ms"])


def test_bench_train_mode_channels_last(capsys):
    rc, out, _ = _run(capsys, "bench", "resnet8s_tiny", "--mode", "train", "--channels-last", *TINY)
    assert rc == 0
    assert out.startswith("train |") and "channels_last" in out


@pytest.mark.parity
def test_bench_compare_timm_prints_ratio(capsys, tmp_path):
    pytest.importorskip("timm")
    out_file = tmp_path / "r.json"
    rc, out, _ = _run(capsys, "bench", "resnet18", "--compare", "timm", "--img-size", "32", "--batch-size", "1",
                      "--warmup", "0", "--repeats", "2", "--threads", "1", "--out", str(out_file))
    assert rc == 0
    assert "resnet18: flexbone / timm throughput = " in out
    data = json.loads(out_file.read_text())
    assert [(r["model"], r["impl"]) for r in data["results"]] == [("resnet18", "flexbone"), ("resnet18", "timm")]
    assert all(r["same_weights"] for r in data["results"])  # timm's weights loaded into ours (strict)
    ours, ref = data["results"]
    assert data["ratios"][0]["ratio"] == pytest.approx(ours["throughput"] / ref["throughput"])
    assert ours["ratio_vs_timm"] == pytest.approx(data["ratios"][0]["ratio"])


@pytest.mark.parametrize("argv, fragment", [
    (["bench", "resnt50"], "unknown model 'resnt50'"),
    (["bench", "resnet18", "--dtype", "fp8"], "invalid choice: 'fp8'"),
    (["bench", "resnet18", "--dtype", "fp16"], "--dtype fp16 is not supported on the CPU"),
    (["bench", "resnet18", "--mode", "eval"], "invalid choice: 'eval'"),
    (["bench", "resnet18", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["bench", "resnet18", "--device", "tpu"], "--device must be cpu or cuda"),
    (["bench", "resnet18", "--out", "results.txt"], ".json or .csv"),
    (["bench", "resnet18", "--compare", "torchvision"], "invalid choice: 'torchvision'"),
    (["bench", "resnet8s_tiny", "--compare", "timm", *TINY], "timm has no model named 'resnet8s_tiny'"),
])
def test_bench_bad_input_is_one_line_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:  # argparse errors exit directly; ours return 2
        raise SystemExit(main(argv))
    _, err = capsys.readouterr()
    _assert_user_error(e.value.code, err, fragment)


def test_bench_compare_without_timm_installed(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    rc, _, err = _run(capsys, "bench", "resnet18", "--compare", "timm", *TINY)
    _assert_user_error(rc, err, "needs the timm package")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_cuda_unavailable(capsys):
    rc, _, err = _run(capsys, "bench", "resnet18", "--device", "cuda")
    _assert_user_error(rc, err, "no CUDA device")


# -------------------------------------------------------------------------------------------- tour
@pytest.mark.slow
def test_tour_runs(capsys):
    rc, out, _ = _run(capsys, "tour", "--threads", "1")
    assert rc == 0
    assert "resnet50d" in out and "25,557,032" in out and "layer4" in out
    assert "resnet18 runs" in out
