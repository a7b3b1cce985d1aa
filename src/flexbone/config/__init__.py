"""Typed, validated training recipes: YAML files in ``recipes/`` -> :class:`Recipe` dataclasses."""
from .loader import (
    all_keys, apply_overrides, dump_recipe, list_recipes, load_recipe, parse_overrides, recipe_from_dict,
    recipe_path, recipe_to_dict, scaled_lr, validate_recipe,
)
from .schema import (
    AugConfig, DataConfig, DistillConfig, LossConfig, ModelConfig, OptimConfig, Recipe, ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "Recipe", "ModelConfig", "DataConfig", "AugConfig", "OptimConfig", "ScheduleConfig", "LossConfig",
    "TrainConfig", "DistillConfig", "load_recipe", "apply_overrides", "parse_overrides", "recipe_from_dict",
    "recipe_to_dict", "dump_recipe", "scaled_lr", "list_recipes", "recipe_path", "validate_recipe", "all_keys",
]
