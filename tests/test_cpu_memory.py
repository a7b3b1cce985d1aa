"""flexbone's CPU memory policy (keep freed memory in the process) against glibc's default, in fresh processes."""
import json
import os
import platform
import subprocess
import sys

import pytest

from flexbone.cli import main
from flexbone.cpu_memory import apply_policy, current_policy
from flexbone.errors import ConfigError

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the policy is a glibc malloc setting")

# allocate, touch and free a 64 MiB tensor nine times; print the median minor page faults of the last seven rounds
# (the heap settles in the first two; an aligned request may now and then not fit the block just freed). Whether
# it fits depends on the heap's layout: with only torch imported (flexbone's package imports lazily since
# session 10) most rounds missed; with the models imported, as in the command, they reuse the block.
_REALLOCATE = """
import resource, statistics, sys, torch
import flexbone.models  # the heap as the flexbone command has it when its work starts (models imported)
from flexbone.cpu_memory import apply_policy
print(apply_policy(sys.argv[1]))
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20)  # 64 MiB of float32
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(int(statistics.median(faults[2:])))
"""


def _run(args: list[str], **env: str) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env}, check=True)
    return out.stdout


@glibc_only
def test_keep_policy_reuses_freed_memory_where_glibc_faults_it_in_again():
    pages = 64 * 2**20 // 4096
    glibc = _run(["-c", _REALLOCATE, "glibc"]).split()
    keep = _run(["-c", _REALLOCATE, "keep"]).split()
    assert glibc[0] == "glibc" and int(glibc[1]) >= pages // 2  # default: every round maps fresh pages
    assert keep[0] == "keep" and int(keep[1]) < pages // 50  # kept: later rounds reuse the mapped memory


@glibc_only
def test_the_flexbone_command_applies_the_policy_and_the_environment_opts_out(tmp_path):
    bench = ["-m", "flexbone", "bench", "resnet18", "--batch-size", "1", "--img-size", "32",
             "--warmup", "0", "--repeats", "1"]
    for env, expected in (({}, "keep"), ({"FLEXBONE_CPU_MEMORY": "glibc"}, "glibc")):
        out = tmp_path / f"{expected}.json"
        _run([*bench, "--out", str(out)], **env)
        assert json.loads(out.read_text())["environment"]["cpu_memory"] == expected


def test_a_call_from_python_leaves_the_process_alone_and_bad_names_are_rejected(capsys):
    assert main(["list", "resnet18"]) == 0
    assert current_policy() == "glibc"  # the test process: main(argv) changes nothing
    with pytest.raises(ConfigError, match="FLEXBONE_CPU_MEMORY='fast'"):
        apply_policy("fast")
