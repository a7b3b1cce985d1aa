"""Inception-v4 and Inception-ResNet-v2.

Szegedy et al. 2017, "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning".

An Inception module runs several branches side by side on the same input (1x1 convs, stacks of 3x3 or
factorised 1x7 / 7x1 convs, a pooling branch) and concatenates their outputs, so each module mixes
receptive fields of several sizes. Reduction modules do the same with stride 2. Inception-ResNet adds
each module's (1x1-projected) output to its input, scaled by 0.1-0.2: the paper found that without the
scaling the residual variants with many filters "died" early in training.

Most convs have no padding (the TensorFlow "VALID" convs of the trained weights), so the maps shrink by
2 at each 3x3 conv: a 299 px input ends at 8x8, and inputs below 75 px are too small.

Each module is written as its branch table: ``_convs(conv, rows)`` builds one branch from rows
``(in, out, kernel, stride, padding)``. Parameter names follow timm's ``inception_v4.py`` and
``inception_resnet_v2.py`` (``features.4.branch1.2.conv``, ``repeat.0.branch2.1.bn``, ``classif``), so its
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..layers import ConvNormAct, create_classifier
from ..layers.activations import get_act_layer
from ..layers.norm import BatchNorm2d
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_model

Row = tuple  # (in_chs, out_chs, kernel, stride=1, padding=0); kernel and padding may be (h, w) pairs


def _convs(conv: Callable, *rows: Row) -> nn.Sequential:
    """One branch: a chain of conv-BN-ReLU, one per row ``(in, out, kernel, stride=1, padding=0)``."""
    return nn.Sequential(*[conv(*row) for row in rows])


def _pool_conv(conv: Callable, in_chs: int, out_chs: int) -> nn.Sequential:
    """The pooling branch: 3x3 average pool (padding not counted, as TensorFlow) and a 1x1 conv."""
    return nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), conv(in_chs, out_chs, 1))


# ------------------------------------------------------------------------------------------- blocks
class Branches(nn.ModuleDict):
    """Run every branch on the input, in order; concatenate their outputs along channels.

    A ``ModuleDict`` keyed by the branch names (``branch0``, ``branch1`` ..., the state-dict names), which
    TorchScript can iterate.
    """

    def __init__(self, **branches: nn.Module):
        super().__init__(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for branch in self.values():
            outs.append(branch(x))
        return torch.cat(outs, 1)


class ResidualBranches(nn.ModuleDict):
    """Inception-ResNet block: ``act(x + scale * conv2d(concat(branches(x))))`` (``act`` off in the last).

    ``conv2d`` (a linear 1x1 projection with bias, back to the input width) sits beside the branches, as in
    the state dicts; the forward runs every entry but it as a branch.
    """

    def __init__(self, out_chs: int, scale: float = 1.0, act: bool = True, **branches: nn.Module):
        cat_chs = sum(b[-1].conv.out_channels if isinstance(b, nn.Sequential) else b.conv.out_channels
                      for b in branches.values())
        super().__init__({**branches, "conv2d": nn.Conv2d(cat_chs, out_chs, 1)})
        self.scale = scale
        self.apply_act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for name, module in self.items():
            if name != "conv2d":
                outs.append(module(x))
        out = self["conv2d"](torch.cat(outs, 1)) * self.scale + x
        return torch.relu(out) if self.apply_act else out


class InceptionC(nn.Module):
    """Inception-v4's 8x8 module: two of its branches fork into parallel 1x3 and 3x1 convs."""

    def __init__(self, conv: Callable):
        super().__init__()
        self.branch0 = conv(1536, 256, 1)
        self.branch1_0 = conv(1536, 384, 1)
        self.branch1_1a = conv(384, 256, (1, 3), 1, (0, 1))
        self.branch1_1b = conv(384, 256, (3, 1), 1, (1, 0))
        self.branch2_0 = conv(1536, 384, 1)
        self.branch2_1 = conv(384, 448, (3, 1), 1, (1, 0))
        self.branch2_2 = conv(448, 512, (1, 3), 1, (0, 1))
        self.branch2_3a = conv(512, 256, (1, 3), 1, (0, 1))
        self.branch2_3b = conv(512, 256, (3, 1), 1, (1, 0))
        self.branch3 = _pool_conv(conv, 1536, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.branch1_0(x)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(x1), self.branch1_1b(x1), self.branch2_3a(x2),
                          self.branch2_3b(x2), self.branch3(x)], 1)  # (B, 1536, H, W)


