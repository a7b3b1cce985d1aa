"""DDP: `torchrun --nproc_per_node 2` on CPU (gloo) follows a 1-process run with the same global batch.

The 2-process runs are scenarios of the session's one torchrun launch (tests/_ddp.py, fixture ``ddp_runs``); the
supernet (sandwich rule) under DDP: tests/test_elastic_training.py::test_sandwich_recipe_under_two_process_ddp."""
import json

import pytest
import torch

from _ddp import scenario
from flexbone.checkpoint import load_state_dict
from flexbone.cli import main
from flexbone.layers import norm


def GROUP_NORM(channels):  # the worker's "groupnorm4"
    return torch.nn.GroupNorm(4, channels)

ARGS = ["--recipe", "quickstart", "--model.kwargs.norm_layer", "groupnorm4", "--data.img_size", "8",
        "--data.test_img_size", "8", "--data.batch_size", "16", "--schedule.epochs", "2",
        "--train.max_steps_per_epoch", "3", "--train.log_interval", "1", "--optim.lr", "0.8", "--no-progress",
        "--threads", "1",
        # no random augmentation: each process draws its own augmentation stream (seed + rank)
        "--aug.no_crop", "true", "--aug.hflip", "0", "--aug.rand_augment", "", "--aug.mixup_alpha", "0",
        "--aug.cutmix_alpha", "0"]
scenario("plain", ARGS)


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.xdist_group("ddp")
def test_two_process_gloo_run_matches_single_process(tmp_path, monkeypatch, ddp_runs):
    ddp_dir = ddp_runs("plain")
    # the 1-process reference runs here (saves a start-up), with the worker's GroupNorm registered
    monkeypatch.setitem(norm._NORM_LAYERS, "groupnorm4", GROUP_NORM)
    assert main(["train", *ARGS, "--train.output_dir", str(tmp_path), "--train.run_name", "single-rank0"]) == 0

    # only rank 0 wrote: rank 1 would have created its own run directory
    assert (ddp_dir / "ddp-rank0" / "checkpoint-last.pt").is_file()
    assert not (ddp_dir / "ddp-rank1").exists()
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["ddp-rank0"]

    ddp = load_state_dict(ddp_dir / "ddp-rank0" / "model.safetensors")
    single = load_state_dict(tmp_path / "single-rank0" / "model.safetensors")
    assert ddp.keys() == single.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5, msg=k)

    def log(run_dir, file):
        return [json.loads(line) for line in (run_dir / file).read_text().splitlines()]

    # per step, the loss of the global batch: the mean of the two processes' half-batch losses
    ddp_run, single_run = ddp_dir / "ddp-rank0", tmp_path / "single-rank0"
    ddp_steps, single_steps = log(ddp_run, "steps.jsonl"), log(single_run, "steps.jsonl")
    assert len(ddp_steps) == len(single_steps) == 6
    assert [s["loss"] for s in ddp_steps] == pytest.approx([s["loss"] for s in single_steps], rel=1e-4)
    assert single["bn1.bias"].abs().max() > 1e-4  # it did train: norm shifts start at exactly 0
    for a, b in zip(log(ddp_run, "metrics.jsonl"), log(single_run, "metrics.jsonl"), strict=True):
        assert a["train_images"] == b["train_images"] == 3 * 16  # each process took half of the global batch
        assert a["eval_top1"] == pytest.approx(b["eval_top1"])  # evaluation shards summed over processes
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-4)

