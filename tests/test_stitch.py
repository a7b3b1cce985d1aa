"""SN-Net: configuration rules, stitching layers, least squares, switching and extraction."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from flexbone.errors import ConfigError
from flexbone.models.resnet import ResNet
from flexbone.stitch.configs import hierarchical_stitch_configs, paired_stitching, unpaired_stitching, vit_stitch_configs
from flexbone.stitch.layer import StitchingLayer
from flexbone.stitch.least_squares import averaged_stitch, least_squares_stitch
from flexbone.stitch.snnet import SNNet, StitchedModel

from _helpers import max_abs_diff, randomize_


# ------------------------------------------------------------------------------ configuration rules
@pytest.mark.parametrize("kernel, stride, nearest, expected", [
    (2, 1, True, 71), (3, 1, True, 111), (2, 2, True, 51), (2, 1, False, 732),
])
def test_vit_rule_counts(kernel, stride, nearest, expected):
    # the counts the official generator gives for DeiT-Ti/S/B (12 blocks each), from the depths alone
    configs, _ = vit_stitch_configs([12, 12, 12], kernel, stride, nearest)
    assert len(configs) == expected


def test_vit_rule_order_and_layers():
    configs, num_layers = vit_stitch_configs([12, 12, 12])
    assert num_layers == 11
    assert [c.anchors for c in configs[:3]] == [(0,), (1,), (2,)]
    # per anchor pair: (0,0),(0,1),(1,0),(1,1) on layer 0, then (t,t+1),(t+1,t),(t+1,t+1) on layer t
    expected = [((0, 0), 0), ((0, 1), 0), ((1, 0), 0), ((1, 1), 0)]
    for t in range(1, 11):
        expected += [((t, t + 1), t), ((t + 1, t), t), ((t + 1, t + 1), t)]
    for pair, block in ((0, 1), range(3, 37)), ((1, 2), range(37, 71)):
        got = [(configs[i].positions[0], configs[i].layers[0]) for i in block]
        assert got == expected and all(configs[i].anchors == pair for i in block)
    # chains (nearest off) continue in the middle anchor no earlier than they entered it
    chains = [c for c in vit_stitch_configs([12] * 3, nearest=False)[0] if len(c.anchors) == 3]
    assert chains and all(c.positions[1][0] >= c.positions[0][1] for c in chains)


def test_paired_closed_form():
    for depth in (4, 7, 12, 24):
        pairs, layers, n = paired_stitching(depth, 2, 1)
        assert (len(pairs), n, max(layers) + 1) == (3 * depth - 2, depth - 1, depth - 1)


def test_hierarchical_rule_resnet18_resnet50():
    configs, num_layers = hierarchical_stitch_configs([[2, 2, 2, 2], [3, 4, 6, 3]])
    assert len(configs) == 10
    assert num_layers == {(1, 0, 1): 2, (2, 0, 1): 2}
    got = [(c.stage, c.positions[0], c.layers[0]) for c in configs[2:]]
    assert got == [(1, (0, 1), 0), (1, (1, 2), 0), (1, (1, 3), 1),
                   (2, (0, 1), 0), (2, (0, 2), 0), (2, (1, 3), 0), (2, (1, 4), 1), (2, (1, 5), 1)]
    # ResNet-18 + Swin-Ti stage depths: equal depth 2 in stage 1 gives one stitch, (2, 6) in stage 2 five
    assert len(hierarchical_stitch_configs([[2, 2, 2, 2], [2, 2, 6, 2]])[0]) == 8


def test_unpaired_mapping_is_nearest_interpolation():
    for d_f, d_e in ((2, 4), (2, 6), (3, 7), (4, 9)):
        pairs, _, _ = unpaired_stitching(d_f, d_e)
        mapping = nn.functional.interpolate(torch.arange(d_f)[None, None].float(), size=d_e).long().flatten().tolist()
        assert pairs == [(f, e) for f in range(d_f) for e in range(1, d_e) if mapping[e] == f and f < e]


def test_rules_reject_bad_input():
    with pytest.raises(ConfigError, match="equal depth"):
        vit_stitch_configs([12, 24])
    with pytest.raises(ConfigError, match="ordered by stage depth"):
        hierarchical_stitch_configs([[3, 4, 6, 3], [2, 2, 2, 2]])


# ------------------------------------------------------------------------------ layer, least squares
def test_stitching_layer_layouts():
    conv = StitchingLayer(4, 6, "nchw", "nlc")
    assert isinstance(conv.transform, nn.Conv2d) and conv.transform.bias is not None
    x = torch.randn(2, 4, 3, 5)
    w, b = conv.transform.weight.flatten(1), conv.transform.bias
    ref = torch.einsum("oc,bchw->bhwo", w, x) + b  # y = W x + b at every position, row-major positions
    assert max_abs_diff(conv(x), ref.reshape(2, 15, 6)) < 1e-6
    lin = StitchingLayer(4, 6, "nlc")
    assert isinstance(lin.transform, nn.Linear) and lin(torch.randn(2, 7, 4)).shape == (2, 7, 6)
    with pytest.raises(ConfigError, match="cannot stitch"):
        StitchingLayer(4, 6, "nlc", "nchw")


def test_least_squares_matches_lstsq():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 7, generator=g), torch.randn(300, 5, generator=g)
    w, b = least_squares_stitch(x, y)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(300, 1)], 1).double(), y.double()).solution  # (8, 5)
    assert max_abs_diff(w, sol[:7].T) < 1e-5 and max_abs_diff(b, sol[7]) < 1e-5
    # an exactly linear target is recovered
    w0, b0 = torch.randn(5, 7, generator=g), torch.randn(5, generator=g)
    w, b = least_squares_stitch(x, x @ w0.T + b0)
    assert max_abs_diff(w, w0) < 1e-4 and max_abs_diff(b, b0) < 1e-4
    # a shared layer gets the mean of the per-position solutions
    x2 = torch.randn(300, 7, generator=g)
    wa, ba = averaged_stitch([(x, y), (x2, y)])
    w1, b1 = least_squares_stitch(x, y)
    w2, b2 = least_squares_stitch(x2, y)
    assert max_abs_diff(wa, (w1 + w2) / 2) < 1e-6 and max_abs_diff(ba, (b1 + b2) / 2) < 1e-6


# ------------------------------------------------------------------------------ SNNet on tiny ResNets
def _tiny_anchors(seed: int = 0) -> tuple[ResNet, ResNet]:
    torch.manual_seed(seed)
    small = ResNet(block="basic", layers=(1, 2, 2, 1), channels=(8, 16, 16, 16), stem_type="small", num_classes=10)
    large = ResNet(block="basic", layers=(1, 3, 4, 1), channels=(16, 32, 32, 32), stem_type="small", num_classes=10)
    return randomize_(small, seed), randomize_(large, seed + 1)


def test_snnet_switch_and_extract():
    small, large = _tiny_anchors()
    net = SNNet([small, large]).eval()
    # stage 1: unpaired(2, 3) -> 2 stitches; stage 2: unpaired(2, 4) -> 3
    assert net.num_configs == 2 + 2 + 3
    x = torch.randn(3, 3, 8, 8)
    net.init_stitches(torch.randn(16, 3, 8, 8))
    with torch.no_grad():
        for anchor_id, anchor in enumerate((small, large)):
            net.set_active(anchor_id)
            assert torch.equal(net(x), anchor(x))
        outputs = set()
        for i in range(net.num_configs):
            net.set_active(i)
            y = net(x)
            static = net.extract(i).eval()
            assert max_abs_diff(static(x), y) <= 1e-6
            assert net.config_params(i) == sum(p.numel() for p in static.parameters())
            outputs.add(round(y.sum().item(), 4))
            if i >= 2:
                assert isinstance(static, StitchedModel) and static.stitch_config["id"] == i
                # the copy owns its weights
                assert not {id(p) for p in static.parameters()} & {id(p) for p in net.parameters()}
        assert len(outputs) == net.num_configs  # every configuration is a different function
    for bad in (-1, net.num_configs, "3", True):
        with pytest.raises(ConfigError, match="valid ids are 0..6"):
            net.set_active(bad)


def test_snnet_rejects_bad_anchors():
    small, large = _tiny_anchors()
    with pytest.raises(ConfigError, match="small to large"):
        SNNet([large, small])
    with pytest.raises(ConfigError, match="at least 2"):
        SNNet([small])
    large.reset_classifier(5)
    with pytest.raises(ConfigError, match="same classes"):
        SNNet([small, large])


def test_snnet_training_step_reaches_only_the_active_path():
    small, large = _tiny_anchors()
    net = SNNet([small, large]).train()
    net.set_active(4)  # stage 2, (0, 1): small up to layer3.0, stitch, large from layer3.1
    assert net.stitch_config(4).positions == ((0, 1),) and net.stitch_config(4).stage == 2
    net(torch.randn(4, 3, 8, 8)).sum().backward()
    grads = {n for n, p in net.named_parameters() if p.grad is not None}
    assert "stitch_layers.stage2_0to1.0.transform.weight" in grads
    assert not any(n.startswith("stitch_layers.stage1") for n in grads)
    assert any(n.startswith("anchors.0.layer3.0.") for n in grads) and not any(n.startswith("anchors.0.layer3.1.") for n in grads)
    assert any(n.startswith("anchors.1.layer3.1.") for n in grads) and not any(n.startswith("anchors.1.layer3.0.") for n in grads)
    assert not any(n.startswith("anchors.0.fc") for n in grads) and "anchors.1.fc.weight" in grads


@pytest.mark.slow
def test_snnet_macs_resnet18_resnet50_match_reference():
    # conv+fc GMACs of the 10 configurations (torchvision topology, FlopCounterMode / 2: the SN-Net reference
    # notes, computed independently of flexbone), in the reference's configuration order
    from flexbone.bench.complexity import build_on_meta

    reference = [1.814, 4.089, 3.742, 3.755, 3.537, 3.126, 2.907, 2.920, 2.702, 2.484]
    with torch.device("meta"):
        net = SNNet([build_on_meta("resnet18"), build_on_meta("resnet50")])
    rows = net.configs(224)
    assert [r["id"] for r in rows] == list(range(10))
    assert [round(r["macs"] / 1e9, 3) for r in rows] == reference
    assert rows[0]["params"] == 11_689_512 and rows[1]["params"] == 25_557_032  # the anchors: timm's counts
    # a stitch of stage s adds a 1x1 conv with bias: 128 -> 512 in layer2, 256 -> 1024 in layer3
    assert sum(p.numel() for p in net.stitch_layers.parameters()) == 2 * (128 * 512 + 512) + 2 * (256 * 1024 + 1024)


# ------------------------------------------------------------------------------ least squares on real images
def _digits(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from flexbone.data.datasets import digits_dataset

    ds = digits_dataset(train=train)
    x = ds.images.float() / 255.0
    return (x - 0.5) / 0.25, torch.as_tensor(ds.targets)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 120) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.mark.slow
def test_least_squares_init_beats_random_init_on_digits():
    x_train, y_train = _digits(True)
    x_test, y_test = _digits(False)
    torch.manual_seed(0)
    small = ResNet(block="basic", layers=(1, 2, 2, 1), channels=(8, 16, 16, 16), stem_type="small", num_classes=10)
    large = ResNet(block="basic", layers=(1, 3, 4, 1), channels=(16, 32, 32, 32), stem_type="small", num_classes=10)
    _fit(small, x_train, y_train)
    _fit(large, x_train, y_train)
    net = SNNet([small, large]).eval()

    def top1s() -> list[float]:
        out = []
        with torch.no_grad():
            for i in range(net.num_configs):
                net.set_active(i)
                out.append((net(x_test).argmax(1) == y_test).float().mean().item())
        return out

    random_init = top1s()
    net.init_stitches(x_train[:100])  # one batch of 100 training images, as the reference
    ls_init = top1s()
    assert ls_init[:2] == random_init[:2] and min(ls_init[:2]) > 0.8  # anchors untouched and trained
    stitched_ls, stitched_random = ls_init[2:], random_init[2:]
    assert sum(stitched_ls) / len(stitched_ls) > sum(stitched_random) / len(stitched_random) + 0.2
    assert all(a > b for a, b in zip(stitched_ls, stitched_random))


# ------------------------------------------------------------------------------ flexbone stitch
@pytest.mark.cli
def test_stitch_cli_rejects_bad_input(tmp_path, capsys):
    from flexbone.cli import main

    assert main(["stitch", "--anchors", "resnet18", "--data", "digits", "--out", str(tmp_path / "a")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["stitch", "--anchors", "resnet50,resnet18", "--data", "digits", "--out", str(tmp_path / "b")]) == 2
    assert "small to large" in capsys.readouterr().err
    assert main(["stitch", "--anchors", "resnet18,resnet50", "--checkpoints", f"{tmp_path / 'none.pt'},x.pt",
                 "--data", "digits", "--out", str(tmp_path / "c")]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
@pytest.mark.cli
def test_stitch_cli_builds_initialises_saves_and_evaluates(tmp_path, capsys):
    import csv

    import flexbone
    from flexbone.checkpoint import save_state_dict
    from flexbone.cli import main
    from flexbone.stitch import load_snnet

    paths = []
    for i, name in enumerate(("resnet18", "resnet50")):
        torch.manual_seed(i)
        anchor = randomize_(flexbone.create_model(name, num_classes=10), i)
        paths.append(tmp_path / f"{name}.safetensors")
        save_state_dict(anchor.state_dict(), paths[-1])
    out = tmp_path / "sn"
    assert main(["stitch", "--anchors", "resnet18,resnet50", "--checkpoints", ",".join(map(str, paths)),
                 "--data", "digits", "--out", str(out), "--img-size", "8", "--init-images", "40", "--evaluate",
                 "--latency", "--repeats", "1", "--threads", "1", "--budget", "latency=10s,params=15M",
                 "--budget", "macs=1G", "--budget", "macs=1", "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out / 'config.json'}" in printed.err  # the result, with --no-progress too
    net = load_snnet(out).eval()
    assert net.num_configs == 10
    # the anchors inside are the checkpoints' models, and the stitches are the least-squares solution
    anchor = flexbone.create_model("resnet50", num_classes=10, pretrained=str(paths[1])).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        net.set_active(1)
        assert torch.equal(net(x), anchor(x))
    assert any(net.stitch_layers["stage1_0to1"][0].transform.bias != 0)
    rows = list(csv.DictReader(open(out / "configs.csv")))
    assert [int(r["id"]) for r in rows] == list(range(10)) and [r["kind"] for r in rows[:3]] == ["anchor", "anchor", "stitch"]
    assert (out / "configs.png").stat().st_size > 0
    # every configuration timed, and the best one picked per budget (exhaustive: checked against the table here)
    assert all(float(r["latency_ms"]) > 0 for r in rows)
    chosen = list(csv.DictReader(open(out / "chosen.csv")))
    fits = [r for r in rows if float(r["params"]) <= 15e6]
    assert 0 < len(fits) < len(rows)
    assert float(chosen[0]["top1"]) == max(float(r["top1"]) for r in fits) and float(chosen[0]["params"]) <= 15e6
    assert float(chosen[1]["top1"]) == max(float(r["top1"]) for r in rows)
    assert chosen[2]["id"] == ""  # nothing has 1 MAC
    assert "budget macs-1: no configuration fits" in printed.out
    assert main(["stitch", "--from", str(out), "--data", "digits", "--evaluate", "--budget", "latency=5ms"]) == 2
    assert "needs --latency" in capsys.readouterr().err
