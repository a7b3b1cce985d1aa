"""Stitchable Neural Networks (SN-Net, Pan, Cai, Zhuang, CVPR 2023) over anchors of the zoo.

``SNNet([small, ..., large])`` joins pretrained anchors with cheap stitching layers. Each configuration
(``configs()``; anchors first) is one path: the front anchor up to block ``j``, a stitching layer, the
end anchor from block ``l`` on. ``set_active(i)`` switches paths instantly; ``extract(i)`` copies one path
into a plain static model with identical outputs. The stitching layers start from least squares on
one batch of images (``init_stitches``), then the whole network is fine-tuned by sampling one
configuration per step (``flexbone.train.strategies.stitching``).

Unlike the reference's ``forward``, which draws a configuration itself whenever the model is in training
mode, this module always runs the active configuration: the training strategy does the drawing, so that
evaluation in train mode, BN recalibration and DDP see exactly the path that was chosen.
"""
from __future__ import annotations

import copy
import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..bench.complexity import count_macs, count_params
from ..errors import ConfigError, FlexboneError
from .anchors import AnchorView, anchor_view
from .configs import StitchConfig, hierarchical_stitch_configs, vit_stitch_configs
from .layer import StitchingLayer, to_rows
from .least_squares import averaged_stitch


def _layer_key(stage: int, front: int, end: int) -> str:
    return f"stage{stage}_{front}to{end}"


class StitchedModel(nn.Sequential):
    """One configuration of an SN-Net as a plain chain of modules: stem, blocks, stitching layer, blocks, head."""

    def __init__(self, *modules: nn.Module, stitch_config: dict[str, Any] | None = None):
        super().__init__(*modules)
        self.stitch_config = stitch_config or {}


