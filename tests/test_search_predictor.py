"""Search: the once-for-all encoding (vs the `ofa` package's encoders), the accuracy predictor, FBNetV3 pre-training."""
import random

import numpy as np
import pytest
from scipy.stats import kendalltau

from flexbone.cli.subnets import write_csv
from flexbone.elastic import DepthUnit, SearchSpace, SubnetConfig
from flexbone.errors import CheckpointError, ConfigError
from flexbone.models import create_model
from flexbone.search.encoding import GeneLayout
from flexbone.search.predictor import AccuracyPredictor, read_subnets_csv

# 2 + 3 blocks, kernel 3/5, expand 2/4, two resolutions: 3,360 networks
SMALL = SearchSpace(depth=((1, 2), (1, 2, 3)), units=(DepthUnit(0), DepthUnit(2)), kernel=((3, 5),) * 5,
                    expand=((2, 4),) * 5, resolution=(16, 24), name="small")


def _known_accuracy(cfg, space=SMALL):
    """A made-up accuracy with interactions: bigger blocks help, less so deep in a unit; resolution helps."""
    on = space.active_blocks(cfg)
    return 50 + sum((k / 5 + e / 4) * (1.5 - 0.2 * j) for j, (k, e, a) in enumerate(zip(cfg.kernel, cfg.expand, on))
                    if a) + (cfg.resolution - 16) / 2


@pytest.mark.parity
def test_encoding_equals_the_ofa_mobilenetv3_encoder():
    from ofa.nas.accuracy_predictor.arch_encoder import MobileNetArchEncoder

    space = create_model("ofa_mbv3_d234_e346_k357_w1.0").space
    layout = GeneLayout(space)
    ref = MobileNetArchEncoder(image_size_list=list(space.resolution))
    rng = random.Random(0)
    cfgs = [space.sample(rng) for _ in range(300)] + [space.min(), space.max()]
    expected = np.stack([ref.arch2feature({"ks": list(c.kernel), "e": list(c.expand), "d": list(c.depth),
                                           "image_size": c.resolution}) for c in cfgs])
    assert layout.num_features == ref.n_dim
    np.testing.assert_array_equal(layout.encode_configs(cfgs), expected)


@pytest.mark.parity
def test_encoding_equals_the_ofa_resnet_encoder():
    from ofa.nas.accuracy_predictor.arch_encoder import ResNetArchEncoder

    space = create_model("ofa_resnet50").space
    layout = GeneLayout(space)
    ref = ResNetArchEncoder()  # one resolution (224): a constant first feature, which a space without resolution omits
    rng = random.Random(1)
    cfgs = [space.sample(rng) for _ in range(300)] + [space.min(), space.max()]
    expected = np.stack([ref.arch2feature({"d": list(c.depth), "e": list(c.expand), "image_size": 224,
                                           "w": [space.width[i].index(w) for i, w in enumerate(c.width)]})
                         for c in cfgs])
    assert (expected[:, 0] == 1).all()
    np.testing.assert_array_equal(layout.encode_configs(cfgs), expected[:, 1:])


def test_genes_round_trip_and_switched_off_blocks_encode_as_zeros():
    layout = GeneLayout(SMALL)
    rng = random.Random(2)
    cfgs = [SMALL.sample(rng) for _ in range(50)]
    genes = layout.to_genes(cfgs)
    assert [layout.to_config(g) for g in genes] == cfgs
    canon = layout.canonical(genes.copy())
    assert [layout.to_config(g) for g in canon] == [SMALL.canonical(c) for c in cfgs]
    x = layout.encode(genes)
    np.testing.assert_array_equal(x, layout.encode(canon))  # same network, same features
    for cfg, row in zip(cfgs, x):
        # one 1 per resolution, and per running block one for its kernel and one for its expand
        assert row.sum() == 1 + 2 * sum(SMALL.active_blocks(cfg))
    with pytest.raises(ConfigError, match=r"kernel\[0\] = 7 is not allowed in small"):
        layout.to_genes([cfgs[0].replace(kernel=(7,) + cfgs[0].kernel[1:])])


def test_a_discrete_space_of_stitched_networks_encodes_its_ids():
    stitched = SearchSpace(depth=(tuple(range(71)),), name="snnet")  # SN-Net: 71 configuration ids
    layout = GeneLayout(stitched)
    x = layout.encode_configs([SubnetConfig(depth=(i,)) for i in range(71)])
    np.testing.assert_array_equal(x, np.eye(71, dtype=np.float32))