# ------------------------------------------------------------------------------- Inception-v4 modules
def _mixed3a(c):  # (B, 64, H, W) -> (B, 160, H/2, W/2)
    return Branches(maxpool=nn.MaxPool2d(3, stride=2), conv=c(64, 96, 3, 2))


def _mixed4a(c):  # 160 -> 192
    return Branches(branch0=_convs(c, (160, 64, 1), (64, 96, 3)),
                    branch1=_convs(c, (160, 64, 1), (64, 64, (1, 7), 1, (0, 3)), (64, 64, (7, 1), 1, (3, 0)),
                                   (64, 96, 3)))


def _mixed5a(c):  # 192 -> 384, stride 2
    return Branches(conv=c(192, 192, 3, 2), maxpool=nn.MaxPool2d(3, stride=2))


def _inception_a(c):  # 384 -> 384 (35x35 at 299 px)
    return Branches(branch0=c(384, 96, 1), branch1=_convs(c, (384, 64, 1), (64, 96, 3, 1, 1)),
                    branch2=_convs(c, (384, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
                    branch3=_pool_conv(c, 384, 96))


def _reduction_a(c):  # 384 -> 1024, stride 2
    return Branches(branch0=c(384, 384, 3, 2), branch1=_convs(c, (384, 192, 1), (192, 224, 3, 1, 1), (224, 256, 3, 2)),
                    branch2=nn.MaxPool2d(3, stride=2))


def _inception_b(c):  # 1024 -> 1024 (17x17)
    return Branches(branch0=c(1024, 384, 1),
                    branch1=_convs(c, (1024, 192, 1), (192, 224, (1, 7), 1, (0, 3)), (224, 256, (7, 1), 1, (3, 0))),
                    branch2=_convs(c, (1024, 192, 1), (192, 192, (7, 1), 1, (3, 0)), (192, 224, (1, 7), 1, (0, 3)),
                                   (224, 224, (7, 1), 1, (3, 0)), (224, 256, (1, 7), 1, (0, 3))),
                    branch3=_pool_conv(c, 1024, 128))


def _reduction_b(c):  # 1024 -> 1536, stride 2
    return Branches(branch0=_convs(c, (1024, 192, 1), (192, 192, 3, 2)),
                    branch1=_convs(c, (1024, 256, 1), (256, 256, (1, 7), 1, (0, 3)), (256, 320, (7, 1), 1, (3, 0)),
                                   (320, 320, 3, 2)),
                    branch2=nn.MaxPool2d(3, stride=2))


# ---------------------------------------------------------------------- Inception-ResNet-v2 modules
def _mixed_5b(c):  # 192 -> 320
    return Branches(branch0=c(192, 96, 1), branch1=_convs(c, (192, 48, 1), (48, 64, 5, 1, 2)),
                    branch2=_convs(c, (192, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
                    branch3=_pool_conv(c, 192, 64))


def _block35(c, scale):  # 320 -> 320 (35x35), residual
    return ResidualBranches(320, scale, branch0=c(320, 32, 1), branch1=_convs(c, (320, 32, 1), (32, 32, 3, 1, 1)),
                            branch2=_convs(c, (320, 32, 1), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1)))


def _mixed_6a(c):  # 320 -> 1088, stride 2
    return Branches(branch0=c(320, 384, 3, 2), branch1=_convs(c, (320, 256, 1), (256, 256, 3, 1, 1), (256, 384, 3, 2)),
                    branch2=nn.MaxPool2d(3, stride=2))


def _block17(c, scale):  # 1088 -> 1088 (17x17), residual
    return ResidualBranches(1088, scale, branch0=c(1088, 192, 1), branch1=_convs(
        c, (1088, 128, 1), (128, 160, (1, 7), 1, (0, 3)), (160, 192, (7, 1), 1, (3, 0))))


def _mixed_7a(c):  # 1088 -> 2080, stride 2
    return Branches(branch0=_convs(c, (1088, 256, 1), (256, 384, 3, 2)),
                    branch1=_convs(c, (1088, 256, 1), (256, 288, 3, 2)),
                    branch2=_convs(c, (1088, 256, 1), (256, 288, 3, 1, 1), (288, 320, 3, 2)),
                    branch3=nn.MaxPool2d(3, stride=2))


def _block8(c, scale=1.0, act=True):  # 2080 -> 2080 (8x8), residual
    return ResidualBranches(2080, scale, act, branch0=c(2080, 192, 1), branch1=_convs(
        c, (2080, 192, 1), (192, 224, (1, 3), 1, (0, 1)), (224, 256, (3, 1), 1, (1, 0))))


# -------------------------------------------------------------------------------------------- models
class _InceptionBase(Backbone):
    """What both networks share: the conv-BN-ReLU factory, the classifier, the contract methods."""

    classifier_name: str

    def __init__(self, num_classes: int, output_stride: int, drop_rate: float):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"{type(self).__name__} supports output_stride=32 only, not {output_stride}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate

    def _make_head(self, num_features: int, global_pool: str) -> None:
        self.num_features = num_features
        self.global_pool, classifier = create_classifier(num_features, self.num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(self.drop_rate)
        setattr(self, self.classifier_name, classifier)
        self.head_hidden_size = num_features * self.global_pool.feat_mult()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, classifier = create_classifier(self.num_features, num_classes, pool_type=pool)
        setattr(self, self.classifier_name, classifier)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()


def _conv_row(in_chs: int, out_chs: int, kernel: int | tuple[int, int], stride: int = 1,
              padding: int | tuple[int, int] = 0, **kw: Any) -> ConvNormAct:
    return ConvNormAct(in_chs, out_chs, kernel, stride=stride, padding=padding, **kw)


def _conv_factory(act_layer: str | Callable, norm_eps: float) -> Callable[..., ConvNormAct]:
    """conv-BN-ReLU from a row, with TensorFlow's BN epsilon (1e-3) and VALID padding unless the row pads."""
    return partial(_conv_row, norm_layer=partial(BatchNorm2d, eps=norm_eps), act_layer=get_act_layer(act_layer))


class InceptionV4(_InceptionBase):
    """Inception-v4: a stem of plain and mixed modules, then 4 x A, reduction A, 7 x B, reduction B, 3 x C.

    Args:
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        drop_path_rate: accepted for the common contract; Inception-v4 has no residual branch (no effect).
        output_stride: 32 only. act_layer: the activation. norm_eps: BN epsilon (TensorFlow's 1e-3).
    """

    classifier_name = "last_linear"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, act_layer: str | Callable = "relu",
                 norm_eps: float = 1e-3):
        super().__init__(num_classes, output_stride, drop_rate)
        c = _conv_factory(act_layer, norm_eps)
        self.features = nn.Sequential(
            c(in_chans, 32, 3, 2), c(32, 32, 3), c(32, 64, 3, 1, 1),  # stem convs: 299 -> 147
            _mixed3a(c), _mixed4a(c), _mixed5a(c),  # 147 -> 73 -> 71 -> 35
            *[_inception_a(c) for _ in range(4)], _reduction_a(c),  # 35 -> 17 ("Mixed6a")
            *[_inception_b(c) for _ in range(7)], _reduction_b(c),  # 17 -> 8 ("Mixed7a")
            *[InceptionC(c) for _ in range(3)],
        )
        self.feature_info = FeatureInfo([FeatureStage(64, 2, "features.2"), FeatureStage(160, 4, "features.3"),
                                         FeatureStage(384, 8, "features.9"), FeatureStage(1024, 16, "features.17"),
                                         FeatureStage(1536, 32, "features.21")])
        self._make_head(1536, global_pool)
        self.default_cfg = default_cfg(input_size=(3, 299, 299), pool_size=(8, 8), interpolation="bicubic",
                                       mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv="features.0.conv",
                                       classifier="last_linear", min_input_size=(3, 75, 75))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, H, W) -> (B, 1536, ~H/32 - 1, ~W/32 - 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.last_linear(x)


class InceptionResnetV2(_InceptionBase):
    """Inception-ResNet-v2: stem, mixed 5b, 10 x block35, mixed 6a, 20 x block17, mixed 7a, 10 x block8, 1x1.

    Args:
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        drop_path_rate: accepted for the common contract; not used (timm's model has no stochastic depth).
        output_stride: 32 only. act_layer: the activation of the convs. norm_eps: BN epsilon (TensorFlow's 1e-3).
    """

    classifier_name = "classif"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, act_layer: str | Callable = "relu",
                 norm_eps: float = 1e-3):
        super().__init__(num_classes, output_stride, drop_rate)
        c = _conv_factory(act_layer, norm_eps)
        # registered in execution order: forward_intermediates walks the children
        self.conv2d_1a = c(in_chans, 32, 3, 2)  # 299 -> 149
        self.conv2d_2a = c(32, 32, 3)  # -> 147
        self.conv2d_2b = c(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)  # -> 73
        self.conv2d_3b = c(64, 80, 1)
        self.conv2d_4a = c(80, 192, 3)  # -> 71
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)  # -> 35
        self.mixed_5b = _mixed_5b(c)
        self.repeat = nn.Sequential(*[_block35(c, 0.17) for _ in range(10)])
        self.mixed_6a = _mixed_6a(c)  # -> 17
        self.repeat_1 = nn.Sequential(*[_block17(c, 0.10) for _ in range(20)])
        self.mixed_7a = _mixed_7a(c)  # -> 8
        self.repeat_2 = nn.Sequential(*[_block8(c, 0.20) for _ in range(9)])
        self.block8 = _block8(c, act=False)
        self.conv2d_7b = c(2080, 1536, 1)
        self.feature_info = FeatureInfo([FeatureStage(64, 2, "conv2d_2b"), FeatureStage(192, 4, "conv2d_4a"),
                                         FeatureStage(320, 8, "repeat"), FeatureStage(1088, 16, "repeat_1"),
                                         FeatureStage(1536, 32, "conv2d_7b")])
        self._make_head(1536, global_pool)
        self.default_cfg = default_cfg(input_size=(3, 299, 299), pool_size=(8, 8), crop_pct=0.8975,
                                       interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                       first_conv="conv2d_1a.conv", classifier="classif", min_input_size=(3, 75, 75))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
        x = self.maxpool_5a(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.repeat_1(self.mixed_6a(self.repeat(self.mixed_5b(x))))
        x = self.block8(self.repeat_2(self.mixed_7a(x)))
        return self.conv2d_7b(x)  # (B, 1536, ~H/32 - 1, ~W/32 - 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.classif(x)


# ---------------------------------------------------------------------------------------- variants
for _name, _cls in {"inception_v4": InceptionV4, "inception_resnet_v2": InceptionResnetV2}.items():
    _entry = partial(_cls)
    _entry.model_cls = _cls  # lets create_model list the accepted options on a bad keyword
    register_model(_entry, name=_name, family="inception")
