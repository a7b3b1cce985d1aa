"""Recipe files: YAML -> validated :class:`~flexbone.config.schema.Recipe`, dotted overrides, and back to YAML.

    recipe = load_recipe("rsb_a3", ["--optim.lr", "0.004", "data.path=/data/imagenet"])
    lr = scaled_lr(recipe, global_batch=512)
    dump_recipe(recipe, run_dir / "recipe.yaml")      # the resolved recipe beside every run

A recipe may start from another one with ``base_recipe: <name or path>``; its own keys then replace the
base's (section by section, key by key), so a recipe states only where it differs (A2 = A1 but ...).
Every key is checked: unknown or misspelt keys and values of the wrong type raise
:class:`~flexbone.errors.ConfigError` with the closest valid key suggested.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Union

import yaml

from ..errors import ConfigError, closest, did_you_mean
from .schema import SECTIONS, ElasticConfig, ElasticPhase, Recipe

BASE_KEY = "base_recipe"  # top-level key naming the recipe this one starts from
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"  # package data; `recipes/` at the repo root links here

_MISSING = object()


# ------------------------------------------------------------------------------------------ finding
def list_recipes() -> list[str]:
    """Names of the shipped recipes (``recipes/<name>.yaml``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file of a shipped recipe name, or the given path if it is a file."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    looks_like_path = text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text
    if looks_like_path:
        raise ConfigError(f"recipe file {text!r} does not exist")
    shipped = RECIPES_DIR / f"{text}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown recipe {text!r}.{did_you_mean(text, list_recipes())} "
                      f"Shipped recipes: {', '.join(list_recipes())}; or give the path of a YAML file.")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a recipe file with its ``base_recipe`` chain merged in (base first)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"recipe {path} includes itself through {BASE_KEY}: {' -> '.join(map(str, seen))}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise ConfigError(f"recipe {path} is not valid YAML: {problem}{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not a text file (not UTF-8); a recipe is YAML text") from None
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path} ({e.strerror or e})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections, got {type(raw).__name__}")
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    base_file = path.parent / str(base)
    base_path = base_file if base_file.is_file() else recipe_path(str(base))
    return _merge(_read_yaml(base_path, seen + (path,)), raw)


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict update: mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------- loading
def load_recipe(name_or_path: str | os.PathLike | None = None,
                overrides: Iterable[str] | Mapping[str, Any] | None = None) -> Recipe:
    """Load a shipped recipe by name (``'rsb_a1'``) or a YAML file by path, apply overrides, validate.

    Args:
        name_or_path: a name in :func:`list_recipes`, a path to a YAML file, or None for the defaults.
        overrides: command-line style tokens (``['--optim.lr', '0.004', 'train.amp=bf16', '--train.compile']``,
            see :func:`parse_overrides`) or a mapping (``{'optim.lr': 0.004}`` or ``{'optim': {'lr': 0.004}}``).

    Raises:
        ConfigError: unknown recipe, unknown/misspelt key (closest valid key suggested), wrong type or value.
    """
    source = "<defaults>"
    raw: dict[str, Any] = {}
    if name_or_path is not None:
        path = recipe_path(name_or_path)
        source = str(name_or_path)
        raw = _read_yaml(path)
    recipe = recipe_from_dict(raw, source=source)
    if overrides:
        recipe = apply_overrides(recipe, overrides)
    return recipe


def recipe_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Recipe:
    """Build and validate a :class:`Recipe` from a nested mapping (the parsed YAML)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    top_fields = _fields(Recipe)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in top_fields:
            raise ConfigError(f"{source}: unknown section {key!r}.{_suggest(str(key))}")
        if key in SECTIONS:
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: section {key!r} must be a mapping of keys, got {value!r}")
            kwargs[key] = _build_section(SECTIONS[key], value, f"{source}: {key}")
        else:
            kwargs[key] = _coerce(value, top_fields[key], f"{source}: {key}")
    recipe = Recipe(**kwargs)
    validate_recipe(recipe, source)
    return recipe


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build_section(cls: type, values: Mapping[str, Any], where: str) -> Any:
    fields = _fields(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}.{_suggest(str(key), section=where.rsplit(': ', 1)[-1])}")
        kwargs[key] = _coerce(value, fields[key], f"{where}.{key}")
    return cls(**kwargs)


def all_keys() -> list[str]:
    """Every valid dotted key (``'optim.lr'``, ...), for suggestions and help texts."""
    keys = [k for k in _fields(Recipe) if k not in SECTIONS]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{name}" for name in _fields(cls)]
    return keys


def _suggest(key: str, section: str | None = None) -> str:
    """' Did you mean: ...?' among the section's keys first, then among all dotted keys."""
    if section in SECTIONS:
        hits = closest(key, _fields(SECTIONS[section]))
        if hits:
            return f" Did you mean: {', '.join(f'{section}.{h}' for h in hits)}?"
        # a key that lives in another section (`data.lr` -> optim.lr)
        others = [k for k in all_keys() if k.rsplit(".", 1)[-1] == key]
        if others:
            return f" Did you mean: {', '.join(others)}?"
        return f" Valid keys: {', '.join(_fields(SECTIONS[section]))}."
    if "." in key:
        return did_you_mean(key, all_keys())
    return did_you_mean(key, list(_fields(Recipe))) or f" Valid sections: {', '.join(_fields(Recipe))}."


