"""The ``flexbone`` command line.

Each command lives in its own module of this package and provides ``register(subparsers)``, which adds
its parser and sets ``func`` to the function that runs it. Errors caused by the user (a
:class:`~flexbone.errors.FlexboneError`) print one line and exit with status 2; no traceback. Environment:
``FLEXBONE_CPU_MEMORY`` = ``keep`` (default) or ``glibc``, see :mod:`flexbone.cpu_memory`.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from ..errors import FlexboneError

# module names under flexbone.cli, in the order `flexbone --help` lists them
COMMANDS = ["list_cmd", "info", "bench", "train", "validate", "predict", "subnets", "compare", "stitch", "latency_table", "search", "export", "demo", "tour"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, non-zero, no usage dump
        self.exit(2, f"flexbone: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="flexbone", description="Vision backbones: train once, deploy at every budget.")
    parser.add_argument("--version", action="version", version=f"flexbone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Started as a program (``argv`` None: the ``flexbone`` script, ``python -m flexbone``),
    the process first takes flexbone's CPU memory policy (:mod:`flexbone.cpu_memory`: freed memory is kept
    for the next step; ``FLEXBONE_CPU_MEMORY=glibc`` opts out); a call from Python leaves its process as it is."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..interrupt import clear_notes

    clear_notes()
    try:
        if argv is None:
            from ..cpu_memory import apply_policy
            from ..interrupt import raise_terminated

            apply_policy()
            if threading.current_thread() is threading.main_thread():  # `kill` cleans up as Ctrl-C does
                signal.signal(signal.SIGTERM, raise_terminated)
        return args.func(args) or 0
    except FlexboneError as e:
        print(f"flexbone: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from ..interrupt import Terminated, interrupted_message

        terminated = isinstance(e, Terminated)
        print(interrupted_message("terminated (SIGTERM)" if terminated else "interrupted"), file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `flexbone list | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except OSError as e:  # the machine refused late (a full disk, a folder gone): one line, not a traceback
        from ..outputs import describe_os_error, is_disk_full

        what = "the disk is full (no space left on device)" if is_disk_full(e) else describe_os_error(e)
        print(f"flexbone: error: {what}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 1
