"""DDP: `torchrun --nproc_per_node 2` on CPU (gloo) follows a 1-process run with the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexbone.checkpoint import load_state_dict
from flexbone.cli import main
from flexbone.layers import norm

WORKER = Path(__file__).with_name("ddp_train_worker.py")


def GROUP_NORM(channels):  # the worker's "groupnorm4"
    return torch.nn.GroupNorm(4, channels)

ARGS = ["--recipe", "quickstart", "--model.kwargs.norm_layer", "groupnorm4", "--data.img_size", "8",
        "--data.test_img_size", "8", "--data.batch_size", "16", "--schedule.epochs", "2",
        "--train.max_steps_per_epoch", "3", "--train.log_interval", "1", "--optim.lr", "0.8", "--no-progress",
        "--threads", "1",
        # no random augmentation: each process draws its own augmentation stream (seed + rank)
        "--aug.no_crop", "true", "--aug.hflip", "0", "--aug.rand_augment", "", "--aug.mixup_alpha", "0",
        "--aug.cutmix_alpha", "0"]


def _launch(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.cli
def test_two_process_gloo_run_matches_single_process(tmp_path, monkeypatch):
    args = ARGS + ["--train.output_dir", str(tmp_path)]
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(WORKER), "ddp", *args], tmp_path)
    # the 1-process reference runs here (saves a start-up), with the worker's GroupNorm registered
    monkeypatch.setitem(norm._NORM_LAYERS, "groupnorm4", GROUP_NORM)
    assert main(["train", *args, "--train.run_name", "single-rank0"]) == 0

    # only rank 0 wrote: rank 1 would have created its own run directory
    assert (tmp_path / "ddp-rank0" / "checkpoint-last.pt").is_file()
    assert not (tmp_path / "ddp-rank1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-rank0", "single-rank0"]

    ddp = load_state_dict(tmp_path / "ddp-rank0" / "model.safetensors")
    single = load_state_dict(tmp_path / "single-rank0" / "model.safetensors")
    assert ddp.keys() == single.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5, msg=k)

    def log(name, file):
        return [json.loads(line) for line in (tmp_path / f"{name}-rank0" / file).read_text().splitlines()]

    # per step, the loss of the global batch: the mean of the two processes' half-batch losses
    ddp_steps, single_steps = log("ddp", "steps.jsonl"), log("single", "steps.jsonl")
    assert len(ddp_steps) == len(single_steps) == 6
    assert [s["loss"] for s in ddp_steps] == pytest.approx([s["loss"] for s in single_steps], rel=1e-4)
    assert single["bn1.bias"].abs().max() > 1e-4  # it did train: norm shifts start at exactly 0
    for a, b in zip(log("ddp", "metrics.jsonl"), log("single", "metrics.jsonl")):
        assert a["train_images"] == b["train_images"] == 3 * 16  # each process took half of the global batch
        assert a["eval_top1"] == pytest.approx(b["eval_top1"])  # evaluation shards summed over processes
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.cli
def test_two_process_supernet_sandwich_run(tmp_path):
    """A supernet under DDP (find_unused_parameters: a sub-network leaves weights unused): the sandwich rule's
    several forwards per step, each deriving its weights in one planned autograd node, reduce and finish."""
    toy = json.dumps(dict(stem_width=8, first_block=[8, "relu", True], final_expand_width=32, head_width=32,
                          units=[[8, 1, "relu", False], [16, 2, "relu", True], [24, 2, "hard_swish", True]]))
    args = ["--recipe", "sandwich_mbv3", "--model.kwargs", toy, "--data.dataset", "digits", "--data.img_size", "16",
            "--data.test_img_size", "16", "--data.crop_pct", "1.0", "--data.batch_size", "16", "--data.workers", "0",
            "--data.digits_test_fraction", "0.05", "--aug.no_crop", "true", "--aug.hflip", "0",
            "--elastic.resolutions", "[]", "--elastic.bn_batches", "2", "--schedule.warmup_epochs", "0",
            "--schedule.epochs", "1", "--train.max_steps_per_epoch", "3", "--train.log_interval", "1",
            "--no-progress", "--threads", "1", "--train.output_dir", str(tmp_path)]
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(WORKER), "ddp", *args], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-rank0"]
    steps = [json.loads(line) for line in (tmp_path / "ddp-rank0" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
