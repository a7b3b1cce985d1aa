"""Recipes: the shipped files against the papers' tables, YAML -> typed dataclasses, overrides, errors."""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pytest
import yaml

from flexbone import is_model
from flexbone.config import (
    Recipe, all_keys, apply_overrides, dump_recipe, list_recipes, load_recipe, parse_overrides, recipe_from_dict,
    recipe_to_dict, scaled_lr,
)
from flexbone.config.loader import RECIPES_DIR
from flexbone.config.schema import SECTIONS
from flexbone.data.rand_augment import parse_rand_augment
from flexbone.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

# ResNet strikes back, Table 1 of arXiv:2110.00476 as copied into DESIGN.md ("Reference facts").
# Written here from the table, not from the recipe files.
RSB_TABLE = {
    "rsb_a1": dict(epochs=600, train_res=224, test_res=224, batch=2048, lr=5e-3, wd=0.01, mixup=0.2, cutmix=1.0,
                   ra_m=7, ra_mstd=0.5, repeats=3, drop_path=0.05, crop=0.95),
    "rsb_a2": dict(epochs=300, train_res=224, test_res=224, batch=2048, lr=5e-3, wd=0.02, mixup=0.1, cutmix=1.0,
                   ra_m=7, ra_mstd=0.5, repeats=3, drop_path=0.05, crop=0.95),
    "rsb_a3": dict(epochs=100, train_res=160, test_res=224, batch=2048, lr=8e-3, wd=0.02, mixup=0.1, cutmix=1.0,
                   ra_m=6, ra_mstd=0.5, repeats=None, drop_path=0.0, crop=0.95),
}


# ------------------------------------------------------------------------------------ shipped recipes
def test_shipped_recipes_exist():
    assert {"rsb_a1", "rsb_a2", "rsb_a3", "resnet_rs", "quickstart"} <= set(list_recipes())


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_loads_and_round_trips(name, tmp_path):
    recipe = load_recipe(name)
    assert recipe.description, "every recipe says what it reproduces"
    from flexbone.seg.model import is_segmentation_model  # seg_<head>_<backbone>: a head over a registered backbone

    assert is_model(recipe.model.name) or is_segmentation_model(recipe.model.name), \
        f"{name} names an unregistered model {recipe.model.name}"
    path = dump_recipe(recipe, tmp_path / "run" / "recipe.yaml")
    assert load_recipe(path) == recipe
    # every shipped recipe states the batch its lr is for and how it scales
    raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
    chain = [raw] + ([yaml.safe_load((RECIPES_DIR / f"{raw['base_recipe']}.yaml").read_text())]
                     if "base_recipe" in raw else [])
    assert any("lr_base_batch_size" in r.get("optim", {}) for r in chain)
    assert any("lr_scaling" in r.get("optim", {}) for r in chain)


@pytest.mark.parametrize("name", sorted(RSB_TABLE))
def test_rsb_recipes_match_the_paper_table(name):
    expected = RSB_TABLE[name]
    r = load_recipe(name)
    assert r.model.name == "resnet50"
    assert r.schedule.epochs == expected["epochs"]
    assert r.data.img_size == expected["train_res"]
    assert (r.data.test_img_size or r.data.img_size) == expected["test_res"]
    assert r.data.batch_size == expected["batch"]
    assert r.optim.name == "lamb"
    assert r.optim.lr_base_batch_size == expected["batch"]
    assert scaled_lr(r, expected["batch"]) == pytest.approx(expected["lr"])  # the lr is the paper's at its batch
    assert r.optim.weight_decay == pytest.approx(expected["wd"])
    assert r.schedule.name == "cosine" and r.schedule.warmup_epochs == 5
    assert r.loss.name == "bce" and r.loss.label_smoothing == 0
    assert r.aug.mixup_alpha == pytest.approx(expected["mixup"])
    assert r.aug.cutmix_alpha == pytest.approx(expected["cutmix"])
    spec = parse_rand_augment(r.aug.rand_augment)
    assert spec.magnitude == expected["ra_m"] and spec.magnitude_std == expected["ra_mstd"]
    if expected["repeats"] is None:
        assert r.aug.repeated_aug <= 1
    else:
        assert r.aug.repeated_aug == expected["repeats"]
    assert r.model.drop_path_rate == pytest.approx(expected["drop_path"])
    assert r.data.crop_pct == pytest.approx(expected["crop"])
    assert r.train.amp != "none"  # mixed precision
    assert r.train.ema_decay == 0 and r.optim.clip_grad is None  # no EMA, no gradient clipping (Table 1)
    assert r.aug.re_prob == 0  # no random erasing


def _flat(recipe: Recipe) -> dict:
    out = {}
    for section, values in recipe_to_dict(recipe).items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            out[section] = values
    return out


