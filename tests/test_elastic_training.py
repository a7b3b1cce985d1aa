"""Supernet training (elastic/training.py): sampling, the three strategies' gradients, and the recipes end to end.

The gradient tests compare one call of a training step with the same objective written out from its
definition (OFA: task loss + KD from a frozen teacher per sampled sub-network; sandwich: the max net's task
loss + in-place KD of the min and random sub-networks from the max net's *detached* logits, regularisation on
the max net only; DεpS: the same with the sub-networks weighted by beta) and backpropagated as one graph.
"""
import json
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from _ddp import scenario
from _helpers import randomize_
from flexbone.config import load_recipe
from flexbone.config.schema import ElasticPhase
from flexbone.elastic.training import (
    ElasticTraining, SubnetSampler, deps_beta, phase_space, regularization_off,
)
from flexbone.errors import ConfigError
from flexbone.models import create_model
from flexbone.train import engine
from flexbone.train.checkpoint import WEIGHTS, load_training_state
from flexbone.train.losses import CrossEntropy

SUPERNET = "ofa_mbv3_d234_e346_k357_w1.0"
# toy widths, the OFA-MobileNetV3 choices (kernel 3/5/7, expand 3/4/6, depth 2/3/4); 16 px digits -> 1 px at the end
TOY = dict(stem_width=8, first_block=[8, "relu", True], final_expand_width=32, head_width=32,
           units=[[8, 1, "relu", False], [16, 2, "relu", True], [16, 2, "hard_swish", False],
                  [24, 1, "hard_swish", True], [24, 2, "hard_swish", True]])
# the shipped recipes, on digits at 16 px (90 test scans), a few steps of batch 16
DIGITS = {"model.kwargs": TOY, "data.dataset": "digits", "data.img_size": 16, "data.test_img_size": 16,
          "data.crop_pct": 1.0, "data.mean": [0.3, 0.3, 0.3], "data.std": [0.38, 0.38, 0.38], "data.batch_size": 16,
          "data.eval_batch_size": 128, "data.digits_test_fraction": 0.05, "data.workers": 0, "aug.no_crop": True, "aug.hflip": 0.0,
          "elastic.resolutions": [], "elastic.bn_batches": 2, "schedule.warmup_epochs": 0,
          "train.max_steps_per_epoch": 2, "train.log_interval": 1, "optim.lr": 0.02}


def toy_supernet(**kwargs):
    """A random toy supernet in float64: gradients summed over separate backward passes then equal the one-graph
    reference up to ~1e-12 instead of float32 rounding."""
    return randomize_(create_model(SUPERNET, num_classes=10, **TOY, **kwargs)).double()


def batch(n):
    return torch.randn(n, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (n,))


def kd(student, teacher, t):  # Hinton et al.: T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean
    return F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="batchmean") * t * t


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(got, want):
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-10, msg=lambda m: f"{n}: {m}")


# ------------------------------------------------------------------------------------------- sampling
def test_sampler_draws_depend_on_seed_epoch_and_step_only():
    space = create_model(SUPERNET, **TOY).space

    def draws(sampler):
        return [sampler.sample(e, s, i) for e in range(2) for s in range(4) for i in range(3)]

    first = draws(SubnetSampler(space, seed=7))
    random.seed(1)  # the engine seeds the global generators with seed + rank: they differ between ranks
    torch.manual_seed(1)
    assert draws(SubnetSampler(space, seed=7)) == first
    assert all(cfg in space for cfg in first)
    assert len(set(first)) == len(first)  # a new sub-network per (epoch, step, index)
    assert draws(SubnetSampler(space, seed=8)) != first
    assert SubnetSampler(space, 7).sample(1, 2, 0) == first[1 * 12 + 2 * 3 + 0]  # any order of calls


