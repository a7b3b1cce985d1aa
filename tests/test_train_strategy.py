"""The training-strategy interface: the engine imports no strategy, plain / elastic / stitching implement it,
a new strategy is one module; SN-Net trains through the engine (one configuration per step, DDP)."""
from __future__ import annotations

import ast
import collections
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import flexbone
from flexbone.config import load_recipe
from flexbone.elastic.training import ElasticTraining
from flexbone.errors import ConfigError
from flexbone.stitch import SNNet
from flexbone.stitch.training import StitchTraining
from flexbone.train import engine, strategy
from flexbone.train.strategy import PlainStrategy, TrainingStrategy, build_strategy

from _ddp import scenario
from _helpers import max_abs_diff

SRC = Path(flexbone.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included), made absolute."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "flexbone.train" if node.level == 1 else "flexbone" if node.level == 2 else ""
            names.add(f"{base}.{node.module}" if base and node.module else (node.module or base))
    return names


def test_engine_imports_no_strategy():
    imported = _imports(SRC / "train" / "engine.py")
    assert "flexbone.train.strategy" in imported
    assert not {m for m in imported if m.startswith(("flexbone.elastic", "flexbone.stitch"))}
    # every registered strategy builds a TrainingStrategy (resolved by name, not imported by the engine)
    for name, target in strategy.STRATEGIES.items():
        assert callable(strategy._resolve(target)), name


# a few steps of the quickstart at 8 px
TINY = {"data.img_size": 8, "data.test_img_size": 8, "data.batch_size": 16, "schedule.epochs": 1,
        "schedule.warmup_epochs": 0, "train.max_steps_per_epoch": 4, "train.log_interval": 1}


def test_plain_strategy_is_the_classic_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x, y = torch.randn(6, 3, 2, 2), torch.randint(0, 5, (6,))
    plain = build_strategy(load_recipe("quickstart", {"distill.alpha": 0.3, "distill.temperature": 2.0}), model,
                           loss_fn=nn.functional.cross_entropy, teacher=teacher)
    assert isinstance(plain, PlainStrategy) and not plain.find_unused_parameters and not plain.handles_mixup
    loss = plain.step(model, x, y, epoch=0, step=0)
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits = model(x)
    soft = nn.functional.softmax(teacher(x).detach() / 2.0, 1)
    kd = nn.functional.kl_div(nn.functional.log_softmax(logits / 2.0, 1), soft, reduction="batchmean") * 4.0
    ref = 0.7 * nn.functional.cross_entropy(logits, y) + 0.3 * kd
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-5 and not loss.requires_grad
    assert all(max_abs_diff(a, p.grad) < 1e-6 for a, p in zip(grads, model.parameters()))


def test_elastic_and_stitching_implement_the_interface():
    assert issubclass(ElasticTraining, TrainingStrategy) and ElasticTraining.handles_mixup
    assert ElasticTraining.find_unused_parameters and StitchTraining.find_unused_parameters
    recipe = load_recipe("quickstart")
    with pytest.raises(ConfigError, match="SN-Net"):
        build_strategy(recipe, type("M", (nn.Module,), {"training_strategy": "stitching"})(), loss_fn=None)
    with pytest.raises(ConfigError, match="unknown training strategy"):
        build_strategy(recipe, type("M", (nn.Module,), {"training_strategy": "nonesuch"})(), loss_fn=None)


