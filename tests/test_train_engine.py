"""The training engine: exact resume, NaN stop, atomic checkpoints, evaluation, run outputs."""
import hashlib
import json

import pytest
import torch

from flexbone.config import load_recipe
from flexbone.train import checkpoint as train_ckpt
from flexbone.train import engine
from flexbone.train.checkpoint import LAST, load_training_state, save_training_state

timm_utils = pytest.importorskip("timm.utils")

# a few steps of the quickstart at 8 px: seconds on one thread
TINY = {"data.img_size": 8, "data.test_img_size": 8, "data.batch_size": 16, "schedule.epochs": 2,
        "schedule.warmup_epochs": 0.5, "train.max_steps_per_epoch": 3, "train.log_interval": 1}
# everything that draws random numbers: crop + flip (per image), Mixup/CutMix (per batch), dropout,
# stochastic depth, plus momentum and EMA state: the resumed run must reproduce all of it
RANDOM = {"aug.no_crop": False, "aug.scale": [0.5, 1.0], "aug.hflip": 0.5, "aug.mixup_alpha": 0.2,
          "aug.cutmix_alpha": 1.0, "model.drop_rate": 0.2, "model.drop_path_rate": 0.1, "train.ema_decay": 0.9,
          "train.ema_warmup": True}


def _recipe(tmp_path, name, **extra):
    return load_recipe("quickstart", {**TINY, "train.output_dir": str(tmp_path), "train.run_name": name, **extra})


def _weights(run_dir):
    state = torch.load(run_dir / LAST, weights_only=True)  # plain data: loads without running code
    return state


