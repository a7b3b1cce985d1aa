"""``create_model``: registry lookup, construction, optional weights, optional feature extraction."""
from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

import torch.nn as nn

from ..checkpoint import load_checkpoint
from ..errors import ConfigError, FlexboneError
from ..options import check_range
from ._registry import model_entrypoint


# the common model arguments: (lowest, highest or None, integer); a rate of 1 drops everything, as torch's
# Dropout(p=1) does, which is legal (a test uses it to see where dropout acts)
MODEL_ARG_RANGES = {"num_classes": (0, None, True), "in_chans": (1, None, True), "drop_rate": (0, 1, False),
                    "drop_path_rate": (0, 1, False), "drop_block_rate": (0, 1, False)}


def create_model(
    model_name: str,
    pretrained: bool | str | os.PathLike = False,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] | int | None = None,
    checkpoint_key: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        model_name: a name from ``list_models()``.
        pretrained: ``False``, or the path of a checkpoint to load (``.safetensors`` / ``.pt`` / ``.pth``;
            timm- and torchvision-style). flexbone never downloads weights. A classifier of a different
            size than ``num_classes`` is left freshly initialised; an RGB stem is adapted to ``in_chans``.
        features_only: return a feature extractor whose ``forward`` gives a list of stage maps.
        out_indices: the levels to return with ``features_only`` (negative allowed; default all).
        checkpoint_key: entry of the checkpoint that holds the weights (e.g. ``'state_dict_ema'``).
        **kwargs: ``num_classes``, ``in_chans``, ``drop_rate``, ``drop_path_rate``, ``global_pool``,
            ``output_stride`` and family options (see each family's model class).
    """
    entry = model_entrypoint(model_name)
    for arg, (lo, hi, integer) in MODEL_ARG_RANGES.items():  # at the edge, with the valid range in the message
        if kwargs.get(arg) is not None:
            check_range(f"{model_name}: {arg}", kwargs[arg], lo, hi, integer=integer)
    if "output_stride" in kwargs and kwargs["output_stride"] not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, not {kwargs['output_stride']}")
    if pretrained is True:
        raise FlexboneError(
            "flexbone never downloads weights: pass pretrained='/path/to/checkpoint' "
            "(a timm or torchvision checkpoint of the same architecture loads as it is)"
        )
    if getattr(entry, "loads_pretrained", False):  # a composed model (seg_*) loads a checkpoint into its backbone
        kwargs["pretrained"], pretrained = pretrained, False
    try:
        model = entry(**kwargs)
    except TypeError as e:
        # an option the family does not have: name it, and list those it does have
        msg = str(e)
        if "unexpected keyword argument" in msg:
            cls = getattr(entry, "model_cls", None)
            options = ""
            if cls is not None:
                names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
                options = f"; {model_name} accepts: {', '.join(names)}"
            raise ConfigError(f"{model_name}: {msg.split(': ', 1)[-1]}{options}") from None
        raise
    if isinstance(getattr(model, "default_cfg", None), dict):  # timm's cfg names the architecture
        model.default_cfg = {**model.default_cfg, "architecture": model_name}
    if pretrained:
        load_checkpoint(model, pretrained, key=checkpoint_key, skip_mismatched_classifier=True, adapt_first_conv=True)
    if features_only:
        if not hasattr(model, "as_features"):
            raise ConfigError(f"{model_name} does not provide features_only")
        model.as_features(out_indices)
    elif out_indices is not None:
        raise ConfigError("out_indices needs features_only=True")
    return model
