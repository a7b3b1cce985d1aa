"""Elastic supernets (once-for-all): dynamic layers, search spaces, sub-network extraction, BN recalibration.

* :mod:`.ops` - dynamic layers and elastic blocks (leading-slice weights, elastic kernels and depth).
* :mod:`.space` - :class:`SubnetConfig` (one sub-network, JSON round-trip) and :class:`SearchSpace`.
* :mod:`.ofa_resnet` - the ``ofa_resnet50`` supernet (registered; ``create_model("ofa_resnet50")``).
* :mod:`.ofa_mobilenet` - the OFA-MobileNetV3 (``ofa_mbv3_d234_e346_k357_w1.0`` / ``w1.2``) and ProxylessNAS /
  MobileNetV2 (``ofa_proxyless_d234_e346_k357_w1.3``, ``ofa_mbv2_d234_e346_k357_w1.0``) supernets.
* :mod:`.bn` - :func:`recalibrate_bn`.
* :mod:`.subnets` - :func:`save_subnet` / :func:`load_subnet` (config.json + model.safetensors).

A supernet offers ``space``, ``set_active(cfg)``, ``active_config``, ``extract()`` (a static zoo model),
``subnet_kwargs()`` and ``reorganize_channels()``.
"""
from .bn import recalibrate_bn
from .ofa_mobilenet import OFAMobileNetSpec, OFAMobileNetV2, OFAMobileNetV3
from .ofa_resnet import OFAResNet, OFAResNetSpec
from .space import DepthUnit, SearchSpace, SubnetConfig
from .subnets import load_subnet, save_subnet

__all__ = ["recalibrate_bn", "OFAMobileNetSpec", "OFAMobileNetV2", "OFAMobileNetV3", "OFAResNet", "OFAResNetSpec",
           "DepthUnit", "SearchSpace", "SubnetConfig", "load_subnet", "save_subnet"]
