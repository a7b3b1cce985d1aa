"""CBNetV2 composite backbones over any zoo model with a feature pyramid.

Liang et al. 2021, "CBNetV2: A Composite Backbone Network Architecture for Object Detection". ``K``
identical backbones run one after the other on the same image. The first ``K - 1`` are *assisting*
backbones, the last is the *lead* backbone whose pyramid goes to the detector's neck. Each backbone
``k > 1`` gets the pyramid of backbone ``k - 1`` through the Dense Higher-Level Composition (DHLC)::

    x_k^l = F_k^l( x_k^(l-1) + sum_{i >= l} g_i^l( x_(k-1)^i ) )

``F_k^l`` is stage ``l`` of backbone ``k`` and ``x_k^(l-1)`` its input (the stem output for the first
stage). ``g_i^l`` is a 1x1 conv + norm from the channels of level ``i`` to those of stage ``l``'s input,
followed by nearest (or bilinear) resampling to that input's size. Every level at or above a stage feeds
it: the higher-level, more semantic features of the assisting backbone reach all lower stages of the next.

The composition is zero-initialised (its norm's scale and shift start at 0), so a fresh composite, or one
loaded from a single-backbone checkpoint, starts as ``K`` independent copies whose lead output is that of
the plain backbone; training then learns how much to compose. The official code also keeps the
composition norms in eval mode (fixed statistics: an affine layer), as detection trains the backbone
with frozen batch statistics; ``composition_norm_eval`` does the same. By default every backbone runs
its own stem on the image; ``pruned_stages=0`` shares the first backbone's stem output instead, as the
official code does for CNN backbones (``cb_del_stages=0``).

Parameter names: ``backbones.{k}.<the backbone's own names>`` and
``composition.links.level{i}_to_stage{l}.{conv,bn}`` (one set of links for every pair of neighbouring
backbones, as in the official code). A checkpoint of the single backbone (timm,
torchvision, flexbone) loads into every copy through :meth:`CompositeBackbone._convert_checkpoint`, so
``flexbone.load_checkpoint(composite, 'resnet50.pth')`` and ``create_model('cb_resnet50',
pretrained='resnet50.pth')`` work.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers import ConvNormAct
from ..layers.norm import get_norm_layer
from ._base import Backbone
from ._builder import create_model
from ._features import PYRAMID, FeatureInfo, FeatureStage, feature_take_indices
from ._registry import is_model, register_variants

_PROBE_SIZE = (64, 96)  # (H, W) of the shape probe: non-square, so NCHW and NHWC maps can be told apart


class DenseHigherLevelComposition(nn.Module):
    """The DHLC links from one backbone's pyramid to the stage inputs of the next.

    Args:
        level_chs: channels of the assisting backbone's levels ``i = 0 .. L-1``.
        stage_in_chs: channels of the next backbone's stage inputs ``l = 0 .. L-1``.
        first_stage: the first stage that receives composed features (later stages all do).
        upsample: ``'nearest'`` (the official code) or ``'bilinear'``.
        norm_layer: the norm after each 1x1 conv.
        zero_init: start every link at zero output (norm scale and shift 0).
    """

    def __init__(self, level_chs: Sequence[int], stage_in_chs: Sequence[int], first_stage: int = 0,
                 upsample: str = "nearest", norm_layer: str | Callable = "batchnorm", zero_init: bool = True):
        super().__init__()
        if upsample not in ("nearest", "bilinear"):
            raise ConfigError(f"upsample must be 'nearest' or 'bilinear', not {upsample!r}")
        self.num_levels = len(level_chs)
        self.first_stage = first_stage
        self.upsample = upsample
        self.links = nn.ModuleDict()
        for stage in range(first_stage, self.num_levels):
            for level in range(stage, self.num_levels):
                link = ConvNormAct(level_chs[level], stage_in_chs[stage], 1, norm_layer=norm_layer, act_layer=None)
                if zero_init and hasattr(link.bn, "weight"):
                    nn.init.zeros_(link.bn.weight)
                    nn.init.zeros_(link.bn.bias)
                self.links[f"level{level}_to_stage{stage}"] = link

    def forward(self, levels: Sequence[torch.Tensor], stage: int, size: tuple[int, int]) -> torch.Tensor | None:
        """The sum of ``g_i^stage(levels[i])`` over ``i >= stage``, as a ``(B, C_in, *size)`` map (None if unfed)."""
        if stage < self.first_stage:
            return None
        total = None
        for level in range(stage, self.num_levels):
            y = self.links[f"level{level}_to_stage{stage}"](levels[level])  # (B, C_level, h, w) -> (B, C_in, h, w)
            # higher levels are coarser: resample to the stage input (always under torch.fx, where sizes are
            # symbolic: a same-size nearest / bilinear resample is exact)
            if is_fx_symbolic_tracing() or tuple(y.shape[-2:]) != tuple(size):
                y = F.interpolate(y, size=size, mode=self.upsample,
                                  align_corners=False if self.upsample == "bilinear" else None)
            total = y if total is None else total + y
        return total


class CompositeBackbone(Backbone):
    """``K`` copies of a zoo backbone joined by Dense Higher-Level Composition (CBNetV2).

    Args:
        name_or_model_factory: a registered model name (built with ``create_model(name, features_only=True,
            **model_kwargs)``) or a callable ``factory(**model_kwargs)`` returning a fresh :class:`Backbone`.
            The backbone must run as ``stem -> stage 1 -> ... -> stage L`` (its registered modules in
            order, as :meth:`Backbone.forward_intermediates` does); this is checked when building.
        k: number of backbones (1 = the plain backbone, 2 = CBNetV2's dual backbone).
        out_indices: the levels returned (default all; negative allowed).
        return_assistants: ``forward`` also returns the assisting backbones' pyramids (for assistant
            supervision: the detection loss on them, weighted, as in the paper).
        pruned_stages: ``None`` (default): every backbone runs its own stem on the image. ``0``: backbones
            ``2..K`` reuse the first backbone's stem output (the official CBNetV2 code's setting for CNNs);
            ``p > 0``: they also reuse its stages ``1..p``, and no composition feeds those stages.
        upsample: resampling of the composed features, ``'nearest'`` (official code) or ``'bilinear'``.
        composition_norm: norm of the DHLC links. composition_norm_eval: keep those norms in eval mode.
        zero_init_composition: start the links at zero (the composite then starts as the plain backbone).
        **model_kwargs: passed to every backbone (``drop_path_rate``, ``in_chans``, ``pretrained`` ...).
    """

    def __init__(
        self,
        name_or_model_factory: str | Callable[..., nn.Module],
        k: int = 2,
        out_indices: Sequence[int] | int | None = None,
        return_assistants: bool = False,
        pruned_stages: int | None = None,
        upsample: str = "nearest",
        composition_norm: str | Callable = "batchnorm",
        composition_norm_eval: bool = True,
        zero_init_composition: bool = True,
        **model_kwargs: Any,
    ):
        super().__init__()
        if k < 1:
            raise ConfigError(f"a composite backbone needs k >= 1 backbones, not {k}")
        self.backbone_name = name_or_model_factory if isinstance(name_or_model_factory, str) else getattr(
            name_or_model_factory, "__name__", type(name_or_model_factory).__name__)
        self.k = k
        self.return_assistants = return_assistants
        self.composition_norm_eval = composition_norm_eval
        self.backbones = nn.ModuleList(self._build_backbone(name_or_model_factory, model_kwargs) for _ in range(k))
        if len({id(b) for b in self.backbones}) != k:
            raise ConfigError("the model factory must return a new model on every call")
        first = self.backbones[0]  # all copies share the architecture: inspect the first
        pyramid = first.feature_info.get_dicts()  # the levels composed: strides 4..32 (see _build_backbone)
        num_levels = len(pyramid)
        self._stem_names, self._stage_names = _split_stages(first)
        stage_in_chs, self._stage_in_nhwc = self._probe_stage_inputs(first)

        if pruned_stages is not None and not 0 <= pruned_stages < num_levels:
            raise ConfigError(f"pruned_stages must be None or 0..{num_levels - 1}, not {pruned_stages}")
        self.pruned_stages = pruned_stages
        if pruned_stages is not None:
            for backbone in list(self.backbones)[1:]:
                for name in self._stem_names + [n for names in self._stage_names[:pruned_stages] for n in names]:
                    parent, _, child = name.rpartition(".")
                    setattr(backbone.get_submodule(parent) if parent else backbone, child, nn.Identity())

        # one set of links serves every pair (k-1 -> k), as in the official code (the paper's g_i^l has no k)
        level_chs = [s.num_chs for s in pyramid]
        self.composition = DenseHigherLevelComposition(
            level_chs, stage_in_chs, first_stage=pruned_stages or 0, upsample=upsample,
            norm_layer=get_norm_layer(composition_norm), zero_init=zero_init_composition,
        ) if k > 1 else None

        # the pyramid is the lead backbone's
        self.feature_info = FeatureInfo(
            [FeatureStage(s.num_chs, s.reduction, f"backbones.{k - 1}.{s.module}") for s in pyramid],
            out_indices,
        )
        self.out_indices = self.feature_info.out_indices
        self.features_only = True  # a composite is a feature extractor: forward returns a list of maps
        self.num_features = level_chs[-1]
        cfg = dict(getattr(first, "default_cfg", {}))
        first_conv = cfg.get("first_conv")
        self.default_cfg = dict(cfg, first_conv=f"backbones.0.{first_conv}" if first_conv else None, classifier=None)
        if composition_norm_eval:
            self.train(self.training)

    # ----------------------------------------------------------------------------------- building
    @staticmethod
    def _build_backbone(name_or_factory: str | Callable[..., nn.Module], kwargs: dict[str, Any]) -> Backbone:
        if "num_classes" in kwargs:
            raise ConfigError("a composite backbone is a feature extractor without a classifier: num_classes does "
                              "not apply (put a head on its pyramid instead)")
        if isinstance(name_or_factory, str):
            model = create_model(name_or_factory, features_only=True, out_indices=PYRAMID, **kwargs)
        else:
            model = name_or_factory(**kwargs)
            if not isinstance(model, Backbone):
                raise ConfigError(f"the model factory returned a {type(model).__name__}, not a flexbone Backbone")
            if not model.features_only:
                model.as_features(PYRAMID)
        if len(model.feature_info) < len(PYRAMID):
            raise ConfigError(f"a composite needs a backbone with {len(PYRAMID)} feature levels (strides 4..32); "
                              f"this one has {len(model.feature_info)}")
        # the composite joins the four levels at strides 4..32 (timm's stride-2 stem level is part of the stem)
        model.feature_info = model.feature_info.with_out_indices(PYRAMID)
        model.out_indices = model.feature_info.out_indices
        return model

    @torch.no_grad()
    def _probe_stage_inputs(self, backbone: Backbone) -> tuple[list[int], list[bool]]:
        """Run the backbone once, stage by stage, on a small image: the channels and layout of each stage's input.

        Also checks that running the stages one by one gives what the backbone's own
        ``forward_intermediates`` gives, so that a model whose forward is not its module sequence is refused.
        """
        not_sequential = ConfigError(
            f"{self.backbone_name}: running its modules one after the other does not reproduce its "
            f"forward_intermediates, so its stages cannot be composed; CompositeBackbone needs a backbone "
            f"that runs as stem -> stage 1 -> ... -> stage {len(self._stage_names)}"
        )
        first_conv = backbone.default_cfg.get("first_conv")
        try:
            weight = getattr(backbone.get_submodule(first_conv), "weight", None) if first_conv else None
        except AttributeError:
            weight = None
        in_chans = weight.shape[1] if weight is not None and weight.ndim == 4 else 3
        was_training = backbone.training
        backbone.eval()
        try:
            g = torch.Generator().manual_seed(0)  # a private generator: building leaves the global RNG alone
            x = torch.randn(1, in_chans, *_PROBE_SIZE, generator=g).to(_device_of(backbone))
            h = _run(backbone, self._stem_names, x)
            channels, nhwc, levels = [], [], []
            for names in self._stage_names:
                if h.ndim != 4:
                    raise ConfigError(f"{self.backbone_name}: a stage input of shape {tuple(h.shape)} is not a "
                                      f"feature map; CompositeBackbone needs (B, C, H, W) or (B, H, W, C) inputs")
                # the probe's aspect ratio (2:3) says where the spatial axes are
                is_nhwc = h.shape[1] * _PROBE_SIZE[1] == h.shape[2] * _PROBE_SIZE[0]
                channels.append(h.shape[-1] if is_nhwc else h.shape[1])
                nhwc.append(is_nhwc)
                h = _run(backbone, names, h)
                levels.append(h)
            reference = backbone.forward_intermediates(x, list(backbone.out_indices), intermediates_only=True)
        except ConfigError:
            raise
        except (TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise not_sequential from e  # e.g. a stage that returns (tokens, size) instead of a map
        finally:
            backbone.train(was_training)
        if len(reference) != len(levels) or any(
            a.shape != b.shape or not (a.is_meta or torch.allclose(a, b, atol=1e-5, rtol=1e-4))  # meta: shapes only
            for a, b in zip(levels, reference)
        ):
            raise not_sequential
        return channels, nhwc

    # ----------------------------------------------------------------------------------- running
    def _run_segment(self, backbone: nn.Module, names: list[str], x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint(_run, backbone, names, x, use_reentrant=False)
        return _run(backbone, names, x)

    def forward_pyramids(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Every backbone's full pyramid (all levels): the assisting backbones first, the lead last."""
        pyramids: list[list[torch.Tensor]] = []
        stem_out = None
        for k, backbone in enumerate(self.backbones):
            shared = k > 0 and self.pruned_stages is not None
            h = stem_out if shared else self._run_segment(backbone, self._stem_names, x)  # (B, C0, H/s, W/s)
            stem_out = h
            levels = []
            for stage, names in enumerate(self._stage_names):
                if shared and stage < self.pruned_stages:
                    h = pyramids[-1][stage]  # pruned: the previous backbone's output of this stage
                    levels.append(h)
                    continue
                if k > 0:
                    nhwc = self._stage_in_nhwc[stage]
                    size = (h.shape[1], h.shape[2]) if nhwc else (h.shape[-2], h.shape[-1])  # (traceable)
                    fed = self.composition(pyramids[-1], stage, size)  # (B, C_in, *size)
                    if fed is not None:
                        h = h + (fed.permute(0, 2, 3, 1) if nhwc else fed)
                h = self._run_segment(backbone, names, h)
                levels.append(h)
            pyramids.append(levels)
        return pyramids

    def forward(self, x: torch.Tensor):
        """The lead backbone's maps at ``out_indices``; with ``return_assistants`` also ``[assistants' maps]``."""
        pyramids = self.forward_pyramids(x)
        pick = self.out_indices
        lead = [pyramids[-1][i] for i in pick]
        if self.return_assistants:
            return lead, [[p[i] for i in pick] for p in pyramids[:-1]]
        return lead

    @torch.jit.unused
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's signature: the lead backbone's maps at ``indices`` (of the composite's four levels), and its
        last map (``forward_features``) unless ``intermediates_only``. Every backbone runs in full."""
        if output_fmt != "NCHW":
            raise ConfigError(f"a composite backbone's output_fmt must be 'NCHW', not {output_fmt!r}")
        take, _ = feature_take_indices(len(self.feature_info), indices)
        lead = self.forward_pyramids(x)[-1]
        return [lead[i] for i in take] if intermediates_only else (lead[-1], [lead[i] for i in take])

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Nothing to prune: every level of an assisting backbone feeds the next (returns the levels taken)."""
        return feature_take_indices(len(self.feature_info), indices)[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramids(x)[-1][-1]  # (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean((2, 3))  # no classifier: global average pooling only

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if num_classes:
            raise ConfigError("a composite backbone is a feature extractor: it has no classifier "
                              "(put a head on its pyramid instead)")

    def train(self, mode: bool = True) -> "CompositeBackbone":
        super().train(mode)
        if self.composition_norm_eval and self.composition is not None:
            # the official code's choice: composition norms never update their statistics
            for m in self.composition.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ----------------------------------------------------------------------------------- checkpoints
    def _convert_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A single-backbone checkpoint initialises every copy; composite checkpoints pass unchanged.

        The backbone's own converter (if any) runs first; its classifier is dropped (the copies are feature
        extractors); the composition links keep their current (zero) initialisation. Keys that fit no copy
        stay as they are, so a strict load still reports them.
        """
        if any(key.startswith(("backbones.", "composition.")) for key in state_dict):
            return state_dict
        first = self.backbones[0]
        if hasattr(first, "_convert_checkpoint"):
            state_dict = first._convert_checkpoint(state_dict)
        classifier = getattr(self.backbones[0], "default_cfg", {}).get("classifier")
        own = self.state_dict()
        out: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            targets = [f"backbones.{k}.{key}" for k in range(self.k) if f"backbones.{k}.{key}" in own]
            if targets:
                out.update({t: value for t in targets})
            elif not (classifier and (key == classifier or key.startswith(f"{classifier}."))):
                out[key] = value
        for key, value in own.items():
            if key.startswith("composition."):
                out.setdefault(key, value)
        return out


def _run(backbone: nn.Module, names: list[str], x: torch.Tensor) -> torch.Tensor:
    for name in names:  # modules are looked up on every call, so module surgery (e.g. frozen BN) is honoured
        x = backbone.get_submodule(name)(x)
    return x


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _split_stages(backbone: Backbone) -> tuple[list[str], list[list[str]]]:
    """Module names of the stem (everything before the first level) and of each stage (up to its level)."""
    if not hasattr(backbone, "_feature_plan") or not hasattr(backbone, "feature_info"):
        raise ConfigError(f"{type(backbone).__name__} is not a flexbone Backbone with a feature pyramid")
    try:
        plan = [name for name, _ in backbone._feature_plan()]
    except RuntimeError as e:
        raise ConfigError(f"cannot split {type(backbone).__name__} into stages: {e}") from None
    ends = backbone.feature_info.module_name()  # the levels selected (out_indices), shallow to deep
    stem: list[str] = []
    stages: list[list[str]] = []
    current: list[str] = []
    for name in plan:
        if name != ends[len(stages)]:
            current.append(name)
            continue
        if stages:
            stages.append(current + [name])
        else:  # the first level's input is whatever runs before it
            stem = current
            stages.append([name])
        current = []
        if len(stages) == len(ends):
            break
    return stem, stages


# ---------------------------------------------------------------------------------------- variants
# CBNetV2's dual backbones (K = 2) over zoo models; any other model: CompositeBackbone(name, k=...).
VARIANTS: dict[str, str] = {"cb_resnet18": "resnet18", "cb_resnet50": "resnet50", "cb_pvt_v2_b0": "pvt_v2_b0"}


def _build(backbone: str, **kwargs: Any) -> CompositeBackbone:
    if not is_model(backbone):
        raise ConfigError(f"the backbone {backbone!r} of this composite is not registered")
    return CompositeBackbone(backbone, **kwargs)


register_variants(CompositeBackbone, VARIANTS, family="cbnet", build=_build)
