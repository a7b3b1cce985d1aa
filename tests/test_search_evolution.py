"""Search: evolution finds the exact optimum of an enumerable space, meets several constraints and budgets, is
seeded, beats random search, and is at least as good as the `ofa` package's EvolutionFinder at equal evaluations."""
import functools
import itertools
import random

import numpy as np
import pytest

from flexbone.elastic import SubnetConfig
from flexbone.errors import ConfigError
from flexbone.models import create_model
from flexbone.search.evolution import search
from flexbone.search.predictor import AccuracyPredictor
from test_search_predictor import SMALL, _known_accuracy


def _cost(name, fn):
    fn.name = name
    return fn


def _block_sum(space, cfg, term):
    return sum(term(k, e) for k, e, a in zip(cfg.kernel, cfg.expand, space.active_blocks(cfg)) if a)


MACS = _cost("macs", lambda c: _block_sum(SMALL, c, lambda k, e: k * k * e) * c.resolution ** 2)
PARAMS = _cost("params", lambda c: _block_sum(SMALL, c, lambda k, e: k * e * e))
COSTS = {"macs": MACS, "params": PARAMS}


def _every_network(space):
    """All networks of a space with block-slot units (inactive blocks at their largest choice), by brute force."""
    seen = set()
    for depth in itertools.product(*space.depth):
        for k in itertools.product(*space.kernel):
            for e in itertools.product(*space.expand):
                for r in space.resolution:
                    cfg = space.canonical(SubnetConfig(depth=depth, kernel=k, expand=e, resolution=r))
                    if cfg not in seen:
                        seen.add(cfg)
                        yield cfg


def _objective(cfgs):
    # an interaction the additive part cannot explain: kernel 5 in the first block of both units pays off
    return [_known_accuracy(c) + 3.0 * (c.kernel[0] == 5 and c.kernel[2] == 5 and c.resolution == 16) for c in cfgs]


def test_evolution_finds_the_exact_optimum_of_an_enumerable_space():
    everything = list(_every_network(SMALL))
    assert len(everything) == SMALL.count() == 3360
    scores = _objective(everything)
    budgets = [{"macs": 40000.0}, {"macs": 80000.0, "params": 200.0}, {"params": 150.0}]
    for budget in budgets:
        feasible = [i for i, c in enumerate(everything) if all(COSTS[k](c) <= v for k, v in budget.items())]
        assert 0 < len(feasible) < len(everything)
        budget["best"] = max(scores[i] for i in feasible)
    for seed in range(3):  # at most 50 x (1 + 20) = 1050 evaluations, under a third of the space
        results = search(SMALL, _objective, COSTS, [{k: v for k, v in b.items() if k != "best"} for b in budgets],
                         population=50, generations=20, seed=seed)
        for b, r in zip(budgets, results):
            assert r.score == pytest.approx(b["best"]), (seed, b)
            assert r.score == pytest.approx(_objective([r.config])[0])
            assert r.costs == {k: COSTS[k](r.config) for k in COSTS}
            assert all(r.costs[k] <= v for k, v in b.items() if k != "best")
            # at most 1050: in a small feasible region the distinct children can run out within max_tries
            assert r.evaluations <= 50 * 21 and len(r.history) == 21
            assert r.history == sorted(r.history)  # parents survive: the best never gets worse
            assert r.config == SMALL.canonical(r.config) and r.config in SMALL


def test_seeded_and_deterministic():
    kw = dict(population=20, generations=10)
    a = search(SMALL, _objective, COSTS, {"macs": 60000.0}, seed=4, **kw)[0]
    b = search(SMALL, _objective, COSTS, {"macs": 60000.0}, seed=4, **kw)[0]
    assert (a.config, a.score, a.history) == (b.config, b.score, b.history)
    r1 = search(SMALL, _objective, COSTS, {"macs": 60000.0}, method="random", evaluations=50, seed=1)[0]
    r2 = search(SMALL, _objective, COSTS, {"macs": 60000.0}, method="random", evaluations=50, seed=1)[0]
    assert (r1.config, r1.history) == (r2.config, r2.history) and r1.evaluations == 50


def test_a_budget_just_above_the_smallest_network_is_still_met():
    smallest = MACS(SMALL.min())
    limit = smallest * 1.05  # random networks almost never fit
    r = search(SMALL, _objective, COSTS, {"macs": limit}, population=20, generations=5, max_tries=5)[0]
    assert r.costs["macs"] <= limit
    best = max(_objective([c])[0] for c in _every_network(SMALL) if MACS(c) <= limit)
    assert r.score == pytest.approx(best)