def _split(n_train, seed=0):
    rng = random.Random(seed)
    cfgs = [SMALL.sample(rng) for _ in range(n_train + 200)]
    acc = [_known_accuracy(c) for c in cfgs]
    return cfgs[:n_train], acc[:n_train], cfgs[n_train:], acc[n_train:]


def test_predictor_starts_at_the_mean_and_learns_a_known_accuracy():
    train, y, held, y_held = _split(300)
    pred = AccuracyPredictor(SMALL, hidden=64)
    pred.fit(train, y, steps=0)  # untrained head: every prediction is the mean accuracy (the output bias)
    np.testing.assert_allclose(pred.predict(held), np.mean(y), rtol=1e-6)
    assert pred.head.bias.item() == pytest.approx(np.mean(y), rel=1e-6)
    mse = pred.fit(train, y, steps=600)
    tau = kendalltau(pred.predict(held), y_held).statistic
    assert tau > 0.85 and mse < 0.05 * np.var(y), (tau, mse)
    # the default size is the reference's: 3 x 400 ReLU -> 1
    big = AccuracyPredictor(SMALL)
    assert [m.out_features for m in big.trunk if hasattr(m, "out_features")] == [400, 400, 400]
    assert big.head.out_features == 1


def test_pretraining_learns_the_proxies_and_fine_tuning_follows():
    rng = random.Random(5)
    many = [SMALL.sample(rng) for _ in range(1000)]
    macs = [sum(k * k * e for k, e, a in zip(c.kernel, c.expand, SMALL.active_blocks(c)) if a) * c.resolution ** 2
            for c in many]
    params = [sum(k * k * e for k, e, a in zip(c.kernel, c.expand, SMALL.active_blocks(c)) if a) for c in many]
    pred = AccuracyPredictor(SMALL, hidden=64)
    untrained = AccuracyPredictor(SMALL, hidden=64)
    assert pred.pretrain(many, {"macs": macs, "params": params}, steps=400) < 0.05  # normalised MSE (variance 1)
    changed = [not np.allclose(a.detach(), b.detach()) for a, b in zip(pred.trunk.parameters(),
                                                                         untrained.trunk.parameters())]
    assert all(changed)
    train, y, held, y_held = _split(30, seed=6)
    pred.fit(train, y, steps=300)
    assert kendalltau(pred.predict(held), y_held).statistic > 0.5
    assert pred.info["pretrained"]["proxies"] == ["macs", "params"] and pred.info["fit"]["configs"] == 30


def test_save_load_round_trip_and_refuses_another_space(tmp_path):
    train, y, held, _ = _split(50)
    pred = AccuracyPredictor(SMALL, hidden=32)
    pred.fit(train, y, steps=50)
    path = pred.save(tmp_path / "pred.safetensors")
    assert (tmp_path / "pred.json").is_file()
    back = AccuracyPredictor.load(path, SMALL)
    np.testing.assert_array_equal(back.predict(held), pred.predict(held))
    assert back.space == SMALL and back.info["fit"]["configs"] == 50
    other = SMALL.restrict(resolution=[16])
    with pytest.raises(ConfigError, match=r"fitted for another search space .*differ in: resolution"):
        AccuracyPredictor.load(path, other)
    (tmp_path / "pred.json").unlink()
    with pytest.raises(CheckpointError, match="pred.json"):
        AccuracyPredictor.load(path, SMALL)
    with pytest.raises(ConfigError, match=".safetensors"):
        pred.save(tmp_path / "pred.pt")
    with pytest.raises(ConfigError, match="at least 2 configurations"):
        pred.fit(train[:1], y[:1])


def test_reads_the_table_that_flexbone_subnets_writes(tmp_path):
    one_res = SMALL.restrict(resolution=[16])
    rng = random.Random(3)
    cfgs = [one_res.sample(rng) for _ in range(5)]
    rows = [{"kind": "random", "config": c.replace(resolution=None).to_json(), "img_size": 16, "macs": 1, "params": 1,
             "top1": 10.0 * i, "top5": 100.0, "loss": 1.0, "pareto": False} for i, c in enumerate(cfgs)]
    write_csv(rows, tmp_path / "subnets.csv")
    got, top1 = read_subnets_csv(tmp_path / "subnets.csv", one_res)  # no resolution: the space's only one
    assert got == cfgs and top1 == [0.0, 10.0, 20.0, 30.0, 40.0]
    with pytest.raises(ConfigError, match="line 2: SubnetConfig.resolution = None"):
        read_subnets_csv(tmp_path / "subnets.csv", SMALL)