# --------------------------------------------------------------------------------------- coercion
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (a schema annotation), or ConfigError naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}."
                          f"{did_you_mean(str(value), [str(a) for a in args])}")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads '5e-3' (no dot) as a string
            try:
                out = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(out):
                    return out
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `run_name: 2024`
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):  # '0.08,1.0' from the command line
            value = [v.strip() for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {list(value)!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported schema type {hint!r} at {where}")  # a bug in schema.py, not user input


# -------------------------------------------------------------------------------------- overrides
def parse_overrides(tokens: Iterable[str]) -> dict[str, str]:
    """Command-line override tokens -> ``{dotted_key: raw string value}``.

    Accepted forms: ``section.key=value``, ``--section.key=value``, ``--section.key value`` and a bare
    ``--section.key`` (= ``true``, for boolean switches). Values stay strings; :func:`apply_overrides`
    parses them with the field's type.
    """
    tokens = list(tokens)
    out: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--"):
            key, eq, value = tok[2:].partition("=")
            if not eq:
                nxt = tokens[i + 1] if i + 1 < len(tokens) else None
                if nxt is not None and not nxt.startswith("--"):
                    value, i = nxt, i + 1
                else:
                    value = "true"
        elif "=" in tok:
            key, _, value = tok.partition("=")
        else:
            raise ConfigError(f"cannot read override {tok!r}: write section.key=value or --section.key value")
        key = key.replace("-", "_")  # --train.max-steps-per-epoch == --train.max_steps_per_epoch
        if not key:
            raise ConfigError(f"empty override key in {tok!r}")
        out[key] = value
        i += 1
    return out


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        # descend into sections given as nested dicts; keep dict values of dict fields whole
        if isinstance(value, Mapping) and dotted in SECTIONS:
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def apply_overrides(recipe: Recipe, overrides: Iterable[str] | Mapping[str, Any]) -> Recipe:
    """A new, validated recipe with dotted overrides applied (see :func:`load_recipe`)."""
    flat = _flatten(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    raw = recipe_to_dict(recipe)
    for key, value in flat.items():
        parts = key.split(".")
        section = parts[0]
        if len(parts) == 1:
            if section in SECTIONS:
                raise ConfigError(f"override {key!r}: name a key of the section, e.g. {section}.{next(iter(_fields(SECTIONS[section])))}")
            if section not in raw:
                raise ConfigError(f"unknown override key {key!r}.{_suggest(key)}")
            raw[section] = _parse_value(value, _fields(Recipe)[section])
            continue
        if section not in SECTIONS:
            raise ConfigError(f"unknown override key {key!r}.{_suggest(key)}")
        fields = _fields(SECTIONS[section])
        name = parts[1]
        if name not in fields:
            raise ConfigError(f"unknown override key {key!r}.{_suggest(name, section=section)}")
        hint = fields[name]
        if len(parts) > 2:  # model.kwargs.in_chans=1: one entry of a dict field
            if not (hint is dict or typing.get_origin(hint) is dict):
                raise ConfigError(f"override {key!r}: {section}.{name} is not a mapping")
            target = raw[section][name] = dict(raw[section][name])
            for part in parts[2:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = _parse_value(value, Any)
        else:
            raw[section][name] = _parse_value(value, hint)
    return recipe_from_dict(raw, source="overrides")


def _parse_value(value: Any, hint: Any) -> Any:
    """A command-line string parsed as YAML (numbers, booleans, lists, null), except for plain string fields."""
    if not isinstance(value, str):
        return value
    args = typing.get_args(hint)
    if hint is str or (typing.get_origin(hint) in (Union, types.UnionType) and set(args) == {str, type(None)}):
        return value  # keep `--train.run_name yes` a string; 'none'/'null' still become None for optional fields
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value


# ---------------------------------------------------------------------------------------- validation
def validate_recipe(recipe: Recipe, source: str = "recipe") -> None:
    """Range and consistency checks that types alone cannot express; raises ConfigError."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    m, d, a, o, s, l, t, k = (recipe.model, recipe.data, recipe.aug, recipe.optim, recipe.schedule,
                              recipe.loss, recipe.train, recipe.distill)
    check(bool(m.name), "model.name must not be empty")
    check(m.num_classes is None or m.num_classes > 0, "model.num_classes must be positive (or null = from the data)")
    check(0 <= m.drop_rate < 1, "model.drop_rate must be in [0, 1)")
    check(0 <= m.drop_path_rate < 1, "model.drop_path_rate must be in [0, 1)")
    check(d.img_size > 0, "data.img_size must be positive")
    check(d.test_img_size is None or d.test_img_size > 0, "data.test_img_size must be positive")
    check(0 < d.crop_pct <= 1, "data.crop_pct must be in (0, 1]")
    check(all(v > 0 for v in d.std), "data.std must be positive")
    check(d.batch_size > 0, "data.batch_size must be positive")
    check(d.eval_batch_size is None or d.eval_batch_size > 0, "data.eval_batch_size must be positive")
    check(d.workers >= 0, "data.workers must be >= 0")
    check(d.synthetic_train_size > 0 and d.synthetic_eval_size > 0 and d.synthetic_num_classes > 1,
          "data.synthetic_* sizes must be positive (and at least 2 classes)")
    check(0 < d.digits_test_fraction < 1, "data.digits_test_fraction must be in (0, 1)")
    check(0 <= d.holdout_fraction < 1, "data.holdout_fraction must be in [0, 1) (0 = no hold-out split)")
    check(0 < a.scale[0] <= a.scale[1] <= 1, "aug.scale must be (min, max) with 0 < min <= max <= 1")
    check(0 < a.ratio[0] <= a.ratio[1], "aug.ratio must be (min, max) with 0 < min <= max")
    for name in ("hflip", "re_prob", "mixup_prob", "mixup_switch_prob"):
        check(0 <= getattr(a, name) <= 1, f"aug.{name} is a probability and must be in [0, 1]")
    check(a.mixup_alpha >= 0 and a.cutmix_alpha >= 0, "aug.mixup_alpha and aug.cutmix_alpha must be >= 0")
    check(a.repeated_aug >= 0, "aug.repeated_aug must be >= 0 (0 or 1 = off)")
    if a.rand_augment:
        from ..data.rand_augment import parse_rand_augment  # the parser owns the string grammar

        try:
            parse_rand_augment(a.rand_augment)
        except ConfigError as e:
            problems.append(f"aug.rand_augment: {e}")
    check(o.lr > 0, "optim.lr must be positive")
    check(o.lr_base_batch_size > 0, "optim.lr_base_batch_size must be positive")
    check(o.weight_decay >= 0, "optim.weight_decay must be >= 0")
    check(o.momentum >= 0, "optim.momentum must be >= 0")
    check(all(0 <= b < 1 for b in o.betas), "optim.betas must be in [0, 1)")
    check(o.eps > 0, "optim.eps must be positive")
    check(o.clip_grad is None or o.clip_grad > 0, "optim.clip_grad must be positive (or null = off)")
    lamb_norm = getattr(o, "lamb_max_grad_norm", None)
    check(lamb_norm is None or lamb_norm > 0, "optim.lamb_max_grad_norm must be positive (or null = off)")
    check(not o.nesterov or o.name == "sgd", "optim.nesterov applies to sgd only")
    check(not getattr(o, "fused", None) or o.name in ("sgd", "adamw"),
          "optim.fused applies to sgd and adamw (torch's fused steps); lamb has none")
    check(s.epochs >= 1, "schedule.epochs must be >= 1")
    check(0 <= s.warmup_epochs <= s.epochs, "schedule.warmup_epochs must be in [0, schedule.epochs]")
    check(s.warmup_lr >= 0 and s.min_lr >= 0, "schedule.warmup_lr and schedule.min_lr must be >= 0")
    check(s.decay_epochs > 0, "schedule.decay_epochs must be positive")
    check(0 < s.decay_rate <= 1, "schedule.decay_rate must be in (0, 1]")
    check(s.power > 0, "schedule.power must be > 0 (poly: lr = peak * (1 - progress) ** power)")
    check(0 <= l.label_smoothing < 1, "loss.label_smoothing must be in [0, 1)")
    check(l.bce_target_threshold is None or 0 < l.bce_target_threshold <= 1,
          "loss.bce_target_threshold must be in (0, 1] (or null = off)")
    check(l.bce_target_threshold is None or l.name == "bce", "loss.bce_target_threshold applies to loss.name: bce only")
    check(0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1) (0 = off)")
    check(t.log_interval >= 1, "train.log_interval must be >= 1")
    check(t.save_every >= 1 and t.eval_every >= 1, "train.save_every and train.eval_every must be >= 1")
    check(t.max_steps_per_epoch is None or t.max_steps_per_epoch >= 1, "train.max_steps_per_epoch must be >= 1")
    check(bool(t.output_dir), "train.output_dir must not be empty")
    check(0 <= k.alpha <= 1, "distill.alpha must be in [0, 1]")
    check(k.temperature > 0, "distill.temperature must be positive")
    _check_elastic(recipe, check, problems)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def elastic_phases(elastic: ElasticConfig) -> list[ElasticPhase]:
    """The rows of ``elastic.phases`` as typed :class:`ElasticPhase` objects (keys and values checked)."""
    hints = _fields(ElasticPhase)
    phases = []
    for i, row in enumerate(elastic.phases):
        where = f"elastic.phases[{i}]"
        unknown = [key for key in row if key not in hints]
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}.{did_you_mean(str(unknown[0]), list(hints))} "
                              f"Phase keys: {', '.join(hints)}")
        if not row.get("name"):
            raise ConfigError(f"{where}: every phase needs a name")
        phases.append(ElasticPhase(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in row.items()}))
    return phases


def _check_elastic(recipe: Recipe, check: Any, problems: list[str]) -> None:
    e = recipe.elastic
    check(e.num_random >= 0, "elastic.num_random must be >= 0")
    check(0 <= e.deps_start < 1, "elastic.deps_start is a fraction of the schedule and must be in [0, 1)")
    check(e.deps_ramp_epochs >= 0, "elastic.deps_ramp_epochs must be >= 0")
    check(e.kd_weight >= 0, "elastic.kd_weight must be >= 0")
    check(e.kd_temperature > 0, "elastic.kd_temperature must be positive")
    check(e.bn_batches >= 1, "elastic.bn_batches must be >= 1")
    check(all(r > 0 for r in e.resolutions), "elastic.resolutions must be positive")
    check(e.strategy == "none" or recipe.distill.teacher is None,
          "elastic training distils from the supernet itself: leave distill.teacher unset")
    if e.strategy != "progressive":
        check(not e.phases and e.phase is None and e.teacher_checkpoint is None,
              "elastic.phases / phase / teacher_checkpoint apply to elastic.strategy: progressive only")
        return
    try:
        phases = elastic_phases(e)
    except ConfigError as err:
        problems.append(str(err))
        return
    names = [p.name for p in phases]
    check(bool(phases), "elastic.strategy progressive needs elastic.phases (the shrinking table)")
    check(len(set(names)) == len(names), f"elastic.phases: phase names must be unique, got {names}")
    check(e.phase is None or e.phase in names,
          f"elastic.phase {e.phase!r} is not in elastic.phases ({', '.join(names)}).{did_you_mean(str(e.phase), names)}")
    for p in phases:
        check(p.epochs >= 1 and p.lr > 0 and p.subnets_per_step >= 1,
              f"elastic.phases {p.name!r}: epochs, lr and subnets_per_step must be positive")
        check(p.warmup_epochs is None or p.warmup_epochs >= 0, f"elastic.phases {p.name!r}: warmup_epochs must be >= 0")
        check(p.reorganize is None or p.reorganize >= 0, f"elastic.phases {p.name!r}: reorganize must be >= 0")


# ------------------------------------------------------------------------------------------- output
def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain YAML-able data (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {key: plain(value) for key, value in dataclasses.asdict(recipe).items()}


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Write the resolved recipe as YAML (atomically); :func:`load_recipe` reads it back to an equal recipe."""
    from ..checkpoint import atomic_write

    text = "# resolved flexbone recipe: every value this run used\n"
    text += yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    return atomic_write(path, write)


def scaled_lr(recipe: Recipe, global_batch: int) -> float:
    """The peak lr for a global batch of ``global_batch`` images (all processes, one optimiser step).

    ``optim.lr`` is stated for ``optim.lr_base_batch_size`` images; ``optim.lr_scaling`` says how it moves:
    ``linear`` (Goyal et al. 2017: lr x batch / base), ``sqrt`` (lr x sqrt(batch / base), common for
    LAMB/Adam) or ``none``.
    """
    if global_batch <= 0:
        raise ConfigError(f"global batch must be positive, got {global_batch}")
    o = recipe.optim
    ratio = global_batch / o.lr_base_batch_size
    if o.lr_scaling == "linear":
        return o.lr * ratio
    if o.lr_scaling == "sqrt":
        return o.lr * math.sqrt(ratio)
    return o.lr