@pytest.mark.parametrize("name, paper_changes", [
    ("rsb_a2", {"aug.mixup_alpha", "optim.weight_decay", "schedule.epochs"}),
    ("rsb_a3", {"aug.mixup_alpha", "optim.weight_decay", "schedule.epochs", "optim.lr", "data.img_size",
                "aug.rand_augment", "aug.repeated_aug", "model.drop_path_rate"}),
])
def test_rsb_variants_differ_from_a1_only_where_the_paper_does(name, paper_changes):
    a1, other = _flat(load_recipe("rsb_a1")), _flat(load_recipe(name))
    differing = {k for k in a1 if a1[k] != other[k]} - {"description"}
    assert differing == paper_changes


def test_resnet_rs_recipe_matches_the_tf_settings():
    # DESIGN.md: ResNet-RS-50 @160: batch 4096, ~350 epochs, wd 4e-5, label smoothing 0.1, dropout 0.25,
    # RandAugment 2 layers magnitude 10, EMA 0.9999. Bello et al.: SGD momentum 0.9, lr 0.1 x batch / 256.
    r = load_recipe("resnet_rs")
    assert r.model.name == "resnetrs50" and r.data.img_size == 160
    assert r.data.batch_size == 4096 and r.schedule.epochs == 350
    assert r.optim.name == "sgd" and r.optim.momentum == 0.9 and r.optim.weight_decay == pytest.approx(4e-5)
    assert scaled_lr(r, 4096) == pytest.approx(1.6)
    assert scaled_lr(r, 256) == pytest.approx(0.1)
    assert r.loss.name == "ce" and r.loss.label_smoothing == pytest.approx(0.1)
    assert r.model.drop_rate == pytest.approx(0.25)
    spec = parse_rand_augment(r.aug.rand_augment)
    assert spec.num_ops == 2 and spec.magnitude == 10 and spec.magnitude_std == 0
    assert r.train.ema_decay == pytest.approx(0.9999)


def test_quickstart_recipe_uses_bundled_digits_and_a_small_stem_model():
    r = load_recipe("quickstart")
    assert r.data.dataset == "digits"
    assert r.model.name in ("resnet10s", "resnet8s_tiny")
    assert r.aug.hflip == 0  # mirrored digits are other glyphs
    assert r.train.amp == "none"


def test_recipes_are_package_data_and_the_repo_folder_is_the_same():
    shipped = resources.files("flexbone") / "recipes"
    assert (shipped / "rsb_a1.yaml").is_file()
    assert (REPO / "recipes").resolve() == RECIPES_DIR.resolve()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "recipes/*.yaml" in pyproject


# ------------------------------------------------------------------------------------------ overrides
def test_parse_overrides_accepts_the_command_line_forms():
    tokens = ["--optim.lr", "0.004", "--train.amp=bf16", "data.workers=2", "--train.compile", "--aug.hflip", "0"]
    assert parse_overrides(tokens) == {"optim.lr": "0.004", "train.amp": "bf16", "data.workers": "2",
                                       "train.compile": "true", "aug.hflip": "0"}
    assert parse_overrides(["--train.max-steps-per-epoch", "3"]) == {"train.max_steps_per_epoch": "3"}
    with pytest.raises(ConfigError, match="cannot read override"):
        parse_overrides(["optim.lr"])


def test_overrides_are_typed_and_applied():
    r = load_recipe("rsb_a3", ["--optim.lr", "4e-3", "--train.compile", "--aug.scale", "0.2,1",
                               "--model.kwargs.in_chans", "1", "data.path=/data/x", "--train.run_name", "yes",
                               "--data.eval_batch_size", "null", "--optim.betas", "[0.95, 0.98]"])
    assert r.optim.lr == 4e-3 and isinstance(r.optim.lr, float)
    assert r.train.compile is True
    assert r.aug.scale == (0.2, 1.0)
    assert r.model.kwargs == {"in_chans": 1}
    assert r.data.path == "/data/x"
    assert r.train.run_name == "yes"  # a string field keeps the text, no YAML boolean surprise
    assert r.data.eval_batch_size is None
    assert r.optim.betas == (0.95, 0.98)
    # untouched values stay the file's
    assert r.schedule.epochs == 100


def test_dict_overrides_flat_and_nested():
    a = load_recipe("quickstart", {"optim.lr": 0.2, "train": {"seed": 3}})
    assert a.optim.lr == 0.2 and a.train.seed == 3
    b = apply_overrides(load_recipe("quickstart"), {"train.amp": "bf16"})
    assert b.train.amp == "bf16"


@pytest.mark.parametrize("override, suggestion", [
    ("optim.lrr=1", "optim.lr"),
    ("data.lr=1", "optim.lr"),              # a key that lives in another section
    ("optimm.lr=1", "optim.lr"),            # a misspelt section
    ("train.emma_decay=0.9", "train.ema_decay"),
])
def test_unknown_override_keys_are_rejected_with_a_suggestion(override, suggestion):
    with pytest.raises(ConfigError, match=f"Did you mean: .*{suggestion}"):
        load_recipe("quickstart", [override])