class SNNet(nn.Module):
    """A stitchable network over ``anchors`` (zoo classifiers, ordered small to large).

    Args:
        anchors: two or more classifiers with the same number of classes. Plain ViTs of equal depth are
            stitched with the window rule (``kernel``, ``stride``, ``nearest``); hierarchical models (ResNet,
            Swin, mixed) inside the stages ``stages`` (see ``configs.py``).
        kernel, stride: the sliding stitching window of the ViT rule (reference: 2 and 1).
        nearest: ViT rule: stitch neighbouring anchors only (reference: True).
        stages: hierarchical rule: the stages (0-indexed) that may hold a stitch (reference: 1 and 2).
    """

    def __init__(self, anchors: Sequence[nn.Module], *, kernel: int = 2, stride: int = 1, nearest: bool = True,
                 stages: Sequence[int] = (1, 2)):
        super().__init__()
        if len(anchors) < 2:
            raise ConfigError(f"SN-Net needs at least 2 anchors, got {len(anchors)}")
        self.anchors = nn.ModuleList(anchors)
        self._views: list[AnchorView] = [anchor_view(a) for a in anchors]
        num_classes = {getattr(a, "num_classes", None) for a in anchors}
        if len(num_classes) != 1:
            raise ConfigError(f"anchors must predict the same classes; their num_classes are {sorted(map(str, num_classes))}")
        self.num_classes = num_classes.pop()
        sizes = [count_params(a) for a in anchors]
        if sizes != sorted(sizes):
            raise ConfigError(f"anchors must be ordered small to large (stitching goes small -> large); "
                              f"their parameter counts are {sizes}")
        self.options = dict(kernel=kernel, stride=stride, nearest=nearest, stages=list(stages))

        if all(v.plain for v in self._views):
            self.rule = "vit"
            configs, per_pair = vit_stitch_configs([v.depths[0] for v in self._views], kernel, stride, nearest)
            hops = {(c.stage, a, b) for c in configs for a, b in zip(c.anchors, c.anchors[1:])}
            num_layers = {h: per_pair for h in sorted(hops)}
        else:
            self.rule = "hierarchical"
            configs, num_layers = hierarchical_stitch_configs([v.depths for v in self._views], stages)
        self._configs: list[StitchConfig] = configs
        self.stitch_layers = nn.ModuleDict()
        for (s, f, e), n in num_layers.items():
            front, end = self._views[f], self._views[e]
            self.stitch_layers[_layer_key(s, f, e)] = nn.ModuleList(
                StitchingLayer(front.stages[s].channels, end.stages[s].channels, front.fmt, end.fmt) for _ in range(n))
        self.active_id = 0
        self._path: list[nn.Module] = self._path_modules(0)
        self.default_cfg = _snnet_cfg(anchors)

    # ------------------------------------------------------------------------------ configurations
    @property
    def num_configs(self) -> int:
        return len(self._configs)

    @property
    def stitch_configs(self) -> list[StitchConfig]:
        """All configurations, in id order (anchors first)."""
        return list(self._configs)

    def stitch_config(self, config_id: int) -> StitchConfig:
        self._check_id(config_id)
        return self._configs[config_id]

    def _check_id(self, config_id: Any) -> None:
        if isinstance(config_id, bool) or not isinstance(config_id, int) or not 0 <= config_id < self.num_configs:
            raise ConfigError(f"stitch configuration {config_id!r} does not exist: valid ids are 0..{self.num_configs - 1}")

    def _path_modules(self, config_id: int) -> list[nn.Module]:
        cfg = self._configs[config_id]
        if cfg.is_anchor:
            return [self.anchors[cfg.anchors[0]]]
        s = cfg.stage
        mods = self._views[cfg.anchors[0]].run_until(s, cfg.positions[0][0])
        hops = list(zip(cfg.anchors, cfg.anchors[1:]))
        for k, (front, end) in enumerate(hops):
            mods.append(self.stitch_layers[_layer_key(s, front, end)][cfg.layers[k]])
            start = cfg.positions[k][1]
            if k + 1 < len(hops):  # a middle anchor runs from its entry block to the next stitch
                mods += self._views[end].run_between(s, start, cfg.positions[k + 1][0])
            else:
                mods += self._views[end].run_from(s, start)
        return mods

    def set_active(self, config_id: int) -> None:
        """Run configuration ``config_id`` from now on (training and evaluation alike)."""
        self._check_id(config_id)
        self.active_id = config_id
        self._path = self._path_modules(config_id)

    def sample_config(self, rng: random.Random | None = None) -> int:
        """A configuration id drawn uniformly, anchors included (the reference's training rule)."""
        return (rng or random).randrange(self.num_configs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._path:
            x = module(x)
        return x

    # ------------------------------------------------------------------------------ timm's model contract
    # What a switching network can answer: the classifier and widths of the active path's last anchor (its head
    # runs last) and the preprocessing of the largest anchor. Feature pyramids (features_only,
    # forward_intermediates, feature_info) it cannot: the levels would change with the configuration.
    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self.default_cfg

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any]) -> None:
        self.default_cfg = cfg

    def _end_anchor(self) -> nn.Module:
        return self.anchors[self._configs[self.active_id].anchors[-1]]

    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``' output: the active path's last anchor's."""
        return self._end_anchor().num_features

    @property
    def head_hidden_size(self) -> int:
        return self._end_anchor().head_hidden_size

    def get_classifier(self) -> nn.Module:
        return self._end_anchor().get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for every anchor (every path ends in one of them)."""
        for anchor in self.anchors:
            anchor.reset_classifier(num_classes, global_pool)
        self.num_classes = num_classes
        self._views = [anchor_view(a) for a in self.anchors]  # a view holds the head it was made with
        self._path = self._path_modules(self.active_id)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The active path up to its head: the last anchor's ``forward_features`` on the stitched trunk."""
        end = self._end_anchor()
        if self._configs[self.active_id].is_anchor:
            return end.forward_features(x)
        for module in self._path[:-1]:
            x = module(x)
        # what the anchor's forward_features runs after its last block: the transformers' final norm
        return end.norm(x) if isinstance(getattr(end, "norm", None), nn.Module) else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self._end_anchor().forward_head(x, pre_logits=pre_logits)

    def as_features(self, out_indices: Any = None) -> "SNNet":
        raise ConfigError("an SN-Net has no fixed feature pyramid (its levels change with the stitch configuration), "
                          "so features_only does not apply; build features_only anchors, or stitch without it")

    # ------------------------------------------------------------------------------ costs, extraction
    def config_params(self, config_id: int) -> int:
        """Parameters on the path of ``config_id`` (the size of its extracted model)."""
        self._check_id(config_id)
        seen: dict[int, int] = {}
        for m in self._path_modules(config_id):
            for p in m.parameters():
                seen[id(p)] = p.numel()
        return sum(seen.values())

    def configs(self, img_size: int | tuple[int, int] = 224, macs: bool = True) -> list[dict[str, Any]]:
        """One row per configuration: id, anchors, stage, positions, layers, params, MACs (batch 1 at ``img_size``)."""
        rows = []
        active = self.active_id
        try:
            for i, cfg in enumerate(self._configs):
                row = {"id": i, **cfg.to_dict(), "params": self.config_params(i)}
                if macs:
                    self.set_active(i)
                    row["macs"] = count_macs(self, img_size)
                rows.append(row)
        finally:
            self.set_active(active)
        return rows

    def extract(self, config_id: int | None = None) -> nn.Module:
        """A static copy of one configuration (default: the active one): the anchor itself, or a
        :class:`StitchedModel` of the path's modules. Outputs equal the SN-Net's for that configuration."""
        config_id = self.active_id if config_id is None else config_id
        self._check_id(config_id)
        cfg = self._configs[config_id]
        if cfg.is_anchor:
            return copy.deepcopy(self.anchors[cfg.anchors[0]])
        # one deepcopy of the whole chain keeps modules that appear twice (none today) shared
        chain = copy.deepcopy(nn.ModuleList(self._path_modules(config_id)))
        model = StitchedModel(*chain, stitch_config={"id": config_id, **cfg.to_dict()}).train(self.training)
        # what export and evaluation read: the end anchor's classes and preprocessing (its module names do not apply)
        end = self.anchors[cfg.anchors[-1]]
        model.num_classes = getattr(end, "num_classes", None)
        model.pretrained_cfg = model.default_cfg = {k: v for k, v in getattr(end, "default_cfg", {}).items()
                                                    if k not in ("first_conv", "classifier")}
        return model

    # ------------------------------------------------------------------------------ least squares
    @torch.no_grad()
    def init_stitches(self, images: torch.Tensor) -> None:
        """Least-squares initialisation of every stitching layer from one batch of images (reference: 100).

        Each anchor runs once in eval mode; for each stitch position ``(j, l)`` the front's block-``j`` output
        is regressed on the end's block-``l`` input; a layer used at several positions gets the average.
        """
        was_training = self.training
        self.eval()
        try:
            acts = [v.block_inputs(images) for v in self._views]
        finally:
            self.train(was_training)
        positions: dict[tuple[str, int], set[tuple[int, int, int, int, int]]] = defaultdict(set)
        for cfg in self._configs:
            for k, (front, end) in enumerate(zip(cfg.anchors, cfg.anchors[1:])):
                j, l = cfg.positions[k]
                positions[(_layer_key(cfg.stage, front, end), cfg.layers[k])].add((cfg.stage, front, end, j, l))
        for (key, layer_id), where in positions.items():
            pairs = []
            for s, front, end, j, l in sorted(where):
                x = to_rows(acts[front][s][j + 1], self._views[front].fmt)  # output of front block j
                y = to_rows(acts[end][s][l], self._views[end].fmt)  # input of end block l
                if x.shape[0] != y.shape[0]:
                    raise ConfigError(f"cannot stitch anchor {front} into {end} at stage {s}: their activations "
                                      f"have {x.shape[0]} and {y.shape[0]} positions for these images")
                pairs.append((x, y))
            self.stitch_layers[key][layer_id].set_weight_bias(*averaged_stitch(pairs))


