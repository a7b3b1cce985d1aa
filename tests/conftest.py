import os

import pytest
import torch

# two xdist workers on a 2-core machine: one intra-op thread each avoids oversubscription
torch.set_num_threads(int(os.environ.get("FLEXBONE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ddp_runs(tmp_path_factory):
    """The 2-process (torchrun, gloo) scenarios the test modules registered, launched once (tests/_ddp.py)."""
    from _ddp import DDPRuns

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the folder all xdist workers of this run share
        root = root.parent
    return DDPRuns(root / "ddp")
