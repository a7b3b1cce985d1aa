"""The two processes of the DDP tests: ``torchrun --nproc_per_node 2 ddp_train_worker.py PLAN.json`` runs each
scenario of the plan (tests/_ddp.py writes it, one launch per pytest session) in turn, in the same processes.

BatchNorm normalises each process's half batch with its own statistics, so a 2-process BN run cannot
equal a 1-process run; the plain-training test's model uses GroupNorm (per-sample statistics, registered here
as "groupnorm4") to make the comparison exact up to float rounding. Each process names its run directory
after its rank: a rank other than 0 that wrote anything would leave a directory of its own.

The first scenario joins the process group as a run does on its own (the engine's ``init_process_group`` on
torchrun's environment); the engine leaves it at the end of each run. Every later scenario joins a fresh group
under its own prefix of torchrun's store: re-creating the default group there with the same keys would connect
to the previous group's stale addresses.
"""
import json
import os
import runpy
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn

from flexbone.layers import norm

norm._NORM_LAYERS["groupnorm4"] = lambda channels: nn.GroupNorm(4, channels)

DONE = "ddp-test-scenario-done:"  # tests/_ddp.py reads these lines


def _join_fresh_group(index: int, rank: int, world: int) -> None:
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
    dist.init_process_group("gloo", store=dist.PrefixStore(f"scenario{index}", store), rank=rank, world_size=world)


def _train(s: dict, rank: int) -> None:
    argv = ["train", *s["args"], "--train.output_dir", s["out"], "--train.run_name", f"ddp-rank{rank}"]
    if s["entry"] == "module":  # what `torchrun -m flexbone train ...` runs
        sys.argv = ["flexbone", *argv]
        try:
            runpy.run_module("flexbone", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code
    else:
        from flexbone.cli import main

        code = main(argv)
    if code != 0:
        raise SystemExit(f"scenario {s['name']}: flexbone train exited with {code}")


def _confusion(s: dict, rank: int, world: int) -> None:
    """Each process counts its own random batch; ``all_reduce`` must leave the sum over processes on each."""
    from flexbone.seg import ConfusionMatrix

    g = torch.Generator().manual_seed(rank)
    pred, target = torch.randint(0, 3, (2, 5, 5), generator=g), torch.randint(0, 3, (2, 5, 5), generator=g)
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    summed = cm.all_reduce().matrix
    os.makedirs(s["out"], exist_ok=True)
    with open(os.path.join(s["out"], f"rank{rank}.json"), "w") as f:
        json.dump(summed.tolist(), f)
    dist.destroy_process_group()


if __name__ == "__main__":
    plan = json.loads(open(sys.argv[1]).read())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    for index, s in enumerate(plan):
        start = time.perf_counter()
        if index > 0:
            _join_fresh_group(index, rank, world)
        elif s["kind"] != "train":
            dist.init_process_group("gloo")
        if s["kind"] == "train":
            _train(s, rank)
        else:
            _confusion(s, rank, world)
        # the engine left the group; a last handshake on the store so that rank 0 reports only scenarios both
        # processes finished
        _join_fresh_group(f"{index}-done", rank, world)
        dist.barrier()
        dist.destroy_process_group()
        if rank == 0:
            print(f"{DONE} {s['name']} ({time.perf_counter() - start:.1f} s)", flush=True)
