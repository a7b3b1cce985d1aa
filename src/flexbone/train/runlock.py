"""One writer per run folder: a lock file naming the process that trains into it.

Two processes that train into the same run folder (a second ``--resume`` while the first still runs)
interleave their checkpoints and logs. :class:`RunLock` creates ``RUN_DIR/.lock`` with ``O_EXCL`` (only one
process can create it) holding the owner's pid, host and start time; a second process is refused with the
owner's pid. A lock left by a process that no longer exists (killed with SIGKILL, a power cut) is recognised
as stale (same host, pid gone) and taken over, with a note. A lock written on another host cannot be
checked from here; it is honoured, and the message says how to remove it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import ConfigError

LOCK = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def read_lock(run_dir: str | os.PathLike) -> dict | None:
    """The owner recorded in ``run_dir``'s lock (pid, host, started), or None if there is no lock."""
    path = Path(run_dir) / LOCK
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or cut short: treated as stale below


def lock_owner_alive(owner: dict | None) -> bool:
    """Whether the process recorded in a lock still runs (a lock from another host counts as alive)."""
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid)


def _refusal(run_dir: Path, owner: dict) -> ConfigError:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    where = "" if owner.get("host") == socket.gethostname() else f" on host {owner.get('host')}"
    return ConfigError(f"{run_dir} is in use by process {owner.get('pid')}{where} (training since {since}); "
                       f"wait for it to finish or stop it (if that process is gone, delete {run_dir / LOCK})")


def check_unlocked(run_dir: str | os.PathLike) -> None:
    """Raise :class:`ConfigError` if a live process holds ``run_dir``'s lock (a cheap early check)."""
    owner = read_lock(run_dir)
    if lock_owner_alive(owner):
        raise _refusal(Path(run_dir), owner)


class RunLock:
    """``with RunLock(run_dir) as lock:`` holds the run folder for this process; ``lock.stale`` is the owner
    of a stale lock that was taken over (None otherwise)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK
        self.stale: dict | None = None
        self._held = False

    def acquire(self) -> "RunLock":
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        for _ in range(3):  # a stale lock is removed, then created again with O_EXCL (another process may win)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = read_lock(self.path.parent)
                if lock_owner_alive(owner):
                    raise _refusal(self.path.parent, owner) from None
                self.stale = owner or {}
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._held = True
            return self
        raise ConfigError(f"could not lock {self.path.parent}: another process keeps taking it")

    def release(self) -> None:
        if self._held:
            self._held = False
            owner = read_lock(self.path.parent)
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