def test_a_new_strategy_is_one_module(tmp_path, monkeypatch):
    (tmp_path / "twice_strategy.py").write_text(
        "from flexbone.train.strategy import TrainingStrategy, backward\n"
        "class Twice(TrainingStrategy):\n"
        "    calls = 0\n"
        "    def __init__(self, loss_fn): self.loss_fn = loss_fn\n"
        "    def step(self, model, images, targets, *, epoch, step, amp=None, scaler=None):\n"
        "        Twice.calls += 1\n"
        "        loss = self.loss_fn(model(images), targets) + self.loss_fn(model(images.flip(-1)), targets)\n"
        "        backward(loss, scaler)\n"
        "        return loss.detach()\n"
        "def build(recipe, model, *, loss_fn, **context): return Twice(loss_fn)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = flexbone.create_model("resnet8s_tiny", num_classes=10)
    model.training_strategy = "twice_strategy:build"  # a model may name its strategy as 'module:builder'
    result = engine.run(load_recipe("quickstart", {**TINY, "train.output_dir": str(tmp_path), "train.run_name": "t"}),
                        model=model, progress=False, quiet=True)
    import twice_strategy

    assert twice_strategy.Twice.calls == 4 and result.top1 is not None


# ------------------------------------------------------------------------------ SN-Net through the engine
SNNET = {"model.name": "snnet", "model.kwargs": {
    "anchors": ["resnet8s_tiny", "resnet8s_tiny"],
    "anchor_options": [{"layers": [1, 2, 2, 1], "channels": [16, 16, 16, 32]}, {"layers": [1, 2, 3, 1]}]}}


def test_uniform_draw_over_all_configurations_per_rank_or_shared():
    net = flexbone.create_model("snnet", num_classes=10, **SNNET["model.kwargs"])
    assert net.num_configs == 2 + 2 + 1  # stage 1: 2 into 3 blocks; stage 2: equal depth 2 -> (0, 1)
    rank0 = StitchTraining(net, None, seed=3, rank=0)
    counts = collections.Counter(rank0.config_for(e, s) for e in range(20) for s in range(100))
    assert set(counts) == set(range(net.num_configs))  # anchors included
    assert max(counts.values()) - min(counts.values()) < 0.25 * 2000 / net.num_configs
    rank1 = StitchTraining(net, None, seed=3, rank=1)
    draws0 = [rank0.config_for(0, s) for s in range(50)]
    assert draws0 != [rank1.config_for(0, s) for s in range(50)]  # per rank: each process its own path
    same = [StitchTraining(net, None, seed=3, rank=r, per_rank=False) for r in (0, 1)]
    assert [same[0].config_for(0, s) for s in range(50)] == [same[1].config_for(0, s) for s in range(50)]
    assert draws0 == [rank0.config_for(0, s) for s in range(50)]  # a resumed run draws the same


@pytest.mark.slow
def test_snnet_trains_through_the_engine(tmp_path, monkeypatch):
    trained = []
    original = SNNet.set_active

    def spy(self, config_id):
        trained.append(config_id)
        original(self, config_id)

    monkeypatch.setattr(SNNet, "set_active", spy)
    recipe = load_recipe("quickstart", {**TINY, **SNNET, "train.output_dir": str(tmp_path), "train.run_name": "sn",
                                        "model.kwargs.distill_from_largest": True, "distill.alpha": 0.5})
    result = engine.run(recipe, progress=False, quiet=True)
    steps = [json.loads(line) for line in (result.run_dir / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 4
    epoch = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"eval_anchor0_top1", "eval_stitch_min_top1", "eval_top1"} <= set(epoch)
    # each step: its configuration, then back to the largest anchor (active for evaluation and saving)
    assert trained[1:8:2] == [1] * 4
    model = flexbone.create_model("snnet", num_classes=10, pretrained=str(result.weights), **SNNET["model.kwargs"])
    assert model.num_configs == 5


# a scenario of the session's one torchrun launch (tests/_ddp.py)
scenario("snnet", ["--recipe", "quickstart", "--data.img_size", "8", "--data.test_img_size", "8",
                   "--data.batch_size", "16", "--schedule.epochs", "1", "--train.max_steps_per_epoch", "3",
                   "--train.log_interval", "1", "--no-progress", "--threads", "1", "--model.name", "snnet",
                   "--model.kwargs", json.dumps(SNNET["model.kwargs"])])


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.xdist_group("ddp")
def test_snnet_ddp_two_gloo_processes_train_their_own_configurations(ddp_runs):
    out = ddp_runs("snnet")
    assert (out / "ddp-rank0" / "model.safetensors").is_file() and not (out / "ddp-rank1").exists()
    # the processes trained different paths in the same step (seed, epoch, step, rank), which DDP only
    # accepts with find_unused_parameters; the losses stayed finite
    net = flexbone.create_model("snnet", num_classes=10, **SNNET["model.kwargs"])
    draws = [[StitchTraining(net, None, seed=0, rank=r).config_for(0, s) for s in range(3)] for r in (0, 1)]
    assert draws[0] != draws[1]
    steps = [json.loads(line) for line in (out / "ddp-rank0" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