@pytest.mark.slow
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch):
    full = engine.run(_recipe(tmp_path, "full", **RANDOM), progress=False, quiet=True)

    # the same run, killed in the middle of its second epoch (after one more optimiser step) ...
    original = engine.train_one_epoch

    def interrupted(model, loader, *args, epoch=0, **kwargs):
        if epoch == 1:
            def dying_loader():
                for i, batch in enumerate(loader):
                    if i == 1:
                        raise KeyboardInterrupt
                    yield batch
            return original(model, dying_loader(), *args, epoch=epoch, **kwargs)
        return original(model, loader, *args, epoch=epoch, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.run(_recipe(tmp_path, "cut", **RANDOM), progress=False, quiet=True)
    assert load_training_state(tmp_path / "cut")["epoch"] == 1
    monkeypatch.setattr(engine, "train_one_epoch", original)

    # ... and resumed from its run directory, in a process whose RNGs have moved on meanwhile
    torch.manual_seed(12345)
    torch.rand(100)
    resumed = engine.run(_recipe(tmp_path, "cut", **RANDOM), resume=tmp_path / "cut", progress=False, quiet=True)

    a, b = _weights(full.run_dir), _weights(resumed.run_dir)
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    for idx, s in a["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizer"]["state"][idx]["momentum_buffer"])
    assert full.top1 == resumed.top1
    # `validate --ema` / `predict --ema` read the EMA weights of a training checkpoint
    ema_model, meta = train_ckpt.model_from_checkpoint(resumed.run_dir / LAST, use_ema=True)
    for key, value in ema_model.state_dict().items():
        assert torch.equal(value, b["ema"]["module"][key]), key
    assert meta["class_names"] == [str(i) for i in range(10)]
    # the resumed run's log shows each epoch once, in order
    rows = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    # and training did change the weights (two runs that never step would also be equal)
    torch.manual_seed(0)
    init = engine._build_model(_recipe(tmp_path, "x"), 10).state_dict()
    assert not torch.equal(init["conv1.weight"], a["model"]["conv1.weight"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    make_loss = engine.create_loss
    calls = {"n": 0}

    def poisoned_loss(*args, **kwargs):
        loss_fn = make_loss(*args, **kwargs)

        def fn(logits, targets):
            calls["n"] += 1
            loss = loss_fn(logits, targets)
            return loss * float("nan") if calls["n"] == 5 else loss  # step 2 of epoch 2
        return fn

    monkeypatch.setattr(engine, "create_loss", poisoned_loss)
    run_dir = tmp_path / "nan"
    with pytest.raises(engine.NonFiniteLossError) as err:
        engine.run(_recipe(tmp_path, "nan"), progress=False, quiet=True)
    message = str(err.value)
    assert "nan" in message and "epoch 2, step 2" in message and str(run_dir / LAST) in message
    state = load_training_state(run_dir)
    assert state["epoch"] == 1 and state["step"] == 3  # the end of the last complete epoch
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / "model.safetensors").exists()


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / LAST
    first = {"model": {"w": torch.arange(1000.0)}, "epoch": 1, "step": 10, "optimizer": {}, "scheduler": {},
             "rng": train_ckpt.get_rng_state()}
    save_training_state(path, first)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:  # half of the new file is on disk when the process "dies"
            fh.truncate(fh.seek(0, 2) // 2)
        raise OSError("simulated crash mid-save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="simulated"):
        save_training_state(path, {**first, "epoch": 2, "model": {"w": torch.zeros(1000)}})
    monkeypatch.setattr(torch, "save", real_save)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    state = load_training_state(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.arange(1000.0))
    assert [p.name for p in tmp_path.iterdir()] == [LAST]  # no temporary file left behind


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_training_state(tmp_path / "s.pt", {"rng": train_ckpt.get_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    train_ckpt.set_rng_state(state["rng"])
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and expected[3] == got[3]


@pytest.mark.parity
def test_evaluate_matches_timm_accuracy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    batches = [(torch.randn(7, 3, 2, 2), torch.randint(0, 10, (7,))) for _ in range(3)]
    stats = engine.evaluate(model, batches, torch.device("cpu"))
    logits = torch.cat([model(x) for x, _ in batches]).detach()
    target = torch.cat([y for _, y in batches])
    top1, top5 = timm_utils.accuracy(logits, target, topk=(1, 5))
    assert stats["top1"] == pytest.approx(top1.item()) and stats["top5"] == pytest.approx(top5.item())
    assert stats["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-5)
    assert stats["images"] == 21


def test_run_writes_outputs(tmp_path):
    result = engine.run(_recipe(tmp_path, "out", **{"schedule.epochs": 1}), progress=False, quiet=True)
    run_dir = result.run_dir
    for name in ("recipe.yaml", "checkpoint-last.pt", "checkpoint-best.pt", "model.safetensors", "metrics.csv",
                 "metrics.jsonl", "steps.jsonl", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert load_recipe(run_dir / "recipe.yaml") == _recipe(tmp_path, "out", **{"schedule.epochs": 1})
    meta = train_ckpt.read_metadata(run_dir / "model.safetensors")
    assert meta["model"] == "resnet8s_tiny" and meta["class_names"] == [str(i) for i in range(10)]
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3]
    # the lr of each step: warm-up over round(0.5 epoch * 3 steps) = 2 steps from 0 to the peak, which is
    # optim.lr 0.1 for batch 64 scaled linearly to batch 16
    assert steps[0]["lr"] == 0.0 and steps[1]["lr"] == pytest.approx(0.1 * 16 / 64 / 2)


def test_a_new_run_refuses_an_occupied_run_directory(tmp_path):
    engine.run(_recipe(tmp_path, "taken", **{"schedule.epochs": 1}), progress=False, quiet=True)
    before = (tmp_path / "taken" / LAST).read_bytes()
    with pytest.raises(engine.ConfigError, match="already holds a run"):
        engine.run(_recipe(tmp_path, "taken", **{"schedule.epochs": 1}), progress=False, quiet=True)
    assert (tmp_path / "taken" / LAST).read_bytes() == before


def test_gradient_clipping_bounds_the_step_and_bf16_autocast_runs_on_cpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 4))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    batch = [(torch.randn(4, 3, 8, 8) * 10, torch.randint(0, 4, (4,)))]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # plain SGD: the step is -lr * (clipped) gradient
    engine.train_one_epoch(model, batch, opt, torch.nn.CrossEntropyLoss(), torch.device("cpu"), clip_grad=1e-3,
                           amp=torch.bfloat16, channels_last=True)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.linalg.vector_norm(after - before).item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_says_so(tmp_path, monkeypatch, capsys, has_bf16):
    """train.amp bf16 on a CPU that emulates bf16 (~50x slower than fp32 for a ResNet-50 step): one note naming
    the override; none where the CPU has the instructions."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    engine.run(_recipe(tmp_path, "bf16", **{"train.amp": "bf16", "schedule.epochs": 1}), progress=False)
    out = capsys.readouterr().out
    assert ("--train.amp none" in out) is not has_bf16