@pytest.mark.parametrize("override, message", [
    ("train.compile=maybe", "expected true or false"),
    ("schedule.epochs=1.5", "expected an integer"),
    ("optim.lr=fast", "expected a number"),
    ("optim.name=lamd", "Did you mean: lamb"),
    ("aug.scale=0.5", "expected a list"),
    ("optim.betas=[0.9]", "expected 2 values"),
    ("aug.hflip=1.5", "probability"),
    ("schedule.warmup_epochs=500", "warmup_epochs"),
    ("aug.rand_augment=rand-q3", "cannot read section"),
    ("loss.bce_target_threshold=0.2", "bce only"),
])
def test_bad_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe("quickstart", [override])


def test_fused_optimizer_step_is_for_sgd_and_adamw_only():
    assert load_recipe("quickstart", ["optim.fused=true"]).optim.fused is True
    with pytest.raises(ConfigError, match="optim.fused applies to sgd and adamw"):
        load_recipe("quickstart", ["optim.name=lamb", "optim.nesterov=false", "optim.fused=true"])


# ------------------------------------------------------------------------------------------ YAML files
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_unknown_key_and_section_are_rejected(tmp_path):
    f = _write(tmp_path / "r.yaml", "optim:\n  weight_decy: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'weight_decy'.*optim\.weight_decay"):
        load_recipe(f)
    f = _write(tmp_path / "s.yaml", "optimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown section 'optimizer'.*Did you mean: optim"):
        load_recipe(f)


def test_yaml_types_are_strict_about_booleans_and_lenient_about_number_spelling(tmp_path):
    # a quoted "false" is a string, which would be truthy: refused
    with pytest.raises(ConfigError, match="expected true or false"):
        load_recipe(_write(tmp_path / "b.yaml", 'train:\n  compile: "false"\n'))
    # PyYAML reads 5e-3 (no dot) as a string; a float field still takes it
    r = load_recipe(_write(tmp_path / "f.yaml", "optim:\n  lr: 5e-3\n  betas: [0.9, 0.99]\nschedule:\n  epochs: 10.0\n"))
    assert r.optim.lr == 5e-3 and r.optim.betas == (0.9, 0.99) and r.schedule.epochs == 10
    assert isinstance(r.schedule.epochs, int) and isinstance(r.optim.betas, tuple)


def test_base_recipe_chain_and_cycles(tmp_path):
    _write(tmp_path / "parent.yaml", "base_recipe: rsb_a1\noptim:\n  lr: 1.0e-3\n")
    child = _write(tmp_path / "child.yaml", "base_recipe: parent.yaml\nschedule:\n  epochs: 7\n")
    r = load_recipe(child)
    assert (r.optim.lr, r.schedule.epochs, r.optim.name) == (1e-3, 7, "lamb")
    _write(tmp_path / "a.yaml", "base_recipe: b.yaml\n")
    _write(tmp_path / "b.yaml", "base_recipe: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_recipe(tmp_path / "a.yaml")


def test_unknown_recipe_name_suggests_the_shipped_ones():
    with pytest.raises(ConfigError, match="Did you mean: rsb_a"):
        load_recipe("rsb_a4")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe("no/such/recipe.yaml")


def test_dump_writes_plain_yaml(tmp_path):
    r = load_recipe("rsb_a1", ["model.kwargs.in_chans=1"])
    path = dump_recipe(r, tmp_path / "recipe.yaml")
    raw = yaml.safe_load(path.read_text())  # safe_load: no python tags for tuples
    assert raw["aug"]["scale"] == [0.08, 1.0] and raw["model"]["kwargs"] == {"in_chans": 1}
    assert recipe_from_dict(raw) == r
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_every_field_has_a_dotted_key_and_defaults_validate():
    keys = all_keys()
    assert "optim.lr" in keys and "data.strict" in keys and "distill.temperature" in keys
    assert len(keys) == len(set(keys))
    assert recipe_from_dict({}) == Recipe()
    for section in SECTIONS.values():  # every section has its own docstring (not the generated signature)
        assert section.__doc__ and not section.__doc__.startswith(f"{section.__name__}(")


# --------------------------------------------------------------------------------------------- lr rule
def test_scaled_lr_rules():
    r = load_recipe("quickstart", {"optim.lr": 0.1, "optim.lr_base_batch_size": 256})
    assert scaled_lr(r, 512) == pytest.approx(0.2)  # linear: Goyal et al.
    sq = apply_overrides(r, {"optim.lr_scaling": "sqrt"})
    assert scaled_lr(sq, 1024) == pytest.approx(0.1 * math.sqrt(4))
    none = apply_overrides(r, {"optim.lr_scaling": "none"})
    assert scaled_lr(none, 1024) == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        scaled_lr(r, 0)
