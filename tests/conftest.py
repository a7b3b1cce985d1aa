import os

import pytest
import torch

# two xdist workers on a 2-core machine: one intra-op thread each avoids oversubscription
torch.set_num_threads(int(os.environ.get("FLEXBONE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
