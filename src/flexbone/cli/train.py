"""`flexbone train --recipe NAME [--model M] [--data PATH] [--section.key VALUE ...] [--resume RUN_DIR]`

Every recipe key can be overridden with a dotted option (``--optim.lr 0.004``, ``--train.amp bf16``,
``--train.compile``); a misspelt key is rejected with the closest valid key suggested. Multi-process:
``torchrun --nproc_per_node N -m flexbone train ...`` (batch sizes in recipes are global).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import int_range

EPILOG = """examples:
  flexbone train --recipe quickstart
  flexbone train --recipe rsb_a3 --model resnet50 --data /data/imagenet --optim.lr 0.004
  flexbone train --recipe rsb_a3 --model resnet50 --data /data/imagenet --data.batch_size 256 --train.amp bf16
  flexbone train --resume runs/resnet50-rsb_a3-20250101-120000
  torchrun --nproc_per_node 8 -m flexbone train --recipe rsb_a1 --model resnet50 --data /data/imagenet

Any recipe key is an option: --section.key VALUE (or section.key=VALUE); see recipes/*.yaml."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with a recipe (dotted overrides, resume, torchrun)",
                       description="Train a model as a recipe says (recipes/*.yaml), with any recipe key "
                                   "overridden by --section.key VALUE.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.__class__ = _with_overrides(type(p))  # unknown --section.key options go to the recipe loader
    from ..config import list_recipes  # the shipped recipes, read from the package

    p.add_argument("--recipe", metavar="NAME|PATH",
                   help=f"a shipped recipe ({', '.join(list_recipes())}) or a YAML file")
    p.add_argument("--model", metavar="NAME", help="model to train (= --model.name NAME)")
    p.add_argument("--data", metavar="PATH|digits",
                   help="as in validate and subnets: an image folder with train/ and val/, a folder of CIFAR-10/100 "
                        "batch files (found by their file names), or 'digits' (= --data.dataset digits)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint-last.pt "
                                                       "(the recipe comes from RUN_DIR/recipe.yaml)")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N",
                   help="torch intra-op threads (default: chosen from the step size, the free cores and the loader "
                        "workers; see flexbone.train.threads; the run's first line says how many)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines are still printed)")
    p.set_defaults(func=run, overrides=[])


def _with_overrides(parser_cls: type) -> type:
    """A parser class that collects the options it does not know as recipe overrides (in order)."""

    class OverridesParser(parser_cls):
        def parse_known_args(self, args=None, namespace=None):
            namespace, extras = super().parse_known_args(args, namespace)
            namespace.overrides = list(getattr(namespace, "overrides", None) or []) + list(extras)
            return namespace, []

    return OverridesParser


# datasets that read no folder: a folder given with --data replaces them by the folder dataset of the task
_BUILT_IN_DATA = {"digits": "imagefolder", "synthetic": "imagefolder", "seg_digits": "seg_folder"}


def data_overrides(data: str, dataset: str | None = None) -> list[str]:
    """``--data`` with the meaning it has in every command: 'digits', a CIFAR folder, or an image folder.

    ``dataset`` is the ``data.dataset`` of the recipe the overrides go to: a folder keeps a folder dataset
    (imagefolder, seg_folder, cityscapes) and replaces a built-in one (digits -> imagefolder), so that the run
    never trains on the digits while the user named a folder.
    """
    if data == "digits":
        return ["--data.dataset", "digits"]
    from ..data.datasets import CIFAR_LAYOUT

    root = Path(data).expanduser()
    for variant, (sub, _, test_file, *_rest) in CIFAR_LAYOUT.items():
        if (root / test_file).is_file() or (root / sub / test_file).is_file():
            return ["--data.dataset", variant, "--data.path", data]
    if dataset is None or dataset in _BUILT_IN_DATA or dataset.startswith("cifar"):
        return ["--data.dataset", _BUILT_IN_DATA.get(dataset or "", "imagefolder"), "--data.path", data]
    return ["--data.path", data]


def recipe_dataset(source: str | os.PathLike) -> str | None:
    """The ``data.dataset`` of a recipe (name or file), None if it cannot be read (its own error comes later)."""
    from ..config import load_recipe
    from ..errors import FlexboneError

    try:
        return load_recipe(source).data.dataset
    except FlexboneError:
        return None


def build_recipe(args: argparse.Namespace):
    """The recipe of ``args``: the named recipe (or the resumed run's), then --model/--data, then overrides."""
    from ..config import load_recipe

    shorthand = []
    if args.model:
        shorthand += ["--model.name", args.model]
    if args.data:
        source = Path(args.resume) / "recipe.yaml" if args.resume else args.recipe
        shorthand += data_overrides(args.data, recipe_dataset(source) if source else None)
    overrides = shorthand + list(args.overrides)
    if args.resume:
        if args.recipe:
            raise ConfigError("--resume continues a run with its own recipe (RUN_DIR/recipe.yaml); drop --recipe "
                              "(dotted overrides such as --schedule.epochs still apply)")
        run_dir = Path(args.resume)
        if not (run_dir / "recipe.yaml").is_file():
            raise ConfigError(f"{run_dir} is not a flexbone run directory (no recipe.yaml in it)")
        return load_recipe(run_dir / "recipe.yaml", overrides), run_dir.name
    if not args.recipe:
        raise ConfigError("name a recipe: --recipe quickstart|rsb_a1|rsb_a2|rsb_a3|resnet_rs or a YAML file "
                          "(or --resume RUN_DIR)")
    return sized_recipe(load_recipe(args.recipe, overrides)), Path(args.recipe).stem


def sized_recipe(recipe: Any) -> Any:
    """``recipe`` with ``model.kwargs.img_size`` set to ``data.img_size`` for a model built for one input size
    (ViT, Swin, MaxViT) when the recipe trains and evaluates at one other size: the run's recipe.yaml and weights
    then say which model was trained (``flexbone validate`` / ``export`` rebuild it so)."""
    from ..bench.complexity import sized_kwargs
    from ..config import apply_overrides

    d, m = recipe.data, recipe.model
    if d.test_img_size not in (None, d.img_size):
        return recipe  # two sizes: the model's own check says which one does not fit
    try:
        kwargs = sized_kwargs(m.name, d.img_size, **m.kwargs)
    except (NotImplementedError, RuntimeError):  # a model that cannot be built on the meta device: as it is
        return recipe
    if kwargs.get("img_size") == m.kwargs.get("img_size"):
        return recipe
    return apply_overrides(recipe, {"model.kwargs.img_size": kwargs["img_size"]})


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train.engine import run as run_training

    from ..train.threads import apply_thread_choice

    recipe, name = build_recipe(args)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # recipes give the global batch
    apply_thread_choice(args.threads, batch_size=max(recipe.data.batch_size // world, 1),
                        img_size=recipe.data.img_size, in_chans=recipe.model.kwargs.get("in_chans", 3),
                        loader_workers=recipe.data.workers)
    run_training(recipe, recipe_name=name, resume=args.resume, progress=not args.no_progress)
    return 0
