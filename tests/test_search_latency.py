"""Latency of sub-networks (flexbone.search.latency): timing, the lookup table, its file, `flexbone latency-table`.

No test asserts a duration (timings on a shared machine are noise): they check what is timed and how the table
adds it up. Sums are checked against an external count: a table whose entries are each part's MACs must predict
count_macs of the whole extracted sub-network.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import flexbone
from flexbone.bench.complexity import count_macs
from flexbone.cli import main
from flexbone.errors import ConfigError
from flexbone.search import LatencyTable, MeasuredLatency, build_costs, time_module
from flexbone.search.encoding import GeneLayout
from flexbone.search.latency import TableLatency, check_timing_options

NAME = "ofa_digits_mbv3"
FAST = dict(warmup=0, repeats=1, threads=1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return flexbone.create_model(NAME, num_classes=10).eval()


@pytest.fixture(scope="module")
def table(net):
    return LatencyTable.build(net, resolutions=[16, 24], progress=False, **FAST)


def test_table_times_every_part_once_and_predicts_the_sum_of_the_parts(net, table):
    parts = table._splitter().cover([16, 24])
    assert table.info["parts_timed"] == len(parts) == sum(len(v) for v in table.entries.values())
    assert all(ms > 0 for v in table.entries.values() for ms in v.values())
    # entries replaced by each part's MACs: the prediction must be count_macs of the whole extracted net
    timed = table.entries
    table.entries = {k: dict(v) for k, v in timed.items()}
    for part in parts:
        table.entries[part.key]["x".join(map(str, part.in_shape))] = float(table._splitter().macs(part))
    try:
        rng = random.Random(0)
        for _ in range(4):
            cfg = net.space.sample(rng).replace(resolution=rng.choice([16, 24]))
            assert table.predict(cfg) == count_macs(net.extract(cfg), cfg.resolution)
    finally:
        table.entries = timed


def test_table_file_round_trip_and_refusals(net, table, tmp_path):
    path = table.save(tmp_path / "lut.json")
    loaded = LatencyTable.load(path, net)
    cfgs = [c.replace(resolution=r) for c, r in ((net.space.min(), 16), (net.space.max(), 24), (net.space.sample(3), 16))]
    assert [loaded.predict(c) for c in cfgs] == [table.predict(c) for c in cfgs]
    assert LatencyTable.load(path).predict(cfgs[1]) == table.predict(cfgs[1])  # the supernet rebuilt from its name
    info = json.loads(path.read_text())["info"]
    for key in ("device", "torch_version", "flexbone_version", "threads", "batch_size", "backend", "date"):
        assert info[key] not in (None, "")
    assert (info["backend"], info["threads"], info["batch_size"]) == ("torch", 1, 1)

    other = flexbone.create_model("ofa_mbv3_d234_e346_k357_w1.0", resolutions=(16, 24))
    with pytest.raises(ConfigError, match="built for ofa_digits_mbv3's space, not for ofa_mbv3_d234_e346_k357_w1.0"):
        LatencyTable.load(path, other)
    with pytest.raises(ConfigError, match="no timings at resolution 20 .*16, 24"):
        table.predict(net.space.max().replace(resolution=20))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not a flexbone latency table"):
        LatencyTable.load(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="not found"):
        LatencyTable.load(tmp_path / "missing.json")


def test_latency_cost_from_table_or_measured(net, table):
    costs = build_costs(net, ["latency"], latency_table=table)
    assert isinstance(costs["latency"], TableLatency) and costs["latency"].unit == "ms"
    measured = build_costs(net, ["latency"])["latency"]
    assert isinstance(measured, MeasuredLatency)
    active = net.set_active(net.space.sample(1))
    ms = MeasuredLatency(net, clock="cpu", **FAST)(net.space.min())
    assert ms > 0 and net.active_config == active  # the supernet's active sub-network is restored


def test_onnxruntime_backend(net):
    sub = net.extract(net.space.min())
    assert time_module(sub, (3, 16, 16), backend="onnxruntime", **FAST) > 0
    assert time_module(sub, (3, 16, 16), backend="onnxruntime", clock="cpu", **FAST) > 0
    assert MeasuredLatency(net, backend="onnxruntime", **FAST)(net.space.min()) > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="tvm"), "unknown latency backend 'tvm'; the backends are: torch, onnxruntime"),
    (dict(batch_size=0), "batch_size"), (dict(threads=0), "threads"), (dict(repeats=0), "repeats"),
    (dict(dtype="int8"), "unknown dtype"), (dict(backend="onnxruntime", dtype="bf16"), "fp32"),
    (dict(statistic="mean"), "unknown timing statistic 'mean'; choose from median, min"),
    (dict(clock="tsc"), "unknown clock"), (dict(clock="cpu", threads=2), "only with one thread"),
])
def test_timing_options_are_checked(kwargs, match):
    options = dict(backend="torch", batch_size=1, threads=1, dtype="fp32", warmup=0, repeats=1,
                   statistic="median", clock="wall") | kwargs
    with pytest.raises(ConfigError, match=match):
        check_timing_options(**options)


@pytest.mark.cli
def test_cli_latency_table(tmp_path, capsys):
    out = tmp_path / "lut.json"
    args = ["latency-table", "--supernet", NAME, "--num-classes", "10", "--resolutions", "16", "--warmup", "0",
            "--repeats", "1", "--threads", "1", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    table = LatencyTable.load(out, flexbone.create_model(NAME, num_classes=10))
    assert table.resolutions == (16,) and "wrote" in capsys.readouterr().out

    (tmp_path / "f.txt").write_text("")  # a file where the output's folder should be: refused before any timing
    assert main(args[:-1] + [str(tmp_path / "f.txt" / "lut.json")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["latency-table", "--supernet", NAME, "--resolutions", "17", "--out", str(out)]) == 2
    assert "resolution 17 is not in ofa_digits_mbv3's space; allowed: 12, 16, 20, 24" in capsys.readouterr().err
    assert main(["latency-table", "--supernet", "resnet18", "--out", str(out)]) == 2
    assert "not a supernet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["latency-table", "--supernet", NAME, "--threads", "0", "--out", str(out)])
    assert "--threads" in capsys.readouterr().err


def test_table_prices_rows_of_genes_as_predict_does(net, table):
    """The search's population pricing equals the part-by-part prediction, and refuses resolutions the table lacks."""
    layout = GeneLayout(net.space)
    pricer = build_costs(net, ["latency"], latency_table=table)["latency"].for_genes(layout)
    genes = layout.canonical(layout.random(np.random.default_rng(0), 40))
    res = layout.column("resolution")
    in_table = [net.space.resolution.index(r) for r in table.resolutions]
    genes[:, res] = np.array(in_table)[np.arange(len(genes)) % len(in_table)]
    np.testing.assert_allclose(pricer(genes), [table.predict(c) for c in layout.to_configs(genes)], rtol=1e-12)
    genes[0, res] = net.space.resolution.index(12)
    with pytest.raises(ConfigError, match="no timings at some resolution"):
        pricer(genes)
