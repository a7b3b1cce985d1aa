"""flexbone: vision backbones. Train once, deploy at every budget."""
from .checkpoint import load_checkpoint, load_state_dict, save_state_dict
from .errors import CheckpointError, ConfigError, FlexboneError, UnknownModelError
from .models import create_model, is_model, list_models

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "is_model", "load_checkpoint", "load_state_dict", "save_state_dict",
    "FlexboneError", "UnknownModelError", "CheckpointError", "ConfigError", "__version__",
]