def _snnet_cfg(anchors: Sequence[nn.Module]) -> dict[str, Any]:
    """timm's cfg keys: the largest anchor's preprocessing; ``first_conv`` / ``classifier`` name its modules."""
    cfg = dict(getattr(anchors[-1], "default_cfg", {}))
    for key in ("first_conv", "classifier"):
        if cfg.get(key):
            cfg[key] = f"anchors.{len(anchors) - 1}.{cfg[key]}"
    return cfg


# ------------------------------------------------------------------------------ registry, saving
FORMAT = "flexbone-snnet/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DDP_SAMPLING = ("per_rank", "same")


def build_snnet(anchors: Sequence[str] = ("resnet18", "resnet50"), anchor_checkpoints: Sequence[str] | None = None,
                num_classes: int = 1000, *, kernel: int = 2, stride: int = 1, nearest: bool = True,
                stages: Sequence[int] = (1, 2), ddp_sampling: str = "per_rank", distill_from_largest: bool = False,
                anchor_options: Sequence[dict[str, Any]] | None = None, config_id: int | None = None,
                **anchor_kwargs: Any) -> SNNet | nn.Module:
    """An SN-Net over registered anchors (``create_model("snnet", anchors=[...], ...)``; recipes: ``model.kwargs``).

    ``anchor_checkpoints``: one pretrained file per anchor (a classifier of another size is re-initialised, as
    ``create_model(pretrained=...)``). Training options, kept on the model for the ``stitching`` strategy:
    ``ddp_sampling`` -- ``'per_rank'``: each DDP process draws its own configuration per step (the reference),
    ``'same'``: all processes train the same one; ``distill_from_largest``: distil every configuration from a
    frozen copy of the largest anchor as it was when training started (when no ``distill.teacher`` is set).
    ``anchor_kwargs`` (``img_size``, ``drop_path_rate`` ...) go to every anchor, ``anchor_options[i]`` to anchor i.
    ``config_id``: build configuration ``config_id`` alone as a static model (what :meth:`SNNet.extract` returns),
    so that a saved configuration is rebuilt from its metadata (:func:`save_configuration`).
    """
    from ..models import create_model

    if ddp_sampling not in DDP_SAMPLING:
        raise ConfigError(f"ddp_sampling must be one of {', '.join(DDP_SAMPLING)}, not {ddp_sampling!r}")
    anchors = list(anchors)
    checkpoints = list(anchor_checkpoints) if anchor_checkpoints else [None] * len(anchors)
    if len(checkpoints) != len(anchors):
        raise ConfigError(f"{len(anchors)} anchors ({', '.join(anchors)}) but {len(checkpoints)} anchor checkpoints")
    options = [dict(o) for o in anchor_options] if anchor_options else [{} for _ in anchors]
    if len(options) != len(anchors):
        raise ConfigError(f"{len(anchors)} anchors but {len(options)} entries in anchor_options")
    models = [create_model(name, pretrained=ckpt or False, num_classes=num_classes, **{**anchor_kwargs, **opts})
              for name, ckpt, opts in zip(anchors, checkpoints, options)]
    net = SNNet(models, kernel=kernel, stride=stride, nearest=nearest, stages=stages)
    net.training_strategy = "stitching"  # the engine's strategy for this model (flexbone.train.strategy)
    net.ddp_sampling, net.distill_from_largest = ddp_sampling, distill_from_largest
    net.spec = dict(anchors=anchors, num_classes=num_classes, kernel=kernel, stride=stride, nearest=nearest,
                    stages=list(stages), ddp_sampling=ddp_sampling, distill_from_largest=distill_from_largest,
                    anchor_options=options, **anchor_kwargs)
    return net if config_id is None else net.extract(config_id)


