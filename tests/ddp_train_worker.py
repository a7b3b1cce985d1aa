"""Launched by tests/test_train_ddp.py: `flexbone train ARGS` in this process (under torchrun or alone).

BatchNorm normalises each process's half batch with its own statistics, so a 2-process BN run cannot
equal a 1-process run; the test model uses GroupNorm (per-sample statistics) to make the comparison exact
up to float rounding. Each process names its run directory after its rank: a rank other than 0 that
wrote anything would leave a directory of its own.
"""
import os
import sys

import torch.nn as nn

from flexbone.layers import norm

norm._NORM_LAYERS["groupnorm4"] = lambda channels: nn.GroupNorm(4, channels)

if __name__ == "__main__":
    from flexbone.cli import main

    name, train_args = sys.argv[1], sys.argv[2:]  # usage: ddp_train_worker.py RUN_NAME TRAIN_ARGS...
    rank = os.environ.get("RANK", "0")
    sys.exit(main(["train", *train_args, "--train.run_name", f"{name}-rank{rank}"]))
