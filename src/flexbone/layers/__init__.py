"""Shared building blocks, one concern per file. Norm and activation layers are injectable by name or callable."""
from .activations import get_act_layer
from .attention import SpatialReductionAttention
from .blur_pool import BlurPool2d
from .classifier import ClassifierHead, SelectAdaptivePool2d, create_classifier
from .conv_norm_act import ConvNormAct, get_padding
from .drop import DropBlock2d, DropPath, drop_path
from .eca import EcaModule
from .evo_norm import EvoNorm2dS0
from .helpers import make_divisible
from .inverted_residual import ConvBlock, DepthwiseSeparable, InvertedResidual, MobileSqueezeExcite
from .norm import BatchNorm2d, get_norm_layer
from .separable_conv import SeparableConvNormAct
from .squeeze_excite import EffectiveSEModule, SEModule