def test_sampler_is_the_same_in_another_process(tmp_path):
    """A DDP rank is another process, with its own hash seed and global RNG state: it must draw the same."""
    space = create_model(SUPERNET, **TOY).space
    here = [SubnetSampler(space, 3).sample(e, s).to_dict() for e in range(2) for s in range(3)]
    code = ("import json, random, torch; random.seed(99); torch.manual_seed(99)\n"
            "from flexbone.models import create_model\nfrom flexbone.elastic.training import SubnetSampler\n"
            f"space = create_model({SUPERNET!r}, **{TOY!r}).space\n"
            "print(json.dumps([SubnetSampler(space, 3).sample(e, s).to_dict() for e in range(2) for s in range(3)]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == here


def test_phase_space_holds_unlisted_dimensions_at_their_largest_choice():
    space = create_model(SUPERNET, **TOY).space
    sub = phase_space(space, ElasticPhase(name="depth_1", kernel=(3, 5, 7), depth=(3, 4)))
    assert set(sub.kernel) == {(3, 5, 7)} and set(sub.depth) == {(3, 4)} and set(sub.expand) == {(6,)}
    full = phase_space(space, ElasticPhase(name="full", kernel=(7,), expand=(6,), depth=(4,)))
    assert full.min() == full.max() == space.max()
    with pytest.raises(ConfigError, match="'wide'.*width"):  # MobileNetV3 has no elastic width
        phase_space(space, ElasticPhase(name="wide", width=(0.65, 1.0)))
    with pytest.raises(ConfigError, match="kernel = 9"):
        phase_space(space, ElasticPhase(name="k9", kernel=(3, 9)))


def test_deps_beta_ramps_linearly_after_the_delay():
    assert deps_beta(4.99, 5.0, 2.0) == 0.0
    assert deps_beta(5.0, 5.0, 2.0) == 0.0
    assert deps_beta(5.5, 5.0, 2.0) == pytest.approx(0.25)
    assert deps_beta(6.0, 5.0, 2.0) == pytest.approx(0.5)
    assert deps_beta(7.0, 5.0, 2.0) == 1.0 and deps_beta(100.0, 5.0, 2.0) == 1.0
    assert deps_beta(5.0, 5.0, 0.0) == 1.0  # no ramp: the full sandwich at once


# ------------------------------------------------------------------------------------ the step's gradients
def test_sandwich_step_sums_max_task_loss_and_detached_in_place_distillation():
    net = toy_supernet(drop_rate=0.3, drop_path_rate=0.3)
    space, sampler = net.space, SubnetSampler(net.space, seed=3)
    x, y = batch(6)
    loss_fn = CrossEntropy(0.1)
    step = ElasticTraining(strategy="sandwich", space=space, sampler=sampler, loss_fn=loss_fn, num_random=2,
                           kd_weight=0.7, kd_temperature=2.0)
    net.train()
    torch.manual_seed(1)  # dropout / drop path masks of the max net
    total = step(net, x, y, epoch=1, step=5)
    got = grads(net)
    assert net.active_config == space.max()  # left at the max net

    # by hand: max net with its regularisers; min + 2 random without, distilling from the detached max logits
    net.zero_grad()
    torch.manual_seed(1)
    net.set_active(space.max())
    logits = net(x)
    ref = loss_fn(logits, y)
    soft = logits.detach()
    drop_paths = [m for m in net.modules() if hasattr(m, "drop_prob")]
    net.drop_rate = 0.0
    for m in drop_paths:
        m.drop_prob = 0.0
    for cfg in [space.min(), sampler.sample(1, 5, 0), sampler.sample(1, 5, 1)]:
        net.set_active(cfg)
        ref = ref + 0.7 * kd(net(x), soft, 2.0)
    ref.backward()
    assert total.item() == pytest.approx(ref.item(), rel=1e-5)
    assert_same_grads(got, grads(net))
    assert any(n.endswith("7to5_matrix") for n in got)  # the min net's 3x3 kernels were trained too


def test_sandwich_step_with_mixup_mixes_only_the_max_nets_batch():
    from flexbone.data.mixup import MixupCutmix

    net = toy_supernet()
    space, sampler = net.space, SubnetSampler(net.space, seed=0)
    x, y = batch(4)
    mixup = MixupCutmix(10, mixup_alpha=0.4)
    step = ElasticTraining(strategy="sandwich", space=space, sampler=sampler, loss_fn=CrossEntropy(), mixup_fn=mixup,
                           num_random=1)
    torch.manual_seed(2)
    step(net, x, y, epoch=0, step=0)
    got = grads(net)

    net.zero_grad()
    torch.manual_seed(2)
    xm, ym = mixup(x, y)
    assert not torch.equal(xm, x)
    net.set_active(space.max())
    ref = CrossEntropy()(net(xm), ym)
    with torch.no_grad():
        soft = net(x)  # the max net's predictions on the clean batch
    for cfg in [space.min(), sampler.sample(0, 0, 0)]:
        net.set_active(cfg)
        ref = ref + kd(net(x), soft, 1.0)
    ref.backward()
    assert_same_grads(got, grads(net))


def test_deps_step_trains_the_full_net_alone_before_the_delay_then_weights_subnets_by_beta():
    net = toy_supernet()
    space, sampler = net.space, SubnetSampler(net.space, seed=1)
    x, y = batch(4)
    step = ElasticTraining(strategy="deps", space=space, sampler=sampler, loss_fn=CrossEntropy(), num_random=1,
                           deps_start_epoch=2.0, deps_ramp_epochs=4.0, steps_per_epoch=10)

    def by_hand(beta, epoch, s):
        net.zero_grad()
        net.set_active(space.max())
        logits = net(x)
        loss = CrossEntropy()(logits, y)
        if beta > 0:
            for cfg in [space.min(), sampler.sample(epoch, s, 0)]:
                net.set_active(cfg)
                loss = loss + beta * kd(net(x), logits.detach(), 1.0)
        loss.backward()
        return grads(net)

    net.zero_grad()
    step(net, x, y, epoch=1, step=9)  # 1.9 epochs < 2: the full net alone
    before = grads(net)
    assert_same_grads(before, by_hand(0.0, 1, 9))
    # the smaller kernels' transformation matrices serve sub-networks only: untouched by the full net
    assert not any(n.endswith("_matrix") for n in before)
    net.zero_grad()
    step(net, x, y, epoch=3, step=0)  # 3.0 epochs: beta = (3 - 2) / 4
    assert_same_grads(grads(net), by_hand(0.25, 3, 0))


def test_progressive_step_sums_subnets_with_task_loss_and_distillation_from_the_frozen_teacher():
    net = toy_supernet()
    teacher = toy_supernet().extract()  # a different full net, static
    for p in teacher.parameters():
        p.requires_grad_(False)
    phase = ElasticPhase(name="depth_1", kernel=(3, 5, 7), depth=(3, 4), subnets_per_step=2)
    space = phase_space(net.space, phase)
    sampler = SubnetSampler(space, seed=5)
    x, y = batch(4)
    loss_fn = CrossEntropy(0.1)
    step = ElasticTraining(strategy="progressive", space=space, sampler=sampler, loss_fn=loss_fn, subnets_per_step=2,
                           teacher=teacher.train(), kd_weight=0.5, kd_temperature=1.0)
    total = step(net, x, y, epoch=2, step=3)
    got = grads(net)
    assert not any(p.grad is not None for p in teacher.parameters())

    net.zero_grad()
    with torch.no_grad():
        soft = teacher(x)
    ref = 0.0
    cfgs = [sampler.sample(2, 3, i) for i in range(2)]
    assert cfgs[0] != cfgs[1] and all(set(c.expand) == {6} and set(c.depth) <= {3, 4} for c in cfgs)
    for cfg in cfgs:
        net.set_active(cfg)
        logits = net(x)
        ref = ref + loss_fn(logits, y) + 0.5 * kd(logits, soft, 1.0)
    ref.backward()
    assert total.item() == pytest.approx(ref.item(), rel=1e-5)
    assert_same_grads(got, grads(net))


def test_elastic_resolution_resizes_the_batch_once_per_step():
    net = toy_supernet()
    seen = []
    net.conv_stem.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[-1]))
    step = ElasticTraining(strategy="sandwich", space=net.space, sampler=SubnetSampler(net.space, 0),
                           loss_fn=CrossEntropy(), num_random=1, resolutions=(8, 12))
    for s in range(6):
        seen.clear()
        step(net, *batch(2), epoch=0, step=s)
        assert len(seen) == 3 and len(set(seen)) == 1 and seen[0] == step.sampler.resolution(0, s, (8, 12))


