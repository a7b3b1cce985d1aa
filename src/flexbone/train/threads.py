"""How many intra-op threads a training run should use, from the work and the machine.

torch's default (one thread per core) is wrong in two common cases, both measured on a 2-core VM:

* **small steps**: the quickstart (digits at 8x8 px, batch 64) ran 3 epochs in 6.5 s with one thread and in
  58 s with two while one other busy process shared the machine. OpenMP threads synchronise at every
  operator; with tiny tensors each operator is over before a second thread helps, and a thread that the
  kernel has descheduled makes the others wait for it.
* **busy or shared cores**: data-loader worker processes and other programs use cores too; threads beyond
  the free cores only wait.

:func:`choose_threads` therefore takes one thread when a step's input holds fewer than ``SMALL_STEP``
values, else the cores this process may use (``os.sched_getaffinity``) minus the loader workers, minus the
other processes already running (the 1-minute load average, which our process has not raised yet), split
between the processes of a ``torchrun`` launch on this machine; at least one. ``--threads N`` or
``OMP_NUM_THREADS`` override the choice.
"""
from __future__ import annotations

import os

SMALL_STEP = 2**16  # values in a step's input batch (B*C*H*W); digits at 8 px, batch 64: 12,288

chosen: str | None = None  # how the last apply_thread_choice() decided, shown in the run's first line


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def busy_cores() -> int:
    """Cores kept busy by other processes: the 1-minute load average, rounded down (0 where unknown)."""
    try:
        return int(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0


def choose_threads(*, batch_size: int, img_size: int, in_chans: int = 3, loader_workers: int = 0,
                   cores: int | None = None, busy: int | None = None,
                   local_processes: int | None = None) -> tuple[int, str]:
    """``(threads, why)`` for a run whose steps take ``batch_size`` images of ``img_size`` px (see module doc)."""
    step_values = batch_size * in_chans * img_size * img_size
    if step_values < SMALL_STEP:
        return 1, f"small steps: {step_values:,} input values"
    cores = available_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    if local_processes is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    free = (cores - busy) // max(local_processes, 1) - loader_workers
    threads = max(1, min(free, cores))
    parts = [f"{cores} cores"]
    if busy:
        parts.append(f"{busy} busy")
    if loader_workers:
        parts.append(f"{loader_workers} loader workers")
    if local_processes > 1:
        parts.append(f"{local_processes} processes")
    return threads, ", ".join(parts)


def apply_thread_choice(explicit: int | None, *, batch_size: int, img_size: int, in_chans: int = 3,
                        loader_workers: int = 0) -> str:
    """Set torch's intra-op threads (``explicit``, ``OMP_NUM_THREADS``, else :func:`choose_threads`);
    return how the number was chosen, for the run's first line."""
    import torch

    global chosen
    if explicit:
        torch.set_num_threads(explicit)
        chosen = "--threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        chosen = "OMP_NUM_THREADS"
    else:
        n, chosen = choose_threads(batch_size=batch_size, img_size=img_size, in_chans=in_chans,
                                   loader_workers=loader_workers)
        torch.set_num_threads(n)
    return chosen
