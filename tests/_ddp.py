"""One ``torchrun --nproc_per_node 2`` launch (gloo, CPU) for every multi-process test of a pytest session.

Starting torchrun and importing torch in its three processes costs ~6 s on the 2-core VM, more than most
of the tests' runs train; a launch per test paid it six times. Test modules register their scenario at import
with :func:`scenario`; the session fixture ``ddp_runs`` (conftest.py) launches ``tests/ddp_train_worker.py``
once for the registered ones, which runs them in turn in the same two processes, and hands each test its
scenario's output folder. xdist workers share that one launch: the first to ask runs it under a file lock, the
others wait for it and read its outcome (the tests are also marked ``xdist_group("ddp")``, but pytest 9.2 with
xdist 3.8 ignores the mark: xdist writes the group into ``item._nodeid``, which pytest no longer reads).
A scenario that fails stops the launch (its partner rank would wait in a collective); the scenarios finished
before it still serve their tests.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("ddp_train_worker.py")
DONE = "ddp-test-scenario-done:"  # the worker's line after each scenario (rank 0, after a barrier)

_SCENARIOS: dict[str, dict] = {}


def scenario(name: str, args: list[str] = (), *, kind: str = "train", entry: str = "cli") -> None:
    """Register a 2-process scenario. ``kind='train'``: ``flexbone train ARGS --train.output_dir <its folder>
    --train.run_name ddp-rank<RANK>`` in each process, through ``flexbone.cli.main`` (``entry='cli'``) or the
    ``python -m flexbone`` entry point (``entry='module'``); ``kind='confusion'``: the worker's
    ConfusionMatrix all-reduce check, each rank's matrix saved as ``rank<RANK>.json``."""
    assert name not in _SCENARIOS or _SCENARIOS[name]["args"] == list(args), f"scenario {name!r} registered twice"
    _SCENARIOS[name] = dict(name=name, kind=kind, entry=entry, args=list(args))


class DDPRuns:
    """The launch's outcome: ``runs(name)`` is the scenario's output folder (the test fails if it did not finish)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "launch.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be launching: wait for its outcome
            outcome = root / "outcome.json"
            if not outcome.is_file():
                outcome.write_text(json.dumps(self._launch(root)))
            saved = json.loads(outcome.read_text())
        self.returncode, self.output, self.done = saved["returncode"], saved["output"], set(saved["done"])

    @staticmethod
    def _launch(root: Path) -> dict:
        plan = root / "plan.json"
        plan.write_text(json.dumps([{**s, "out": str(root / s["name"])} for s in _SCENARIOS.values()]))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
               str(plan)]
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        done = [line.split(DONE, 1)[1].split()[0] for line in out.stdout.splitlines() if DONE in line]
        return {"returncode": out.returncode, "output": out.stdout[-3000:] + out.stderr[-3000:], "done": done}

    def __call__(self, name: str) -> Path:
        assert name in _SCENARIOS, f"scenario {name!r} was never registered"
        assert name in self.done, f"2-process scenario {name!r} did not finish (rc {self.returncode}):\n{self.output}"
        return self.root / name