def test_regularization_off_silences_dropout_and_drop_path_and_restores_them():
    net = toy_supernet(drop_rate=0.5, drop_path_rate=0.5).train()
    x = batch(2)[0]
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
        with regularization_off(net):
            assert torch.equal(net(x), net(x))
        assert not torch.equal(net(x), net(x))
    assert net.drop_rate == 0.5


# ------------------------------------------------------------------------------------------- the recipes
# DESIGN.md, "Once-for-all": the progressive-shrinking table (ImageNet), written here from that table
# (name: kernel, expand, depth, epochs, lr, sub-networks per step; the full net's lr 2.6 is marked unsure there)
OFA_TABLE = {
    "full": ([7], [6], [4], 180, None, 1),
    "kernel": ([3, 5, 7], [6], [4], 120, 3e-2, 1),
    "depth_1": ([3, 5, 7], [6], [3, 4], 25, 2.5e-3, 2),
    "depth_2": ([3, 5, 7], [6], [2, 3, 4], 120, 7.5e-3, 2),
    "expand_1": ([3, 5, 7], [4, 6], [2, 3, 4], 25, 2.5e-3, 4),
    "expand_2": ([3, 5, 7], [3, 4, 6], [2, 3, 4], 120, 7.5e-3, 4),
}


def test_ofa_mbv3_ps_phases_are_the_design_table():
    from flexbone.config.loader import elastic_phases

    recipe = load_recipe("ofa_mbv3_ps")
    phases = elastic_phases(recipe.elastic)
    assert [p.name for p in phases] == list(OFA_TABLE)
    for p in phases:
        kernel, expand, depth, epochs, lr, per_step = OFA_TABLE[p.name]
        assert (list(p.kernel), list(p.expand), list(p.depth), p.epochs, p.subnets_per_step) == \
            (kernel, expand, depth, epochs, per_step), p.name
        assert lr is None or p.lr == lr
        assert p.kd == (p.name != "full")  # distillation from the full net in every later phase
        assert p.reorganize == {"expand_1": 0, "expand_2": 1}.get(p.name)  # channels sorted before expand phases
    o = recipe.optim  # the OFA settings of DESIGN.md: SGD Nesterov 0.9, wd 3e-5, label smoothing 0.1, cosine
    assert (o.name, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 0.9, True, 3e-5)
    assert recipe.loss.label_smoothing == 0.1 and recipe.schedule.name == "cosine"
    assert recipe.elastic.resolutions == tuple(range(128, 225, 4))
    deps = load_recipe("deps_mbv3")
    assert deps.elastic.strategy == "deps" and deps.elastic.deps_start == 0.5


