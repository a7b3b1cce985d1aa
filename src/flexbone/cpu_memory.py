"""CPU memory policy: keep freed memory in the process instead of handing it back to the kernel each step.

A training or inference step on the CPU frees its activations and gradients at the end and allocates the
same sizes again in the next step. glibc's malloc (Linux) serves large blocks with ``mmap`` and returns them
on ``free`` (blocks above a threshold that starts at 128 KiB and rises to at most 32 MiB), and trims the top
of its heap when more than twice that threshold is free. So every step faults its memory back in, page by
page: the kernel zeroes and maps each 4 KiB page before a kernel can write it. Measured on a 2-core VM
(``benchmarks/results/cpu_memory_policy.md``): ResNet-50 inference at batch 32, 224 px faults ~630,000
pages per batch and runs 1.42x faster with the policy below; its training step at batch 32, 160 px faults
~250,000 and runs 1.09x faster (MobileNetV3-Large 1.16x). A supernet, which allocates more per step
(full-size gradients of its shared weights, sliced weight copies), pays more faults than the static
network it extracts to.

:func:`keep_freed_memory` tells glibc to serve every block from its heap (``mallopt(M_MMAP_MAX, 0)``) and
never to trim the heap (``mallopt(M_TRIM_THRESHOLD, -1)``): after the first steps the process reuses memory
that is already mapped, as PyTorch's caching allocator does on a GPU. The cost: the process keeps its peak
heap until it exits (its resident size no longer falls between steps), and the peak itself was 0-12 %
higher in the runs above (heap fragmentation). Blocks glibc cannot take from a heap
(over 64 MiB in a thread other than the main one) still come from ``mmap``.

The ``flexbone`` command applies it on start-up (``FLEXBONE_CPU_MEMORY=glibc`` keeps the C library's
default); code that imports flexbone as a library decides for its own process by calling it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV_VAR = "FLEXBONE_CPU_MEMORY"
POLICIES = ("keep", "glibc")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)

_applied = False


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Keep freed memory in this process (glibc: heap only, never trimmed). Returns whether the policy is in
    force; False where the C library is not glibc (macOS, Windows, musl), which keep their own policies."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))
    return _applied


def apply_policy(policy: str | None = None) -> str:
    """Apply ``policy`` ('keep' or 'glibc'; default: ``$FLEXBONE_CPU_MEMORY``, else 'keep') and return the
    policy in force: 'keep', or 'glibc' (asked for, or the platform has no glibc to tell)."""
    policy = (policy or os.environ.get(ENV_VAR) or "keep").strip().lower()
    if policy not in POLICIES:
        from .errors import ConfigError

        raise ConfigError(f"{ENV_VAR}={policy!r}: choose one of {', '.join(POLICIES)}")
    if policy == "keep":
        keep_freed_memory()
    return current_policy()


def current_policy() -> str:
    """'keep' once :func:`keep_freed_memory` has run in this process, else 'glibc' (the C library's default)."""
    return "keep" if _applied else "glibc"
