"""Search spaces and sub-network configurations: counting, sampling, validation, constraints, JSON."""
import itertools
import json
import random

import pytest

from flexbone.elastic.space import DepthUnit, SearchSpace, SubnetConfig
from flexbone.errors import ConfigError


def _mbv3_space(resolutions=()):
    # OFA-MobileNetV3 (DESIGN.md, the OFA paper): 5 units of up to 4 blocks,
    # depth {2,3,4}, kernel {3,5,7}, expand {3,4,6}
    return SearchSpace(depth=((2, 3, 4),) * 5, units=tuple(DepthUnit(4 * i, 0) for i in range(5)),
                       kernel=((3, 5, 7),) * 20, expand=((3, 4, 6),) * 20, resolution=resolutions, name="ofa_mbv3")


def test_count_of_the_published_mobilenetv3_space():
    # the paper: ((3x3)^2 + (3x3)^3 + (3x3)^4)^5 = 7371^5 ~ 2.2e19 sub-networks, times 25 resolutions 128..224 step 4
    assert 9 ** 2 + 9 ** 3 + 9 ** 4 == 7371
    assert _mbv3_space().count() == 7371 ** 5
    assert _mbv3_space(range(128, 225, 4)).count() == 7371 ** 5 * 25
    assert f"{7371 ** 5:.1e}" == "2.2e+19"


def test_count_equals_brute_force_enumeration():
    # a small space with every feature: a depth slot without a unit, units with a base, a free block slot, widths
    space = SearchSpace(depth=((0, 2), (0, 1), (1, 2)), units=(None, DepthUnit(0, 1), DepthUnit(2, 0)),
                        expand=((1, 2),) * 4 + ((1, 2, 3),), kernel=((3,), (3, 5), (3,), (3, 5), (3,)),
                        width=((0.5, 1.0),), resolution=(32, 64))
    configs = set()
    for depth, expand, kernel, width, res in itertools.product(
            itertools.product(*space.depth), itertools.product(*space.expand), itertools.product(*space.kernel),
            itertools.product(*space.width), space.resolution):
        cfg = SubnetConfig(depth=depth, expand=expand, kernel=kernel, width=width, resolution=res)
        configs.add(space.canonical(space.validate(cfg)))
    assert space.count() == len(configs)


def test_sample_min_max_and_membership():
    space = _mbv3_space(range(128, 225, 4))
    a, b = space.sample(random.Random(1)), space.sample(random.Random(1))
    assert a == b  # seeded: identical on every DDP rank
    assert a in space and space.min() in space and space.max() in space
    assert space.min().kernel == (3,) * 20 and space.max().depth == (4,) * 5
    assert space.min().resolution == 128 and space.max().resolution == 224
    draws = {space.sample(random.Random(s)).depth[0] for s in range(50)}
    assert draws == {2, 3, 4}


def test_subnet_config_json_round_trip(tmp_path):
    cfg = SubnetConfig(depth=[2, 3], expand=[0.2, 0.35], width=[0.65, 1.0], resolution=160)
    assert cfg.depth == (2, 3)  # lists become tuples: hashable, immutable
    assert SubnetConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert SubnetConfig.from_json(tmp_path / "c.json") == cfg
    assert json.loads(cfg.to_json()) == {"depth": [2, 3], "expand": [0.2, 0.35], "width": [0.65, 1.0],
                                         "resolution": 160}
    with pytest.raises(ConfigError, match="unknown SubnetConfig field.*'expnd'"):
        SubnetConfig.from_dict({"depth": [2], "expnd": [3]})
    with pytest.raises(ConfigError, match="SubnetConfig.depth"):
        SubnetConfig(depth="234")


def test_validate_names_the_field_and_the_allowed_values():
    space = _mbv3_space()
    good = space.max()
    with pytest.raises(ConfigError, match=r"SubnetConfig.kernel\[7\] = 4 is not allowed in ofa_mbv3; allowed: 3, 5, 7"):
        space.validate(good.replace(kernel=good.kernel[:7] + (4,) + good.kernel[8:]))
    with pytest.raises(ConfigError, match=r"SubnetConfig.depth has 4 values; ofa_mbv3 needs 5 \(allowed: 2, 3, 4\)"):
        space.validate(good.replace(depth=(4, 4, 4, 4)))
    with pytest.raises(ConfigError, match="SubnetConfig.width is set, but ofa_mbv3 has no elastic width"):
        space.validate(good.replace(width=(1.0,)))
    with pytest.raises(ConfigError, match="SubnetConfig.resolution is set"):
        space.validate(good.replace(resolution=224))


def test_restrict_gives_a_phase_sub_space():
    space = _mbv3_space()
    phase = space.restrict(expand=(4, 6), depth=(3, 4))  # e.g. the 'expand 1' phase of progressive shrinking
    assert phase.expand == ((4, 6),) * 20 and phase.depth == ((3, 4),) * 5
    assert phase.count() == ((2 * 3) ** 3 + (2 * 3) ** 4) ** 5
    cfg = phase.sample(random.Random(0))
    assert cfg in phase and cfg in space
    assert space.min() not in phase
    with pytest.raises(ConfigError, match="expand = 5 is not in ofa_mbv3; allowed: 3, 4, 6"):
        space.restrict(expand=(5,))
    with pytest.raises(ConfigError, match="no elastic width"):
        space.restrict(width=(1.0,))


def test_space_json_round_trip():
    space = _mbv3_space(range(128, 225, 4)).restrict(kernel=(5, 7))
    assert SearchSpace.from_json(space.to_json()) == space