def save_snnet(net: SNNet, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` (``create_model('snnet', **kwargs)`` arguments) and ``model.safetensors`` to ``directory``
    (atomically, in a folder that appears only when both files are written)."""
    from ..checkpoint import save_state_dict
    from ..outputs import staged_dir

    spec = getattr(net, "spec", None)
    if spec is None:
        raise ConfigError("only an SN-Net built by build_snnet / create_model('snnet') can be saved with its recipe")
    meta = {"format": FORMAT, "model": "snnet", "kwargs": spec, "num_configs": net.num_configs, **(extra or {})}
    with staged_dir(Path(directory)) as tmp:
        save_state_dict(net.state_dict(), Path(tmp) / WEIGHTS_FILE, metadata={"format": FORMAT})
        (Path(tmp) / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(directory)


def load_snnet(directory: str | os.PathLike) -> SNNet:
    """An SN-Net saved by :func:`save_snnet` (or ``flexbone stitch``)."""
    from ..checkpoint import load_checkpoint
    from ..errors import CheckpointError

    directory = Path(directory)
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory} is not a saved SN-Net ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{directory / CONFIG_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
    net = build_snnet(**meta["kwargs"])
    load_checkpoint(net, directory / WEIGHTS_FILE, strict=True)
    return net


def save_configuration(net: SNNet, config_id: int, path: str | os.PathLike,
                       metadata: dict[str, Any] | None = None) -> Path:
    """Configuration ``config_id`` of ``net`` as a static model in one ``.safetensors`` file, atomically. Its header
    names ``create_model('snnet', config_id=..., **spec)``, so :func:`flexbone.train.checkpoint.model_from_checkpoint`
    and ``flexbone export --checkpoint`` rebuild and load it like any run's weights; ``metadata`` (class names,
    preprocessing) is kept beside."""
    from ..train.checkpoint import save_model_weights

    spec = getattr(net, "spec", None)
    if spec is None:
        raise ConfigError("only an SN-Net built by build_snnet / create_model('snnet') can save a configuration")
    model_kwargs = {k: v for k, v in spec.items() if k != "num_classes"}
    static = net.extract(config_id)
    meta = {**(metadata or {}), "model": "snnet", "model_kwargs": {**model_kwargs, "config_id": config_id},
            "num_classes": spec["num_classes"], "stitch_config": {"id": config_id,
                                                                  **net.stitch_config(config_id).to_dict()}}
    return save_model_weights(static.state_dict(), path, meta)


def is_snnet_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a whole SN-Net: a ``flexbone stitch`` folder (or its ``model.safetensors``), or the
    weights / training checkpoint of a run that trained one. A saved single configuration is not one."""
    from ..train.checkpoint import read_metadata

    def stitch_folder(directory: Path) -> bool:  # not a once-for-all sub-network's folder, which has a config too
        try:
            return json.loads((directory / CONFIG_FILE).read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            return False

    path = Path(path)
    if path.is_dir():
        return stitch_folder(path)
    try:
        meta = read_metadata(path)
    except FlexboneError:  # an unreadable file is reported by the command's own loader, with its message
        return False
    if meta.get("format") == FORMAT:
        return stitch_folder(path.parent)
    return meta.get("model") == "snnet" and (meta.get("model_kwargs") or {}).get("config_id") is None


def load_snnet_checkpoint(path: str | os.PathLike) -> tuple[SNNet, dict[str, Any]]:
    """``(SN-Net in eval mode, metadata)`` from any path :func:`is_snnet_checkpoint` accepts."""
    from ..train.checkpoint import model_from_checkpoint, read_metadata

    path = Path(path)
    if path.is_dir() or read_metadata(path).get("format") == FORMAT:
        return load_snnet(path if path.is_dir() else path.parent).eval(), {}
    net, meta = model_from_checkpoint(path, "snnet")
    return net, meta


def _register() -> None:
    from ..models._registry import register_model

    register_model(build_snnet, name="snnet", family="stitch")


_register()
