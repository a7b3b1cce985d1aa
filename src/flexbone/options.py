"""Numeric options checked at the edge, with the valid range in the message.

One place for every range check of the command line and of the Python APIs, so that ``--batch-size 0``
or ``drop_path_rate=2.0`` is refused with what was expected instead of a torch traceback deep inside (or,
worse, silently ignored)::

    p.add_argument("--batch-size", type=int_range(1), ...)          # "must be an integer >= 1, got 0"
    p.add_argument("--crop-pct", type=float_range(0, 1, lo_open=True))  # "must be a number in (0, 1], got 0"
    check_range("drop_path_rate", rate, 0, 1, hi_open=True)          # ConfigError for Python callers

The argparse factories raise :class:`argparse.ArgumentTypeError`, which argparse turns into
``flexbone: error: argument --batch-size: must be an integer >= 1, got 0``; :func:`check_range` raises
:class:`~flexbone.errors.ConfigError`.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

from .errors import ConfigError

Number = int | float


def describe_range(lo: Number | None = None, hi: Number | None = None, *,
                   lo_open: bool = False, hi_open: bool = False) -> str:
    """The range in words: ``>= 1``, ``< 2``, ``in (0, 1]`` (empty when unbounded)."""
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def in_range(value: Number, lo: Number | None = None, hi: Number | None = None, *,
             lo_open: bool = False, hi_open: bool = False) -> bool:
    """Whether ``value`` lies in the range (NaN never does)."""
    if isinstance(value, float) and math.isnan(value):
        return False
    if lo is not None and (value <= lo if lo_open else value < lo):
        return False
    if hi is not None and (value >= hi if hi_open else value > hi):
        return False
    return True


def _expected(kind: str, lo, hi, lo_open, hi_open) -> str:
    bound = describe_range(lo, hi, lo_open=lo_open, hi_open=hi_open)
    return f"must be {kind}{' ' + bound if bound else ''}"


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` that reads an integer in ``[lo, hi]`` (either bound may be None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_expected('an integer', lo, hi, False, False)}, got {text!r}") from None
        if not in_range(value, lo, hi):
            raise argparse.ArgumentTypeError(f"{_expected('an integer', lo, hi, False, False)}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some of its own messages
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` that reads a finite number in the range (``lo_open``: ``lo`` itself excluded)."""

    def parse(text: str) -> float:
        expected = _expected("a number", lo, hi, lo_open, hi_open)
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
        if not math.isfinite(value) or not in_range(value, lo, hi, lo_open=lo_open, hi_open=hi_open):
            raise argparse.ArgumentTypeError(f"{expected}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def check_range(name: str, value: Number, lo: Number | None = None, hi: Number | None = None, *,
                lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> Number:
    """Return ``value`` if it lies in the range, else raise :class:`ConfigError` naming ``name`` and the range
    (``integer``: an int is required)."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok or not in_range(value, lo, hi, lo_open=lo_open, hi_open=hi_open):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} {_expected(kind, lo, hi, lo_open, hi_open)}, got {value!r}")
    return value


INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def add_preprocessing_options(parser: argparse.ArgumentParser,
                              crop_help: str = "centre-crop ratio in (0, 1]") -> None:
    """``--crop-pct`` and ``--interpolation``, the evaluation preprocessing every command that reads images
    shares (default ``None``: the checkpoint's, else the model's ``pretrained_cfg``)."""
    default = " (default: the checkpoint's, else the model's)"
    parser.add_argument("--crop-pct", type=float_range(0, 1, lo_open=True), default=None, metavar="F",
                        help=crop_help + default)
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize filter" + default)
