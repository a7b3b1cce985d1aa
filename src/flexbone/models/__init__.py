"""The model zoo. Importing this package registers every family."""
from ._base import Backbone, default_cfg
from ._builder import create_model
from ._features import FeatureInfo, FeatureStage
from ._registry import is_model, list_models, model_entrypoint, model_family, register_model

from . import resnet  # noqa: F401  (registers the family)
from . import pvt  # noqa: F401
