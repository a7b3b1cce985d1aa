"""Costs of sub-networks (flexbone.search.costs / .parts): exact MACs and parameters from per-part tables.

The reference is flexbone.bench.complexity's counter (torch's FlopCounterMode) on the whole extracted
sub-network: the per-part sums must equal it for random configurations of every supernet of the zoo, at several
resolutions (odd ones included: sizes that do not halve evenly).
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import flexbone
from flexbone.bench.complexity import count_macs, count_params
from flexbone.elastic.space import SubnetConfig
from flexbone.errors import ConfigError
from flexbone.search.encoding import GeneLayout
from flexbone.search import COST_NAMES, MacsCost, ParamsCost, SubnetParts, build_costs, parse_budget

SUPERNETS = ["ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2", "ofa_proxyless_d234_e346_k357_w1.3",
             "ofa_mbv2_d234_e346_k357_w1.0", "ofa_resnet50", "ofa_digits_mbv3"]


def _meta_supernet(name: str, **kwargs):
    with torch.device("meta"):  # shapes only: the counts need no weights
        return flexbone.create_model(name, **kwargs)


def _configs(net, n: int, seed: int) -> list[SubnetConfig]:
    rng = random.Random(seed)
    return [net.space.min(), net.space.max()] + [net.space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("name", SUPERNETS)
def test_macs_and_params_equal_the_counter_on_the_extracted_subnet(name):
    net = _meta_supernet(name, num_classes=10 if "digits" in name else 1000)
    macs, params = MacsCost(net, img_size=160), ParamsCost(net, img_size=160)
    for i, cfg in enumerate(_configs(net, 3, seed=len(name))):
        if net.space.resolution and i >= 2:  # random resolutions, odd halvings included (e.g. 132 -> 66 -> 33)
            cfg = cfg.replace(resolution=random.Random(i).choice(net.space.resolution))
        sub = net.extract(cfg)
        size = cfg.resolution or 160
        assert macs(cfg) == count_macs(sub, size), (name, cfg)
        assert params(cfg) == count_params(sub), (name, cfg)


def test_resnet_costs_at_another_input_size():
    net = _meta_supernet("ofa_resnet50")
    cfg = net.space.sample(3)
    for size in (128, 193):
        assert MacsCost(net, img_size=size)(cfg) == count_macs(net.extract(cfg), size)


def test_parts_are_the_layers_of_the_extracted_subnet():
    """Concatenated in running order, the parts' parameters and buffers have the extracted net's shapes."""
    for name in ("ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv2_d234_e346_k357_w1.0", "ofa_resnet50"):
        net = _meta_supernet(name)
        splitter = SubnetParts(net)
        cfg = net.space.sample(7)
        shapes = [tuple(t.shape) for p in splitter.parts(cfg) for t in splitter.module(p.key, "meta").state_dict().values()]
        expected = [tuple(t.shape) for t in net.extract(cfg).state_dict().values()]
        assert shapes == expected, name


@pytest.mark.parametrize("name", ["ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50"])
def test_cover_holds_every_part_of_every_config(name):
    kwargs = dict(resolutions=(128, 132)) if "mbv3" in name else {}
    net = _meta_supernet(name, **kwargs)
    splitter = SubnetParts(net)
    cover = set(splitter.cover())
    rng = random.Random(0)
    for _ in range(40):
        assert set(splitter.parts(net.space.sample(rng))) <= cover
    assert set(splitter.parts(net.space.min())) | set(splitter.parts(net.space.max())) <= cover


def test_build_costs_names_and_errors():
    net = _meta_supernet("ofa_digits_mbv3", num_classes=10)
    costs = build_costs(net, ["macs", "params"])
    assert [(c.name, c.unit) for c in costs.values()] == [("macs", "MACs"), ("params", "params")]
    assert costs["macs"].parts is costs["params"].parts  # one splitter: tables are built once
    with pytest.raises(ConfigError, match="unknown cost 'flops'.*macs, params, latency"):
        build_costs(net, ["flops"])
    with pytest.raises(ConfigError, match="expand"):
        costs["macs"](net.space.max().replace(expand=(5,) * 20))
    assert COST_NAMES == ("macs", "params", "latency")


@pytest.mark.parametrize("text, expected", [
    ("macs=300M", ("macs", 3e8)), ("params=3M", ("params", 3e6)), ("latency=20ms", ("latency", 20.0)),
    ("latency=1.5s", ("latency", 1500.0)), ("latency=500us", ("latency", 0.5)), ("macs<=2G", ("macs", 2e9)),
    ("params=250K", ("params", 2.5e5)), ("MACS=1e6", ("macs", 1e6)), ("latency=7", ("latency", 7.0)),
])
def test_parse_budget(text, expected):
    name, value = parse_budget(text)
    assert name == expected[0] and value == pytest.approx(expected[1])


@pytest.mark.parametrize("text, match", [
    ("flops=300M", "unknown metric 'flops'; the metrics are: macs, params, latency"),
    ("macs=300ms", "unknown unit 'ms' for macs"), ("latency=20M", "unknown unit 'M' for latency"),
    ("macs300M", "not METRIC=VALUE"), ("macs=", "not METRIC=VALUE"), ("macs=0", "must be positive"),
    ("latency=-3ms", "not METRIC=VALUE"),
])
def test_parse_budget_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_budget(text)


@pytest.mark.parametrize("name", ["ofa_digits_mbv3", "ofa_proxyless_d234_e346_k357_w1.3",
                                  "ofa_mbv2_d234_e346_k357_w1.0", "ofa_resnet50"])
def test_gene_pricing_equals_the_part_by_part_costs(name):
    """The search prices whole populations from a slot table; it must equal the part-by-part sums (themselves
    checked against the counter above) on random configurations, or decline (OFA-ResNet: no slot table)."""
    net = _meta_supernet(name)
    layout = GeneLayout(net.space)
    genes = layout.canonical(layout.random(np.random.default_rng(len(name)), 12))
    cfgs = layout.to_configs(genes)
    for cost in build_costs(net, ["macs", "params"]).values():
        pricer = cost.for_genes(layout)
        if name == "ofa_resnet50":
            assert pricer is None
            continue
        np.testing.assert_array_equal(pricer(genes), [cost(cfg) for cfg in cfgs])
