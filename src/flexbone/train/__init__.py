"""Training: optimisers, schedules, losses, weight EMA, checkpoints, DDP, and the plain training loop."""
from .checkpoint import get_rng_state, load_training_state, save_training_state, set_rng_state
from .ema import ModelEma
from .losses import BinaryCrossEntropy, CrossEntropy, SoftTargetCrossEntropy, create_loss, distillation_loss
from .optim import Lamb, create_optimizer, param_groups_weight_decay
from .schedule import LRScheduler, cosine_lr, create_scheduler, step_lr

__all__ = [
    "Lamb", "create_optimizer", "param_groups_weight_decay", "LRScheduler", "cosine_lr", "step_lr",
    "create_scheduler", "CrossEntropy", "BinaryCrossEntropy", "SoftTargetCrossEntropy", "distillation_loss",
    "create_loss", "ModelEma", "save_training_state", "load_training_state", "get_rng_state", "set_rng_state",
]
