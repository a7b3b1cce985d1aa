"""Every output a command writes goes through here: checked before the work, written atomically.

* :func:`check_writable` is called BEFORE any long work, so that an unwritable ``--out`` fails in the
  first second with a one-line :class:`~flexbone.errors.ConfigError` instead of after an hour of
  evaluations. It creates (and removes) a probe file where the output will go: permission bits, read-only
  mounts and a path under a regular file are all found the same way (``os.access`` is wrong for root and
  for read-only file systems).
* :func:`atomic_write`, :func:`write_text`, :func:`write_json` write to a temporary sibling and rename it
  over the target, so a crash or a full disk leaves the previous file as it was.
* :func:`staged_dir` does the same for a whole folder of outputs.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .checkpoint import atomic_write
from .errors import ConfigError

__all__ = ["check_writable", "check_replaceable", "atomic_write", "write_text", "write_json", "staged_dir", "describe_os_error"]


def describe_os_error(e: OSError) -> str:
    """The reason of an OSError in a few words (``no space left on device``), without the errno prefix."""
    if e.errno is not None:
        return os.strerror(e.errno).lower()
    return str(e) or type(e).__name__


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def check_writable(path: str | os.PathLike, *, is_dir: bool = False) -> Path:
    """Raise :class:`ConfigError` naming ``path`` unless a file (``is_dir``: a folder) can be written there.

    Missing parent folders are fine when the nearest existing one is a writable folder (they are created
    on write). Nothing is left behind: the probe file is removed. Returns ``path`` as a :class:`Path`.
    """
    path = Path(path)
    what = "folder" if is_dir else "file"
    if path.exists():
        if is_dir and not path.is_dir():
            raise ConfigError(f"cannot write to {path}: it exists and is not a folder")
        if not is_dir and path.is_dir():
            raise ConfigError(f"cannot write the {what} {path}: a folder of that name exists")
    folder = path if (is_dir and path.is_dir()) else _nearest_existing(path.parent if not is_dir else path)
    if not folder.is_dir():
        raise ConfigError(f"cannot write the {what} {path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".flexbone-probe-", dir=folder)
    except OSError as e:
        raise ConfigError(f"cannot write the {what} {path}: {folder} is not writable ({describe_os_error(e)})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_replaceable(path: str | os.PathLike, marker: str) -> Path:
    """Raise :class:`ConfigError` unless the folder ``path`` may be replaced as a whole: it does not exist, is
    empty, or is an earlier output of the same command (it holds ``marker``, e.g. ``search.csv``).

    A command that writes a whole folder (:func:`staged_dir`) replaces what was there; pointed by mistake at a
    folder of the user's own files (``--out .``) it would delete them, so it refuses before any work.
    """
    path = Path(path)
    if path.is_dir() and not (path / marker).exists() and any(path.iterdir()):
        raise ConfigError(f"{path} already holds other files, which writing the output there would delete: give a "
                          f"new or empty folder (an earlier output of the same command, with its {marker}, is "
                          f"replaced)")
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (plus a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def staged_dir(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``final_dir`` to fill; move it to ``final_dir`` if the block succeeds.

    If the block raises (or is interrupted) the temporary folder is removed and ``final_dir`` is untouched.
    An existing ``final_dir`` is replaced only after the block succeeded: it is moved aside, the new folder
    renamed into place, and the old one deleted (restored if the rename fails).
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if final.exists() or final.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.rmdir(old)
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        if old is not None and old.exists() and not final.exists():
            os.replace(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk (or the quota) is full."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
