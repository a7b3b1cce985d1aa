"""The model contract every flexbone backbone honours (see DESIGN.md, "The model contract").

A family subclasses :class:`Backbone`, registers its modules in execution order, and implements
``forward_features``, ``forward_head`` and ``reset_classifier``. The base class supplies the rest, with
timm's signatures and meanings: ``forward``, ``features_only`` mode, ``forward_intermediates``,
``prune_intermediate_layers``, ``head_hidden_size``, ``pretrained_cfg`` and gradient checkpointing switches.

``forward_intermediates`` runs the model's modules in registration order up to the deepest level asked for
(see :meth:`Backbone._feature_plan`); a family whose ``forward_features`` runs more after its last level
names those modules in ``_features_tail`` (MobileNetV2's ``conv_head``), and one whose forward is not a
module sequence overrides ``forward_intermediates``. ``tests/test_contract.py`` checks every registered
model against its own ``forward_features`` and against timm's model of the same name.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
import torch.fx
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ._features import FeatureInfo, FeatureStage, feature_take_indices

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# timm's pretrained_cfg keys that describe a model and its preprocessing (timm's download keys, url /
# hf_hub_id / license, have no meaning here: flexbone never downloads)
CFG_KEYS = ("input_size", "test_input_size", "fixed_input_size", "interpolation", "crop_pct", "test_crop_pct",
            "crop_mode", "mean", "std", "num_classes", "pool_size", "first_conv", "classifier")


def default_cfg(**overrides: Any) -> dict[str, Any]:
    """The preprocessing a model expects and where its stem and head are: timm's ``pretrained_cfg`` keys.

    ``pool_size`` (the last map's size at ``input_size``) follows ``input_size`` at stride 32 unless given;
    ``test_input_size`` / ``test_crop_pct`` appear only when given (timm omits them otherwise).
    """
    cfg: dict[str, Any] = dict(
        input_size=(3, 224, 224),
        fixed_input_size=False,
        interpolation="bilinear",
        crop_pct=0.875,
        crop_mode="center",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_classes=1000,  # the classes of the weights this cfg describes (timm's meaning), not the model's
        first_conv="conv1",
        classifier="fc",
    )
    cfg.update(overrides)
    for key in ("test_input_size", "test_crop_pct"):
        if cfg.get(key, 0) is None:
            del cfg[key]
    if "pool_size" not in cfg:
        cfg["pool_size"] = (cfg["input_size"][1] // 32, cfg["input_size"][2] // 32)
    return cfg


class Backbone(nn.Module):
    """Base class of all registered models."""

    default_cfg: dict[str, Any] = default_cfg()
    # TorchScript: the cfg and the feature list are Python metadata, not state a scripted forward reads
    __jit_ignored_attributes__ = ["default_cfg", "feature_info"]
    __jit_unused_properties__ = ["pretrained_cfg", "head_hidden_size", "stages"]
    # modules that forward_features runs after the last feature level (e.g. MobileNetV2's 1x1 conv_head)
    _features_tail: tuple[str, ...] = ()
    # head modules sized by the trunk's width, which prune_intermediate_layers removes with the trunk's end
    _head_after_trunk: tuple[str, ...] = ()
    # the head is a NormMlpClassifierHead (RDNet, MaxViT) under ``self.head``, whose norm and hidden layer
    # prune_intermediate_layers removes as timm does (see _prune_norm_mlp_head)
    _norm_mlp_head: bool = False
    # layout of the ``features_only`` maps, as timm's feature extractor of the same model reports it
    # (``'NHWC'`` for Swin, whose stages run channels-last; ``'NCHW'`` everywhere else)
    output_fmt: str = "NCHW"
    # module classes whose Python forward TorchScript cannot compile (NASNet's table-driven cells): the model is then
    # scripted as a torch.fx graph in every mode, traced through them (their submodules become its calls)
    _script_traced_through = ()

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.features_only = False
        self.out_indices: tuple[int, ...] = ()

    # ----------------------------------------------------------------------- family-specific parts
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> unpooled last feature map."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (and classify, unless ``pre_logits``) the output of ``forward_features``."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.default_cfg["classifier"])

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------------- timm's attributes
    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's name for ``default_cfg`` (the same dict)."""
        return self.default_cfg

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any]) -> None:
        self.default_cfg = cfg

    @property
    def head_hidden_size(self) -> int:
        """The width the classifier sees (timm's meaning): ``num_features`` unless the head widens it."""
        return self.__dict__.get("_head_hidden_size", self.num_features)

    @head_hidden_size.setter
    def head_hidden_size(self, value: int) -> None:
        self.__dict__["_head_hidden_size"] = value

    # ----------------------------------------------------------------------- shared behaviour
    def forward(self, x: torch.Tensor):
        if torch.jit.is_scripting():  # (a features_only model is scripted as its step graph: __prepare_scriptable__)
            if self.features_only:  # scripted inside another module, where the graph cannot stand in (see below)
                raise RuntimeError("a features_only flexbone model scripts on its own (torch.jit.script(model)), "
                                   "not as a submodule of the module scripted")
            return self.forward_head(self.forward_features(x))
        else:
            if self.features_only:
                return self.forward_intermediates(x, list(self.out_indices), stop_early=True,
                                                  output_fmt=self.output_fmt, intermediates_only=True)
            return self.forward_head(self.forward_features(x))

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles: the model itself, or for ``features_only`` its feature forward as
        a ``torch.fx`` graph of module calls (the same modules and parameter names, minus those after the deepest
        level; TorchScript needs one return type, and the Python feature plan is not scriptable); a model with
        ``_script_traced_through`` classes is scripted as such a graph of its whole forward in either mode.

        Only this model's own forward is traced: every submodule stays one call, compiled by TorchScript as for
        the classification forward, so its train / eval branches (dropout, drop path, batch norm) still follow
        ``.train()`` / ``.eval()`` after scripting, as timm's scripted feature extractors do.
        """
        if not (self.features_only or self._script_traced_through) or _prepared_inside_another_module():
            return self
        checkpointing, self.grad_checkpointing = self.grad_checkpointing, False  # no checkpoint() in the graph
        try:
            graph = _OwnForwardTracer(self).trace(self)
        finally:
            self.grad_checkpointing = checkpointing
        for node in graph.nodes:  # the input; its annotation is the string 'torch.Tensor' (postponed annotations)
            if node.op == "placeholder":
                node.type = torch.Tensor
        suffix = "Features" if self.features_only else "Graph"
        prepared = torch.fx.GraphModule(self, graph, class_name=f"{type(self).__name__}{suffix}")
        prepared.train(self.training)
        return prepared

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in the backward pass: less memory, ~30% more compute."""
        self.grad_checkpointing = enable

    def _feature_plan(self, last_level: int = -1) -> list[tuple[str, nn.Module]]:
        """Modules in execution order, down to feature level ``last_level`` (the deepest by default).

        Top-level children run in registration order; a container named by a dotted feature module
        (``stages`` for ``stages.0``) is entered so that its children become individual steps.
        """
        feature_modules = [s["module"] for s in self.feature_info]
        containers = {m.rsplit(".", 1)[0] for m in feature_modules if "." in m}
        plan: list[tuple[str, nn.Module]] = []
        last = feature_modules[last_level]
        for name, module in self.named_children():
            if name in containers:
                for child_name, child in module.named_children():
                    plan.append((f"{name}.{child_name}", child))
                    if plan[-1][0] == last:
                        return plan
            else:
                plan.append((name, module))
                if name == last:
                    return plan
        raise RuntimeError(f"{type(self).__name__}: feature module {last!r} not found among its children")

    def _run_step(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and self.training) or not any(True for _ in module.parameters()):
            return module(x)
        if type(module) is nn.Sequential:  # per block, as timm's checkpoint_seq (a subclass may skip blocks)
            for block in module:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return checkpoint(module, x, use_reentrant=False)

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the maps of the feature levels ``indices`` (timm's numbering).

        Args:
            indices: ``None`` all levels, an int the last ``n``, a sequence those levels (negative allowed).
            norm: apply the final norm to the intermediates (transformers with one; CNNs have none).
            stop_early: stop after the deepest level asked for (the returned final features are then its map).
            output_fmt: ``'NCHW'``.
            intermediates_only: return only the list of maps.

        Returns:
            ``(final_features, [maps])`` -- ``final_features`` equal to ``forward_features(x)`` unless
            ``stop_early`` stopped before the end -- or ``[maps]`` with ``intermediates_only``.
        """
        if output_fmt != "NCHW":
            raise ConfigError(f"{type(self).__name__}: output_fmt must be 'NCHW', not {output_fmt!r}")
        num_levels = len(self.feature_info)
        take, max_index = feature_take_indices(num_levels, indices)
        last = max_index if stop_early else num_levels - 1
        level_of = {s["module"]: i for i, s in enumerate(self.feature_info)}
        intermediates = []
        for name, module in self._feature_plan(last):
            x = self._run_step(module, x)
            if level_of.get(name, -1) in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if last == num_levels - 1:
            for name in self._features_tail:
                x = getattr(self, name)(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's ``prune_intermediate_layers``: drop (replace by ``nn.Identity``) what runs after the deepest
        level of ``indices``, and the classifier with ``prune_head``; returns the absolute levels kept."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        if max_index < len(self.feature_info) - 1:
            kept = {name for name, _ in self._feature_plan(max_index)}
            later = [name for name, _ in self._feature_plan()] + list(self._features_tail + self._head_after_trunk)
            for name in later:
                if name not in kept:
                    parent, _, child = name.rpartition(".")
                    setattr(self.get_submodule(parent) if parent else self, child, nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        if self._norm_mlp_head:
            self._prune_norm_mlp_head(take, prune_head)
        return take

    def _prune_norm_mlp_head(self, take: Sequence[int], prune_head: bool) -> None:
        """timm's rule for a ``NormMlpClassifierHead``: its norm and hidden layer are sized for the last level, so
        they go with the classifier, and a trunk cut before that level takes the whole head (``num_features``
        become the kept level's)."""
        cut = max(take) < len(self.feature_info) - 1
        if cut:
            self.num_features = self.feature_info[max(take)]["num_chs"]
        if prune_head or cut:
            head = self.head
            head.norm, head.pre_logits, head.hidden_size = nn.Identity(), nn.Identity(), None
            head.in_features = head.num_features = self.num_features
            self.reset_classifier(0, "")  # the family's: no fc, no pooling, head_hidden_size = head.num_features

    def as_features(self, out_indices: Sequence[int] | int | None = None) -> "Backbone":
        """Turn this model into a feature extractor: drop the head, return a list of stage maps.

        ``out_indices`` in timm's numbering (default: all levels; ``PYRAMID`` = the last four, strides 4..32).
        Parameter names stay those of the classification model, so the same checkpoints load.
        """
        self.feature_info = self.feature_info.with_out_indices(out_indices)
        self.out_indices = self.feature_info.out_indices
        self.reset_classifier(0, "")
        self.features_only = True
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _prepared_inside_another_module() -> bool:
    """Whether ``torch.jit.script`` prepares this model as a submodule of the module it scripts (a segmentation
    model's backbone), not as that module itself. torch puts what ``__prepare_scriptable__`` returns into the
    parent's ``_modules`` in place, before compiling, so a swapped backbone would stay swapped in the eager parent
    even when scripting then fails: only the scripted module itself is swapped.

    No public API tells the two apart: ``__prepare_scriptable__`` takes no argument, torch calls it on every
    submodule, and a module does not know its parents (scripting a copy does not help: the copy is what lands in
    the parent). So this reads the ``memo`` of torch's preparing function (``call_prepare_scriptable_func_impl``,
    found by name up the stack), which holds the modules prepared so far: empty for the module being scripted.
    ``test_scripting_a_parent_leaves_its_feature_extractor_alone`` fails if torch renames either."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_code.co_name != "call_prepare_scriptable_func_impl":
        frame = frame.f_back
    memo = frame.f_locals.get("memo") if frame is not None else None
    return isinstance(memo, dict) and len(memo) > 0


class _OwnForwardTracer(torch.fx.Tracer):
    """Traces the root module's own code only: every submodule call is a leaf (one ``call_module`` node), except
    those of the classes in the root's ``_script_traced_through``."""

    def __init__(self, root: nn.Module):
        super().__init__()
        self.root_module = root
        self.traced_through = tuple(getattr(root, "_script_traced_through", ()))

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is not self.root_module and not isinstance(m, self.traced_through)


def stage_info(channels: Sequence[int], reductions: Sequence[int], modules: Sequence[str]) -> FeatureInfo:
    return FeatureInfo([FeatureStage(c, r, m) for c, r, m in zip(channels, reductions, modules)])