def test_impossible_budgets_and_bad_settings_speak_to_the_user():
    smallest = MACS(SMALL.min())
    with pytest.raises(ConfigError, match=rf"budget macs <= 100 cannot be met: the smallest sub-network of small "
                                          rf"costs macs = {smallest:g}"):
        search(SMALL, _objective, COSTS, [{"macs": 1e9}, {"macs": 100.0}])
    with pytest.raises(ConfigError, match="'latency', which is not a cost given to the search; the costs are: "
                                          "macs, params"):
        search(SMALL, _objective, COSTS, {"latency": 20.0})
    with pytest.raises(ConfigError, match="must be a positive number"):
        search(SMALL, _objective, COSTS, {"macs": -1.0})
    with pytest.raises(ConfigError, match="population"):
        search(SMALL, _objective, COSTS, {"macs": 1e9}, population=1)
    with pytest.raises(ConfigError, match="unknown search setting 'generation'"):
        search(SMALL, _objective, COSTS, {"macs": 1e9}, generation=5)
    with pytest.raises(ConfigError, match="unknown search method 'grid'"):
        search(SMALL, _objective, COSTS, {"macs": 1e9}, method="grid")


# ---------------------------------------------------------------------- the full OFA-MobileNetV3 space
MBV3 = create_model("ofa_mbv3_d234_e346_k357_w1.0").space


def _mbv3_macs(cfg):
    """A MACs-like cost: per running block k^2 * e, scaled by the resolution (cheap, monotone in every choice)."""
    return _block_sum(MBV3, cfg, lambda k, e: k * k * e) * (cfg.resolution / 128) ** 2


@functools.lru_cache(maxsize=1)
def _mbv3_predictor(seed=0):
    """A predictor fitted to a made-up accuracy: a real MLP landscape, the same for both finders."""
    rng = random.Random(seed)
    cfgs = [MBV3.sample(rng) for _ in range(300)]

    def acc(c):
        on = MBV3.active_blocks(c)
        return 60 + sum(np.log(k * e) * (1 + (j % 4 == 0)) for j, (k, e, a) in enumerate(zip(c.kernel, c.expand, on))
                        if a) / 4 + c.resolution / 50

    pred = AccuracyPredictor(MBV3, hidden=128)
    pred.fit(cfgs, [acc(c) for c in cfgs], steps=200)
    return pred


def test_evolution_beats_random_search_at_equal_evaluations():
    pred = _mbv3_predictor()
    costs = {"macs": _cost("macs", _mbv3_macs)}
    budget = {"macs": 0.5 * _mbv3_macs(MBV3.max())}
    for seed in range(2):
        evo = search(MBV3, pred, costs, budget, population=50, generations=10, seed=seed)[0]
        rand = search(MBV3, pred, costs, budget, method="random", evaluations=evo.evaluations, seed=seed)[0]
        assert rand.evaluations == evo.evaluations == 550
        assert evo.score > rand.score and evo.costs["macs"] <= budget["macs"] and rand.costs["macs"] <= budget["macs"]


@pytest.mark.parity
def test_at_least_as_good_as_the_ofa_evolution_finder_at_equal_evaluations():
    import torch
    from ofa.nas.accuracy_predictor.arch_encoder import MobileNetArchEncoder
    from ofa.nas.search_algorithm.evolution import EvolutionFinder

    pred = _mbv3_predictor()

    def to_cfg(arch):
        return SubnetConfig(depth=arch["d"], kernel=arch["ks"], expand=arch["e"], resolution=arch["image_size"])

    class RefAccuracy:  # the reference's predictor interface over the same predictor
        arch_encoder = MobileNetArchEncoder(image_size_list=list(MBV3.resolution))
        calls = 0

        def predict_acc(self, archs):
            RefAccuracy.calls += len(archs)
            return torch.from_numpy(pred.predict([to_cfg(a) for a in archs]))

    class RefEfficiency:
        def get_efficiency(self, arch):
            return _mbv3_macs(to_cfg(arch))

    limit = 0.4 * _mbv3_macs(MBV3.max())
    generations, ours, theirs = 8, [], []
    for seed in range(4):
        random.seed(seed)
        np.random.seed(seed)
        RefAccuracy.calls = 0
        finder = EvolutionFinder(RefEfficiency(), RefAccuracy(), max_time_budget=generations)
        _, (ref_acc, ref_arch, ref_macs) = finder.run_evolution_search(limit, verbose=False)
        r = search(MBV3, pred, {"macs": _cost("macs", _mbv3_macs)}, {"macs": limit}, generations=generations,
                   seed=seed)[0]
        assert r.evaluations == RefAccuracy.calls == 100 * (generations + 1)  # equal budgets
        assert ref_macs <= limit and r.costs["macs"] <= limit
        ours.append(r.score)
        theirs.append(ref_acc)
    assert np.mean(ours) >= np.mean(theirs), (ours, theirs)