def test_expand_phase_sorts_channels_when_it_starts_and_not_when_resumed(tmp_path):
    from flexbone.elastic.training import build_elastic_training
    from flexbone.train.checkpoint import save_model_weights

    teacher = tmp_path / "full.safetensors"
    save_model_weights(toy_supernet().float().state_dict(), teacher)
    recipe = _digits(tmp_path, "ofa_mbv3_ps", **{"elastic.phase": "expand_1",
                                                 "elastic.teacher_checkpoint": str(teacher)})
    net = toy_supernet().float().eval()
    x = batch(2)[0].float()
    before = net(x)
    blk = net.elastic_blocks()[5]

    def importance():
        return blk.conv_pwl.weight.abs().sum(dim=(0, 2, 3))  # per middle channel

    built = build_elastic_training(recipe, net, loss_fn=CrossEntropy(), mixup_fn=None, num_classes=10,
                                   steps_per_epoch=4, device=torch.device("cpu"), fresh=False)
    assert not torch.equal(importance(), importance().sort(descending=True).values)  # random order: unsorted
    build_elastic_training(recipe, net, loss_fn=CrossEntropy(), mixup_fn=None, num_classes=10, steps_per_epoch=4,
                           device=torch.device("cpu"), fresh=True)
    assert torch.equal(importance(), importance().sort(descending=True).values)
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)  # the full net computes the same
    assert set(built.space.expand) == {(4, 6)} and built.subnets_per_step == 4
    # the teacher: the full net of the teacher checkpoint as a static model, frozen, BN on batch statistics
    assert type(built.teacher).__name__ == "MobileNetV3" and built.teacher.training
    assert not any(p.requires_grad for p in built.teacher.parameters())


