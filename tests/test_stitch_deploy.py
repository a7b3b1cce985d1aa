"""An SN-Net through the deploy commands: `flexbone subnets` and `flexbone search` evaluate every configuration,
search picks the best per budget exhaustively, and `flexbone export` writes the chosen configuration.

References: each picked configuration is checked against the evaluated table (the exhaustive optimum), its saved
model against the SN-Net's own output for that configuration, its top-1 against `flexbone validate` of the saved
file, and the ONNX artifact in onnxruntime.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from flexbone.cli import main

from _helpers import randomize_
from test_faults import fails_cleanly

FAST = ["--data", "digits", "--img-size", "8", "--threads", "1", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def snnet_dir(tmp_path_factory):
    """A small SN-Net (4 configurations) with random but non-trivial weights, saved as `flexbone stitch` does."""
    from flexbone.stitch import build_snnet, save_snnet

    torch.manual_seed(0)
    net = build_snnet(["resnet8s_tiny", "resnet18"], num_classes=10)
    randomize_(net, 0)
    return save_snnet(net, tmp_path_factory.mktemp("stitched") / "sn")


def _rows(path):
    return list(csv.DictReader(open(path)))


@pytest.mark.cli
@pytest.mark.slow
def test_subnets_search_and_export_take_an_snnet(tmp_path, capsys, snnet_dir):
    from flexbone.stitch import load_snnet
    from flexbone.train.checkpoint import model_from_checkpoint

    net = load_snnet(snnet_dir).eval()
    # subnets: every configuration, anchors first, with MACs, params, latency and top-1
    assert main(["subnets", "--checkpoint", str(snnet_dir), "--out", str(tmp_path / "s.csv"), "--repeats", "1",
                 *FAST]) == 0
    rows = _rows(tmp_path / "s.csv")
    assert [int(r["id"]) for r in rows] == list(range(net.num_configs)) == [0, 1, 2, 3]
    assert [r["kind"] for r in rows] == ["anchor", "anchor", "stitch", "stitch"]
    assert all(float(r["latency_ms"]) > 0 and 0 <= float(r["top1"]) <= 100 for r in rows)
    assert (tmp_path / "s.png").stat().st_size > 0

    # search: per budget, the best evaluated configuration among those that fit (checked against its own table)
    out = tmp_path / "found"
    params_limit = int(sorted(int(r["params"]) for r in rows)[1])  # two configurations fit
    assert main(["search", "--checkpoint", str(snnet_dir / "model.safetensors"), "--out", str(out), "--repeats", "1",
                 "--warmup", "0", "--budget", f"params={params_limit}", "--budget", "latency=60s", *FAST]) == 0
    table, found = _rows(out / "configs.csv"), _rows(out / "search.csv")
    assert len(table) == 4 and len(found) == 2
    fits = [r for r in table if int(r["params"]) <= params_limit]
    assert len(fits) == 2
    assert float(found[0]["top1"]) == max(float(r["top1"]) for r in fits)
    assert float(found[1]["top1"]) == max(float(r["top1"]) for r in table)
    capsys.readouterr()

    for f in found:
        # the saved file is that configuration, rebuilt from its own metadata
        saved = out / f["folder"] / "model.safetensors"
        model, _ = model_from_checkpoint(saved)
        x = torch.randn(3, 3, 8, 8)
        net.set_active(int(f["id"]))
        with torch.no_grad():
            assert torch.equal(model(x), net(x))
        # and `flexbone validate` of the saved file measures the top-1 that search reported
        assert main(["validate", "--checkpoint", str(saved), *FAST[:4], "--workers", "0"]) == 0
        assert f"{float(f['top1']):.2f}" in capsys.readouterr().out

    # export: the budget's folder (as an OFA search's) and the SN-Net with --config, checked in onnxruntime
    import onnxruntime as ort

    for argv, config_id in ((["--subnet", str(out / found[0]["folder"])], int(found[0]["id"])),
                            (["--checkpoint", str(snnet_dir), "--config", "2"], 2)):
        onnx_path = tmp_path / f"c{config_id}.onnx"
        assert main(["export", *argv, "--format", "onnx", "--fold-bn", "--img-size", "8", "--out", str(onnx_path)]) == 0
        x = torch.randn(1, 3, 8, 8)
        net.set_active(config_id)
        with torch.no_grad():
            expected = net(x).numpy()
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.cli
@pytest.mark.parametrize("argv, fragment", [
    (["search", "--budget", "macs=1"], "budget macs-1 cannot be met by any configuration of this SN-Net"),
    (["search", "--budget", "macs=1G", "--predictor", "p.safetensors"], "--predictor applies to once-for-all"),
    (["search", "--budget", "macs=1G", "--resolutions", "all"], "--resolutions applies to once-for-all"),
    (["subnets", "--resume"], "drop --resume"),
])
def test_snnet_bad_requests_fail_before_any_work(tmp_path, capsys, snnet_dir, argv, fragment):
    out = ["--out", str(tmp_path / ("found" if argv[0] == "search" else "s.csv"))]
    fails_cleanly(capsys, [argv[0], "--checkpoint", str(snnet_dir), *argv[1:], *out, *FAST], fragment)
    assert not any(tmp_path.iterdir())


@pytest.mark.cli
@pytest.mark.parametrize("argv, fragment", [
    (["--checkpoint", "{sn}"], "is an SN-Net of 4 configurations: pick the one to export with --config ID (0..3"),
    (["--checkpoint", "{sn}", "--config", "4"], "--config 4: this SN-Net has configurations 0..3"),
    (["--model", "resnet8s_tiny", "--config", "1"], "--config picks a configuration of an SN-Net"),
])
def test_export_of_an_snnet_needs_one_valid_configuration(tmp_path, capsys, snnet_dir, argv, fragment):
    argv = [a.format(sn=snnet_dir) for a in argv]
    fails_cleanly(capsys, ["export", *argv, "--format", "onnx", "--out", str(tmp_path / "m.onnx")], fragment)
    assert not any(tmp_path.iterdir())
