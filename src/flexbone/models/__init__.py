"""The model zoo. Importing this package registers every family."""
from ._base import Backbone, default_cfg
from ._builder import create_model
from ._features import PYRAMID, FeatureInfo, FeatureStage
from ._registry import is_model, list_models, model_entrypoint, model_family, register_model, register_model_pattern

from . import resnet  # noqa: F401  (registers the family)
from . import mobilenet  # noqa: F401
from . import pvt  # noqa: F401
from . import vovnet  # noqa: F401
from . import densenet  # noqa: F401
from . import res2net  # noqa: F401
from . import cspnet  # noqa: F401
from . import inception  # noqa: F401
from . import fbnetv3  # noqa: F401
from . import rdnet  # noqa: F401
from . import vit  # noqa: F401
from . import swin  # noqa: F401
from . import maxvit  # noqa: F401
from . import nasnet  # noqa: F401
from . import pnasnet  # noqa: F401
from . import hardnet  # noqa: F401
from . import cbnet  # noqa: F401  (composites of the families above)
from . import ffnet  # noqa: F401  (FFNet segmentation / classification)
from ..elastic import ofa_resnet  # noqa: F401  (supernets, after the families they extract to)
from ..elastic import ofa_mobilenet  # noqa: F401
from ..stitch import snnet  # noqa: F401  (SN-Net over the anchors above)

# seg_<head>_<backbone>: a segmentation head over any model with features_only, resolved by name (flexbone.seg.model)
register_model_pattern("seg_", "flexbone.seg.model:seg_entrypoint", listed="flexbone.seg.model:listed_seg_models",
                       family="seg")