# ------------------------------------------------------------------------------------- recipes, end to end
def _digits(tmp_path, name, **extra):
    return load_recipe(name, {**DIGITS, "train.output_dir": str(tmp_path), **extra})


@pytest.mark.slow
def test_ofa_mbv3_ps_runs_every_phase_each_from_the_previous_and_resumes(tmp_path, monkeypatch):
    # the chain is under test, not what a phase learns: one step per phase, BN recalibrated on one batch, and no
    # memory estimate (a meta-device forward of the supernet that took longer than a phase's two training steps;
    # the other recipe runs of this file still make it)
    recipe = _digits(tmp_path, "ofa_mbv3_ps", **{"train.run_name": "ps", "train.max_steps_per_epoch": 1,
                                                 "elastic.bn_batches": 1, "train.memory_check": False})
    recipe.elastic.phases = tuple({**p, "epochs": 1} for p in recipe.elastic.phases)  # six 1-step phases
    phases = [p["name"] for p in recipe.elastic.phases]
    assert phases == ["full", "kernel", "depth_1", "depth_2", "expand_1", "expand_2"]
    original = engine._run
    started = []

    def spy(r, *a, **k):  # record each phase's starting weights as the engine loads them
        started.append((r.elastic.phase, r.model.pretrained, r.elastic.teacher_checkpoint))
        if r.elastic.phase == "depth_2" and k.get("resume") is None and spy.cut:
            raise KeyboardInterrupt  # the chain dies at the start of phase 4
        return original(r, *a, **k)

    spy.cut = True
    monkeypatch.setattr(engine, "_run", spy)
    with pytest.raises(KeyboardInterrupt):
        engine.run(recipe, recipe_name="ofa_mbv3_ps", progress=False, quiet=True)
    chain = tmp_path / "ps"
    assert (chain / "recipe.yaml").is_file() and not (chain / "phase4-depth_2").exists()
    spy.cut = False
    result = engine.run(load_recipe(chain / "recipe.yaml"), resume=chain, progress=False, quiet=True)

    dirs = [chain / f"phase{i + 1}-{p}" for i, p in enumerate(phases)]
    assert result.run_dir == dirs[-1]
    assert [s[0] for s in started] == phases[:4] + phases[3:]  # finished phases skipped on resume
    first = str(dirs[0] / WEIGHTS)
    for i, (name, pretrained, teacher) in enumerate(started[:3] + started[4:]):
        k = phases.index(name)
        assert pretrained == (None if k == 0 else str(dirs[k - 1] / WEIGHTS))  # from the previous phase
        assert teacher == (None if k == 0 else first)  # distilling from the full net of phase 1
    for d in dirs:
        state = load_training_state(d)
        assert state["epoch"] == 1 and (d / WEIGHTS).is_file()
    rows = [json.loads(line) for line in (dirs[-1] / "metrics.jsonl").read_text().splitlines()]
    assert "eval_min_top1" in rows[-1] and "eval_top1" in rows[-1]
    # phase 1 trained the full net alone: no min-net evaluation there
    assert "eval_min_top1" not in json.loads((dirs[0] / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deps_mbv3", "sandwich_mbv3"])
def test_in_place_distillation_recipes_train_on_digits(tmp_path, monkeypatch, name):
    recipe = _digits(tmp_path, name, **{"schedule.epochs": 2, "train.run_name": name})
    saved = {}  # the model after each epoch, as the engine checkpoints it
    original = engine.save_training_state
    monkeypatch.setattr(engine, "save_training_state", lambda path, state: (
        saved.setdefault(state["epoch"], {k: v.clone() for k, v in state["model"].items()}), original(path, state))[1])
    result = engine.run(recipe, recipe_name=name, progress=False, quiet=True)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all("eval_min_top1" in r for r in rows)
    # the kernel transformation matrices (identity at init) serve the smaller kernels of sub-networks only:
    # DεpS (deps_start 0.5 of 2 epochs) leaves them alone in epoch 1 and trains them in epoch 2; sandwich trains
    # them from the first step
    matrices = [k for k in saved[2] if k.endswith("7to5_matrix")]
    assert matrices
    eye = torch.eye(25)
    untouched = [torch.equal(saved[1][k], eye) for k in matrices]
    assert all(untouched) if name == "deps_mbv3" else not all(untouched)
    assert not all(torch.equal(saved[2][k], eye) for k in matrices)
    assert not torch.equal(saved[1]["conv_stem.weight"], saved[2]["conv_stem.weight"])


@pytest.mark.cli
@pytest.mark.slow
def test_deps_recipe_trains_on_a_users_image_folder(tmp_path):
    from PIL import Image

    from flexbone.cli import main

    rng = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = (torch.rand(20, 24, 3, generator=rng) * 120 + 100 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    args = ["train", "--recipe", "deps_mbv3", "--data", str(tmp_path / "data"), "--data.img_size", "16",
            "--data.test_img_size", "16", "--data.batch_size", "4", "--data.workers", "0", "--schedule.epochs", "2",
            "--schedule.warmup_epochs", "0", "--elastic.resolutions", "[12, 16]", "--elastic.bn_batches", "1",
            "--train.output_dir", str(tmp_path / "runs"), "--train.run_name", "folder", "--no-progress", "--threads", "1"]
    for key, value in TOY.items():
        args += [f"--model.kwargs.{key}", json.dumps(value)]
    assert main(args) == 0
    run = tmp_path / "runs" / "folder"
    meta = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert meta["epoch"] == 1 and "eval_min_top1" in meta
    assert load_recipe(run / "recipe.yaml").elastic.strategy == "deps"


def test_elastic_recipes_reject_a_plain_model_and_a_missing_teacher(tmp_path):
    with pytest.raises(ConfigError, match="not one; supernets: .*ofa_mbv3"):
        engine.run(_digits(tmp_path, "sandwich_mbv3", **{"model.name": "resnet8s_tiny", "model.kwargs": {},
                                                          "train.run_name": "plain"}), progress=False, quiet=True)
    with pytest.raises(ConfigError, match="distils from the full network"):
        engine.run(_digits(tmp_path, "ofa_mbv3_ps", **{"elastic.phase": "kernel", "train.run_name": "k"}),
                   progress=False, quiet=True)
    with pytest.raises(ConfigError, match="elastic.phase 'kernal'.*Did you mean: kernel"):
        _digits(tmp_path, "ofa_mbv3_ps", **{"elastic.phase": "kernal"})
    with pytest.raises(ConfigError, match="distill.teacher"):
        _digits(tmp_path, "deps_mbv3", **{"distill.teacher": "resnet18"})
    with pytest.raises(ConfigError, match="progressive only"):
        _digits(tmp_path, "deps_mbv3", **{"elastic.phase": "full"})


# `torchrun -m flexbone train ...` (the entry point itself), a scenario of the session's one launch (tests/_ddp.py)
scenario("sandwich", entry="module", args=[
    "--recipe", "sandwich_mbv3", "--schedule.epochs", "1", "--no-progress", "--threads", "1",
    "--aug.mixup_alpha", "0.2",
    *(a for key, value in {**DIGITS, "data.batch_size": 8}.items() for a in (f"--{key}", json.dumps(value)))])


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.xdist_group("ddp")
def test_sandwich_recipe_under_two_process_ddp(ddp_runs):
    """Sub-networks leave parameters unused (find_unused_parameters) and a step runs several forward and backward
    passes, each deriving its weights in one planned autograd node: DDP must reduce them and finish (gloo, CPU)."""
    out = ddp_runs("sandwich")
    assert sorted(p.name for p in out.iterdir()) == ["ddp-rank0"]  # rank 1 wrote nothing
    steps = [json.loads(line) for line in (out / "ddp-rank0" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
    rows = [json.loads(line) for line in (out / "ddp-rank0" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_images"] == 2 * 8 and "eval_min_top1" in rows[-1]
