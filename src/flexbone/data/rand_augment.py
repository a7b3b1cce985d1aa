"""RandAugment with timm-style configuration strings and per-op magnitude noise.

``'rand-m7-mstd0.5-inc1'`` (the ResNet-strikes-back setting) means: RandAugment, magnitude 7 out of 10,
every op draws its own magnitude from N(7, 0.5) clipped to [0, 10], ops whose severity increases with the
magnitude. torchvision's RandAugment has a fixed integer magnitude and applies every chosen op; timm's
applies each chosen op with probability 0.5 and supports the magnitude noise. This module keeps
torchvision's op implementations (``transforms.v2``) and adds timm's sampling rules.

Grammar (sections separated by '-', any order after the leading ``rand``):
    m<float>     magnitude in [0, 10] (default 10)
    n<int>       ops per image (default 2)
    mstd<float>  std of the per-op magnitude noise (default 0); > 100 means uniform in [0, m]
    mmax<float>  upper clip of the noisy magnitude (default 10; values above 10 are not supported)
    p<float>     probability of applying each chosen op (default 0.5, as timm)
    inc<0|1>     timm's 'increasing' op set. torchvision's ops always grow in severity with the magnitude,
                 so inc0 and inc1 build the same ops here (documented difference to timm's inc0 set).

Differences to timm's op set that remain: no ``SolarizeAdd`` (torchvision has none), and ``Posterize``
follows torchvision's bit table (8 -> 4 bits over m = 0..10; timm's 'increasing' goes 4 -> 0 bits).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from torchvision.transforms import InterpolationMode, v2

from ..errors import ConfigError

MAX_LEVEL = 10.0  # magnitude scale of the strings, as timm's _LEVEL_DENOM


@dataclass(frozen=True)
class RandAugmentSpec:
    """A parsed RandAugment configuration string."""

    magnitude: float = 10.0  # 0..10
    num_ops: int = 2
    magnitude_std: float = 0.0  # 0 = fixed magnitude; inf = uniform in [0, magnitude]
    magnitude_max: float = MAX_LEVEL
    prob: float = 0.5  # probability of applying each chosen op
    increasing: bool = False


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_KEYS = ("mstd", "mmax", "inc", "m", "n", "p")  # longest first: 'mstd' before 'm'


def parse_rand_augment(config: str) -> RandAugmentSpec:
    """Parse a timm-style string such as ``'rand-m9-n3-mstd0.5'`` (see the module docstring).

    Raises:
        ConfigError: not starting with ``rand``, an unknown section, or a value out of range.
    """
    parts = config.strip().split("-")
    if parts[0] != "rand":
        raise ConfigError(f"RandAugment string {config!r} must start with 'rand' (e.g. 'rand-m7-mstd0.5-inc1')")
    values: dict[str, Any] = {}
    for part in parts[1:]:
        if not part:
            continue
        key = next((k for k in _KEYS if part.startswith(k) and re.fullmatch(_NUMBER, part[len(k):])), None)
        if key is None:
            raise ConfigError(f"RandAugment string {config!r}: cannot read section {part!r}; "
                              "known sections: m<magnitude> n<ops> mstd<std> mmax<max> p<prob> inc<0|1>")
        values[key] = float(part[len(key):])
    spec = RandAugmentSpec(
        magnitude=values.get("m", MAX_LEVEL),
        num_ops=int(values.get("n", 2)),
        magnitude_std=math.inf if values.get("mstd", 0.0) > 100 else values.get("mstd", 0.0),
        magnitude_max=values.get("mmax", MAX_LEVEL),
        prob=values.get("p", 0.5),
        increasing=bool(values.get("inc", 0)),
    )
    if "n" in values and not float(values["n"]).is_integer():
        raise ConfigError(f"RandAugment string {config!r}: n (ops per image) must be an integer")
    if not 0 < spec.magnitude_max <= MAX_LEVEL:
        raise ConfigError(f"RandAugment string {config!r}: mmax must be in (0, {MAX_LEVEL:g}]")
    if not 0 <= spec.magnitude <= spec.magnitude_max:
        raise ConfigError(f"RandAugment string {config!r}: magnitude must be in [0, {spec.magnitude_max:g}]")
    if not 0 <= spec.prob <= 1:
        raise ConfigError(f"RandAugment string {config!r}: p must be a probability in [0, 1]")
    return spec


class RandAugmentNoisy(v2.RandAugment):
    """torchvision's RandAugment ops with timm's sampling: per-op probability and magnitude noise.

    For each of ``num_ops`` ops (drawn uniformly, with replacement): skip it with probability ``1 - prob``;
    otherwise draw the magnitude ``m' ~ N(magnitude, magnitude_std)`` (uniform in [0, magnitude] when the std
    is infinite), clip it to [0, magnitude_max], and map it linearly onto torchvision's range for that op
    (e.g. Rotate: 0..30 degrees over m' = 0..10), with a random sign for the signed ops.
    Randomness comes from torch's global generator (seeded per DataLoader worker).
    """

    # torchvision's ops without 'Identity' (the per-op probability already leaves images untouched) and with
    # 'Invert', which timm's RandAugment uses.
    _AUGMENTATION_SPACE = {
        **{k: v for k, v in v2.RandAugment._AUGMENTATION_SPACE.items() if k != "Identity"},
        "Invert": (lambda num_bins, height, width: None, False),
    }

    def __init__(self, spec: RandAugmentSpec, interpolation: Any = "bilinear", fill: Any = None):
        if isinstance(interpolation, str):
            interpolation = InterpolationMode(interpolation)
        super().__init__(num_ops=spec.num_ops, magnitude=0, num_magnitude_bins=int(MAX_LEVEL) + 1,
                         interpolation=interpolation, fill=fill)
        self.spec = spec

    def _sample_magnitude(self) -> float:
        s = self.spec
        if s.magnitude_std == math.inf:
            m = float(torch.rand(())) * s.magnitude
        elif s.magnitude_std > 0:
            m = s.magnitude + s.magnitude_std * float(torch.randn(()))
        else:
            m = s.magnitude
        return min(max(m, 0.0), s.magnitude_max)

    def forward(self, *inputs: Any) -> Any:
        flat_inputs_with_spec, image = self._flatten_and_extract_image_or_video(inputs)
        height, width = v2.functional.get_size(image)
        interpolation = self.interpolation
        if not isinstance(image, PIL.Image.Image) and interpolation == InterpolationMode.BICUBIC:
            interpolation = InterpolationMode.BILINEAR  # torchvision's tensor affine/rotate kernels lack bicubic
        for _ in range(self.num_ops):
            op, (magnitudes_fn, signed) = self._get_random_item(self._AUGMENTATION_SPACE)
            if self.spec.prob < 1 and float(torch.rand(())) >= self.spec.prob:
                continue
            table = magnitudes_fn(self.num_magnitude_bins, height, width)  # values at m = 0, 1, ..., 10
            value = 0.0
            if table is not None:
                m = self._sample_magnitude()
                lo = min(int(m), self.num_magnitude_bins - 2)
                value = float(table[lo]) + (m - lo) * float(table[lo + 1] - table[lo])  # linear between bins
                if op == "Posterize":
                    value = float(round(value))
                if signed and float(torch.rand(())) <= 0.5:
                    value = -value
            image = self._apply_image_or_video_transform(image, op, value, interpolation=interpolation,
                                                         fill=self._fill)
        return self._unflatten_and_insert_image_or_video(flat_inputs_with_spec, image)

    def extra_repr(self) -> str:
        s = self.spec
        return f"n={s.num_ops}, m={s.magnitude:g}, mstd={s.magnitude_std:g}, mmax={s.magnitude_max:g}, p={s.prob:g}"
